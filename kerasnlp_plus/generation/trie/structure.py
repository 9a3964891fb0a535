"""The :class:`Trie` structure: adding keys, compiling, queries, the CSR automaton.

The layout and its lifecycle are described in :mod:`kerasnlp_plus.generation.trie`;
the tables are built by :mod:`~kerasnlp_plus.generation.trie.build` and written by
:mod:`~kerasnlp_plus.generation.trie.fileformat`.
"""
import array
import errno
import io
import os
import pickle
from collections.abc import Mapping

import numpy as np

from kerasnlp_plus.generation.trie import fileformat
from kerasnlp_plus.generation.trie.build import (
    KIND_PICKLE,
    KIND_STR,
    MAX_TOKEN_ID,
    build_tables,
    char_to_id,
    codes_to_ids,
    id_to_char,
    release_free_memory,
)

__all__ = ["Trie", "MAX_TOKEN_ID"]


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
    see :mod:`kerasnlp_plus.generation.trie` for the layout.

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
            self._p_kinds.append(KIND_STR)
        else:
            if type(value) is str:
                data = value.encode("utf-8")
                self._p_kinds.append(KIND_STR)
            else:
                data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
                self._p_kinds.append(KIND_PICKLE)
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
        the cost (a few CPU-seconds per million keys, see ``bench/trie.py``) is paid.
        """
        if not self._dirty:
            return self
        self._set_state(**build_tables(*self._collect()))
        self._reset_pending()
        self._dirty = False
        release_free_memory()
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
        k_ids = codes_to_ids(np.frombuffer("".join(strs).encode("utf-32-le"), dtype=np.uint32))
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
        self._chr = {i: id_to_char(i) for i in self._used_ids.tolist()}
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
            i = char_to_id(k[len(s)])
            return self._single[i : i + 1]
        return self._empty

    def has_prefix(self, prefix):
        """True when ``prefix`` (possibly a whole key) starts at least one key."""
        s = self._encode(prefix)
        return s is not None and self._m.has_keys_with_prefix(s)

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
        kinds = [KIND_STR] * (b - a) if self._val_kinds is None else self._val_kinds[a:b]
        return [
            pickle.loads(blob[s:e]) if k == KIND_PICKLE else blob[s:e].decode("utf-8")
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
                yield [char_to_id(c) for c in k], (self._values(m) if with_values else None)

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
    def save(self, path):
        """Write the trie to ``path`` atomically (temp file + ``os.replace``);
        the format is described in :mod:`kerasnlp_plus.generation.trie.fileformat`."""
        fileformat.save(self, path)

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
            return fileformat.read(f, path, cls())

    def to_bytes(self):
        """The :meth:`save` file content as one ``bytes`` object."""
        head, chunks = fileformat.serialize(self)
        return head + b"".join(chunks)

    @classmethod
    def from_bytes(cls, data):
        """Inverse of :meth:`to_bytes`."""
        return fileformat.read(io.BytesIO(data), "<bytes>", cls())

    def __getstate__(self):
        return {"data": self.to_bytes()}

    def __setstate__(self, state):
        self.__dict__.update(Trie.from_bytes(state["data"]).__dict__)
