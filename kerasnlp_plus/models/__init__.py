"""Model building: ``build_transformer_model`` and the :class:`Transformer` it returns."""
from kerasnlp_plus.models.builder import MODELS, build_transformer_model
from kerasnlp_plus.models.config import read_config
from kerasnlp_plus.models.transformer import FAMILIES, Transformer

__all__ = ["FAMILIES", "MODELS", "Transformer", "build_transformer_model", "read_config"]
