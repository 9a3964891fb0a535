"""Look-ahead scores over a trie's nodes, for :meth:`Generator.beam_search`'s
``node_scores`` (kexue.fm 8802's idea for KgCLUE: prefer the branches whose keys
can still cover more of the question).

``coverage_scores(trie, sources, weight)`` gives, for every source and every node
of ``trie.to_csr()``, ``weight`` times the most source tokens that a key under the
node contains (ids counted with repetition along the key, special ids excluded).
Beam search adds the change of this score at every step, so a beam that takes a
branch whose keys cover fewer question tokens loses score at once, not only when
its key is complete; at the end each output's score carries ``weight`` times its
own coverage.
"""
import numpy as np

__all__ = ["coverage_scores"]


def _tree(trie):
    """Parent, label and depth of every node (node 0 is the root; parents have
    smaller ids, ``Trie.to_csr`` numbers nodes in preorder)."""
    offsets, labels, children = trie.to_csr()
    n_nodes = len(offsets) - 1
    parent = np.zeros(n_nodes, np.int64)
    label = np.full(n_nodes, -1, np.int64)
    parent[children] = np.repeat(np.arange(n_nodes), np.diff(offsets))
    label[children] = labels
    depth = np.zeros(n_nodes, np.int64)
    for n in range(1, n_nodes):  # preorder: the parent's depth is known
        depth[n] = depth[parent[n]] + 1
    return parent, label, depth


def coverage_scores(trie, sources, weight=1.0, ignore_ids=(0, 100, 101, 102, 103)):
    """float64 ``(len(sources), nodes)``: ``weight`` x the largest number of
    ``sources[b]``'s ids that a key below each node contains (see module docs).

    ``ignore_ids`` (padding, [UNK], [CLS], [SEP], [MASK] in BERT's Chinese vocab)
    never count.
    """
    memo = getattr(trie, "_lookahead_tree", None)
    if memo is None or memo[0] is not trie.to_csr():
        memo = (trie.to_csr(), _tree(trie))
        trie._lookahead_tree = memo
    parent, label, depth = memo[1]
    n_nodes = len(parent)
    ignore = set(int(i) for i in ignore_ids)
    out = np.zeros((len(sources), n_nodes), np.float64)
    levels = [np.flatnonzero(depth == d) for d in range(1, int(depth.max(initial=0)) + 1)]
    for b, source in enumerate(sources):
        wanted = np.array(sorted({int(t) for t in source} - ignore), np.int64)
        hit = np.isin(label, wanted).astype(np.float64)
        path = np.zeros(n_nodes)
        for nodes in levels:  # hits along the path from the root
            path[nodes] = path[parent[nodes]] + hit[nodes]
        best = path.copy()
        for nodes in reversed(levels):  # the best key below each node
            np.maximum.at(best, parent[nodes], best[nodes])
        out[b] = weight * best
    return out
