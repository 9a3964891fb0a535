"""Embedding layers: a token embedding that doubles as the tied MLM output matrix, and
learned position embeddings with the hierarchical decomposition for long inputs.

Position and segment ids beyond their tables are never looked up silently:

* called eagerly, the layer raises ``ValueError`` with the package's message;
* in a TensorFlow graph that XLA does not compile (``jit_compile=False``, Keras
  ``fit``/``predict`` on CPU by default), an ``Assert`` placed before the lookup raises
  ``InvalidArgumentError`` carrying the same message;
* under XLA (``jit_compile=True``: the Generator's default, Keras on GPU by default)
  TensorFlow compiles ``Assert`` to nothing (tf2xla's ``assert_op.cc`` logs "Ignoring
  Assert operator") and a gather clamps its index, so an overflow cannot raise inside
  the compiled program; the embedding rows of out-of-range ids are NaN instead, so
  every output depending on them (and any loss) is NaN rather than plausibly wrong.

XLA is therefore covered on the host, before the compiled program runs: every Keras
entry point of :class:`kerasnlp_plus.models.Transformer` (``fit``, ``evaluate``,
``predict``, ``train_on_batch``, ``test_on_batch``, ``predict_on_batch``) checks its
data with :class:`kerasnlp_plus.generation.validation.InputRangeCheck` (numpy at once;
a ``tf.data.Dataset`` through a ``map`` run by tf.data; generators and ``PyDataset`` objects
batch by batch), token ids against the vocabulary included (:class:`TokenEmbedding`
itself does not check: under XLA its gather clamps); the Generator and
:func:`kerasnlp_plus.generation.validation.check_sequence_length` check lengths before
decoding. What is left is a user's own ``tf.function(jit_compile=True)`` that calls the
model (or a ``keras.Model`` built on its inputs) directly: there, out-of-range
positions and segments give NaN rows and out-of-range token ids the last row, and
nothing raises. :func:`check_id_range` is the one range check all these use.
"""
import keras
import numpy as np
from keras import ops


def check_id_range(ids, limit, describe):
    """Refuse ids outside ``[0, limit)`` with one vectorised min/max.

    Given numpy data or an eager tensor, raises ``ValueError(describe(low, high))``
    (float ids are truncated first, as the layers' cast does). Given a tensor in a TF
    graph, returns a ``tf.debugging.Assert`` op carrying ``describe(None, None)`` and the
    smallest and largest ids: the caller makes its result depend on it. That op raises
    in a graph TensorFlow runs itself (a ``tf.data`` map, a ``tf.function`` without
    XLA) and is compiled away under XLA (module docstring). Returns None when nothing
    is left to check. Used by the layers and by the host-side checks of
    :class:`kerasnlp_plus.models.Transformer` ``fit``/``evaluate``/``predict``."""
    import tensorflow as tf

    if tf.is_tensor(ids) and not tf.executing_eagerly():
        ids = tf.cast(ids, tf.int32)
        low, high = tf.reduce_min(ids), tf.reduce_max(ids)  # of no ids: int max, int min, which pass
        return tf.debugging.Assert(
            tf.logical_and(low >= 0, high < limit),
            [describe(None, None) + "; smallest and largest ids given:", low, high],
            summarize=2,
        )
    values = np.asarray(ids)
    if values.size:
        low, high = np.trunc(values.min()), np.trunc(values.max())
        if low < 0 or high >= limit:
            raise ValueError(describe(int(low), int(high)))
    return None


def _checked_ids(ids, limit, describe):
    """``(ids clipped into [0, limit), in-range mask)``, raising for ids outside
    ``[0, limit)`` where the computation can raise (eagerly, or in a TF graph not
    compiled by XLA). ``describe(low, high)`` is the error message; in a graph the
    values are appended by ``Assert`` instead (``describe(None, None)``)."""
    ids = ops.cast(ids, "int32")  # inputs may arrive as floats (bert4keras feeds float32)
    in_range = ops.logical_and(ops.greater_equal(ids, 0), ops.less(ids, limit))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        check = check_id_range(ids, limit, describe)
        if check is not None:
            # Without a control dependency TF may run the gather first and fail with its
            # own GatherV2 message; under XLA this Assert is compiled away (see above).
            with tf.control_dependencies([check]):
                ids = tf.identity(ids)
    return ops.clip(ids, 0, limit - 1), in_range


