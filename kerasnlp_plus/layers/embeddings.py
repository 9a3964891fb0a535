"""Embedding layers: a token embedding that doubles as the tied MLM output matrix, and
learned position embeddings with the hierarchical decomposition for long inputs."""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class TokenEmbedding(keras.layers.Embedding):
    """``keras.layers.Embedding`` that can also project hidden states back onto the
    vocabulary with its own (tied) matrix: ``layer(h, reverse=True) == h @ E^T``.

    >>> import numpy as np
    >>> emb = TokenEmbedding(10, 4)
    >>> tuple(emb(np.array([[1, 2]])).shape), tuple(emb(np.zeros((1, 2, 4)), reverse=True).shape)
    ((1, 2, 4), (1, 2, 10))
    """

    def call(self, inputs, reverse=False):
        if reverse:
            kernel = ops.cast(self.embeddings, self.compute_dtype)
            return ops.matmul(inputs, ops.transpose(kernel))
        return super().call(inputs)

    def compute_output_spec(self, inputs, reverse=False):
        if reverse:
            return keras.KerasTensor(tuple(inputs.shape[:-1]) + (self.input_dim,), dtype=self.compute_dtype)
        return super().compute_output_spec(inputs)


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute positions, optionally extended hierarchically (kexue.fm 7947).

    With ``hierarchical=alpha`` the table ``p`` of ``n`` trained positions becomes
    ``q[i*n + j] = alpha*u[i] + (1-alpha)*u[j]`` with ``u = (p - alpha*p[0]) / (1-alpha)``,
    valid up to ``n*n`` positions; ``q[k] == p[k]`` exactly for ``k < n`` (the first
    ``n`` rows are taken from ``p`` directly, not recomputed, so no rounding creeps in).
    Without it, an input longer than the table is an error, never a silent wrap.

    Call with the embedded tokens ``(batch, length, dim)`` (only the length is used) or
    with explicit ``position_ids`` ``(batch, length)``.
    """

    def __init__(self, input_dim, output_dim, hierarchical=None, embeddings_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        if hierarchical is True:
            hierarchical = 0.4
        if hierarchical is not None and not 0.0 < float(hierarchical) < 1.0:
            raise ValueError(f"hierarchical_position alpha must be in (0, 1), got {hierarchical}")
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.hierarchical = None if hierarchical in (None, False) else float(hierarchical)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    @property
    def max_length(self):
        return self.input_dim ** 2 if self.hierarchical else self.input_dim

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            shape=(self.input_dim, self.output_dim), initializer=self.embeddings_initializer, name="embeddings"
        )
        self.built = True

    def call(self, inputs=None, position_ids=None):
        if position_ids is None:
            length = inputs.shape[1]
            if length is not None and length > self.max_length:
                raise ValueError(
                    f"input length {length} exceeds the {self.max_length} positions of layer "
                    f"{self.name!r}; build with hierarchical_position=True to extend to "
                    f"{self.input_dim ** 2}"
                )
            position_ids = ops.arange(ops.shape(inputs)[1], dtype="int32")[None, :]
        position_ids = ops.cast(position_ids, "int32")
        table = ops.cast(self.embeddings, self.compute_dtype)
        if not self.hierarchical:
            return ops.take(table, position_ids, axis=0)
        alpha, n = self.hierarchical, self.input_dim
        u = (table - alpha * table[:1]) / (1.0 - alpha)
        outer = ops.take(u, position_ids // n, axis=0)
        inner = ops.take(u, position_ids % n, axis=0)
        extended = alpha * outer + (1.0 - alpha) * inner
        original = ops.take(table, ops.minimum(position_ids, n - 1), axis=0)
        return ops.where(ops.expand_dims(position_ids < n, -1), original, extended)

    def compute_output_spec(self, inputs=None, position_ids=None):
        if position_ids is not None:
            shape = tuple(position_ids.shape) + (self.output_dim,)
        else:
            shape = (1, inputs.shape[1], self.output_dim)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "hierarchical": self.hierarchical,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        }


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class BiasAdd(keras.layers.Layer):
    """Adds a learned bias over the last axis (the MLM output bias)."""

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="bias")
        self.built = True

    def call(self, inputs):
        return inputs + ops.cast(self.bias, inputs.dtype)


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class TakeFirstToken(keras.layers.Layer):
    """``x[:, 0]``: the [CLS] vector that the pooler reads."""

    def call(self, inputs):
        return inputs[:, 0]

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((inputs.shape[0],) + tuple(inputs.shape[2:]), dtype=inputs.dtype)


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class FactorizedMapping(keras.layers.Layer):
    """A bias-free ``(embedding_size, hidden_size)`` projection usable both ways.

    brightmart's ALBERT maps token embeddings up with ``word_embeddings_2`` before the
    position/segment sum, and its MLM head maps back down with the transpose of the
    same matrix (``reverse=True``) before the tied output embedding.
    """

    def __init__(self, input_dim, output_dim, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape=None):
        self.kernel = self.add_weight(
            shape=(self.input_dim, self.output_dim), initializer=self.kernel_initializer, name="kernel"
        )
        self.built = True

    def call(self, inputs, reverse=False):
        kernel = ops.cast(self.kernel, self.compute_dtype)
        return ops.matmul(inputs, ops.transpose(kernel) if reverse else kernel)

    def compute_output_spec(self, inputs, reverse=False):
        dim = self.input_dim if reverse else self.output_dim
        return keras.KerasTensor(tuple(inputs.shape[:-1]) + (dim,), dtype=self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
