"""Where the ported bert4keras examples find their model and data (the only lines
changed in them besides imports, sizes and Keras 3 file names).

``DEMO_MODEL``: the shipped demo model (config.json, model.safetensors, vocab.txt).
``DATA_DIR``: a folder that ``tests/test_bert4keras_examples.py`` fills with small real
data in the layout each script reads (env ``KERASNLP_PLUS_B4K_DATA``).
"""
import os
import pathlib

DEMO_MODEL = str(pathlib.Path(__file__).resolve().parents[2] / "kerasnlp_plus" / "assets" / "demo_model")
DATA_DIR = os.environ.get("KERASNLP_PLUS_B4K_DATA", "")
if not DATA_DIR or not os.path.isdir(DATA_DIR):
    raise FileNotFoundError(
        "set KERASNLP_PLUS_B4K_DATA to a folder of example data (tests/test_bert4keras_examples.py writes one); "
        f"got {DATA_DIR!r}"
    )
