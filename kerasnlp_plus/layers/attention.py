"""Multi-head attention with a mask/bias input, two scale options and a KV cache."""
import math

import keras
from keras import ops

from kerasnlp_plus.layers.rotary import apply_rotary, rotary_angles

SCALES = ("standard", "log_n")


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class MultiHeadAttention(keras.layers.Layer):
    """BERT self-attention (or attention of ``query`` over a separate ``value`` stream).

    Args:
        num_heads, head_size: the heads; the projections are ``Dense`` layers whose
            kernels have Google checkpoint layout ``(in, heads*head_size)``.
        output_dim: width of the output projection (the model's hidden size).
        attention_dropout: dropout rate on the attention probabilities (0.0).
        attention_scale: ``'standard'`` multiplies scores by ``1/sqrt(d)``; ``'log_n'``
            by ``log(n)/log(m) * 1/sqrt(d)`` where ``n`` is the number of keys the query
            may attend to and ``m = training_length`` (default 512; entropy-invariant
            scaling, which keeps attention sharp on inputs longer than those trained on).
        kernel_initializer: of the four projections (``'glorot_uniform'``).
        rotary: rotate queries and keys at their positions (RoFormer) before the
            scores (and before keys enter the cache).

    Call arguments:
        query: ``(batch, q_len, dim)``.
        value: the key/value stream (defaults to ``query``).
        attention_mask: bool ``(batch, q_len, k_len)``, True = may attend.
        attention_bias: float, added to the scores; ``(batch, [heads,] q_len, k_len)``.
        cache: ``(batch, 2, max_len, heads, head_size)`` of keys and values; the keys and
            values of ``value`` are written at ``cache_update_index`` and attention runs
            over the whole cache (mask the unwritten slots). Returns ``(output, cache)``.
        position_ids: int ``(batch or 1, q_len)``, only read with ``rotary``: the
            absolute positions of the queries, and of the keys computed from ``value``
            (the two streams share positions). Default ``arange`` (plus
            ``cache_update_index`` with a cache).
        source_cache: a decoder's lean cache (one query per row): ``(keys, values)``,
            each head-major ``(sources, heads, source_len, head_size)``, shared by
            consecutive groups of ``batch // sources`` rows (the beams of one source);
            ``cache`` is then ``(keys, values)`` of the rows' generated slots, each
            ``(batch, heads, max_len, head_size)``. Attention runs over the row's
            source slots, then over ``cache``; ``attention_mask`` covers
            ``source_len + max_len`` keys in that order. Returns ``(output, (keys,
            values))``.

    Scores and softmax run in float32 whatever the compute dtype, so mixed precision
    does not overflow the masking constant.
    """

    def __init__(
        self,
        num_heads,
        head_size,
        output_dim,
        attention_dropout=0.0,
        attention_scale="standard",
        training_length=512,
        kernel_initializer="glorot_uniform",
        rotary=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.rotary = bool(rotary)
        if attention_scale not in SCALES:
            raise ValueError(f"unknown attention_scale {attention_scale!r}; known: {SCALES}")
        self.num_heads = int(num_heads)
        self.head_size = int(head_size)
        self.output_dim = int(output_dim)
        self.attention_dropout = float(attention_dropout)
        self.attention_scale = attention_scale
        self.training_length = int(training_length)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        width = self.num_heads * self.head_size
        dense = lambda units, name: keras.layers.Dense(  # noqa: E731
            units, kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy, name=name
        )
        self.query_dense = dense(width, "query")
        self.key_dense = dense(width, "key")
        self.value_dense = dense(width, "value")
        self.output_dense = dense(self.output_dim, "output")
        self.dropout = keras.layers.Dropout(self.attention_dropout, dtype=self.dtype_policy)

    def build(self, query_shape, value_shape=None, *args, **kwargs):
        value_shape = value_shape or query_shape
        self.query_dense.build(query_shape)
        self.key_dense.build(value_shape)
        self.value_dense.build(value_shape)
        self.output_dense.build(tuple(query_shape[:-1]) + (self.num_heads * self.head_size,))
        self.built = True

    def _split_heads(self, x):
        shape = ops.shape(x)
        return ops.reshape(x, (shape[0], shape[1], self.num_heads, self.head_size))

    def call(
        self,
        query,
        value=None,
        attention_mask=None,
        attention_bias=None,
        cache=None,
        cache_update_index=None,
        training=None,
        position_ids=None,
        source_cache=None,
    ):
        value = query if value is None else value
        q = self._split_heads(self.query_dense(query))
        k = self._split_heads(self.key_dense(value))
        v = self._split_heads(self.value_dense(value))
        if self.rotary:
            q, k = self._rotate(q, k, position_ids, cache_update_index if cache is not None else None)
        if source_cache is not None:
            return self._lean_step(q, k, v, cache, cache_update_index, source_cache, attention_mask,
                                   attention_bias, training)
        if cache is not None:
            start = [0, cache_update_index, 0, 0]
            k = ops.slice_update(cache[:, 0], start, ops.cast(k, cache.dtype))
            v = ops.slice_update(cache[:, 1], start, ops.cast(v, cache.dtype))
            cache = ops.stack([k, v], axis=1)
        scores = ops.einsum("bqhd,bkhd->bhqk", q, ops.cast(k, q.dtype))
        probs = self._probabilities(scores, attention_mask, attention_bias, training)
        context = ops.einsum("bhqk,bkhd->bqhd", probs, ops.cast(v, probs.dtype))
        shape = ops.shape(context)
        context = ops.reshape(context, (shape[0], shape[1], self.num_heads * self.head_size))
        output = self.output_dense(context)
        return output if cache is None else (output, cache)

    def _probabilities(self, scores, attention_mask, attention_bias, training):
        """Scaled, biased, masked softmax of ``scores`` ``(batch, heads, q_len, k_len)``
        in float32, with attention dropout, in the compute dtype."""
        scores = ops.cast(scores, "float32") * (1.0 / math.sqrt(self.head_size))
        if self.attention_scale == "log_n":
            if attention_mask is None:
                n = ops.cast(ops.shape(scores)[-1], "float32") * ops.ones_like(scores[:, :1, :, :1])
            else:
                n = ops.sum(ops.cast(attention_mask, "float32"), axis=-1)[:, None, :, None]
            scores = scores * (ops.log(ops.maximum(n, 1.0)) / math.log(self.training_length))
        if attention_bias is not None:
            bias = ops.cast(attention_bias, "float32")
            scores = scores + (bias if len(bias.shape) == 4 else bias[:, None])
        if attention_mask is not None:
            visible = ops.cast(attention_mask, "bool")[:, None]
            scores = ops.where(visible, scores, -1e12)
        probs = ops.softmax(scores, axis=-1)
        if attention_mask is not None:
            # A query that may see no key at all (the first step of a permutation
            # order) must attend to nothing, not uniformly to everything.
            probs = ops.where(visible, probs, 0.0)
        return self.dropout(ops.cast(probs, self.compute_dtype), training=training)

    def _lean_step(self, q, k, v, cache, index, source_cache, attention_mask, attention_bias, training):
        """A decoding step on a lean cache: one query per row over its source's
        shared keys/values, then over the row's generated ones. Every cache tensor
        is head-major ``(rows or sources, heads, slots, head_size)``, so the products
        read keys and values in place (an einsum over slot-major keys transposed the
        cache every step)."""
        if q.shape[1] != 1:
            raise ValueError(f"a lean-cache step takes one query per row, got {q.shape[1]}")
        heads, size = self.num_heads, self.head_size
        cache_k, cache_v = cache
        source_k, source_v = source_cache
        q = ops.transpose(q, (0, 2, 1, 3))  # (rows, heads, 1, size)
        # The new slot as a scatter of (row, head, index) vectors: ~0.4 ms a step less
        # than slice_update on bench/decode.py's batch of 8 (inside the decoding loop
        # TensorFlow still copies the tensor it scatters into: the profiler shows
        # ~0.15 ms per layer's keys or values there).
        rows = ops.shape(q)[0]
        row_head = ops.stack(ops.meshgrid(ops.arange(rows, dtype="int32"), ops.arange(heads, dtype="int32"),
                                          indexing="ij"), axis=-1)
        slot = ops.full((rows, heads, 1), ops.cast(index, "int32"), dtype="int32")
        where = ops.reshape(ops.concatenate([row_head, slot], axis=-1), (-1, 3))
        cache_k = ops.scatter_update(cache_k, where, ops.reshape(ops.cast(k, cache_k.dtype), (-1, size)))
        cache_v = ops.scatter_update(cache_v, where, ops.reshape(ops.cast(v, cache_v.dtype), (-1, size)))
        sources, source_len = ops.shape(source_k)[0], ops.shape(source_k)[2]
        # The rows of a source as one (rows of the source x size) matrix per head.
        grouped = ops.transpose(ops.reshape(q, (sources, -1, heads, size)), (0, 2, 1, 3))
        source_scores = ops.matmul(grouped, ops.transpose(ops.cast(source_k, q.dtype), (0, 1, 3, 2)))
        source_scores = ops.reshape(ops.transpose(source_scores, (0, 2, 1, 3)), (-1, heads, 1, source_len))
        scores = ops.matmul(q, ops.transpose(ops.cast(cache_k, q.dtype), (0, 1, 3, 2)))  # (rows, heads, 1, slots)
        probs = self._probabilities(ops.concatenate([source_scores, scores], axis=-1), attention_mask,
                                    attention_bias, training)
        source_probs = ops.reshape(probs[..., :source_len], (sources, -1, heads, source_len))
        context = ops.matmul(ops.transpose(source_probs, (0, 2, 1, 3)), ops.cast(source_v, probs.dtype))
        context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (-1, heads, 1, size))
        context = context + ops.matmul(probs[..., source_len:], ops.cast(cache_v, probs.dtype))
        output = self.output_dense(ops.reshape(context, (-1, 1, heads * size)))
        return output, (cache_k, cache_v)

    def _rotate(self, q, k, position_ids, offset):
        if position_ids is None:
            q_positions = ops.arange(ops.shape(q)[1], dtype="int32")[None, :]
            k_positions = ops.arange(ops.shape(k)[1], dtype="int32")[None, :]
            if offset is not None:
                q_positions, k_positions = q_positions + offset, k_positions + offset
        else:
            q_positions = k_positions = position_ids
        if position_ids is not None or (offset is None and q.shape[1] is not None and q.shape[1] == k.shape[1]):
            # Queries and keys at the same positions: one cos/sin table for both.
            angles = rotary_angles(q_positions, self.head_size)
            return apply_rotary(q, q_positions, angles=angles), apply_rotary(k, k_positions, angles=angles)
        return apply_rotary(q, q_positions), apply_rotary(k, k_positions)

    def compute_output_spec(self, query, value=None, cache=None, **kwargs):
        out = keras.KerasTensor(tuple(query.shape[:-1]) + (self.output_dim,), dtype=self.compute_dtype)
        if cache is None:
            return out
        return out, keras.KerasTensor(cache.shape, dtype=cache.dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "head_size": self.head_size,
            "output_dim": self.output_dim,
            "attention_dropout": self.attention_dropout,
            "attention_scale": self.attention_scale,
            "training_length": self.training_length,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "rotary": self.rotary,
        }
