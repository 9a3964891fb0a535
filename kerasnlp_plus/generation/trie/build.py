"""Building a trie's tables: how keys are encoded and the vectorised sort.

Token ids become Unicode code points so that a key is a ``str`` for marisa-trie
(:func:`ids_to_codes`). :func:`build_tables` turns the adds (one flat, ragged id array)
into the compiled tables of :class:`~kerasnlp_plus.generation.trie.Trie`: a stable sort of
the keys a few ids at a time (:func:`sort_rows`), the common prefix lengths of sorted
neighbours, and the per-node tables derived from those, with temporaries of a few
words per key. ``bench/trie.py`` measures the time and memory this takes.
"""
import ctypes
import itertools

import marisa_trie
import numpy as np

__all__ = [
    "MAX_TOKEN_ID", "KIND_STR", "KIND_PICKLE", "ids_to_codes", "codes_to_ids", "id_to_char", "char_to_id",
    "release_free_memory", "sort_rows", "build_tables",
]

# Token id i is stored as the code point i + 1 (0 is reserved as numpy's string
# padding); ids whose code point would fall into the UTF-16 surrogate block
# (U+D800..U+DFFF, not encodable) are shifted past it.
_SURROGATE_START = 0xD800
_SURROGATE_SIZE = 0x800
MAX_TOKEN_ID = 0x10FFFF - 1 - _SURROGATE_SIZE  # largest storable token id

# How a value is stored: UTF-8 text, or a pickle of anything else.
KIND_STR = 0
KIND_PICKLE = 1
_BATCH = 1 << 18  # strings converted between numpy and Python at a time
_SEGMENTS = 1 << 16  # value byte strings moved per vectorised step
_CHUNK = 1 << 24  # ids scanned per vectorised step (bounds index temporaries)
_LABEL_SHIFT = 21  # ids are < 2**21: (node << 21) | id sorts by node, then label


def ids_to_codes(ids):
    codes = np.add(ids, 1, dtype=np.uint32)
    if codes.size and codes.max() >= _SURROGATE_START:  # rare: skip the mask pass
        codes[codes >= _SURROGATE_START] += _SURROGATE_SIZE
    return codes


def codes_to_ids(codes):
    ids = codes.astype(np.int64) - 1
    ids[codes >= _SURROGATE_START + _SURROGATE_SIZE] -= _SURROGATE_SIZE
    return ids


def id_to_char(i):
    c = i + 1
    return chr(c + _SURROGATE_SIZE if c >= _SURROGATE_START else c)


def char_to_id(ch):
    c = ord(ch)
    return (c - _SURROGATE_SIZE if c >= _SURROGATE_START + _SURROGATE_SIZE else c) - 1


