"""Beam search as one TensorFlow program: the whole decode is a ``tf.while_loop``.

:func:`beam_program` returns a traceable function ``(token_ids, segment_ids,
max_steps[, trie tensors]) -> (ids, lengths, scores)`` that prefills the cache,
then loops over the steps on device: the top-``k`` selection of every source, the
bert4keras end rule, the parent gather of the cache and the next cached model step
all stay in the graph, and the loop stops as soon as every source has returned.
It follows :meth:`Generator.beam_search` with ``length_penalty=0`` (the same
selections, hence the same ids as bert4keras' decoder): scores are summed in
float64 as the host loop does, a source keeps at most ``topk`` beams, fewer when
fewer are allowed or when ended beams are dropped.

The trie constraint is an automaton on device (``Trie.to_csr``): every beam
carries its node; the allowed ids of a node are one CSR segment, scattered into the
step's mask, and the child of the chosen id is found by a binary search over the
sorted ``node * vocab + label`` edge keys. A node without continuation (or a
prefix that left the trie) may only take ``end_id``, as in the host loop.

The loop is a graph ``tf.while_loop``; with ``jit_steps`` each cached model step is
its own XLA program (compiled once per shape class), so a first call costs a trace
and one small compile rather than compiling the whole loop.

:func:`sample_program` is ``random_sample`` in the same form: top-k / top-p
filtering (:func:`filter_probas`) and an inverse-CDF draw with stateless random ops
seeded by ``(seed, step)``.

The programs have no Python state, so they can be traced into a SavedModel
(:meth:`Generator.export`).
"""
import numpy as np
import tensorflow as tf

from kerasnlp_plus import masks

NEG_INF = float("-inf")


def trie_tensors(trie, vocab_size):
    """``(offsets, labels, children, edge_keys)`` tensors of ``trie`` for the loop.
    A key holding an id outside the vocabulary is an error (the host loop raises
    when a search reaches it; here it is found before decoding), naming the id and
    the key prefix before it."""
    offsets, labels, children = trie.to_csr()
    n_nodes = len(offsets) - 1
    edge_node = np.repeat(np.arange(n_nodes, dtype=np.int64), np.diff(offsets))
    bad = np.flatnonzero((labels < 0) | (labels >= vocab_size))
    if bad.size:
        parent_edge = np.full(n_nodes, -1, np.int64)
        parent_edge[children] = np.arange(len(children))
        prefix, node = [], int(edge_node[bad[0]])
        while node != 0:  # walk up to the root
            edge = parent_edge[node]
            prefix.append(int(labels[edge]))
            node = int(edge_node[edge])
        raise ValueError(
            f"trie holds token id {int(labels[bad[0]])} after the prefix {prefix[::-1]}, outside the "
            f"vocabulary [0, {vocab_size}) ({bad.size} such edge(s)): were its keys encoded with another vocabulary?"
        )
    keys = edge_node * vocab_size + labels
    return (
        tf.constant(offsets, tf.int32),
        tf.constant(labels, tf.int32),
        tf.constant(children, tf.int32),
        tf.constant(keys, tf.int64),
    )


def _allowed_mask(node, offsets, labels, vocab_size, end_id, children=None, node_scores=None):
    """Bool ``(rows, vocab)``: the ids node ``node[r]`` may take (only ``end_id``
    for a leaf or for ``node < 0``, a prefix outside the trie). With
    ``node_scores`` (float64 ``(rows, nodes)``) also the look-ahead adjustment
    ``(rows, vocab)``: ``node_scores[r, child] - node_scores[r, node]`` on each edge,
    0 elsewhere."""
    safe = tf.maximum(node, 0)
    start = tf.gather(offsets, safe)
    degree = tf.where(node >= 0, tf.gather(offsets, safe + 1) - start, 0)
    edges = tf.ragged.range(start, start + degree)
    rows = tf.cast(edges.value_rowids(), tf.int32)
    ids = tf.gather(labels, edges.flat_values)
    n_rows = tf.shape(node)[0]
    mask = tf.scatter_nd(
        tf.stack([rows, ids], axis=1), tf.ones_like(rows, tf.bool), tf.stack([n_rows, vocab_size])
    )
    leaf = tf.logical_and((degree == 0)[:, None], tf.range(vocab_size)[None, :] == end_id)
    mask = tf.logical_or(mask, leaf)
    if node_scores is None:
        return mask
    child = tf.gather(children, edges.flat_values)
    here = tf.gather(node_scores, safe, batch_dims=1)
    gain = tf.gather_nd(node_scores, tf.stack([rows, child], axis=1)) - tf.gather(here, rows)
    adjust = tf.scatter_nd(tf.stack([rows, ids], axis=1), gain, tf.stack([n_rows, vocab_size]))
    return mask, adjust


