"""bert4keras 0.11.5's ``backend`` module on Keras 3 / TensorFlow.

bert4keras scripts start with ``from bert4keras.backend import keras, K``; with
``from kerasnlp_plus.backend import keras, K`` they get:

* ``keras``: Keras 3 itself;
* ``K``: the Keras-2 backend functions those scripts call (``K.sum``, ``K.cast``,
  ``K.sparse_categorical_crossentropy``, ``K.eval``, ``K.rnn``, ...). Keras 3 dropped
  them from ``keras.backend`` but still ships them as its legacy backend
  (``keras.src.legacy.backend``, TensorFlow only); ``K`` is that module plus
  ``keras.backend`` (``floatx``, ``epsilon``, ``clear_session``, ...) plus the few
  names bert4keras scripts use that neither has (``where``, ``logsumexp``,
  ``learning_phase``, ``in_train_phase``). Like Keras 2's, these functions work on
  tensors, so call them inside a layer's ``call`` (a ``Loss.compute_loss``, a
  ``Lambda``), not on the symbolic outputs of ``keras.Input``;
* bert4keras' own helpers: ``set_gelu``, ``gelu_erf``, ``gelu_tanh``,
  ``piecewise_linear``, ``search_layer``, ``sequence_masking``, ``batch_gather``,
  ``align``, ``reshape``, ``flatten``, ``dtype``, ``where``, ``pool1d``,
  ``divisible_temporal_padding``, ``root_mean_square``, ``swish``, ``leaky_relu``,
  ``attention_normalize``, ``sinusoidal_embeddings``, ``Sinusoidal``,
  ``apply_rotary_position_embeddings``, ``multilabel_categorical_crossentropy``,
  ``sparse_multilabel_categorical_crossentropy``, ``recompute_grad``, ``symbolic``,
  ``get_available_gpus``, ``is_tf_keras``, ``custom_objects``.
"""
import os
import types

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402
from keras.src.legacy import backend as _legacy_backend  # noqa: E402

is_tf_keras = True  # bert4keras' flag: True means "tf.keras-style API"; Keras 3 is one
do_recompute = False


def _where(condition, x=None, y=None):
    """``K.where`` as bert4keras uses it: ``tf.where`` with broadcasting and numbers."""
    if x is None and y is None:
        return tf.where(condition)
    x = tf.convert_to_tensor(x)
    y = tf.convert_to_tensor(y, dtype=x.dtype) if not tf.is_tensor(y) else tf.cast(y, x.dtype)
    return tf.where(condition, x, y)


def _logsumexp(x, axis=None, keepdims=False):
    return tf.reduce_logsumexp(x, axis=axis, keepdims=keepdims)


def _learning_phase():
    """Keras 3 has no global learning phase; bert4keras scripts use it only as the
    ``training`` flag of ``K.in_train_phase`` / ``K.function`` inputs: 0 (inference)."""
    return 0


def _in_train_phase(x, alt, training=None):
    if training is None or training is False or training == 0:
        return alt() if callable(alt) else alt
    return x() if callable(x) else x


def _build_K():
    namespace = {name: getattr(_legacy_backend, name) for name in dir(_legacy_backend) if not name.startswith("_")}
    namespace.update({name: getattr(keras.backend, name) for name in dir(keras.backend) if not name.startswith("_")})
    namespace.update(
        where=_where,
        logsumexp=_logsumexp,
        learning_phase=_learning_phase,
        in_train_phase=_in_train_phase,
        is_tensor=tf.is_tensor,
        is_keras_tensor=keras.backend.is_keras_tensor,
        # bert4keras code calls the backend's name as ``K.backend()``.
        backend=keras.backend.backend,
    )
    module = types.ModuleType("kerasnlp_plus.backend.K", "Keras-2 style backend functions (see kerasnlp_plus.backend)")
    module.__dict__.update(namespace)
    return module


K = _build_K()


def get_available_gpus():
    """Names of the visible GPUs (``'/device:GPU:0'``, ...)."""
    return ["/device:GPU:%d" % i for i, _ in enumerate(tf.config.list_physical_devices("GPU"))]


def gelu_erf(x):
    """The exact GELU (BERT's ``gelu``)."""
    return keras.activations.gelu(x, approximate=False)


def gelu_tanh(x):
    """The tanh approximation of GELU (``gelu_new``)."""
    return keras.activations.gelu(x, approximate=True)


