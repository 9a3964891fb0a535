"""Small utilities every part of the package shares: atomic file writes and the
file checksums and the location of the shared real data used by tests, benchmarks and examples."""
from kerasnlp_plus.utils.files import atomic_path, atomic_write, atomic_write_bytes, atomic_write_text, file_sha256
from kerasnlp_plus.utils.data import shared_data_dir

__all__ = ["atomic_path", "atomic_write", "atomic_write_bytes", "atomic_write_text", "file_sha256", "shared_data_dir"]