def _nan_where_invalid(embedded, in_range):
    """``embedded`` with the rows of out-of-range ids set to NaN (the XLA path)."""
    nan = ops.cast(float("nan"), embedded.dtype)
    return ops.where(ops.expand_dims(in_range, -1), embedded, nan)


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

    def overflow_message(self, low=None, high=None):
        """The package's message for token ids outside the vocabulary (raised by the
        host-side checks of ``Transformer.fit``/``evaluate``/``predict``; the layer
        itself does not check, and XLA clamps such an id to the last row)."""
        got = "" if high is None else f", got token ids from {low} to {high}"
        return (f"token ids must lie in [0, {self.input_dim}) for layer {self.name!r} "
                f"(vocab_size={self.input_dim}){got}")

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
    with explicit ``position_ids`` ``(batch, length)``. A position outside
    ``[0, max_length)`` raises where the graph can raise, and embeds as NaN under XLA
    (module docstring).
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

    def _extension_hint(self):
        if self.hierarchical:
            return (f"the hierarchical extension (alpha={self.hierarchical}) of the {self.input_dim} trained "
                    f"positions already reaches its limit of {self.input_dim} ** 2")
        return (f"build with hierarchical_position=True to extend the {self.input_dim} trained positions "
                f"to {self.input_dim ** 2}")

    def overflow_message(self, low=None, high=None):
        """The package's message for position ids outside the table (one text for the
        eager and graph checks)."""
        got = "" if high is None else f", got position ids from {low} to {high}"
        return (f"position ids must lie in [0, {self.max_length}) for layer {self.name!r} (its position "
                f"table has {self.max_length} positions){got}; shorten the input or {self._extension_hint()}")

    def check_length(self, length, what="input length"):
        """Host-side check that ``length`` tokens (positions ``0 .. length-1``) fit."""
        if int(length) > self.max_length:
            raise ValueError(
                f"{what} {int(length)} exceeds the {self.max_length} positions of layer {self.name!r}; "
                f"shorten the input or {self._extension_hint()}"
            )

    def call(self, inputs=None, position_ids=None):
        if position_ids is None:
            length = inputs.shape[1]
            if length is not None:
                self.check_length(length, "input length")
            position_ids = ops.arange(ops.shape(inputs)[1], dtype="int32")[None, :]
        position_ids, in_range = _checked_ids(position_ids, self.max_length, self.overflow_message)
        table = ops.cast(self.embeddings, self.compute_dtype)
        if not self.hierarchical:
            return _nan_where_invalid(ops.take(table, position_ids, axis=0), in_range)
        alpha, n = self.hierarchical, self.input_dim
        u = (table - alpha * table[:1]) / (1.0 - alpha)
        outer = ops.take(u, position_ids // n, axis=0)
        inner = ops.take(u, position_ids % n, axis=0)
        extended = alpha * outer + (1.0 - alpha) * inner
        original = ops.take(table, ops.minimum(position_ids, n - 1), axis=0)
        return _nan_where_invalid(ops.where(ops.expand_dims(position_ids < n, -1), original, extended), in_range)

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
class SegmentEmbedding(keras.layers.Embedding):
    """``keras.layers.Embedding`` for segment (token type) ids that refuses ids
    outside ``[0, type_vocab_size)``: raises where the graph can raise, NaN rows under
    XLA (module docstring), instead of Keras' raw gather error or a silent clamp."""

    def overflow_message(self, low=None, high=None):
        got = "" if high is None else f", got segment ids from {low} to {high}"
        return (f"segment ids must lie in [0, {self.input_dim}) for layer {self.name!r} "
                f"(type_vocab_size={self.input_dim}){got}")

    def call(self, inputs):
        ids, in_range = _checked_ids(inputs, self.input_dim, self.overflow_message)
        return _nan_where_invalid(super().call(ids), in_range)


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
