"""bert4keras 0.11.5's training layers on Keras 3: ``Loss``, ``ConditionalRandomField``,
``MaximumEntropyMarkovModel``, ``ScaleOffset``, (conditional) ``LayerNormalization``, ``GlobalPointer``,
``EfficientGlobalPointer`` and the masked poolings.

Each has bert4keras' constructor arguments, call convention and output, and a
``get_config`` (registered for ``.keras``).
"""
import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kerasnlp_plus.backend import sequence_masking


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class Loss(keras.layers.Layer):
    """A layer that adds a loss computed from its inputs (bert4keras ``Loss``).

    Subclass it and define ``compute_loss(self, inputs, mask=None)``; ``mask`` is the
    list of the inputs' Keras masks (None where an input has none: the model's inputs;
    a sequence output of :func:`build_transformer_model` carries ``token_ids != 0``).
    The layer returns ``inputs[output_axis]`` (an int), a list of them (a list), or all
    inputs (None), so ``Model(model.inputs, CrossEntropy(2)(model.inputs +
    model.outputs))`` trains with ``compile(optimizer=...)`` and no ``loss=``.
    """

    def __init__(self, output_axis=None, **kwargs):
        super().__init__(**kwargs)
        self.output_axis = output_axis
        self.supports_masking = True

    def call(self, inputs, mask=None):
        loss = self.compute_loss(inputs, mask)
        self.add_loss(loss)
        return self._select(inputs)

    def _select(self, values):
        if self.output_axis is None:
            return values
        if isinstance(self.output_axis, list):
            return [values[i] for i in self.output_axis]
        return values[self.output_axis]

    def compute_loss(self, inputs, mask=None):
        raise NotImplementedError(f"{type(self).__name__} must define compute_loss(self, inputs, mask=None)")

    def compute_output_spec(self, inputs, mask=None):
        def spec(x):
            return keras.KerasTensor(x.shape, dtype=x.dtype)

        selected = self._select(inputs)
        if isinstance(selected, (list, tuple)):
            return [spec(x) for x in selected]
        return spec(selected)

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        return self._select(mask)

    def get_config(self):
        return {**super().get_config(), "output_axis": self.output_axis}


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class ConditionalRandomField(keras.layers.Layer):
    """Linear-chain CRF (bert4keras ``ConditionalRandomField``).

    Call it on per-token label scores ``(batch, length, num_labels)``; it returns them
    with padded positions (Keras mask 0) set to ``-inf`` and learns the transition
    matrix ``trans[i, j]`` (score of label ``j`` after label ``i``). Train with
    ``loss=crf.sparse_loss`` (integer labels) or ``crf.dense_loss`` (one-hot), the
    negative log-likelihood ``log Z - score(path)``; ``crf.sparse_accuracy`` is the
    per-token accuracy over unpadded positions. Decode with
    :class:`kerasnlp_plus.snippets.ViterbiDecoder` and ``K.eval(crf.trans)``.

    ``lr_multiplier``: the weight is stored divided by it and used multiplied by it,
    so the transitions learn ``lr_multiplier`` times faster (bert4keras' trick).
    """

    def __init__(self, lr_multiplier=1, **kwargs):
        super().__init__(**kwargs)
        self.lr_multiplier = lr_multiplier
        self.supports_masking = True

    def build(self, input_shape):
        output_dim = int(input_shape[-1])
        multiplier = float(self.lr_multiplier)
        base = keras.initializers.GlorotUniform()

        def initializer(shape, dtype=None):
            return base(shape, dtype=dtype) / multiplier

        self._trans = self.add_weight(name="trans", shape=(output_dim, output_dim), initializer=initializer)
        self.built = True

    @property
    def trans(self):
        if self.lr_multiplier != 1:
            return self.lr_multiplier * self._trans
        return self._trans

    def compute_mask(self, inputs, mask=None):
        return None

    def call(self, inputs, mask=None):
        return sequence_masking(inputs, mask, -np.inf, 1)

    def compute_output_spec(self, inputs, mask=None):
        return keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)

    def target_score(self, y_true, y_pred):
        """Unnormalized score of the path ``y_true`` (one-hot): emissions + transitions."""
        trans = ops.cast(self.trans, y_pred.dtype)
        point_score = ops.einsum("bni,bni->b", y_true, y_pred)
        trans_score = ops.einsum("bni,ij,bnj->b", y_true[:, :-1], trans, y_true[:, 1:])
        return point_score + trans_score

    def log_norm(self, y_pred, mask):
        """``log Z`` per sequence by the forward algorithm; ``mask`` float
        ``(batch, length, 1)``: a padded step carries the previous state over."""
        trans = ops.cast(self.trans, y_pred.dtype)[None]  # (1, labels, labels)

        def step(states, inputs):
            emissions, step_mask = inputs
            outputs = ops.logsumexp(states[:, :, None] + trans, axis=1) + emissions
            return step_mask * outputs + (1 - step_mask) * states

        # tf.scan runs over the leading axis: put time first.
        emissions = ops.transpose(y_pred[:, 1:], (1, 0, 2))
        step_masks = ops.transpose(mask[:, 1:], (1, 0, 2))
        states = tf.scan(step, (emissions, step_masks), initializer=y_pred[:, 0])
        final = ops.concatenate([y_pred[None, :, 0], states], axis=0)[-1]
        return ops.logsumexp(final, axis=1)

    def dense_loss(self, y_true, y_pred):
        """Negative log-likelihood; ``y_true`` one-hot ``(batch, length, labels)``."""
        mask = ops.all(ops.not_equal(y_pred, -np.inf), axis=2, keepdims=True)
        y_true = ops.where(mask, ops.cast(y_true, y_pred.dtype), 0.0)
        y_pred = ops.where(mask, y_pred, 0.0)
        target_score = self.target_score(y_true, y_pred)
        log_norm = self.log_norm(y_pred, ops.cast(mask, y_pred.dtype))
        return log_norm - target_score

    def sparse_loss(self, y_true, y_pred):
        """Negative log-likelihood; ``y_true`` integer labels ``(batch, length)``."""
        y_true = ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:-1]), "int32")
        y_true = ops.one_hot(y_true, ops.shape(self.trans)[0], dtype=y_pred.dtype)
        return self.dense_loss(y_true, y_pred)

    def dense_accuracy(self, y_true, y_pred):
        return self.sparse_accuracy(ops.argmax(y_true, 2), y_pred)

    def sparse_accuracy(self, y_true, y_pred):
        """Per-token accuracy of the argmax labels, padding excluded."""
        mask = ops.cast(ops.all(ops.not_equal(y_pred, -np.inf), axis=2), "float32")
        y_true = ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:-1]), "int32")
        y_pred = ops.cast(ops.argmax(y_pred, 2), "int32")
        is_equal = ops.cast(ops.equal(y_true, y_pred), "float32")
        return ops.sum(is_equal * mask) / ops.sum(mask)

    def get_config(self):
        return {**super().get_config(), "lr_multiplier": self.lr_multiplier}


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class MaximumEntropyMarkovModel(ConditionalRandomField):
    """Bidirectional MEMM (bert4keras ``MaximumEntropyMarkovModel``, kexue.fm 7213).

    Called like the CRF (padding becomes ``-inf``). At step ``t`` the label logits are
    ``(emission[t] + trans[label[t-1]]) / 2`` (the first step: the emission alone);
    the loss is the token cross-entropy averaged over the unpadded tokens of the
    batch, taken left to right with ``trans`` and right to left (each sequence
    reversed within its length) with ``trans`` transposed, and the two averaged; the
    accuracies likewise. ``hidden_dim``: ``trans = l_trans @ r_trans.T`` (low rank).
    Decode with ``ViterbiDecoder`` and ``K.eval(memm.trans)``.
    """

    def __init__(self, lr_multiplier=1, hidden_dim=None, **kwargs):
        super().__init__(lr_multiplier=lr_multiplier, **kwargs)
        self.hidden_dim = hidden_dim

    def build(self, input_shape):
        if self.hidden_dim is None:
            return super().build(input_shape)
        output_dim = int(input_shape[-1])
        multiplier = float(self.lr_multiplier)
        base = keras.initializers.GlorotUniform()

        def initializer(shape, dtype=None):
            return base(shape, dtype=dtype) / multiplier

        self._l_trans = self.add_weight(name="l_trans", shape=(output_dim, self.hidden_dim), initializer=initializer)
        self._r_trans = self.add_weight(name="r_trans", shape=(output_dim, self.hidden_dim), initializer=initializer)
        self.built = True

    @property
    def l_trans(self):
        return self.lr_multiplier * self._l_trans if self.lr_multiplier != 1 else self._l_trans

    @property
    def r_trans(self):
        return self.lr_multiplier * self._r_trans if self.lr_multiplier != 1 else self._r_trans

    @property
    def trans(self):
        if self.hidden_dim is None:
            return super().trans
        return ops.matmul(self.l_trans, ops.transpose(self.r_trans))

    def _step_logits(self, y_true, y_pred, go_backwards):
        """``(mask, labels, logits)`` of one direction; padded steps hold 0 logits."""
        mask = ops.cast(ops.all(ops.not_equal(y_pred, -np.inf), axis=2), y_pred.dtype)
        y_true = ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:-1]), "int32")
        y_pred = ops.where(mask[..., None] > 0, y_pred, 0.0)  # padding is masked out below
        trans = ops.cast(self.trans, y_pred.dtype)
        if go_backwards:  # reverse each sequence within its length
            lengths = ops.cast(ops.sum(mask, axis=1), "int32")
            y_true = tf.reverse_sequence(y_true, lengths, seq_axis=1, batch_axis=0)
            y_pred = tf.reverse_sequence(y_pred, lengths, seq_axis=1, batch_axis=0)
            trans = ops.transpose(trans)
        history = ops.take(trans, y_true, axis=0)
        history = ops.concatenate([y_pred[:, :1], history[:, :-1]], axis=1)
        logits = ops.where(mask[..., None] > 0, (y_pred + history) / 2, 0.0)
        return mask, y_true, logits

    def _basic_loss(self, y_true, y_pred, go_backwards):
        mask, y_true, logits = self._step_logits(y_true, y_pred, go_backwards)
        loss = keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)
        return ops.sum(loss * mask) / ops.sum(mask)

    def _basic_accuracy(self, y_true, y_pred, go_backwards):
        mask, y_true, logits = self._step_logits(y_true, y_pred, go_backwards)
        is_equal = ops.cast(ops.equal(y_true, ops.cast(ops.argmax(logits, 2), "int32")), mask.dtype)
        return ops.sum(is_equal * mask) / ops.sum(mask)

    def sparse_loss(self, y_true, y_pred):
        """``y_true``: integer labels ``(batch, length)``."""
        return (self._basic_loss(y_true, y_pred, False) + self._basic_loss(y_true, y_pred, True)) / 2

    def dense_loss(self, y_true, y_pred):
        return self.sparse_loss(ops.argmax(y_true, 2), y_pred)

    def sparse_accuracy(self, y_true, y_pred):
        return (self._basic_accuracy(y_true, y_pred, False) + self._basic_accuracy(y_true, y_pred, True)) / 2

    def dense_accuracy(self, y_true, y_pred):
        return self.sparse_accuracy(ops.argmax(y_true, 2), y_pred)

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim}


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class ScaleOffset(keras.layers.Layer):
    """bert4keras' ``ScaleOffset``: ``x * gamma + beta`` over the last axis. With
    ``conditional=True`` call it on ``[x, condition]``: gamma and beta become
    ``gamma + Dense(c)`` and ``beta + Dense(c)`` (zero-initialized; ``hidden_units``
    puts a ``hidden_activation`` Dense on the condition first). ``scale``/``offset``:
    True (learned), False/None (off) or a number (a constant)."""

    def __init__(self, scale=True, offset=True, conditional=False, hidden_units=None,
                 hidden_activation="linear", hidden_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.offset = offset
        self.conditional = conditional
        self.hidden_units = hidden_units
        self.hidden_activation = hidden_activation
        self.hidden_initializer = keras.initializers.get(hidden_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        x_shape = input_shape[0] if self.conditional else input_shape
        dim = int(x_shape[-1])
        # weight order as bert4keras': beta, gamma, hidden, beta_dense, gamma_dense
        self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros") if self.offset is True else None
        self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones") if self.scale is True else None
        self.hidden_dense = self.beta_dense = self.gamma_dense = None
        if self.conditional:
            condition_shape = tuple(input_shape[1])
            if self.hidden_units is not None:
                self.hidden_dense = keras.layers.Dense(
                    self.hidden_units, activation=self.hidden_activation, use_bias=False,
                    kernel_initializer=self.hidden_initializer, name="hidden_dense")
                self.hidden_dense.build(condition_shape)
                condition_shape = condition_shape[:-1] + (self.hidden_units,)
            if self.offset not in (False, None):
                self.beta_dense = keras.layers.Dense(dim, use_bias=False, kernel_initializer="zeros", name="beta_dense")
                self.beta_dense.build(condition_shape)
            if self.scale not in (False, None):
                self.gamma_dense = keras.layers.Dense(dim, use_bias=False, kernel_initializer="zeros",
                                                      name="gamma_dense")
                self.gamma_dense.build(condition_shape)
        self.built = True

    def compute_mask(self, inputs, mask=None):
        if self.conditional:
            return mask[0] if isinstance(mask, (list, tuple)) else mask
        return mask

    def _affine(self, x, condition):
        if condition is not None:
            if self.hidden_dense is not None:
                condition = self.hidden_dense(condition)
            for _ in range(len(x.shape) - len(condition.shape)):  # align on the batch axis
                condition = ops.expand_dims(condition, 1)
        if self.scale not in (False, None):
            gamma = self.gamma if self.scale is True else self.scale
            if condition is not None:
                gamma = gamma + self.gamma_dense(condition)
            x = x * gamma
        if self.offset not in (False, None):
            beta = self.beta if self.offset is True else self.offset
            if condition is not None:
                beta = beta + self.beta_dense(condition)
            x = x + beta
        return x

    def call(self, inputs, mask=None):
        x, condition = (inputs[0], inputs[1]) if self.conditional else (inputs, None)
        return self._affine(x, condition)

    def compute_output_spec(self, inputs, mask=None):
        x = inputs[0] if self.conditional else inputs
        return keras.KerasTensor(x.shape, dtype=self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "scale": self.scale,
            "offset": self.offset,
            "conditional": self.conditional,
            "hidden_units": self.hidden_units,
            "hidden_activation": self.hidden_activation,
            "hidden_initializer": keras.initializers.serialize(self.hidden_initializer),
        }


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class LayerNormalization(ScaleOffset):
    """bert4keras 0.11.5's (Conditional) ``LayerNormalization`` (kexue.fm 7124):
    ``zero_mean``, ``unit_variance``, ``epsilon`` (default ``keras.backend.epsilon()``,
    as there) and all of :class:`ScaleOffset`'s arguments; with ``conditional=True``
    call it on ``[x, condition]``."""

    def __init__(self, zero_mean=True, unit_variance=True, epsilon=None, **kwargs):
        super().__init__(**kwargs)
        self.zero_mean = zero_mean
        self.unit_variance = unit_variance
        self.epsilon = epsilon or keras.backend.epsilon()

    def call(self, inputs, mask=None):
        x, condition = (inputs[0], inputs[1]) if self.conditional else (inputs, None)
        if self.zero_mean:
            x = x - ops.mean(x, axis=-1, keepdims=True)
        if self.unit_variance:
            variance = ops.mean(ops.square(x), axis=-1, keepdims=True)
            x = ops.divide_no_nan(x, ops.sqrt(variance + self.epsilon))
        return self._affine(x, condition)

    def get_config(self):
        return {**super().get_config(), "zero_mean": self.zero_mean, "unit_variance": self.unit_variance,
                "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class GlobalAveragePooling1D(keras.layers.GlobalAveragePooling1D):
    """Masked mean over the sequence (Keras' own honours the mask, as bert4keras')."""


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class GlobalMaxPooling1D(keras.layers.Layer):
    """Max over the sequence with padded positions excluded (bert4keras behaviour)."""

    def __init__(self, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        self.data_format = data_format
        self.supports_masking = True

    def call(self, inputs, mask=None):
        axis = 1 if self.data_format == "channels_last" else 2
        inputs = sequence_masking(inputs, mask, -np.inf, axis)
        return ops.max(inputs, axis=axis)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_spec(self, inputs, mask=None):
        shape = (inputs.shape[0], inputs.shape[2] if self.data_format == "channels_last" else inputs.shape[1])
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class GlobalPointer(keras.layers.Layer):
    """GlobalPointer span scorer (kexue.fm 8373): ``(batch, heads, length, length)``
    scores of spans ``[i, j]``, padding and ``i > j`` (``tril_mask``) set to ``-inf``, with rotary
    positions (``RoPE=True``)."""

    def __init__(self, heads, head_size, RoPE=True, use_bias=True, tril_mask=True,
                 kernel_initializer="lecun_normal", **kwargs):
        super().__init__(**kwargs)
        self.heads = int(heads)
        self.head_size = int(head_size)
        self.RoPE = RoPE
        self.use_bias = use_bias
        self.tril_mask = tril_mask
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        self.dense = keras.layers.Dense(self.head_size * self.heads * 2, use_bias=self.use_bias,
                                        kernel_initializer=self.kernel_initializer, name="dense")
        self.dense.build(input_shape)
        self.built = True

    def compute_mask(self, inputs, mask=None):
        return None

    def _rope(self, qw, kw):
        from kerasnlp_plus.backend import apply_rotary_position_embeddings, sinusoidal_embeddings

        positions = ops.arange(ops.shape(qw)[1], dtype="float32")[None]
        pos = sinusoidal_embeddings(positions, self.head_size)[:, :, None]
        return apply_rotary_position_embeddings(pos, qw, kw)

    def _scores(self, inputs):
        x = self.dense(inputs)
        shape = ops.shape(x)
        x = ops.reshape(x, (shape[0], shape[1], self.heads, 2 * self.head_size))
        qw, kw = x[..., : self.head_size], x[..., self.head_size:]
        if self.RoPE:
            qw, kw = self._rope(qw, kw)
        return ops.einsum("bmhd,bnhd->bhmn", qw, kw) / self.head_size ** 0.5

    def _mask(self, logits, mask):
        logits = sequence_masking(logits, mask, -np.inf, [2, 3])
        if self.tril_mask:  # spans [i, j] with j < i: -inf, as bert4keras 0.11.5
            n = ops.shape(logits)[-1]
            upper = ops.triu(ops.ones((n, n), dtype="bool"))
            logits = ops.where(upper, logits, -np.inf)
        return logits

    def call(self, inputs, mask=None):
        return self._mask(self._scores(inputs), mask)

    def compute_output_spec(self, inputs, mask=None):
        return keras.KerasTensor((inputs.shape[0], self.heads, inputs.shape[1], inputs.shape[1]),
                                 dtype=self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "heads": self.heads,
            "head_size": self.head_size,
            "RoPE": self.RoPE,
            "use_bias": self.use_bias,
            "tril_mask": self.tril_mask,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class EfficientGlobalPointer(GlobalPointer):
    """Efficient GlobalPointer (kexue.fm 8877): shared span scores plus per-head
    start/end biases."""

    def build(self, input_shape):
        self.p_dense = keras.layers.Dense(self.head_size * 2, use_bias=self.use_bias,
                                          kernel_initializer=self.kernel_initializer, name="p_dense")
        self.p_dense.build(input_shape)
        self.q_dense = keras.layers.Dense(self.heads * 2, use_bias=self.use_bias,
                                          kernel_initializer=self.kernel_initializer, name="q_dense")
        self.q_dense.build(tuple(input_shape[:-1]) + (self.head_size * 2,))
        self.built = True

    def _scores(self, inputs):
        x = self.p_dense(inputs)
        qw, kw = x[..., ::2], x[..., 1::2]
        if self.RoPE:
            qw, kw = self._rope(qw[:, :, None], kw[:, :, None])
            qw, kw = qw[:, :, 0], kw[:, :, 0]
        logits = ops.einsum("bmd,bnd->bmn", qw, kw) / self.head_size ** 0.5
        bias = ops.transpose(self.q_dense(x), (0, 2, 1)) / 2
        return logits[:, None] + bias[:, ::2, None] + bias[:, 1::2, :, None]


def integerize_shape(func):
    """bert4keras' decorator of ``build(self, input_shape)``: dimensions as ints (or
    None), also from TF1 ``Dimension`` objects."""

    def convert(item):
        if hasattr(item, "__iter__"):
            return [convert(i) for i in item]
        return getattr(item, "value", item)

    def new_func(self, input_shape):
        return func(self, convert(input_shape))

    return new_func


class Layer(keras.layers.Layer):
    """bert4keras' base layer: a Keras layer that passes the Keras mask on."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class Embedding(keras.layers.Embedding):
    """bert4keras' ``Embedding``: ``call(ids)`` looks up (the first position is
    never masked, as there, for T5), ``call(x, mode='dense')`` multiplies by the
    transposed table (a bias-free output projection tied to the embedding)."""

    def compute_mask(self, inputs, mask=None):
        if len(inputs.shape) != 2:
            return mask
        mask = super().compute_mask(inputs, mask)
        if mask is None:
            return None
        return ops.concatenate([ops.ones_like(mask[:, :1]), mask[:, 1:]], axis=1)

    def call(self, inputs, mode="embedding"):
        if mode == "embedding":
            return super().call(inputs)
        return ops.matmul(inputs, ops.transpose(ops.cast(self.embeddings, inputs.dtype)))

    def compute_output_spec(self, inputs, mode="embedding"):
        if mode == "embedding":
            return super().compute_output_spec(inputs)
        return keras.KerasTensor(tuple(inputs.shape[:-1]) + (self.input_dim,), dtype=self.compute_dtype)


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class Concatenate1D(Layer):
    """Concatenation along the sequence axis whose mask treats an unmasked input as
    all visible (bert4keras ``Concatenate1D``)."""

    def call(self, inputs):
        return ops.concatenate(inputs, axis=1)

    def compute_mask(self, inputs, mask=None):
        if mask is None or all(m is None for m in mask):
            return None
        masks = [ops.ones_like(x[..., 0], dtype="bool") if m is None else m for x, m in zip(inputs, mask)]
        return ops.concatenate(masks, axis=1)

    def compute_output_spec(self, inputs):
        lengths = [x.shape[1] for x in inputs]
        length = sum(lengths) if all(n is not None for n in lengths) else None
        return keras.KerasTensor((inputs[0].shape[0], length) + tuple(inputs[0].shape[2:]), dtype=inputs[0].dtype)


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class SinusoidalPositionEmbedding(Layer):
    """Sinusoidal position embeddings (bert4keras ``SinusoidalPositionEmbedding``),
    merged with the input by ``merge_mode``: ``'add'``, ``'mul'`` (``x * (pe + 1)``),
    ``'zero'`` (the embeddings alone) or ``'concat'``. With ``custom_position_ids``
    call it on ``[x, position_ids]``."""

    def __init__(self, output_dim, merge_mode="add", custom_position_ids=False, **kwargs):
        super().__init__(**kwargs)
        self.output_dim = output_dim
        self.merge_mode = merge_mode
        self.custom_position_ids = custom_position_ids

    def call(self, inputs):
        from kerasnlp_plus.backend import sinusoidal_embeddings

        if self.custom_position_ids:
            inputs, position_ids = inputs
            position_ids = ops.cast(position_ids, keras.backend.floatx())
        else:
            position_ids = ops.arange(ops.shape(inputs)[1], dtype=keras.backend.floatx())[None]
        embeddings = sinusoidal_embeddings(position_ids, self.output_dim)
        if self.merge_mode == "add":
            return inputs + embeddings
        if self.merge_mode == "mul":
            return inputs * (embeddings + 1.0)
        if self.merge_mode == "zero":
            return embeddings
        if not self.custom_position_ids:
            embeddings = ops.tile(embeddings, [ops.shape(inputs)[0], 1, 1])
        return ops.concatenate([inputs, embeddings], axis=-1)

    def compute_output_spec(self, inputs):
        x = inputs[0] if self.custom_position_ids else inputs
        if self.merge_mode == "zero":
            batch = inputs[1].shape[0] if self.custom_position_ids else 1
            return keras.KerasTensor((batch, x.shape[1], self.output_dim), dtype=self.compute_dtype)
        last = self.output_dim if self.merge_mode in ("add", "mul") else x.shape[2] + self.output_dim
        return keras.KerasTensor(tuple(x.shape[:2]) + (last,), dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "output_dim": self.output_dim, "merge_mode": self.merge_mode,
                "custom_position_ids": self.custom_position_ids}


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class FeedForward(Layer):
    """bert4keras' ``FeedForward``: ``Dense(units, activation) -> Dense(input dim)``;
    with a list of activations the first Dense becomes a gated linear unit (the
    product of one Dense per activation, arXiv 2002.05202)."""

    def __init__(self, units, activation="relu", use_bias=True, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        activation = activation if isinstance(activation, list) else [activation]
        self.activation = [keras.activations.get(act) for act in activation]
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        output_dim = int(input_shape[-1])
        for i, activation in enumerate(self.activation):  # weight order as bert4keras'
            dense = keras.layers.Dense(self.units, activation=activation, use_bias=self.use_bias,
                                       kernel_initializer=self.kernel_initializer, name=f"i{i}_dense")
            dense.build(input_shape)
            setattr(self, f"i{i}_dense", dense)
        self.o_dense = keras.layers.Dense(output_dim, use_bias=self.use_bias,
                                          kernel_initializer=self.kernel_initializer, name="o_dense")
        self.o_dense.build(tuple(input_shape[:-1]) + (self.units,))
        self.built = True

    def call(self, inputs):
        x = self.i0_dense(inputs)
        for i in range(1, len(self.activation)):
            x = x * getattr(self, f"i{i}_dense")(inputs)
        return self.o_dense(x)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "activation": [keras.activations.serialize(act) for act in self.activation],
                "use_bias": self.use_bias, "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


# bert4keras' ``custom_objects`` for ``load_model``; Keras 3 finds these classes by their
# registration anyway, so passing it is harmless and not needed.
custom_objects = {
    name: obj for name, obj in globals().items()
    if isinstance(obj, type) and issubclass(obj, keras.layers.Layer) and obj.__module__ == __name__
}
