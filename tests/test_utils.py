"""Atomic writes and the shared-data lookup (kerasnlp_plus.utils)."""
import os
import stat

import pytest

from kerasnlp_plus.utils import atomic_path, atomic_write, atomic_write_bytes, atomic_write_text, shared_data_dir


def test_atomic_write_replaces_whole_file_with_plain_permissions(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert sorted(os.listdir(tmp_path)) == ["out.txt"]


def test_error_mid_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "state.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(path, "wb") as f:
            f.write(b"half")
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "w.weights.h5", suffix=".weights.h5") as tmp:
            assert tmp.endswith(".weights.h5") and os.path.dirname(tmp) == str(tmp_path)
            open(tmp, "wb").write(b"partial")
            raise RuntimeError("killed")
    assert sorted(os.listdir(tmp_path)) == ["state.bin"]


def test_atomic_write_refuses_read_and_append_modes(tmp_path):
    for mode in ("r", "ab"):
        with pytest.raises(ValueError, match="not a write mode"):
            with atomic_write(tmp_path / "x", mode):
                pass


def test_shared_data_dir_honours_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("KERASNLP_PLUS_SHARED_DATA", str(tmp_path))
    assert shared_data_dir("vocab", "vocab.txt") == tmp_path / "vocab" / "vocab.txt"
    with pytest.raises(FileNotFoundError, match="KERASNLP_PLUS_SHARED_DATA"):
        shared_data_dir("missing", required=True)