def release_free_memory():
    """Hand freed heap pages back to the OS (glibc only; best effort).

    Compiling allocates a few hundred MB of short-lived numpy/marisa buffers per
    million keys; glibc keeps such freed pages mapped, which would show up as
    resident memory of the process although nothing uses it any more.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _index_dtype(n):
    return np.int32 if n < 2**31 else np.int64


def _offset_dtype(top):
    """The stored dtype of an offset array whose largest entry is ``top``."""
    return np.uint32 if top < 2**32 else np.uint64


# Rows (keys) are ragged: row i is ids[starts[i] : starts[i] + lens[i]] of one
# flat id array, never a padded (rows x longest key) matrix.
def _pack(ids, starts, lens, rows, r, k, bits):
    """Ids ``r*k .. r*k+k-1`` of each of ``rows`` as one uint64: ``id + 1`` in
    ``bits``-bit fields, the first id highest, 0 past the end of the row.
    Comparing the words compares that slice of the rows lexicographically (a
    row that ends sorts before any continuation)."""
    s, ln = starts[rows], lens[rows]
    word = np.zeros(len(rows), np.uint64)
    for j in range(k):
        p = r * k + j
        ok = np.flatnonzero(ln > p)
        if not len(ok):
            break
        v = ids[s[ok] + p].astype(np.uint64)
        v += np.uint64(1)
        v <<= np.uint64(bits * (k - 1 - j))
        word[ok] |= v
    return word


def _first_diff_field(x, k, bits):
    """Index of the highest nonzero ``bits``-bit field of each (nonzero) word in ``x``
    among ``k`` fields: where two packed words first differ, given their xor."""
    j = np.zeros(len(x), np.int32)
    for t in range(1, k):
        j += x < np.uint64(1 << (bits * (k - t)))
    return j


def sort_rows(ids, starts, lens, bits):
    """Stable lexicographic sort of ragged rows.

    Returns ``order`` (row indices in sorted order, equal rows in insertion
    order), ``new`` (per sorted position: the row differs from the one before)
    and ``lcp`` (where ``new``, past position 0: the length of the common
    prefix with the row before). Rows are sorted by ``k`` ids at a time packed
    into one uint64 (see :func:`_pack`): all rows by their first ``k`` ids,
    then, round after round, only the runs still tied, each run by its next
    ``k`` ids, so the work is about the total length of the distinguishing
    prefixes and every temporary is a few words per row.
    """
    n = len(lens)
    ix = _index_dtype(n)
    k = 64 // bits
    word = _pack(ids, starts, lens, np.arange(n, dtype=ix), 0, k, bits)
    order = np.argsort(word, kind="stable").astype(ix)
    word = word[order]
    new = np.ones(n, bool)
    np.not_equal(word[1:], word[:-1], out=new[1:])
    lcp = np.zeros(n, np.int32)
    pos = np.flatnonzero(new[1:]) + 1
    lcp[pos] = _first_diff_field(word[pos - 1] ^ word[pos], k, bits)
    del word, pos
    act = np.arange(n, dtype=ix)  # sorted positions to refine: whole runs
    r = 1
    while len(act):
        run_start = new[act]
        single = run_start.copy()
        single[:-1] &= run_start[1:]
        rows = order[act]
        # A run still tied after r*k ids: all its rows have >= r*k ids, or all
        # have the same shorter length (equal rows: done).
        keep = ~single & (lens[rows] >= r * k)
        del run_start, single
        act, rows = act[keep], rows[keep]
        del keep
        if not len(act):
            break
        run = np.cumsum(new[act], dtype=ix)
        word = _pack(ids, starts, lens, rows, r, k, bits)
        perm = np.lexsort((word, run))  # stable: ties keep insertion order
        order[act] = rows[perm]
        word = word[perm]
        del rows, perm
        split = word[1:] != word[:-1]
        split &= run[1:] == run[:-1]
        pos = np.flatnonzero(split) + 1
        del split, run
        new[act[pos]] = True
        lcp[act[pos]] = r * k + _first_diff_field(word[pos - 1] ^ word[pos], k, bits)
        del word, pos
        r += 1
    return order, new, lcp


def _previous_smaller(a):
    """``prev[i]`` = the largest ``j < i`` with ``a[j] < a[i]``, for every
    ``i >= 1``; ``a[0]`` must be smaller than every other element.

    Pointer jumping: ``prev[i]`` starts at ``i - 1`` and, while ``a[prev[i]] >=
    a[i]``, moves to ``prev[prev[i]]`` (everything between stays ``>= a[i]``);
    all elements move at once, so a few dozen vectorised steps suffice.
    """
    n = len(a)
    ix = _index_dtype(n)
    prev = np.arange(-1, n - 1, dtype=ix)
    prev[:1] = 0
    act = np.arange(1, n, dtype=ix)
    while len(act):
        p = prev[act]
        move = a[p] >= a[act]
        act, p = act[move], p[move]
        prev[act] = prev[p]
    return prev


def _row_strings(ids, starts, rows, lengths):
    """The marisa key (``str``) of the first ``lengths[i]`` ids of each row."""
    lengths = lengths.astype(np.int64)
    ends = np.cumsum(lengths)
    begs = ends - lengths
    total = int(ends[-1]) if len(ends) else 0
    idx = np.repeat(starts[rows] - begs, lengths) + np.arange(total)
    text = ids_to_codes(ids[idx]).tobytes().decode("utf-32-le")
    return [text[a:b] for a, b in zip(begs.tolist(), ends.tolist())]


def _gather_segments(src, starts, lens, dest_pos, out):
    """Copy ``src[starts[i]:starts[i] + lens[i]]`` to ``out`` at ``dest_pos[i]``
    (the running sum of ``lens``), vectorised ``_SEGMENTS`` segments at a time
    so that the byte-index arrays stay small."""
    src = np.frombuffer(src, np.uint8)
    dst = np.frombuffer(out, np.uint8)
    for c0 in range(0, len(starts), _SEGMENTS):
        c1 = c0 + _SEGMENTS
        s, n, d = starts[c0:c1], lens[c0:c1], dest_pos[c0:c1]
        total = int(n.sum())
        if total:
            idx = np.repeat(s - (d - d[0]), n) + np.arange(total)
            dst[d[0] : d[0] + total] = src[idx]


def build_tables(ids, lens, vlens, kinds, blob):
    """Compile the adds into the tables of a :class:`Trie` (the keyword arguments
    of ``Trie._set_state``): row i is ``ids[starts[i]:starts[i] + lens[i]]``, with
    value length ``vlens[i]`` (-1: no value) and kind ``kinds[i]`` in ``blob``.

    Works on the flat (ragged) id array throughout: a stable sort of the
    rows, the common prefix lengths of sorted neighbours, and per-prefix
    tables derived from those, with temporaries of a few words per row.
    """
    n_adds = len(lens)
    if n_adds == 0:
        return dict(
            m=marisa_trie.Trie(),
            n_keys=0,
            used_ids=np.zeros(0, np.int32),
            child_off=np.zeros(1, np.uint32),
            labels=np.zeros(0, np.uint16),
            is_key_bits=np.zeros(0, np.uint8),
            val_off=np.zeros(1, np.uint32),
            val_pos=np.zeros(1, np.uint32),
            val_kinds=None,
            blob=b"",
        )
    ix = _index_dtype(n_adds)
    starts = np.zeros(n_adds, np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    top = int(ids.max()) if len(ids) else 0
    used = np.zeros(top + 1, bool)
    for c in range(0, len(ids), _CHUNK):
        used[ids[c : c + _CHUNK]] = True
    used_ids = np.flatnonzero(used)
    del used

    # Sorted rows; kpos[k] is the sorted position of distinct key k's first
    # add, krow[k] that add, klen[k] its length, lcp[k] (k >= 1) the common
    # prefix length of keys k - 1 and k.
    order, new, lcp = sort_rows(ids, starts, lens, 16 if top + 1 < 1 << 16 else 21)
    kpos = np.flatnonzero(new).astype(ix)
    del new
    lcp = lcp[kpos]
    n_keys = len(kpos)
    krow = order[kpos]
    klen = lens[krow]

    # Between sorted neighbours a = key k-1 and b = key k with common
    # prefix length d, the node b[:d] has children b[d] and a[d] (none when
    # a ends there: a itself is that node). Every branching node and every
    # child label of a stored node shows up this way. The node is named by
    # (f, d): f = the first key that starts with it, the largest j < k with
    # lcp[j] < d (key 0 when none); it is key f itself when len(key f) == d.
    lcp[0] = -1
    ev_f = _previous_smaller(lcp)[1:]
    ev_d = lcp[1:]
    ev_key = klen[ev_f] == ev_d
    lab_b = ids[starts[krow[1:]] + ev_d]
    has_a = klen[:-1] > ev_d
    lab_a = ids[starts[krow[:-1][has_a]] + ev_d[has_a]]
    base = int(lcp.max()) + 1
    ext_code = ev_f[~ev_key].astype(np.int64) * base + ev_d[~ev_key]
    ext = np.unique(ext_code)  # branching prefixes that are not keys
    ext_f, ext_d = (ext // base).astype(ix), (ext % base).astype(np.int32)
    del lcp

    def batches():  # lists of Python str, the marisa key of each stored node
        for rows, lengths in ((krow, klen), (None, ext_d)):
            for i in range(0, len(lengths), _BATCH):
                r = krow[ext_f[i : i + _BATCH]] if rows is None else rows[i : i + _BATCH]
                yield _row_strings(ids, starts, r, lengths[i : i + _BATCH])

    m = marisa_trie.Trie(itertools.chain.from_iterable(batches()))
    n_nodes = len(m)
    # marisa numbers its strings itself: ask it for each one's id.
    mids = np.fromiter(
        itertools.chain.from_iterable(map(m.key_id, b) for b in batches()),
        dtype=np.int64,
        count=n_keys + len(ext),
    )
    key_mid, ext_mid = mids[:n_keys], mids[n_keys:]
    ev_mid = np.empty(len(ev_f), np.int64)
    ev_mid[ev_key] = key_mid[ev_f[ev_key]]
    ev_mid[~ev_key] = ext_mid[np.searchsorted(ext, ext_code)]
    del ext, ext_f, ext_d, ext_code, ext_mid, ev_f, ev_d, ev_key, krow, klen

    # Child table in marisa id order, labels sorted within each node.
    pairs = np.concatenate(
        [
            (ev_mid << _LABEL_SHIFT) | lab_b,
            (ev_mid[has_a] << _LABEL_SHIFT) | lab_a,
        ]
    )
    del ev_mid, lab_a, lab_b, has_a
    pairs.sort()
    keep = np.ones(len(pairs), bool)
    np.not_equal(pairs[1:], pairs[:-1], out=keep[1:])
    pairs = pairs[keep]
    del keep
    # Final tables are made in their stored (narrowest) dtypes right away.
    child_off = np.zeros(n_nodes + 1, _offset_dtype(len(pairs)))
    np.cumsum(np.bincount(pairs >> _LABEL_SHIFT, minlength=n_nodes), out=child_off[1:])
    label_ids = (pairs & ((1 << _LABEL_SHIFT) - 1)).astype(np.int32)
    del pairs

    is_key = np.zeros(n_nodes, bool)
    is_key[key_mid] = True

    # Values grouped by key (marisa id order), insertion order within a key
    # (the sort is stable): the sorted positions of each key, keys taken in
    # marisa id order.
    kcount = np.diff(np.append(kpos, n_adds))
    kperm = np.argsort(key_mid)
    cnt = kcount[kperm]
    pos = np.repeat(kpos[kperm] - (np.cumsum(cnt) - cnt), cnt) + np.arange(n_adds, dtype=ix)
    adds = order[pos]
    del pos, cnt, kperm, kcount
    val_counts = np.zeros(n_nodes, ix)
    val_counts[key_mid] = np.add.reduceat(vlens[order] >= 0, kpos, dtype=ix)
    del order, kpos
    vorder = adds[vlens[adds] >= 0]  # adds with a value, in stored order
    del adds
    val_off = np.zeros(n_nodes + 1, _offset_dtype(len(vorder)))
    np.cumsum(val_counts, out=val_off[1:])
    del val_counts
    v_lens = vlens[vorder]
    val_pos = np.zeros(len(vorder) + 1, _offset_dtype(int(v_lens.sum(dtype=np.int64))))
    np.cumsum(v_lens, out=val_pos[1:])
    v_kinds = kinds[vorder]
    if not len(vorder) or np.array_equal(vorder, np.flatnonzero(vlens >= 0)):
        out = bytes(blob)
    else:
        sizes = np.maximum(vlens, 0).astype(np.int64)
        v_starts = (np.cumsum(sizes) - sizes)[vorder]
        del sizes
        out = bytearray(int(val_pos[-1]))
        _gather_segments(blob, v_starts, v_lens, val_pos[:-1], out)
        del v_starts

    return dict(
        m=m,
        n_keys=n_keys,
        used_ids=used_ids,
        child_off=child_off,
        labels=label_ids,
        is_key_bits=np.packbits(is_key),
        val_off=val_off,
        val_pos=val_pos,
        val_kinds=v_kinds if v_kinds.any() else None,
        blob=out,
    )
