"""Keras layers of the BERT family (all with ``get_config``; registered for ``.keras``)."""
from kerasnlp_plus.layers.attention import MultiHeadAttention
from kerasnlp_plus.layers.copy import CopyMechanism
from kerasnlp_plus.layers.embeddings import (
    BiasAdd,
    FactorizedMapping,
    PositionEmbedding,
    SegmentEmbedding,
    TakeFirstToken,
    TokenEmbedding,
)
from kerasnlp_plus.layers.transformer import TransformerBlock, get_activation
from kerasnlp_plus.layers.bert4keras import (  # noqa: E402  (bert4keras 0.11.5 names)
    Concatenate1D,
    ConditionalRandomField,
    EfficientGlobalPointer,
    Embedding,
    FeedForward,
    GlobalAveragePooling1D,
    GlobalMaxPooling1D,
    GlobalPointer,
    Layer,
    LayerNormalization,
    Loss,
    MaximumEntropyMarkovModel,
    ScaleOffset,
    SinusoidalPositionEmbedding,
    custom_objects,
    integerize_shape,
)

__all__ = [
    "BiasAdd",
    "CopyMechanism",
    "FactorizedMapping",
    "MultiHeadAttention",
    "PositionEmbedding",
    "SegmentEmbedding",
    "TakeFirstToken",
    "TokenEmbedding",
    "TransformerBlock",
    "get_activation",
    # bert4keras 0.11.5 names
    "ConditionalRandomField",
    "EfficientGlobalPointer",
    "GlobalAveragePooling1D",
    "GlobalMaxPooling1D",
    "GlobalPointer",
    "LayerNormalization",
    "Loss",
    "MaximumEntropyMarkovModel",
    "ScaleOffset",
    "Concatenate1D",
    "Embedding",
    "FeedForward",
    "Layer",
    "SinusoidalPositionEmbedding",
    "custom_objects",
    "integerize_shape",
]
