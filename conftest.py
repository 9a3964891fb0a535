"""Names the package's doctests may use besides the package itself (pytest's
``doctest_namespace``): files that cannot ship inside the package, read from the shared
data (``$KERASNLP_PLUS_SHARED_DATA`` or ``../shared/data``), so no example is skipped."""
import pytest


@pytest.fixture(autouse=True)
def _doctest_files(doctest_namespace):
    from kerasnlp_plus.utils import shared_data_dir

    # A 100k-piece Chinese SentencePiece model (Apache-2.0, UER-py): SpTokenizer's example.
    doctest_namespace["spm_model"] = str(shared_data_dir("spm", "cluecorpussmall_spm.model", required=True))
