"""Argument checks shared by both decoders (:class:`~kerasnlp_plus.generation.Generator`
and :class:`kerasnlp_plus.snippets.AutoRegressiveDecoder`), done on the host before
decoding so that bad arguments give an error naming the argument, never a silent
run to ``maxlen`` or a numpy error from deep inside a step.

Also :func:`check_sequence_length`, the host-side position check that scripts call
before building batches (under XLA an overflowing position cannot raise in the graph;
see :mod:`kerasnlp_plus.layers.embeddings`).
"""
import types

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "allowed_token_ids",
    "bucket_padding",
    "check_decoder",
    "check_decoder_vocab",
    "check_generator_call",
    "check_int",
    "check_sequence_length",
    "InputRangeCheck",
]


def check_int(name, value, low, high=None, what=None):
    """``value`` as an int in ``[low, high)``; else ValueError naming ``name`` (in the
    wording the decoders used before these checks were shared)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}" + (f" ({what})" if what else ""))
    if high is not None and value >= high:
        raise ValueError(f"{name}={value!r} is outside {what or f'[{low}, {high})'}")
    return int(value)


def check_decoder(decoder, topk=None, topk_name="topk"):
    """The arguments every decoding call needs, whatever the vocabulary: ``end_id``
    and ``start_id`` ids >= 0 (or ``start_id=None``), ``maxlen >= 1``, ``minlen >= 0``
    and ``topk >= 1`` when given. Read from the decoder's attributes, so a value changed
    after construction is checked too."""
    check_int("end_id", decoder.end_id, 0)
    if decoder.start_id is not None:
        check_int("start_id", decoder.start_id, 0)
    check_int("maxlen", decoder.maxlen, 1, what="the most decoding steps; 0 would return nothing")
    check_int("minlen", decoder.minlen, 0)
    if topk is not None:
        check_int(topk_name, topk, 1)


def check_decoder_vocab(decoder, vocab_size):
    """``end_id`` against the vocabulary the model scores (the width of its output):
    an ``end_id`` outside it can never be produced, so no sequence would end.

    ``start_id`` is an input id (checked against the model's vocabulary where the
    decoder knows the model, as the Generator does); ``topk`` may exceed the vocabulary
    on purpose: beam search keeps the ``topk`` best (beam, token) pairs, of which the
    first step has only ``vocab_size`` (all are kept), and top-k sampling then keeps
    every token."""
    check_int("end_id", decoder.end_id, 0, vocab_size, f"the vocabulary of size {vocab_size}")


def allowed_token_ids(allowed, vocab_size, batch_index, prefix):
    """What a ``trie`` / ``prefix_allowed_tokens`` callback returned, as an int array
    of ids, or None for "all ids allowed" (the documented meaning of None).

    An id outside ``[0, vocab_size)`` is an error naming the id, the batch row and the
    prefix; an empty result is allowed (the prefix may then only take ``end_id``).
    """
    if allowed is None:
        return None
    try:
        ids = np.asarray(allowed) if not isinstance(allowed, np.ndarray) else allowed
    except ValueError:  # ragged nested lists
        ids = np.array([None], dtype=object)
    if ids.dtype.kind not in "iu":  # the fast path (a trie's int lists) skips this
        if ids.dtype.kind == "b" or (ids.size and (ids.dtype.kind != "f" or not np.all(ids == np.round(ids)))):
            raise ValueError(
                f"prefix_allowed_tokens/trie returned {allowed!r} for batch row {batch_index} (prefix "
                f"{list(prefix)}); expected a list of token ids or None (all allowed)"
            )
        ids = ids.astype(np.int64)
    ids = ids.reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = ids[(ids < 0) | (ids >= vocab_size)]
        raise ValueError(
            f"prefix_allowed_tokens/trie returned token id {int(bad[0])} for batch row {batch_index} "
            f"(prefix {list(prefix)}), outside the vocabulary [0, {vocab_size})"
        )
    return ids


def _position_table(model):
    """The model's learned position table layer, or None (e.g. rotary positions)."""
    layer = getattr(model, "position_embedding", None)
    return layer if layer is not None and hasattr(layer, "check_length") else None


def check_sequence_length(model, length, what="sequence length"):
    """Raise the package's ValueError when ``length`` tokens do not fit ``model``'s
    position table (no-op for models without one, e.g. rotary positions)."""
    model = getattr(model, "model", model)  # the return_keras_model=False handle
    table = _position_table(model)
    if table is not None:
        table.check_length(length, what)


