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
  ``bytes`` blob, ordered by key, with one offset array.

Lifecycle. ``add`` only appends to compact buffers. The first query (``next_ones``,
``get``, ``in``, ``len``, ``keys``, ``save``, ...) or an explicit :meth:`Trie.compile`
freezes the buffers into the structure above (vectorised with numpy; about 3
CPU-seconds and a transient ~0.5 GB per million keys). Adding after that is
allowed: the next query rebuilds everything (old content plus the new keys), so
add in batches, not one key between queries.

Measured with ``bench/trie.py`` on 1M KgCLUE-shaped keys (13 ids, an 8-character
object each): about 53 bytes resident per key including the values, ~2-6 us per
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
import tempfile
import zlib
from collections.abc import Mapping

import marisa_trie
import numpy as np

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
_LABEL_SHIFT = 21  # code points are < 2**21: (node << 21) | code sorts by node, label


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


def _isin_sorted(a, sorted_b):
    """Boolean mask: which elements of ``a`` occur in the sorted array ``sorted_b``."""
    if len(sorted_b) == 0:
        return np.zeros(len(a), bool)
    pos = np.minimum(np.searchsorted(sorted_b, a), len(sorted_b) - 1)
    return sorted_b[pos] == a


def _gather_segments(blob, starts, lens, dest_pos, chunk=1 << 18):
    """Concatenate ``blob[starts[i]:starts[i] + lens[i]]`` for all i, vectorised
    (in chunks, so the byte-index arrays stay small); ``dest_pos[i]`` is where
    segment i lands in the output (the running sum of ``lens``)."""
    src = np.frombuffer(blob, np.uint8)
    out = np.empty(int(lens.sum()), np.uint8)
    for c0 in range(0, len(starts), chunk):
        s, n, d = starts[c0 : c0 + chunk], lens[c0 : c0 + chunk], dest_pos[c0 : c0 + chunk]
        total = int(n.sum())
        if total:
            idx = np.repeat(s - (d - d[0]), n) + np.arange(total)
            out[d[0] : d[0] + total] = src[idx]
    return out.tobytes()


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
        self._p_ids = array.array("I")  # unsigned: negative ids fail on extend
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
            buf.extend(ids)
            if ids and max(ids) > MAX_TOKEN_ID:
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
        the cost (about 3 CPU-seconds per million keys) is paid.
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
        """All adds so far (compiled content first, then pending) as arrays."""
        p_codes = _ids_to_codes(np.frombuffer(self._p_ids, dtype=np.uint32))
        p_lens = np.frombuffer(self._p_lens, dtype=np.int32).astype(np.int64)
        p_vlens = np.frombuffer(self._p_vlens, dtype=np.int32).astype(np.int64)
        p_kinds = np.frombuffer(self._p_kinds, dtype=np.uint8)
        if self._m is None or self._n_keys == 0:
            return p_codes, p_lens, p_vlens, p_kinds, bytes(self._p_blob)
        # Re-export the compiled keys in marisa id order; their values are
        # already stored in that order, so the blob is reused as is.
        key_mids = np.flatnonzero(self._is_key_array())
        strs = [self._m.restore_key(int(m)) for m in key_mids]
        nvals = np.diff(self._val_off.astype(np.int64))[key_mids]
        reps = np.maximum(nvals, 1)
        k_lens = np.fromiter(map(len, strs), dtype=np.int64, count=len(strs))
        k_codes = np.frombuffer("".join(strs).encode("utf-32-le"), dtype=np.uint32)
        starts = np.cumsum(k_lens) - k_lens
        rows = np.repeat(np.arange(len(strs)), reps)
        e_lens = k_lens[rows]
        take = np.repeat(starts[rows], e_lens) + (
            np.arange(int(e_lens.sum())) - np.repeat(np.cumsum(e_lens) - e_lens, e_lens)
        )
        e_codes = k_codes[take]
        e_vlens = np.full(len(rows), -1, dtype=np.int64)
        e_kinds = np.zeros(len(rows), dtype=np.uint8)
        with_val = np.repeat(nvals > 0, reps)
        e_vlens[with_val] = np.diff(self._val_pos.astype(np.int64))
        if self._val_kinds is not None:
            e_kinds[with_val] = self._val_kinds
        return (
            np.concatenate([e_codes, p_codes]),
            np.concatenate([e_lens, p_lens]),
            np.concatenate([e_vlens, p_vlens]),
            np.concatenate([e_kinds, p_kinds]),
            self._blob + bytes(self._p_blob),
        )

    def _build(self, codes, lens, vlens, kinds, blob):
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
        width = max(int(lens.max()), 1)
        used_ids = _codes_to_ids(np.flatnonzero(np.bincount(codes)).astype(np.uint32))
        # One row of code points per add, 0-padded, big-endian (2 bytes each
        # when every code fits, the usual case, else 4): viewed as fixed-width
        # byte strings, numpy's sort is the lexicographic order of the keys.
        code_dtype = np.dtype(">u2" if int(codes.max()) < 1 << 16 else ">u4")
        str_dtype = np.dtype(("S", width * code_dtype.itemsize))
        mat = np.zeros((n_adds, width), code_dtype)
        mat[np.arange(width) < lens[:, None]] = codes
        keys, inv = np.unique(mat.view(str_dtype).ravel(), return_inverse=True)
        del mat
        inv = inv.ravel()
        n_keys = len(keys)
        sk = keys.view(code_dtype).reshape(n_keys, width)

        # Between sorted neighbours a and b with longest common prefix d, the
        # node b[:d] has children b[d] and a[d] (a[d] == 0: a ends there, so
        # a itself is that node). Every branching node and every child label of
        # a stored node shows up this way.
        if n_keys > 1:
            lcp = (sk[1:] != sk[:-1]).argmax(axis=1)
            rows = np.arange(n_keys - 1)
            lab_b = sk[1:][rows, lcp]
            lab_a = sk[:-1][rows, lcp]
            ev = sk[1:].copy()
            ev[np.arange(width) >= lcp[:, None]] = 0
            ev_nodes, ev_inv = np.unique(ev.view(str_dtype).ravel(), return_inverse=True)
            ev_inv = ev_inv.ravel()
            del ev, rows, lcp
        else:
            ev_nodes = keys[:0]
            ev_inv = lab_a = lab_b = np.zeros(0, np.int64)
        del sk
        # Stored nodes: the keys plus the branching prefixes that are not keys.
        # Python strings are made a batch at a time to keep the peak low.
        in_keys = _isin_sorted(ev_nodes, keys)
        extra = ev_nodes[~in_keys]

        def batches():  # lists of Python str, the marisa key of each row
            for a in (keys, extra):
                for i in range(0, len(a), _BATCH):
                    rows = a[i : i + _BATCH].view(code_dtype).reshape(-1, width)
                    yield rows.astype(np.uint32).view(("U", width)).ravel().tolist()

        m = marisa_trie.Trie(itertools.chain.from_iterable(batches()))
        n_nodes = len(m)
        # marisa numbers its strings itself: ask it for each one's id.
        mids = np.concatenate(
            [np.zeros(0, np.int64)]
            + [np.fromiter(map(m.key_id, b), dtype=np.int64, count=len(b)) for b in batches()]
        )
        key_mid = mids[: len(keys)]
        ev_node_mid = np.empty(len(ev_nodes), np.int64)
        ev_node_mid[~in_keys] = mids[len(keys) :]
        ev_node_mid[in_keys] = key_mid[np.searchsorted(keys, ev_nodes[in_keys])]
        ev_mid = ev_node_mid[ev_inv]
        del keys, extra, ev_nodes, ev_inv, ev_node_mid, in_keys, mids

        # Child table in marisa id order, labels sorted within each node.
        has_a = lab_a != 0
        pairs = np.concatenate(
            [
                (ev_mid << _LABEL_SHIFT) | lab_b.astype(np.int64),
                (ev_mid[has_a] << _LABEL_SHIFT) | lab_a[has_a].astype(np.int64),
            ]
        )
        pairs.sort()
        pairs = pairs[np.concatenate([pairs[:1] >= 0, pairs[1:] != pairs[:-1]])]
        child_counts = np.bincount(pairs >> _LABEL_SHIFT, minlength=n_nodes)
        child_off = np.zeros(n_nodes + 1, np.int64)
        np.cumsum(child_counts, out=child_off[1:])
        label_ids = _codes_to_ids((pairs & ((1 << _LABEL_SHIFT) - 1)).astype(np.uint32))
        del pairs, ev_mid, lab_a, lab_b, has_a

        is_key = np.zeros(n_nodes, bool)
        is_key[key_mid] = True

        # Values grouped by key (marisa id order), insertion order within a key.
        add_mid = key_mid[inv]
        has_val = np.flatnonzero(vlens >= 0)
        order = has_val[np.argsort(add_mid[has_val], kind="stable")]
        v_lens = vlens[order]
        v_starts = (np.cumsum(np.maximum(vlens, 0)) - np.maximum(vlens, 0))[order]
        val_pos = np.zeros(len(order) + 1, np.int64)
        np.cumsum(v_lens, out=val_pos[1:])
        if len(order) and not np.array_equal(order, has_val):
            blob = _gather_segments(blob, v_starts, v_lens, val_pos[:-1])
        v_kinds = kinds[order]
        val_counts = np.bincount(add_mid[has_val], minlength=n_nodes)
        val_off = np.zeros(n_nodes + 1, np.int64)
        np.cumsum(val_counts, out=val_off[1:])

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
            blob=bytes(blob),
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
        path = os.fspath(path)
        head, chunks = self._chunks()
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(head)
                for c in chunks:
                    f.write(c)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

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