def set_gelu(version):
    """Choose what the activation name ``'gelu'`` means in models built afterwards:
    ``'erf'`` (exact, the default) or ``'tanh'`` (approximation), as in bert4keras."""
    from kerasnlp_plus.layers import transformer as _transformer

    version = str(version).lower()
    if version not in ("erf", "tanh"):
        raise ValueError(f"set_gelu: version must be 'erf' or 'tanh', got {version!r}")
    _transformer.ACTIVATIONS["gelu"] = gelu_erf if version == "erf" else gelu_tanh


def piecewise_linear(t, schedule, from_zero=True):
    """Piecewise-linear function of ``t``: ``schedule = {1000: 1, 2000: 0.1}`` rises
    from 0 to 1 over ``[0, 1000]``, falls to 0.1 over ``[1000, 2000]``, then stays."""
    if not schedule:
        raise ValueError("piecewise_linear: schedule must be a non-empty {step: value} dict")
    schedule = sorted((float(k), float(v)) for k, v in schedule.items())
    if from_zero and schedule[0][0] != 0:
        schedule = [(0.0, 0.0)] + schedule
    t = ops.cast(t, keras.backend.floatx())
    x = ops.ones_like(t) * schedule[0][1]
    for i, (t_begin, x_begin_value) in enumerate(schedule):
        x_begin = x
        if i != len(schedule) - 1:
            t_next, x_next = schedule[i + 1]
            x = x_begin_value + (x_next - x_begin_value) / (t_next - t_begin) * (t - t_begin)
        else:
            x = ops.ones_like(t) * x_begin_value
        x = ops.where(t >= t_begin, x, x_begin)
    return x


def search_layer(inputs, name, exclude_from=None):
    """The layer called ``name`` found by walking up the graph from ``inputs`` (a layer
    or a symbolic tensor), or None."""
    if exclude_from is None:
        exclude_from = set()
    if isinstance(inputs, keras.Operation):  # a layer, or an op such as ``x + y``
        layer = inputs
    else:
        layer = inputs._keras_history[0]
    if layer.name == name:
        return layer
    if id(layer) in exclude_from:
        return None
    exclude_from.add(id(layer))
    if isinstance(layer, keras.Model):
        for inner in layer.layers:
            if inner.name == name:
                return inner
    for node in layer._inbound_nodes[:1]:
        for parent in node.parent_nodes:
            found = search_layer(parent.operation, name, exclude_from)
            if found is not None:
                return found
    return None


def align(tensor, axes, ndim=None):
    """Insert size-1 axes so that the axes of ``tensor`` land at ``axes`` of an
    ``ndim``-dimensional result (``align(mask, [0, 1], 3)`` -> ``mask[:, :, None]``)."""
    assert len(axes) == len(tensor.shape)
    assert ndim or min(axes) >= 0
    ndim = ndim or max(axes) + 1
    indices = [None] * ndim
    for i in axes:
        indices[i] = slice(None)
    return tensor[tuple(indices)]


def reshape(tensor, *args):
    """Reshape with one argument (a shape), or with ``(shape1, axis1, shape2, axis2,
    ...)``: axis ``axis1`` becomes the axes ``shape1`` (one entry may be -1), ...
    (``reshape(x, (-1, 64), 2)`` splits the last axis of ``(b, n, 768)`` into heads)."""
    if len(args) == 1:
        return ops.reshape(tensor, args[0])
    if len(args) % 2:
        raise ValueError("reshape: pass (shape, axis) pairs, got an odd number of arguments")
    dynamic = ops.shape(tensor)
    shape = [[s if s is not None else dynamic[i]] for i, s in enumerate(tensor.shape)]
    for new, axis in zip(args[::2], args[1::2]):
        new = list(new)
        if new.count(-1) == 1:
            known = 1
            for size in new:
                if size != -1:
                    known *= size
            new[new.index(-1)] = shape[axis][0] // known
        shape[axis] = new
    return ops.reshape(tensor, [size for sizes in shape for size in sizes])


def flatten(tensor, start=None, end=None):
    """Merge axes ``start..end-1`` into one."""
    shape = ops.shape(tensor)
    ndim = len(tensor.shape)
    start = 0 if start is None else (start if start >= 0 else ndim + start)
    end = ndim if end is None else (end if end >= 0 else ndim + end)
    size = 1
    for axis in range(start, end):
        size = size * shape[axis]
    return ops.reshape(tensor, list(shape[:start]) + [size] + list(shape[end:]))


def dtype(x):
    """The dtype name of a tensor or variable."""
    return keras.backend.standardize_dtype(x.dtype)


def where(cond, x, y):
    """``K.where`` with broadcasting (bert4keras' helper)."""
    return _where(cond, x, y)