def _top_k(x, k, width=256):
    """``tf.math.top_k(x, k)`` (sorted; the same values, ids and ties: a higher value
    first, then the lower id), found faster on wide rows: the row's blocks of
    ``width`` are ranked by their maxima and only the best ``k`` blocks, in id
    order, are searched. Exact: an element outside those blocks is beaten by each
    chosen block's maximum (higher, or equal with a lower id), ``k`` elements in all.
    TensorFlow's top_k visits every element through a heap: ~0.8 ms for 24 x 21,128
    on this machine, ~0.3 ms this way."""
    n = x.shape[-1]
    chunks = None if n is None else -(-n // width)
    if chunks is None or chunks <= k:
        return tf.math.top_k(x, k=k, sorted=True)
    rows = tf.shape(x)[0]
    padded = tf.pad(x, [[0, 0], [0, chunks * width - n]], constant_values=float("-inf"))
    blocks = tf.reshape(padded, [rows, chunks, width])  # padding last: it loses every tie
    _, chosen = tf.math.top_k(tf.reduce_max(blocks, axis=2), k=k, sorted=True)
    chosen = tf.sort(chosen, axis=1)  # id order, so the second pass breaks ties as top_k does
    values, pos = tf.math.top_k(tf.reshape(tf.gather(blocks, chosen, batch_dims=1), [rows, k * width]), k=k,
                                sorted=True)
    return values, tf.gather(chosen, pos // width, batch_dims=1) * width + pos % width


def _child(node, token, children, edge_keys, vocab_size):
    """Node reached from ``node`` through ``token`` (-1: not in the trie)."""
    query = tf.cast(tf.maximum(node, 0), tf.int64) * vocab_size + tf.cast(token, tf.int64)
    n_edges = tf.shape(edge_keys)[0]
    flat = tf.reshape(query, [-1])
    pos = tf.searchsorted(edge_keys, flat, side="left")
    pos_safe = tf.minimum(pos, tf.maximum(n_edges - 1, 0))
    found = tf.logical_and(pos < n_edges, tf.gather(edge_keys, pos_safe) == flat)
    found = tf.logical_and(found, tf.reshape(node, [-1]) >= 0)
    child = tf.where(found, tf.gather(children, pos_safe), -1)
    return tf.reshape(child, tf.shape(node))


def _decoder(generator, copies, temperature, rtype, jit_steps):
    """``start(token_ids, segment_ids) -> (scores, cache, step)``: the
    prefill of the sources and the cached step shared by the programs; ``copies``
    rows (beams or samples) per source, ``rtype`` ``'logits'`` (log-probabilities)
    or ``'probas'``. ``step(tokens, parents, cache, column) -> (scores, cache)``
    gathers the rows by ``parents`` (None: rows stay in place, no gather on the
    lean cache) and feeds ``tokens`` at output column ``column``.
    ``scores`` are the first generated token's, one row per copy."""
    model = generator.model
    K = int(copies)
    maxlen = generator.maxlen
    first = [] if generator.start_id is None else [generator.start_id]
    n_first = len(first)

    lean = generator.lean_cache
    n_slots = n_first + maxlen  # generated slots of the lean cache
    segment_id = generator.segment_id

    def full_step(tokens, parents, cache, column, positions, copy_context, output_kernel, source_valid, source_length):
        if parents is None:
            parents = tf.range(tf.shape(tokens)[0])
        return generator._step(
            tokens, parents, cache, source_length + column, positions, source_valid, source_length,
            temperature, rtype, copy_context, output_kernel,
        )

    # copy_context: the same for every row of a source, and parents stay within a
    # source's rows, so it needs no gather.
    def lean_step(tokens, parents, cache, column, positions, copy_context, output_kernel, source_cache, source_valid):
        if parents is not None:  # the generated slots only
            cache = [tuple(tf.gather(t, parents, axis=0) for t in layer) for layer in cache]
        generated = tf.broadcast_to(tf.range(n_slots)[None] <= column, [tf.shape(tokens)[0], n_slots])
        visible = tf.concat([source_valid, generated], axis=1)[:, None, :]
        hidden, cache = model.call_with_cache(
            tokens[:, None], tf.fill([tf.shape(tokens)[0], 1], segment_id), cache, column, visible,
            position_ids=positions[:, None], return_hidden=True, source_cache=source_cache,
        )
        return generator._scores(hidden[:, 0], temperature, rtype, copy_context, tokens, output_kernel), cache

    raw_step = lean_step if lean else full_step
    if jit_steps:
        raw_step = tf.function(raw_step, jit_compile=True, autograph=False)

    def start(token_ids, segment_ids):
        batch, length = tf.shape(token_ids)[0], tf.shape(token_ids)[1]
        rows = batch * K
        total = length + n_first + maxlen
        valid = tf.not_equal(token_ids, 0)
        lengths = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)

        # --- prefill: the sources once ---------------------------------------------------
        rank = masks.application_ranks(model.application, token_ids, segment_ids)
        mask = masks.visibility(rank, rank, valid)
        positions = tf.broadcast_to(tf.range(length)[None], tf.shape(token_ids))
        if lean:
            source_cache = model.init_cache(batch, length)
            last, hidden, source_cache = generator._prefill_forward(token_ids, segment_ids, positions, source_cache,
                                                                    mask, lengths - 1)
            # Keys and values apart, per layer, head-major (MultiHeadAttention's lean
            # step): the steps read them in place.
            source_cache = [tuple(tf.unstack(layer, axis=0))
                            for layer in tf.unstack(tf.transpose(source_cache, [0, 2, 1, 4, 3, 5]))]
            cache = [tuple(tf.unstack(layer, axis=0))
                     for layer in tf.unstack(tf.transpose(model.init_cache(rows, n_slots), [0, 2, 1, 4, 3, 5]))]
            context = (source_cache, tf.repeat(valid, K, axis=0))
        else:  # every row holds a copy of its source's slots
            mask = tf.pad(mask, [[0, 0], [0, 0], [0, total - length]], constant_values=False)
            cache = model.init_cache(batch, total)
            last, hidden, cache = generator._prefill_forward(token_ids, segment_ids, positions, cache, mask,
                                                             lengths - 1)
            cache = tf.repeat(cache, K, axis=1)
            context = (tf.repeat(tf.pad(valid, [[0, 0], [0, total - length]]), K, axis=0), length)
        # E^T once per call: every step's head reads it (see Transformer.mlm_head).
        output_kernel = model.mlm_output_kernel()
        source_context = generator._copy_context(hidden, token_ids, segment_ids, 1)  # () without a copy mechanism
        scores = generator._scores(last, temperature, rtype, source_context,
                                   tf.gather(token_ids, lengths - 1, batch_dims=1), output_kernel)
        row_lengths = tf.repeat(lengths, K)
        copy_context = tuple(tf.repeat(t, K, axis=0) for t in source_context)

        def step(tokens, parents, cache, column):
            return raw_step(tokens, parents, cache, column, row_lengths + column, copy_context, output_kernel,
                            *context)

        if first:
            scores, cache = step(tf.fill([rows], first[0]), tf.range(rows), cache, 0)
        else:
            scores = tf.repeat(scores, K, axis=0)
        return scores, cache, step

    return start


def beam_program(generator, topk, min_ends, temperature, with_trie, jit_steps=False, with_node_scores=False):
    """The traceable beam search of ``generator`` (see the module docs).

    ``jit_steps``: compile each model step on its own with XLA (the loop itself
    runs as a graph); otherwise the steps are inlined.

    With ``generator.lean_cache`` the sources' keys/values are computed and kept
    once per source, and only the generated slots (``batch * topk`` rows) are
    gathered by beam parent each step; otherwise every beam has a full copy.
    ``with_node_scores``: the program takes one more input, float64 ``(batch,
    nodes)`` scores over the trie's nodes; a step from node ``n`` to ``c`` adds
    ``scores[b, c] - scores[b, n]`` to the beam's score (look-ahead rescoring: the
    sum telescopes to ``scores[b, final] - scores[b, root]``, but the search sees
    it from the first step).
    """
    K, V = int(topk), generator.vocab_size
    end_id, maxlen, minlen = generator.end_id, generator.maxlen, generator.minlen
    first = [] if generator.start_id is None else [generator.start_id]
    n_first = len(first)
    start = _decoder(generator, K, temperature, "logits", jit_steps)

    def program(token_ids, segment_ids, max_steps, *trie):
        if with_trie:
            offsets, labels, children, edge_keys = trie[:4]
        node_scores = tf.repeat(tf.cast(trie[4], tf.float64), K, axis=0) if with_node_scores else None
        batch = tf.shape(token_ids)[0]
        max_steps = tf.clip_by_value(tf.cast(max_steps, tf.int32), 1, maxlen)
        logits, cache, step = start(token_ids, segment_ids)

        # --- the loop -----------------------------------------------------------------
        slot = tf.range(K)[None, :]
        column = tf.range(maxlen)[None, None, :]
        state = dict(
            i=tf.constant(0),
            logits=logits,
            cache=cache,
            ids=tf.zeros([batch, K, maxlen], tf.int32),
            scores=tf.concat([tf.zeros([batch, 1], tf.float64), tf.fill([batch, K - 1], tf.constant(NEG_INF, tf.float64))], 1)
            if K > 1 else tf.zeros([batch, 1], tf.float64),
            counts=tf.fill([batch, K], int(n_first and first[0] == end_id)),
            node=tf.zeros([batch, K], tf.int32),
            k=tf.fill([batch], K),
            done=tf.zeros([batch], tf.bool),
            result=tf.zeros([batch, maxlen], tf.int32),
            result_len=tf.zeros([batch], tf.int32),
            result_score=tf.zeros([batch], tf.float64),
        )

        def cond(s):
            return tf.logical_and(s["i"] < max_steps, tf.logical_not(tf.reduce_all(s["done"])))

        def body(s):
            i = s["i"]
            logp = s["logits"]
            if with_trie:
                allowed = _allowed_mask(
                    tf.reshape(s["node"], [-1]), offsets, labels, V, end_id, children, node_scores
                )
                if with_node_scores:
                    allowed, adjust = allowed
            if with_node_scores:  # the adjustment is per id: rank all K x V candidates
                cand = s["scores"][:, :, None] + tf.reshape(tf.cast(logp, tf.float64), [batch, K, V])
                cand = cand + tf.reshape(adjust, [batch, K, V])  # the host loop's order of additions
                cand = tf.where(tf.reshape(allowed, [batch, K, V]), cand, NEG_INF)
                values, flat = _top_k(tf.reshape(cand, [batch, K * V]), K)
                parent, token = flat // V, flat % V
            else:
                # The best K of a source's K x V candidates lie among each beam's best K
                # ids (a beam adds one score to all its ids), so rank those K x K only.
                # Same picks and ties as ranking all K x V: top_k prefers the lower
                # index, i.e. the lower beam, then the lower id, at both stages.
                if with_trie:
                    logp = tf.where(allowed, logp, tf.constant(NEG_INF, logp.dtype))
                # A beam wider than the vocabulary keeps all V of each row's ids.
                R = min(K, V)
                row_values, row_ids = _top_k(logp, R)  # (rows, R)
                cand = s["scores"][:, :, None] + tf.reshape(tf.cast(row_values, tf.float64), [batch, K, R])
                values, pick = tf.math.top_k(tf.reshape(cand, [batch, K * R]), k=K, sorted=True)
                parent = pick // R
                token = tf.gather(tf.reshape(row_ids, [batch, K * R]), pick, batch_dims=1)
            selected = tf.logical_and(slot < s["k"][:, None], values > NEG_INF)
            ids = tf.gather(s["ids"], parent, batch_dims=1)
            ids = tf.where(column == i, token[:, :, None], ids)
            counts = tf.gather(s["counts"], parent, batch_dims=1) + tf.cast(token == end_id, tf.int32)
            node = tf.gather(s["node"], parent, batch_dims=1)
            if with_trie:
                node = _child(node, token, children, edge_keys, V)
            finishing = tf.logical_and(token == end_id, counts >= min_ends)
            checked = i + 1 + n_first >= minlen
            # top_k is sorted, so slot 0 is bert4keras' best (argmax) candidate.
            returns = tf.logical_and(checked, tf.logical_and(finishing[:, 0], selected[:, 0]))
            keep = tf.logical_and(selected, tf.logical_or(tf.logical_not(checked), tf.logical_not(finishing)))
            # Survivors first, in score order (a stable sort of their slots).
            order = tf.argsort(tf.where(keep, slot, slot + K), axis=1, stable=True)
            take = lambda x: tf.gather(x, order, batch_dims=1)  # noqa: E731
            k = tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)
            alive = slot < k[:, None]
            newly = tf.logical_and(returns, tf.logical_not(s["done"]))
            out = dict(
                i=i + 1,
                ids=take(ids),
                scores=tf.where(alive, take(values), tf.constant(NEG_INF, tf.float64)),
                counts=take(counts),
                node=take(node),
                k=k,
                done=tf.logical_or(s["done"], returns),
                result=tf.where(newly[:, None], ids[:, 0], s["result"]),
                result_len=tf.where(newly, i + 1, s["result_len"]),
                result_score=tf.where(newly, values[:, 0], s["result_score"]),
            )
            parents = tf.where(alive, take(parent), slot) + (tf.range(batch) * K)[:, None]
            tokens = tf.reshape(tf.gather(out["ids"], i, axis=2), [-1])
            more = tf.logical_and(i + 1 < max_steps, tf.logical_not(tf.reduce_all(out["done"])))

            def advance():
                return step(tokens, tf.reshape(parents, [-1]), s["cache"], n_first + i)

            out["logits"], out["cache"] = tf.cond(more, advance, lambda: (s["logits"], s["cache"]))
            return (out,)

        (final,) = tf.while_loop(cond, body, (state,), maximum_iterations=maxlen)
        # Sources that never returned: the best beam after the last step.
        best = tf.argmax(final["scores"], axis=1, output_type=tf.int32)
        ran = final["i"]
        done = final["done"]
        ids = tf.where(done[:, None], final["result"], tf.gather(final["ids"], best, batch_dims=1))
        out_len = tf.where(done, final["result_len"], ran)
        scores = tf.where(done, final["result_score"], tf.gather(final["scores"], best, batch_dims=1))
        ids = tf.where(column[0] < out_len[:, None], ids, 0)
        if first:
            ids = tf.concat([tf.fill([batch, 1], first[0]), ids], axis=1)
        return ids, out_len + n_first, scores

    return program


