"""Small utilities every part of the package shares: atomic file writes and the
location of the shared real data used by tests, benchmarks and examples."""
from kerasnlp_plus.utils.files import atomic_path, atomic_write, atomic_write_bytes, atomic_write_text
from kerasnlp_plus.utils.data import shared_data_dir

__all__ = ["atomic_path", "atomic_write", "atomic_write_bytes", "atomic_write_text", "shared_data_dir"]