def sequence_masking(x, mask=None, value=0, axis=None, bias=None, return_mask=False):
    """Set the positions of ``x`` where ``mask`` (``(batch, length)``) is 0 to
    ``value`` (a number, ``'-inf'`` or ``'inf'``) along ``axis`` (default 1; a list
    masks several axes). ``bias``: a bool mask ANDed in, or a float added."""
    if isinstance(value, str):
        value = {"-inf": -np.inf, "inf": np.inf}[value]
    if not (mask is None and bias is None):
        if mask is None:
            if dtype(bias) == "bool":
                mask = bias
                x = _where(mask, x, value)
            else:
                x = x + bias
        else:
            axes = [1] if axis is None else (list(axis) if isinstance(axis, (list, tuple)) else [axis])
            ndim = len(x.shape)
            axes = [a if a >= 0 else ndim + a for a in axes]
            mask = ops.cast(mask, "bool")
            full_mask = align(mask, [0, axes[0]], ndim)
            for a in axes[1:]:
                full_mask = ops.logical_and(full_mask, align(mask, [0, a], ndim))
            mask = full_mask
            if bias is None:
                x = _where(mask, x, value)
            elif dtype(bias) == "bool":
                mask = ops.logical_and(mask, bias)
                x = _where(mask, x, value)
            else:
                x = _where(mask, x + bias, value)
    return (x, mask) if return_mask else x


def batch_gather(params, indices):
    """``tf.gather(params, indices, batch_dims=ndim(indices) - 1)``."""
    if not dtype(indices).startswith("int"):
        indices = ops.cast(indices, "int32")
    return tf.gather(params, indices, batch_dims=len(indices.shape) - 1)


def pool1d(x, pool_size, strides=1, padding="valid", data_format=None, pool_mode="max"):
    """1D pooling over axis 1 (``pool_mode`` ``'max'`` or ``'avg'``)."""
    x = ops.expand_dims(x, 1)
    pool = ops.max_pool if pool_mode == "max" else ops.average_pool
    x = pool(x, pool_size=(1, pool_size), strides=(1, strides), padding=padding)
    return x[:, 0]


def divisible_temporal_padding(x, n):
    """Pad axis 1 with zeros up to a multiple of ``n``."""
    r_len = ops.shape(x)[1] % n
    p_len = (n - r_len) % n
    return ops.pad(x, [[0, 0], [0, p_len], [0, 0]])


def root_mean_square(x, axis=None, keepdims=False):
    return ops.sqrt(ops.mean(ops.square(x), axis=axis, keepdims=keepdims))


def swish(x):
    return keras.activations.silu(x)


def leaky_relu(x, alpha=0.2):
    return keras.activations.leaky_relu(x, negative_slope=alpha)


def attention_normalize(a, mask=None, axis=-1, method="softmax", bias=None):
    """Normalize attention scores ``a`` over ``axis``: ``'softmax'``,
    ``'relu'``/``'squared_relu'`` (divided by the number of visible keys) or
    ``'softmax_plus'`` (scaled by ``log(max(n, 16))/log(512)``)."""
    a, mask = sequence_masking(a, mask, -np.inf, axis, bias, True)
    if method == "softmax":
        return ops.softmax(a, axis=axis)
    if mask is None:
        length = ops.cast(ops.shape(a)[axis], keras.backend.floatx())
    else:
        length = ops.sum(ops.cast(mask, keras.backend.floatx()), axis=axis, keepdims=True)
    if method == "squared_relu":
        return ops.relu(a) ** 2 / length
    if method == "softmax_plus":
        # as bert4keras: at least 16 keys (scaling very short sequences hurts)
        return ops.softmax(a * ops.log(ops.maximum(length, 16.0)) / np.log(512), axis=axis)
    if method == "relu":
        return ops.relu(a) / length
    raise ValueError(f"attention_normalize: unknown method {method!r}")


