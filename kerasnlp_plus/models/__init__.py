"""Model building: ``build_transformer_model``, the :class:`Transformer` it returns and
the :class:`TransformerConfig` it reads."""
from kerasnlp_plus.models.builder import build_transformer_model
from kerasnlp_plus.models.config import FAMILIES, TransformerConfig
from kerasnlp_plus.models.transformer import Transformer

__all__ = ["FAMILIES", "Transformer", "TransformerConfig", "build_transformer_model"]
