"""A compact prefix tree over token-id sequences, for constrained decoding.

A seq2seq model that must answer with something that exists in a knowledge base
(KgCLUE: "subject [SEP] predicate [SEP]" -> objects; GENRE-style entity linking)
is decoded under a prefix tree: at every step only the token ids that extend the
current output towards some stored key are allowed. :class:`Trie` stores the keys
(sequences of ints) and per-key values, and answers ``next_ones(prefix)``.

Layout (why it is small). A nested-dict trie costs hundreds of bytes per *node*
(the KgCLUE blog post needed ~30 GB for 20.6M triples). Here:

* each token id is mapped to one Unicode code point (``id + 1``, skipping the
  surrogate block), so a key is a short ``str`` and string prefixes are exactly
  id prefixes;
* a `marisa-trie <https://github.com/pytries/marisa-trie>`_ (a succinct, LOUDS
  based trie in C++) stores every key plus every *branching* prefix (a prefix
  with two or more distinct next ids). That is at most about twice the number of
  keys, and because all of them are prefixes of keys, the marisa structure is
  barely larger than for the keys alone;
* the allowed next ids of each stored node are kept in one CSR table (an offset
  array indexed by marisa's node id plus one flat label array);
* a prefix that is not stored is either absent or inside a non-branching chain,
  where exactly one next id exists; it is read from the first stored string under
  that prefix (one marisa predictive-search step);
* values are encoded once (``str`` as UTF-8, anything else pickled) into one
  byte buffer, ordered by key, with one offset array.

Lifecycle. ``add`` only appends to compact buffers (ids as uint16 while they fit,
the value bytes in one buffer, 9 bytes per add besides). The first query
(``next_ones``, ``get``, ``in``, ``len``, ``keys``, ``save``, ...) or an explicit
:meth:`Trie.compile` freezes the buffers into the structure above, vectorised with
numpy on the flat id array (keys are never padded to a common length): a stable
sort of the keys a few ids at a time, the common prefix lengths of sorted
neighbours, and the per-node tables derived from those. Measured on 20.6M
KgCLUE-shaped keys (``examples/kgclue_qa.py --trie-benchmark 20600000``): the
pending adds take ~95 bytes per key, compiling adds a transient ~165 bytes per
key on top (process peak 5.6 GiB), ~4 us of wall time per key on a shared 2-core
machine. Adding after that is allowed: the next query rebuilds everything (old
content plus the new keys), so add in batches, not one key between queries.

Measured with ``bench/trie.py`` on 1M KgCLUE-shaped keys (13 ids, an 8-character
object each): about 54-56 bytes resident per key including the values, ~2-6 us per
``next_ones`` call, ~4 us of CPU per key to build.

Example:

>>> trie = Trie()
>>> trie.add([5, 7, 102, 9, 102], "object A")
>>> trie.add([5, 7, 102, 9, 102], "object B")
>>> trie.add([5, 8, 102, 3, 102])
>>> trie.next_ones([5]).tolist()
[7, 8]
>>> trie.next_ones([5, 7]).tolist()
[102]
>>> trie.next_ones([6]).tolist()
[]
>>> trie.get([5, 7, 102, 9, 102])
['object A', 'object B']
>>> trie.get([5, 8, 102, 3, 102])
[]
>>> trie.get([5, 8], "absent")
'absent'
>>> [5, 8, 102, 3, 102] in trie, [5, 8] in trie, len(trie)
(True, False, 2)
"""

import array
import ctypes
import errno
import io
import itertools
import json
import os
import pickle
import struct
import zlib
from collections.abc import Mapping

import marisa_trie
import numpy as np

from kerasnlp_plus.utils import atomic_write

__all__ = ["Trie", "MAX_TOKEN_ID"]