def sinusoidal_embeddings(pos, dim, base=10000):
    """Sinusoidal position embeddings of positions ``pos`` (interleaved sin/cos)."""
    if dim % 2:
        raise ValueError(f"sinusoidal_embeddings: dim must be even, got {dim}")
    indices = ops.arange(0, dim // 2, dtype=keras.backend.floatx())
    indices = ops.power(ops.cast(base, keras.backend.floatx()), -2 * indices / dim)
    embeddings = ops.einsum("...,d->...d", ops.cast(pos, keras.backend.floatx()), indices)
    embeddings = ops.stack([ops.sin(embeddings), ops.cos(embeddings)], axis=-1)
    return flatten(embeddings, -2)


class Sinusoidal(keras.initializers.Initializer):
    """Initializer with the sinusoidal position table ``(positions, dim)``."""

    def __call__(self, shape, dtype=None):
        vocab_size, depth = shape
        return sinusoidal_embeddings(ops.arange(vocab_size, dtype=keras.backend.floatx()), depth)


def apply_rotary_position_embeddings(sinusoidal, *tensors):
    """Rotate ``tensors`` by the (interleaved) ``sinusoidal`` embeddings (RoPE).
    The pair layout is RoFormer's, shared with ``model='roformer'``."""
    from kerasnlp_plus.layers.rotary import rotate_pairs

    assert len(tensors) > 0, "at least one input tensor"
    cos_pos = ops.repeat(sinusoidal[..., 1::2], 2, axis=-1)
    sin_pos = ops.repeat(sinusoidal[..., ::2], 2, axis=-1)
    outputs = []
    for tensor in tensors:
        outputs.append(tensor * cos_pos + rotate_pairs(tensor) * sin_pos)
    return outputs[0] if len(outputs) == 1 else outputs


def multilabel_categorical_crossentropy(y_true, y_pred):
    """Multi-label cross-entropy (kexue.fm 7359): ``y_pred`` are unbounded scores,
    ``y_true`` 0/1 of the same shape."""
    y_mask = ops.not_equal(y_pred, -np.inf)
    y_neg = ops.where(y_mask, y_pred, -np.inf) + ops.log(1 - y_true)
    y_pos = ops.where(y_mask, -y_pred, -np.inf) + ops.log(y_true)
    zeros = ops.zeros_like(y_pred[..., :1])
    y_neg = ops.concatenate([y_neg, zeros], axis=-1)
    y_pos = ops.concatenate([y_pos, zeros], axis=-1)
    return ops.logsumexp(y_neg, axis=-1) + ops.logsumexp(y_pos, axis=-1)


def sparse_multilabel_categorical_crossentropy(y_true, y_pred, mask_zero=False):
    """Sparse multi-label cross-entropy: ``y_true`` holds the positive class ids."""
    zeros = ops.zeros_like(y_pred[..., :1])
    y_pred = ops.concatenate([y_pred, zeros], axis=-1)
    if mask_zero:
        infs = zeros + np.inf
        y_pred = ops.concatenate([infs, y_pred[..., 1:]], axis=-1)
    y_pos_2 = batch_gather(y_pred, y_true)
    y_pos_1 = ops.concatenate([y_pos_2, zeros], axis=-1)
    if mask_zero:
        y_pred = ops.concatenate([-infs, y_pred[..., 1:]], axis=-1)
        y_pos_2 = batch_gather(y_pred, y_true)
    pos_loss = ops.logsumexp(-y_pos_1, axis=-1)
    all_loss = ops.logsumexp(y_pred, axis=-1)
    aux_loss = ops.logsumexp(y_pos_2, axis=-1) - all_loss
    aux_loss = ops.clip(1 - ops.exp(aux_loss), keras.backend.epsilon(), 1)
    return pos_loss + all_loss + ops.log(aux_loss)


def symbolic(f):
    """bert4keras runs ``f`` in graph mode under TF 2; Keras 3 traces ``fit`` itself,
    so this returns ``f`` unchanged."""
    return f


def graph_mode_decorator(f, *args, **kwargs):
    return f(*args, **kwargs)


def recompute_grad(call):
    """Gradient checkpointing of a layer's ``call`` (``tf.recompute_grad``) when the
    environment variable ``RECOMPUTE=1`` is set, as in bert4keras; else ``call``."""
    if not do_recompute:
        return call
    return tf.recompute_grad(call)


def _custom_objects():
    return {
        "gelu_erf": gelu_erf,
        "gelu_tanh": gelu_tanh,
        "gelu": gelu_erf,
        "root_mean_square": root_mean_square,
        "swish": swish,
        "leaky_relu": leaky_relu,
        "Sinusoidal": Sinusoidal,
        "multilabel_categorical_crossentropy": multilabel_categorical_crossentropy,
        "initializer": keras.initializers.TruncatedNormal(stddev=0.02),
    }


custom_objects = _custom_objects()

__all__ = [
    "K", "keras", "tf", "is_tf_keras", "get_available_gpus", "gelu_erf", "gelu_tanh", "set_gelu",
    "piecewise_linear", "search_layer", "align", "reshape", "flatten", "dtype", "where",
    "sequence_masking", "batch_gather", "pool1d", "divisible_temporal_padding", "root_mean_square",
    "swish", "leaky_relu", "attention_normalize", "sinusoidal_embeddings", "Sinusoidal",
    "apply_rotary_position_embeddings", "multilabel_categorical_crossentropy",
    "sparse_multilabel_categorical_crossentropy", "symbolic", "graph_mode_decorator", "recompute_grad",
    "custom_objects",
]