def filter_probas(probas, topk, topp):
    """``(ids, probs)``: the candidates of each row of ``probas`` (float ``(rows,
    vocab)``) after top-k then top-p filtering, renormalized, in
    :func:`~kerasnlp_plus.generation.selection.sample_from`'s order of operations
    (``ids`` None: every id, in vocabulary order). Ids past the nucleus keep
    probability 0."""
    probas = probas / tf.reduce_sum(probas, axis=1, keepdims=True)
    if topk is None and topp is None:
        return None, probas
    vocab = probas.shape[1]
    # top-p needs the candidates sorted anyway; top_k sorts them descending
    probs, ids = tf.math.top_k(probas, k=min(int(topk), vocab) if topk is not None else vocab, sorted=True)
    probs = probs / tf.reduce_sum(probs, axis=1, keepdims=True)
    if topp is not None:
        reached = tf.math.cumsum(probs, axis=1) >= topp
        # past the nucleus: a previous candidate already reached topp (the first never is)
        past = tf.concat([tf.zeros_like(reached[:, :1]), reached[:, :-1]], axis=1)
        probs = tf.where(past, tf.zeros_like(probs), probs)
        probs = probs / tf.reduce_sum(probs, axis=1, keepdims=True)
    return ids, probs


def draw(ids, probs, seed):
    """One id per row from ``probs`` by inverse CDF with a stateless uniform draw
    (``seed``: int64 ``[2]``); an id of probability 0 is never drawn."""
    cdf = tf.math.cumsum(probs, axis=1)
    u = tf.random.stateless_uniform([tf.shape(probs)[0], 1], seed, dtype=probs.dtype)
    pick = tf.searchsorted(cdf, u * cdf[:, -1:], side="right")
    pick = tf.minimum(pick, tf.shape(probs)[1] - 1)[:, 0]  # guards a row whose cdf rounds below u
    return pick if ids is None else tf.gather(ids, pick, batch_dims=1)