def _rows(x, name):
    """Rows of a batch given as a 2-D array or a (ragged) list of lists, each a 1-D
    int array; None when ``x`` is not row-shaped (the decoder's own checks report it)."""
    if hasattr(x, "numpy"):
        x = x.numpy()
    if isinstance(x, np.ndarray):
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2:
            return None
        rows = list(x)
    elif isinstance(x, (list, tuple)):
        if not x:
            raise ValueError(f"{name} is an empty batch (no source)")
        if not isinstance(x[0], (list, tuple, np.ndarray)):
            x = [x]  # one source given as a flat list
        rows = [np.asarray(r) for r in x]
    else:
        return None
    for b, row in enumerate(rows):
        if row.ndim != 1:
            raise ValueError(f"{name} row {b} must be a flat list of ids, got shape {row.shape}")
        if row.size == 0:
            raise ValueError(f"{name} row {b} is empty (no token)")
        if not np.issubdtype(row.dtype, np.integer):
            raise ValueError(f"{name} row {b} must hold int ids, got dtype {row.dtype}")
    return rows


def check_generator_call(generator, inputs, topk=None, topk_name="topk"):
    """All host-side checks of one :class:`Generator` decoding call, before anything
    is compiled or run: the decoder arguments, empty or non-int rows of a (ragged) batch, segment ids against ``type_vocab_size`` and
    the whole output (source tokens + ``start_id`` + ``maxlen``) against the position
    table. Under XLA the graph itself cannot raise for an overflowing position, so this
    is where the Generator refuses it."""
    check_decoder(generator, topk, topk_name)
    check_decoder_vocab(generator, generator.vocab_size)
    # the same reading of ``inputs`` as Generator._prepare
    if isinstance(inputs, (list, tuple)) and len(inputs) in (1, 2):
        token_ids, segment_ids = inputs[0], (inputs[1] if len(inputs) == 2 else None)
    else:
        token_ids, segment_ids = inputs, None
    token_rows = _rows(token_ids, "token_ids")
    if token_rows is None:
        return  # not row-shaped: Generator._prepare names the shape and dtype
    if not token_rows:
        raise ValueError("token_ids is an empty batch (no source)")
    lengths = [int(np.count_nonzero(row)) for row in token_rows]
    model = generator.model
    if segment_ids is not None:
        segment_rows = _rows(segment_ids, "segment_ids")
        type_vocab_size = getattr(model, "type_vocab_size", None)
        if segment_rows is not None and type_vocab_size is not None:
            for b, row in enumerate(segment_rows):
                if row.size and (row.min() < 0 or row.max() >= type_vocab_size):
                    raise ValueError(
                        f"segment_ids row {b} holds ids from {row.min()} to {row.max()}; the model's "
                        f"segment table has type_vocab_size={type_vocab_size} (ids 0..{type_vocab_size - 1})"
                    )
    if generator.segment_id is not None and getattr(model, "type_vocab_size", None) is not None:
        check_int("segment_id", generator.segment_id, 0, model.type_vocab_size,
             f"type_vocab_size={model.type_vocab_size}")
    first = 0 if generator.start_id is None else 1
    longest = max(lengths)
    check_sequence_length(
        model, longest + first + generator.maxlen,
        what=f"the longest source ({longest} tokens, row {lengths.index(longest)})"
        + (" + start_id" if first else "") + f" + maxlen ({generator.maxlen}) =",
    )


def bucket_padding(model, length, bucket):
    """Padding that rounds ``length`` up to a multiple of ``bucket`` without
    reaching beyond the position table (padded positions are looked up too, and an
    overflowing one raises, or is NaN under XLA)."""
    pad = -int(length) % int(bucket)
    table = _position_table(getattr(model, "model", model))
    if table is not None:
        pad = max(0, min(pad, table.max_length - int(length)))
    return pad


