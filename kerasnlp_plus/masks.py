"""Attention masks from one rule.

Every application is a choice of *rank* per token; key ``j`` is visible to query ``i``
iff ``rank[j] <= rank[i]`` (``<`` for the permutation-LM query stream) and ``j`` is
not padding:

=============  ==========================================  =========================
application    rank                                        effect
=============  ==========================================  =========================
``encoder``    all zeros                                   bidirectional
``lm``         ``arange(length)``                          causal
``unilm``      ``cumsum(segment_ids)``                     segment 0 bidirectional,
                                                           segment 1 causal
``plm``        the factorization order (an input)          content stream: ``<=``,
                                                           query stream: ``<``
=============  ==========================================  =========================

The functions work on ``keras.ops`` tensors, so the same code builds the masks of
the functional model and of the cached decoder.
"""
import keras
from keras import ops

APPLICATIONS = ("encoder", "lm", "unilm", "plm")


def application_ranks(application, token_ids, segment_ids=None, order=None):
    """Rank of every token for ``application`` (int32, shape ``(batch, length)``)."""
    if application == "encoder":
        return ops.zeros_like(token_ids, dtype="int32")
    if application == "lm":
        positions = ops.arange(ops.shape(token_ids)[1], dtype="int32")
        return ops.broadcast_to(positions[None, :], ops.shape(token_ids))
    if application == "unilm":
        if segment_ids is None:
            raise ValueError("application='unilm' needs segment_ids to tell source from target")
        return ops.cumsum(ops.cast(segment_ids, "int32"), axis=1)
    if application == "plm":
        if order is None:
            raise ValueError("application='plm' needs the factorization order input")
        return ops.cast(order, "int32")
    raise ValueError(f"unknown application {application!r}; known: {APPLICATIONS}")


def visibility(query_rank, key_rank, key_valid=None, strict=False):
    """Boolean mask ``(batch, queries, keys)``: True where the query may attend the key.

    Args:
        query_rank: int ``(batch, queries)``.
        key_rank: int ``(batch, keys)``.
        key_valid: optional bool ``(batch, keys)``, False for padding.
        strict: ``rank[j] < rank[i]`` instead of ``<=`` (a token may not see itself).
    """
    q = ops.expand_dims(query_rank, 2)
    k = ops.expand_dims(key_rank, 1)
    visible = ops.less(k, q) if strict else ops.less_equal(k, q)
    if key_valid is not None:
        visible = ops.logical_and(visible, ops.expand_dims(ops.cast(key_valid, "bool"), 1))
    return visible


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class AttentionMask(keras.layers.Layer):
    """Computes the boolean attention mask of an application.

    Call with ``token_ids`` (0 = padding), ``segment_ids`` and, for ``'plm'``, the
    factorization ``order`` (rank of each position). ``strict=True`` gives the
    permutation-LM query-stream mask. An optional ``custom_mask`` (0/1 or bool,
    ``(batch, length, length)``) is combined with the application's mask.

    >>> import numpy as np
    >>> m = AttentionMask("unilm")(np.array([[101, 5, 102, 7, 102]]), np.array([[0, 0, 0, 1, 1]]))
    >>> np.asarray(m)[0].astype(int).tolist()[0]  # the source never sees the target
    [1, 1, 1, 0, 0]
    """

    def __init__(self, application="encoder", strict=False, **kwargs):
        super().__init__(**kwargs)
        if application not in APPLICATIONS:
            raise ValueError(f"unknown application {application!r}; known: {APPLICATIONS}")
        self.application = application
        self.strict = strict

    def call(self, token_ids, segment_ids=None, order=None, custom_mask=None):
        rank = application_ranks(self.application, token_ids, segment_ids, order)
        mask = visibility(rank, rank, ops.not_equal(token_ids, 0), strict=self.strict)
        if custom_mask is not None:
            mask = ops.logical_and(mask, ops.cast(custom_mask, "bool"))
        return mask

    def compute_output_spec(self, token_ids, *args, **kwargs):
        b, n = token_ids.shape[0], token_ids.shape[1]
        return keras.KerasTensor((b, n, n), dtype="bool")

    def get_config(self):
        return {**super().get_config(), "application": self.application, "strict": self.strict}
