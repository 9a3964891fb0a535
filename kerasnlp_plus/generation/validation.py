"""Argument checks shared by both decoders (:class:`~kerasnlp_plus.generation.Generator`
and :class:`kerasnlp_plus.snippets.AutoRegressiveDecoder`), done on the host before
decoding so that bad arguments give an error naming the argument, never a silent
run to ``maxlen`` or a numpy error from deep inside a step.

Also :func:`check_sequence_length`, the host-side position check that scripts call
before building batches (under XLA an overflowing position cannot raise in the graph;
see :mod:`kerasnlp_plus.layers.embeddings`).
"""
import numpy as np

__all__ = [
    "allowed_token_ids",
    "bucket_padding",
    "check_decoder",
    "check_decoder_vocab",
    "check_generator_call",
    "check_sequence_length",
]


def _int(name, value, low, high=None, what=None):
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
    _int("end_id", decoder.end_id, 0)
    if decoder.start_id is not None:
        _int("start_id", decoder.start_id, 0)
    _int("maxlen", decoder.maxlen, 1, what="the most decoding steps; 0 would return nothing")
    _int("minlen", decoder.minlen, 0)
    if topk is not None:
        _int(topk_name, topk, 1)


def check_decoder_vocab(decoder, vocab_size):
    """``end_id`` against the vocabulary the model scores (the width of its output):
    an ``end_id`` outside it can never be produced, so no sequence would end.

    ``start_id`` is an input id (checked against the model's vocabulary where the
    decoder knows the model, as the Generator does); ``topk`` may exceed the vocabulary
    on purpose: beam search keeps the ``topk`` best (beam, token) pairs, of which the
    first step has only ``vocab_size`` (all are kept), and top-k sampling then keeps
    every token."""
    _int("end_id", decoder.end_id, 0, vocab_size, f"the vocabulary of size {vocab_size}")


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
        _int("segment_id", generator.segment_id, 0, model.type_vocab_size,
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
