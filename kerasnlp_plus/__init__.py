"""kerasnlp_plus: Chinese BERT/RoBERTa/ALBERT for Keras 3, in the style of bert4keras.

Importing the package registers its layers and models with Keras, so
``keras.models.load_model("model.keras")`` restores them with no custom objects.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from kerasnlp_plus import layers, masks, models  # noqa: E402,F401  (registers serializables)
from kerasnlp_plus.models import build_transformer_model  # noqa: E402,F401

__version__ = "0.1.0"