def sample_program(generator, n, topk, topp, temperature, min_ends, with_trie, jit_steps=False):
    """The traceable ``random_sample`` of ``generator``: ``(token_ids, segment_ids,
    seed[, trie tensors]) -> (ids, lengths)``, ``n`` rows per source (row ``b * n +
    j`` is sample ``j`` of source ``b``), ``ids`` ``(rows, n_first + maxlen)``.

    Each row samples until it ends (``end_id``, ``min_ends`` of them, from
    ``minlen`` on) as the host loop does; step ``i`` draws with the stateless seed
    ``(seed, i)``, so one seed gives the same samples on every call.
    """
    V = generator.vocab_size
    end_id, maxlen, minlen = generator.end_id, generator.maxlen, generator.minlen
    first = [] if generator.start_id is None else [generator.start_id]
    n_first = len(first)
    start = _decoder(generator, n, temperature, "probas", jit_steps)

    def program(token_ids, segment_ids, seed, *trie):
        if with_trie:
            offsets, labels, children, edge_keys = trie
        probas, cache, step = start(token_ids, segment_ids)
        rows = tf.shape(token_ids)[0] * int(n)
        column = tf.range(maxlen)[None, :]
        seed = tf.cast(seed, tf.int64)
        state = dict(
            i=tf.constant(0),
            probas=probas,
            cache=cache,
            ids=tf.zeros([rows, maxlen], tf.int32),
            lengths=tf.zeros([rows], tf.int32),
            counts=tf.fill([rows], int(n_first and first[0] == end_id)),
            node=tf.zeros([rows], tf.int32),
            done=tf.zeros([rows], tf.bool),
        )

        def cond(s):
            return tf.logical_and(s["i"] < maxlen, tf.logical_not(tf.reduce_all(s["done"])))

        def body(s):
            i = s["i"]
            probas = s["probas"]
            if with_trie:
                allowed = _allowed_mask(s["node"], offsets, labels, V, end_id)
                probas = tf.where(allowed, probas, tf.zeros_like(probas))
            candidates, probs = filter_probas(probas, topk, topp)
            token = draw(candidates, probs, tf.stack([seed, tf.cast(i, tf.int64)]))
            live = tf.logical_not(s["done"])
            token = tf.where(live, token, 0)  # ended rows stop (and are fed 0, as on the host)
            counts = s["counts"] + tf.cast(tf.logical_and(live, token == end_id), tf.int32)
            ends = tf.logical_and(token == end_id, tf.logical_and(counts >= min_ends, i + 1 + n_first >= minlen))
            node = _child(s["node"], token, children, edge_keys, V) if with_trie else s["node"]
            out = dict(
                i=i + 1,
                ids=tf.where(tf.logical_and(column == i, live[:, None]), token[:, None], s["ids"]),
                lengths=tf.where(live, i + 1, s["lengths"]),
                counts=counts,
                node=node,
                done=tf.logical_or(s["done"], tf.logical_and(live, ends)),
            )
            more = tf.logical_and(i + 1 < maxlen, tf.logical_not(tf.reduce_all(out["done"])))

            def advance():
                return step(token, None, s["cache"], n_first + i)  # samples never change rows

            out["probas"], out["cache"] = tf.cond(more, advance, lambda: (s["probas"], s["cache"]))
            return (out,)

        (final,) = tf.while_loop(cond, body, (state,), maximum_iterations=maxlen)
        ids = final["ids"]
        if first:
            ids = tf.concat([tf.fill([rows, 1], first[0]), ids], axis=1)
        return ids, final["lengths"] + n_first

    return program