# Token id i is stored as the code point i + 1 (0 is reserved as numpy's string
# padding); ids whose code point would fall into the UTF-16 surrogate block
# (U+D800..U+DFFF, not encodable) are shifted past it.
_SURROGATE_START = 0xD800
_SURROGATE_SIZE = 0x800
MAX_TOKEN_ID = 0x10FFFF - 1 - _SURROGATE_SIZE  # largest storable token id

_MAGIC = b"KNPTRIE1"
_FORMAT_VERSION = 1
_KIND_STR = 0
_KIND_PICKLE = 1
_BATCH = 1 << 18  # strings converted between numpy and Python at a time
_SEGMENTS = 1 << 16  # value byte strings moved per vectorised step
_CHUNK = 1 << 24  # ids scanned per vectorised step (bounds index temporaries)
_LABEL_SHIFT = 21  # ids are < 2**21: (node << 21) | id sorts by node, then label


def _ids_to_codes(ids):
    codes = np.add(ids, 1, dtype=np.uint32)
    if codes.size and codes.max() >= _SURROGATE_START:  # rare: skip the mask pass
        codes[codes >= _SURROGATE_START] += _SURROGATE_SIZE
    return codes


def _codes_to_ids(codes):
    ids = codes.astype(np.int64) - 1
    ids[codes >= _SURROGATE_START + _SURROGATE_SIZE] -= _SURROGATE_SIZE
    return ids


def _id_to_char(i):
    c = i + 1
    return chr(c + _SURROGATE_SIZE if c >= _SURROGATE_START else c)


def _char_to_id(ch):
    c = ord(ch)
    return (c - _SURROGATE_SIZE if c >= _SURROGATE_START + _SURROGATE_SIZE else c) - 1


def _release_free_memory():
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


def _sort_rows(ids, starts, lens, bits):
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
    text = _ids_to_codes(ids[idx]).tobytes().decode("utf-32-le")
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


def _read_only(a):
    a.flags.writeable = False
    return a


