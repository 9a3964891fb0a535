"""The trie file format (``Trie.save`` / ``Trie.load`` / ``to_bytes``).

A file is the magic bytes ``KNPTRIE1``, the length of a JSON header (uint64,
little-endian), the header (format version, key count, each table's name, dtype,
shape and size, the sizes of the marisa structure and the value blob, and a CRC-32
of everything after it), then the tables, the marisa structure and the value blob,
back to back. Reading checks every size and the checksum, so a truncated or corrupt
file is an error naming it, never a wrong trie.
"""
import json
import struct
import zlib

import marisa_trie
import numpy as np

from kerasnlp_plus.utils import atomic_write

__all__ = ["MAGIC", "FORMAT_VERSION", "serialize", "save", "read"]

MAGIC = b"KNPTRIE1"
FORMAT_VERSION = 1


def _arrays(trie):
    arrays = {
        "used_ids": trie._used_ids,
        "child_off": trie._child_off,
        "labels": trie._labels,
        "is_key_bits": trie._is_key_bits,
        "val_off": trie._val_off,
        "val_pos": trie._val_pos,
    }
    if trie._val_kinds is not None:
        arrays["val_kinds"] = trie._val_kinds
    return arrays


def serialize(trie):
    """(header bytes, list of payload chunks) of the serialized (compiled) trie."""
    trie.compile()
    chunks, spec = [], []
    for name, a in _arrays(trie).items():
        a = np.ascontiguousarray(a)
        chunks.append(memoryview(a).cast("B"))
        spec.append([name, a.dtype.str, list(a.shape), a.nbytes])
    marisa_bytes = trie._m.tobytes()
    chunks += [marisa_bytes, trie._blob]
    crc = 0
    for c in chunks:
        crc = zlib.crc32(c, crc)
    header = {
        "version": FORMAT_VERSION,
        "n_keys": trie._n_keys,
        "arrays": spec,
        "marisa": len(marisa_bytes),
        "blob": len(trie._blob),
        "crc32": crc,
    }
    hb = json.dumps(header).encode("utf-8")
    return MAGIC + struct.pack("<Q", len(hb)) + hb, chunks


def save(trie, path):
    """Write ``trie`` to ``path`` atomically (temp file + ``os.replace``)."""
    head, chunks = serialize(trie)
    with atomic_write(path, "wb", fsync=True) as f:
        f.write(head)
        for c in chunks:
            f.write(c)


def read(f, name, trie):
    """Fill the empty ``trie`` from the binary file object ``f`` and return it;
    ``ValueError`` naming ``name`` for a file that is not a trie, truncated or corrupt."""

    def corrupt(why):
        return ValueError(f"{name}: not a valid kerasnlp_plus Trie file ({why})")

    if f.read(len(MAGIC)) != MAGIC:
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
    if version != FORMAT_VERSION:
        raise corrupt(f"format version {version}, expected {FORMAT_VERSION}")
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