# ------------------------------------------------------------------ model inputs
class InputRangeCheck:
    """Host-side range checks of a :class:`~kerasnlp_plus.models.Transformer`'s inputs,
    made before Keras' compiled step sees them (under XLA the layers' own checks are
    compiled away: see :mod:`kerasnlp_plus.layers.embeddings`).

    Token ids against ``vocab_size``, segment ids against ``type_vocab_size`` and
    positions against the position table (the input length, or the custom position
    ids; none for rotary models), each with one min/max per batch and the message of
    the layer concerned (``overflow_message``). Inputs may be float (bert4keras feeds
    float32). :meth:`check` raises ``ValueError`` for numpy/eager data;
    :meth:`dataset` adds the same check to a ``tf.data.Dataset`` as a ``map`` (it runs
    in tf.data, on the host, and raises ``InvalidArgumentError`` with the message);
    :meth:`wrap` applies the right one to anything Keras' ``fit``/``evaluate``/
    ``predict`` accept.
    """

    def __init__(self, model, extra_inputs=()):
        model = getattr(model, "model", model)  # the return_keras_model=False handle
        # extra_inputs: names of inputs a view of the model adds after the model's own
        # (e.g. loss_positions_model's ``Input-Positions``), present but not checked
        self.input_names = [tensor.name for tensor in model.inputs] + list(extra_inputs)
        self.token_embedding = model.token_embedding
        self.segment_embedding = model.segment_embedding
        self.position_embedding = model.position_embedding  # None: rotary, nothing to check
        self.custom_position_ids = bool(getattr(model, "custom_position_ids", False))

    def _named_inputs(self, x):
        """``x`` (a list/tuple in the model's input order, or a dict by input name) as a
        dict by input name; None when ``x`` has another structure (Keras names it)."""
        if isinstance(x, dict):
            return x if all(name in x for name in self.input_names[:2]) else None
        if isinstance(x, (list, tuple)) and len(x) == len(self.input_names):
            return dict(zip(self.input_names, x))
        return None

    def _checks(self, x):
        """Run (eager) or build (graph) every check of one model input ``x``; the Assert
        ops in a graph, none eagerly (a failing eager check raises)."""
        from kerasnlp_plus.layers.embeddings import check_id_range

        named = self._named_inputs(x)
        if named is None:
            return []
        tokens, segments = named[self.input_names[0]], named[self.input_names[1]]
        checks = [
            check_id_range(tokens, self.token_embedding.input_dim, self.token_embedding.overflow_message),
            check_id_range(segments, self.segment_embedding.input_dim, self.segment_embedding.overflow_message),
        ]
        table = self.position_embedding
        if table is not None:
            positions = named.get("Input-Position") if self.custom_position_ids else None
            if positions is None:
                # positions 0 .. length-1: the first and last stand for all
                if tf.is_tensor(tokens) and not tf.executing_eagerly():
                    length = tf.shape(tokens)[1]
                    positions = tf.stack([tf.constant(0, length.dtype), tf.maximum(length - 1, 0)])
                else:
                    length = np.shape(tokens)[1] if np.ndim(tokens) >= 2 else 0
                    positions = np.array([0, max(length - 1, 0)])
            checks.append(check_id_range(positions, table.max_length, table.overflow_message))
        return [check for check in checks if check is not None]

    def check(self, x):
        """Raise the package's ValueError if the model input ``x`` (numpy arrays, eager
        tensors or lists, in a list/tuple or a dict) holds an id out of range."""
        self._checks(x)

    def check_batch(self, batch):
        """:meth:`check` on the model input of one batch, read as Keras reads it:
        ``(x,)``, ``(x, y)``, ``(x, y, sample_weight)`` or ``x``."""
        x, _, _ = keras.utils.unpack_x_y_sample_weight(tuple(batch) if isinstance(batch, list) else batch)
        self.check(x)
        return batch

    def dataset(self, ds):
        """``ds`` with every batch checked in tf.data (a graph TensorFlow runs on the
        host, never XLA), raising ``InvalidArgumentError`` with the layer's message."""
        # tf.data passes a tuple element as separate arguments (a 1-tuple ``(x,)`` too)
        is_tuple = isinstance(ds.element_spec, tuple)

        def checked(*args):
            element = args if is_tuple else args[0]
            x, _, _ = keras.utils.unpack_x_y_sample_weight(element)
            checks = self._checks(x)
            if not checks:
                return element
            with tf.control_dependencies(checks):
                return tf.nest.map_structure(tf.identity, element)

        return ds.map(checked)

    def wrap(self, data):
        """Keras data (arrays, a ``tf.data.Dataset``, a Python generator or a
        ``keras.utils.PyDataset``) that is checked before the compiled step sees it:
        arrays at once, the others batch by batch."""
        if data is None:
            return data
        if isinstance(data, tf.data.Dataset):
            return self.dataset(data)
        if isinstance(data, types.GeneratorType):
            return self._generator(data)
        if isinstance(data, keras.utils.PyDataset):
            return _CheckedPyDataset(data, self)
        if hasattr(data, "map_batches"):  # snippets.DataGenerator.forfit()
            return data.map_batches(self.check_batch)
        self.check(data)
        return data

    def wrap_validation_data(self, data):
        """``fit``'s ``validation_data``: a tuple ``(x, y[, sample_weight])`` of arrays
        is checked at once, other data is wrapped like ``x``."""
        if isinstance(data, (list, tuple)):
            self.check_batch(data)
            return data
        return self.wrap(data)

    def _generator(self, batches):
        for batch in batches:
            yield self.check_batch(batch)


class _CheckedPyDataset(keras.utils.PyDataset):
    """A ``PyDataset`` whose batches pass :meth:`InputRangeCheck.check_batch`."""

    def __init__(self, inner, checker):
        super().__init__(workers=inner.workers, use_multiprocessing=inner.use_multiprocessing,
                         max_queue_size=inner.max_queue_size)
        self.inner, self.checker = inner, checker

    def __getitem__(self, index):
        return self.checker.check_batch(self.inner[index])

    def __len__(self):
        return len(self.inner)

    @property
    def num_batches(self):
        return self.inner.num_batches

    def on_epoch_begin(self):
        self.inner.on_epoch_begin()

    def on_epoch_end(self):
        self.inner.on_epoch_end()
