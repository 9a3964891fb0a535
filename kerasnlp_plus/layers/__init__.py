"""Keras layers of the BERT family (all with ``get_config``; registered for ``.keras``)."""
from kerasnlp_plus.layers.attention import MultiHeadAttention
from kerasnlp_plus.layers.embeddings import (
    BiasAdd,
    FactorizedMapping,
    PositionEmbedding,
    SegmentEmbedding,
    TakeFirstToken,
    TokenEmbedding,
)
from kerasnlp_plus.layers.transformer import TransformerBlock, get_activation

__all__ = [
    "BiasAdd",
    "FactorizedMapping",
    "MultiHeadAttention",
    "PositionEmbedding",
    "SegmentEmbedding",
    "TakeFirstToken",
    "TokenEmbedding",
    "TransformerBlock",
    "get_activation",
]
