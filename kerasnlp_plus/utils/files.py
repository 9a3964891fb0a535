"""Atomic file writes: write to a temporary name in the target's folder, then
``os.replace``. A crash or an error at any point leaves either the old file or the new
one, whole, and never a stray temporary file after an error."""
import contextlib
import hashlib
import os
import tempfile


def _plain_permissions(path):
    # mkstemp creates 0600; give the file the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    For writers that want a file name rather than a file object (``save_weights``,
    ``tf.io.TFRecordWriter``). ``suffix`` keeps an extension a writer insists on
    (Keras wants ``.weights.h5``). On any exception the temporary file is removed.

    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with atomic_path(os.path.join(folder, "a.txt")) as tmp:
    ...     _ = open(tmp, "w").write("hello")
    >>> sorted(os.listdir(folder))
    ['a.txt']
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-" + os.path.basename(path) + "-", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        _plain_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path, mode="wb", encoding=None, newline=None, fsync=False):
    """Open a temporary file for writing; on success it replaces ``path``.

    ``fsync=True`` flushes the data to disk before the rename, for state that must
    survive a power cut (checkpoints, manifests), not just a killed process.
    """
    if "r" in mode or "a" in mode:
        raise ValueError(f"atomic_write writes a new file; mode {mode!r} is not a write mode")
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding, newline=newline) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())


def atomic_write_bytes(path, data, fsync=False):
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb", fsync=fsync) as f:
        f.write(data)


def atomic_write_text(path, text, encoding="utf-8", fsync=False):
    """Write ``text`` to ``path`` atomically (``\\n`` line ends kept as written)."""
    with atomic_write(path, "w", encoding=encoding, newline="\n", fsync=fsync) as f:
        f.write(text)


def file_sha256(path):
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (shard manifests and resume
    state both record it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