class Trie:
    """Prefix tree over sequences of token ids with values per key.

    Keys are sequences of non-negative ints (lists, tuples or 1-D numpy arrays,
    ids up to :data:`MAX_TOKEN_ID`); the empty sequence is a valid key. Each
    ``add(key, value)`` appends ``value`` to the key's values, so a key can hold
    several values (kept in insertion order, duplicates included);
    ``add(key)`` / ``value=None`` registers the key without a value. Values are
    ``str`` (stored as UTF-8) or any picklable object.

    Queries compile the trie first if keys were added since the last compile;
    see the module docstring for the layout and costs.

    >>> trie = Trie.from_iterable([([1, 2, 3], "x"), ([1, 2, 4], "y"), [1, 5]])
    >>> trie.next_ones([]).tolist(), trie.next_ones([1]).tolist()
    ([1], [2, 5])
    >>> trie.next_ones([1, 2]).tolist(), trie.next_ones([1, 2, 3]).tolist()
    ([3, 4], [])
    >>> trie.has_prefix([1, 2]), trie.has_prefix([2])
    (True, False)
    >>> sorted(trie.keys())
    [[1, 2, 3], [1, 2, 4], [1, 5]]
    >>> sorted(trie.keys([1, 2]))
    [[1, 2, 3], [1, 2, 4]]
    """

    def __init__(self):
        self._reset_pending()
        self._m = None  # marisa_trie.Trie of stored nodes (compiled state)
        self._n_keys = 0
        self._dirty = True  # pending adds not yet compiled (an empty trie too)

    # ------------------------------------------------------------------ build
    def _reset_pending(self):
        # Ids as uint16 while they fit (a BERT vocab does), widened to uint32
        # on the first larger id; unsigned, so negative ids fail on extend.
        self._p_ids = array.array("H")
        self._p_lens = array.array("i")
        self._p_vlens = array.array("i")  # -1: added without a value
        self._p_kinds = bytearray()
        self._p_blob = bytearray()

    def add(self, ids, value=None):
        """Add key ``ids`` (a sequence of ints) and, unless None, one ``value``.

        >>> t = Trie(); t.add([3, 1], "a"); t.add((3, 1), {"b": 1}); t.get([3, 1])
        ['a', {'b': 1}]
        """
        if not isinstance(ids, (list, tuple)):
            ids = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        buf = self._p_ids
        n0 = len(buf)
        try:
            try:
                buf.extend(ids)
            except OverflowError:
                del buf[n0:]
                if buf.typecode != "H" or min(ids) < 0:
                    raise
                buf = self._p_ids = array.array("I", buf)  # once: ids above 65535
                buf.extend(ids)
            if buf.typecode == "I" and ids and max(ids) > MAX_TOKEN_ID:
                raise OverflowError
        except (OverflowError, TypeError):
            del buf[n0:]
            raise ValueError(
                f"a key must be a sequence of ints in [0, {MAX_TOKEN_ID}], got {ids!r}"
            ) from None
        if value is None:
            self._p_vlens.append(-1)
            self._p_kinds.append(_KIND_STR)
        else:
            if type(value) is str:
                data = value.encode("utf-8")
                self._p_kinds.append(_KIND_STR)
            else:
                data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
                self._p_kinds.append(_KIND_PICKLE)
            self._p_blob += data
            self._p_vlens.append(len(data))
        self._p_lens.append(len(ids))
        self._dirty = True

    def update(self, iterable):
        """Add every item of ``iterable``: a key, or a ``(key, value)`` pair;
        a mapping adds its ``(key, value)`` items.

        An item is taken as a pair when it has two elements and the first is
        itself a sequence (a key of two ids, ``(5, 7)``, stays a key).
        """
        if isinstance(iterable, Mapping):
            iterable = iterable.items()
        add = self.add
        for item in iterable:
            if (
                isinstance(item, (tuple, list))
                and len(item) == 2
                and not isinstance(item[0], (int, np.integer))
            ):
                add(item[0], item[1])
            else:
                add(item)
        return self

    @classmethod
    def from_iterable(cls, iterable):
        """Build and compile a trie from keys and/or ``(key, value)`` pairs."""
        trie = cls()
        trie.update(iterable)
        trie.compile()
        return trie

    def compile(self):
        """Freeze pending adds into the compact structure (no-op when clean).

        Called implicitly by every query; call it explicitly to control when
        the cost (about 4 CPU-seconds per million keys) is paid.
        """
        if not self._dirty:
            return self
        codes, lens, vlens, kinds, blob = self._collect()
        self._build(codes, lens, vlens, kinds, blob)
        self._reset_pending()
        self._dirty = False
        _release_free_memory()
        return self

    def _collect(self):
        """All adds so far (compiled content first, then pending) as arrays:
        flat ids (uint16 or uint32), lengths, value lengths, value kinds, blob.
        Pending buffers are viewed, not copied."""
        p_ids = np.frombuffer(self._p_ids, np.uint16 if self._p_ids.typecode == "H" else np.uint32)
        p_lens = np.frombuffer(self._p_lens, dtype=np.int32)
        p_vlens = np.frombuffer(self._p_vlens, dtype=np.int32)
        p_kinds = np.frombuffer(self._p_kinds, dtype=np.uint8)
        if self._m is None or self._n_keys == 0:
            return p_ids, p_lens, p_vlens, p_kinds, self._p_blob
        # Re-export the compiled keys in marisa id order; their values are
        # already stored in that order, so the blob is reused as is.
        key_mids = np.flatnonzero(self._is_key_array())
        strs = [self._m.restore_key(int(m)) for m in key_mids]
        nvals = np.diff(self._val_off.astype(np.int64))[key_mids]
        reps = np.maximum(nvals, 1)
        k_lens = np.fromiter(map(len, strs), dtype=np.int64, count=len(strs))
        k_ids = _codes_to_ids(np.frombuffer("".join(strs).encode("utf-32-le"), dtype=np.uint32))
        starts = np.cumsum(k_lens) - k_lens
        rows = np.repeat(np.arange(len(strs)), reps)
        e_lens = k_lens[rows]
        take = np.repeat(starts[rows], e_lens) + (
            np.arange(int(e_lens.sum())) - np.repeat(np.cumsum(e_lens) - e_lens, e_lens)
        )
        ids = np.concatenate([k_ids[take], p_ids])
        ids = ids.astype(np.uint16 if not ids.size or ids.max() < 1 << 16 else np.uint32)
        e_vlens = np.full(len(rows), -1, dtype=np.int32)
        e_kinds = np.zeros(len(rows), dtype=np.uint8)
        with_val = np.repeat(nvals > 0, reps)
        e_vlens[with_val] = np.diff(self._val_pos.astype(np.int64))
        if self._val_kinds is not None:
            e_kinds[with_val] = self._val_kinds
        return (
            ids,
            np.concatenate([e_lens.astype(np.int32), p_lens]),
            np.concatenate([e_vlens, p_vlens]),
            np.concatenate([e_kinds, p_kinds]),
            b"".join([self._blob, self._p_blob]),
        )

    def _build(self, ids, lens, vlens, kinds, blob):
        """Compile the adds: row i is ``ids[starts[i]:starts[i] + lens[i]]``.

        Works on the flat (ragged) id array throughout: a stable sort of the
        rows, the common prefix lengths of sorted neighbours, and per-prefix
        tables derived from those, with temporaries of a few words per row.
        """
        n_adds = len(lens)
        if n_adds == 0:
            self._set_state(
                marisa_trie.Trie(),
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
            return
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
        order, new, lcp = _sort_rows(ids, starts, lens, 16 if top + 1 < 1 << 16 else 21)
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

        self._set_state(
            m,
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

    @staticmethod
    def _small_uint(a):
        a = np.asarray(a)
        top = int(a.max()) if a.size else 0
        return a.astype(np.uint32 if top < 2**32 else np.uint64, copy=False)

    def _set_state(
        self, m, n_keys, used_ids, child_off, labels, is_key_bits, val_off, val_pos,
        val_kinds, blob,
    ):
        used_ids = np.asarray(used_ids)
        top = int(used_ids.max()) if used_ids.size else 0
        dtype = np.int32 if top < 2**31 else np.int64
        self._m = m
        self._n_keys = int(n_keys)
        self._child_off = _read_only(self._small_uint(child_off))
        # Next ids are returned as views of this array: int32 is small and
        # safe to do arithmetic with (no uint16 wrap-around surprises).
        self._labels = _read_only(np.asarray(labels).astype(dtype, copy=False))
        self._is_key_bits = _read_only(np.asarray(is_key_bits, np.uint8))
        self._val_off = _read_only(self._small_uint(val_off))
        self._val_pos = _read_only(self._small_uint(val_pos))
        self._val_kinds = None if val_kinds is None else _read_only(np.asarray(val_kinds, np.uint8))
        self._blob = blob
        self._used_ids = _read_only(used_ids.astype(dtype, copy=False))
        # Query helpers: id -> char for the ids that occur in keys (any other id
        # cannot match), and views [i:i+1] for single-continuation answers.
        self._chr = {i: _id_to_char(i) for i in self._used_ids.tolist()}
        self._single = _read_only(np.arange(top + 1, dtype=dtype))
        self._empty = _read_only(np.zeros(0, dtype))

    def _is_key_array(self):
        return np.unpackbits(self._is_key_bits, count=len(self._child_off) - 1).astype(bool)

    # ---------------------------------------------------------------- queries
    def _encode(self, ids):
        """Key string for ``ids``, or None when some id never occurs."""
        if self._dirty:
            self.compile()
        if isinstance(ids, np.ndarray):
            ids = ids.tolist()
        try:
            return "".join(map(self._chr.__getitem__, ids))
        except KeyError:
            return None

    def _node_is_key(self, m):
        return (self._is_key_bits[m >> 3] >> (7 - (m & 7))) & 1

    def next_ones(self, prefix):
        """Sorted ids that may follow ``prefix`` (int32 array, read-only).

        Empty when nothing in the trie continues ``prefix`` (it is a complete
        key with no longer key, or it is not a prefix of any key).
        """
        s = self._encode(prefix)
        if s is None:
            return self._empty
        m = self._m.get(s)
        if m is not None:
            off = self._child_off
            return self._labels[off[m] : off[m + 1]]
        # Not a stored node: absent, or inside a chain with exactly one next id.
        for k in self._m.iterkeys(s):
            i = _char_to_id(k[len(s)])
            return self._single[i : i + 1]
        return self._empty

    def has_prefix(self, prefix):
        """True when ``prefix`` (possibly a whole key) starts at least one key."""
        s = self._encode(prefix)
        return s is not None and self._m.has_keys_with_prefix(s)

    is_prefix = has_prefix

    def __contains__(self, ids):
        s = self._encode(ids)
        if s is None:
            return False
        m = self._m.get(s)
        return m is not None and bool(self._node_is_key(m))

    def __len__(self):
        if self._dirty:
            self.compile()
        return self._n_keys

    def _values(self, m):
        a, b = int(self._val_off[m]), int(self._val_off[m + 1])
        pos, blob = self._val_pos[a : b + 1].tolist(), self._blob
        kinds = [_KIND_STR] * (b - a) if self._val_kinds is None else self._val_kinds[a:b]
        return [
            pickle.loads(blob[s:e]) if k == _KIND_PICKLE else blob[s:e].decode("utf-8")
            for s, e, k in zip(pos, pos[1:], kinds)
        ]

    def get(self, ids, default=None):
        """List of values added for exactly ``ids`` (``[]`` if added without a
        value); ``default`` when ``ids`` is not a key."""
        s = self._encode(ids)
        if s is None:
            return default
        m = self._m.get(s)
        if m is None or not self._node_is_key(m):
            return default
        return self._values(m)

    def keys(self, prefix=()):
        """Iterate over the keys (lists of ids) that start with ``prefix``.

        Order is marisa's internal order, not sorted.
        """
        for k, _ in self._iter(prefix, with_values=False):
            yield k

    def items(self, prefix=()):
        """Iterate over ``(key, values)`` for the keys starting with ``prefix``."""
        return self._iter(prefix, with_values=True)

    def _iter(self, prefix, with_values):
        s = self._encode(prefix)
        if s is None:
            return
        get = self._m.get
        for k in self._m.iterkeys(s):
            m = get(k)
            if self._node_is_key(m):
                yield [_char_to_id(c) for c in k], (self._values(m) if with_values else None)

    def __iter__(self):
        return self.keys()

    def to_csr(self):
        """The trie as an explicit automaton in CSR form, for decoding on device.

        Returns ``(offsets, labels, children)`` (int32 numpy arrays): node 0 is the
        root (the empty prefix) and every prefix of a key is one node; the allowed
        next ids of node ``n`` are ``labels[offsets[n]:offsets[n + 1]]`` (sorted)
        and ``children[e]`` is the node reached through edge ``e``. Unlike the
        compiled layout, non-branching chains are expanded (one node per id), so
        this is meant for tries of up to about a million keys (the Generator's
        in-loop constraint), not for a 20M-triple knowledge base. Memoized until
        the trie is rebuilt.
        """
        if self._dirty:
            self.compile()
        if getattr(self, "_csr_of", None) is self._m:
            return self._csr
        keys = sorted(tuple(k) for k in self.keys())
        parents, labels = array.array("q"), array.array("q")
        path = [0]  # node of each prefix of the previous key
        previous = ()
        n_nodes = 1
        for key in keys:
            common = 0
            for a, b in zip(previous, key):
                if a != b:
                    break
                common += 1
            del path[common + 1:]
            for j in range(common, len(key)):
                parents.append(path[j])
                labels.append(key[j])
                path.append(n_nodes)
                n_nodes += 1
            previous = key
        parents = np.frombuffer(parents, np.int64) if len(parents) else np.zeros(0, np.int64)
        labels = np.frombuffer(labels, np.int64) if len(labels) else np.zeros(0, np.int64)
        children = np.arange(1, n_nodes, dtype=np.int64)  # edge j creates node j + 1
        order = np.lexsort((labels, parents))
        offsets = np.zeros(n_nodes + 1, np.int64)
        np.cumsum(np.bincount(parents, minlength=n_nodes), out=offsets[1:])
        if n_nodes > 2**31 - 1 or (labels.size and labels.max() > 2**31 - 1):
            raise ValueError(f"trie too large for an int32 CSR automaton ({n_nodes} nodes)")
        self._csr = tuple(
            _read_only(a.astype(np.int32)) for a in (offsets, labels[order], children[order])
        )
        self._csr_of = self._m
        return self._csr

    def __repr__(self):
        state = "pending adds" if self._dirty else f"{len(self._child_off) - 1} nodes"
        return f"<Trie: {self._n_keys} keys, {state}>"

    def memory_usage(self):
        """Bytes held by each compiled component (marisa measured serialized)."""
        self.compile()
        parts = {
            "marisa": len(self._m.tobytes()),
            "child_off": self._child_off.nbytes,
            "labels": self._labels.nbytes,
            "is_key": self._is_key_bits.nbytes,
            "used_ids": self._used_ids.nbytes,
            "val_off": self._val_off.nbytes,
            "val_pos": self._val_pos.nbytes,
            "val_kinds": 0 if self._val_kinds is None else self._val_kinds.nbytes,
            "blob": len(self._blob),
        }
        parts["total"] = sum(parts.values())
        return parts

    # ---------------------------------------------------------- persistence
    def _arrays(self):
        arrays = {
            "used_ids": self._used_ids,
            "child_off": self._child_off,
            "labels": self._labels,
            "is_key_bits": self._is_key_bits,
            "val_off": self._val_off,
            "val_pos": self._val_pos,
        }
        if self._val_kinds is not None:
            arrays["val_kinds"] = self._val_kinds
        return arrays

    def _chunks(self):
        """(header bytes, list of payload chunks) of the serialized trie."""
        self.compile()
        chunks, spec = [], []
        for name, a in self._arrays().items():
            a = np.ascontiguousarray(a)
            chunks.append(memoryview(a).cast("B"))
            spec.append([name, a.dtype.str, list(a.shape), a.nbytes])
        marisa_bytes = self._m.tobytes()
        chunks += [marisa_bytes, self._blob]
        crc = 0
        for c in chunks:
            crc = zlib.crc32(c, crc)
        header = {
            "version": _FORMAT_VERSION,
            "n_keys": self._n_keys,
            "arrays": spec,
            "marisa": len(marisa_bytes),
            "blob": len(self._blob),
            "crc32": crc,
        }
        hb = json.dumps(header).encode("utf-8")
        return _MAGIC + struct.pack("<Q", len(hb)) + hb, chunks

    def save(self, path):
        """Write the trie to ``path`` atomically (temp file + ``os.replace``)."""
        head, chunks = self._chunks()
        with atomic_write(path, "wb", fsync=True) as f:
            f.write(head)
            for c in chunks:
                f.write(c)

    @classmethod
    def load(cls, path):
        """Read a trie written by :meth:`save`.

        Raises ``FileNotFoundError`` for a missing file and ``ValueError``
        (naming ``path``) for a file that is not a trie, truncated or corrupt.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(errno.ENOENT, "Trie file not found", path)
        with open(path, "rb") as f:
            return cls._read(f, path)

    @classmethod
    def _read(cls, f, name):
        def corrupt(why):
            return ValueError(f"{name}: not a valid kerasnlp_plus Trie file ({why})")

        if f.read(len(_MAGIC)) != _MAGIC:
            raise corrupt("bad magic bytes")
        try:
            (hlen,) = struct.unpack("<Q", f.read(8))
            if hlen > 1 << 24:
                raise ValueError("header too long")
            header = json.loads(f.read(hlen).decode("utf-8"))
            version = header["version"]
            spec, n_marisa, n_blob = header["arrays"], header["marisa"], header["blob"]
            sizes = [n_marisa, n_blob] + [item[3] for item in spec]
            if not all(isinstance(n, int) and n >= 0 for n in sizes):
                raise ValueError("bad sizes")
        except Exception:
            raise corrupt("unreadable header") from None
        if version != _FORMAT_VERSION:
            raise corrupt(f"format version {version}, expected {_FORMAT_VERSION}")
        crc, arrays = 0, {}
        for item in spec:
            data = f.read(item[3])
            if len(data) != item[3]:
                raise corrupt("truncated")
            crc = zlib.crc32(data, crc)
            try:
                name_, dtype, shape, _ = item
                arrays[name_] = np.frombuffer(data, dtype=dtype).reshape(shape)
            except (TypeError, ValueError):
                raise corrupt(f"bad description of array {item[0]!r}") from None
        marisa_bytes = f.read(n_marisa)
        blob = f.read(n_blob)
        if len(marisa_bytes) != n_marisa or len(blob) != n_blob:
            raise corrupt("truncated")
        if f.read(1):
            raise corrupt("trailing bytes")
        crc = zlib.crc32(blob, zlib.crc32(marisa_bytes, crc))
        if crc != header.get("crc32"):
            raise corrupt("checksum mismatch")
        try:
            n_nodes = len(arrays["child_off"]) - 1
            sizes_ok = (
                n_nodes >= 0
                and isinstance(header["n_keys"], int)
                and len(arrays["val_off"]) == n_nodes + 1
                and len(arrays["is_key_bits"]) == (n_nodes + 7) // 8
                and int(arrays["child_off"][-1]) == len(arrays["labels"])
                and int(arrays["val_off"][-1]) == len(arrays["val_pos"]) - 1
                and int(arrays["val_pos"][-1]) == n_blob
                and "used_ids" in arrays
            )
        except (KeyError, IndexError, TypeError):
            sizes_ok = False
        if not sizes_ok:
            raise corrupt("inconsistent array sizes")
        trie = cls()
        try:
            trie._set_state(
                marisa_trie.Trie().frombytes(marisa_bytes),
                n_keys=header["n_keys"],
                used_ids=arrays["used_ids"],
                child_off=arrays["child_off"],
                labels=arrays["labels"],
                is_key_bits=arrays["is_key_bits"],
                val_off=arrays["val_off"],
                val_pos=arrays["val_pos"],
                val_kinds=arrays.get("val_kinds"),
                blob=blob,
            )
        except (KeyError, RuntimeError, ValueError) as e:
            raise corrupt(f"inconsistent content: {e!r}") from None
        if len(trie._m) != n_nodes:
            raise corrupt("marisa trie does not match the tables")
        trie._dirty = False
        return trie

    def to_bytes(self):
        """The :meth:`save` file content as one ``bytes`` object."""
        head, chunks = self._chunks()
        return head + b"".join(chunks)

    @classmethod
    def from_bytes(cls, data):
        """Inverse of :meth:`to_bytes`."""
        return cls._read(io.BytesIO(data), "<bytes>")

    def __getstate__(self):
        return {"data": self.to_bytes()}

    def __setstate__(self, state):
        self.__dict__.update(Trie.from_bytes(state["data"]).__dict__)
