"""A copy mechanism for UniLM seq2seq: the pointer-generator of See et al. (2017,
"Get To The Point", arXiv:1704.04368) on top of a BERT's MLM head.

A title or a headline is mostly words of its source. A small model predicts them
badly through the vocabulary softmax alone: it must encode "the token at source
position 37" into a hidden vector that the tied embedding then maps back onto 13,000
tokens. A pointer instead attends over the source positions and puts each position's
attention weight on that position's token id, so "copy the next word of the phrase
I am writing out" becomes one attention step. The output distribution is

    p(w) = g * p_vocab(w) + (1 - g) * sum_{s: source_ids[s] = w} a_s

with ``a`` a softmax over the source positions of ``q(h_t) . k(h_s) / sqrt(d) + c_t *
[x_{s-1} = x_t]`` and the generation probability ``g = sigmoid(w . h_t + b)``, all from
the last layer's hidden states. The bonus ``c_t = u . h_t + e`` goes to the source positions
that follow an occurrence of the query position's own token ``x_t`` (the token just written):
CopyNet's "selective read" (Gu et al. 2016, arXiv:1603.06393) in its simplest form. A
phrase is copied by moving one source position on per step, which a small model's
hidden states cannot locate on their own (they stutter: "监督督督"). ``c_t`` depends on
the position (continue inside a phrase, jump at its end) and, computed from a vector,
learns at the pace of the other weights (a lone scalar moves by the learning rate per
step under Adam). Only source positions (segment 0, not padding) can be pointed at, so a
target position sees no later target token through the copy path either.
"""
import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class CopyMechanism(keras.layers.Layer):
    """Mixes a pointer distribution over the source tokens into the MLM probabilities.

    Call it as ``layer(query_hidden, vocab_probs, source_hidden, source_ids,
    source_mask, query_ids)``:

    - ``query_hidden``: ``(batch, P, hidden)``, the hidden states that predict;
    - ``vocab_probs``: ``(batch, P, vocab)``, the MLM head's probabilities there;
    - ``source_hidden``: ``(batch, S, hidden)``, the hidden states of the positions
      that may be pointed at (:meth:`mix` takes their :meth:`keys` instead);
    - ``source_ids``: int ``(batch, S)``, the token id at each source position;
    - ``source_mask``: bool ``(batch, S)``, the positions that may be copied;
    - ``query_ids``: int ``(batch, P)``, the token id at each predicting position
      (the token just written, in a decoder the one fed at this step).

    Returns the mixed probabilities ``(batch, P, vocab)`` in float32 (they sum to 1).
    """

    def __init__(self, key_size, initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True  # the sequence's padding mask passes through
        self.key_size = int(key_size)
        self.initializer_range = float(initializer_range)

    def build(self, query_hidden_shape, vocab_probs_shape=None, source_hidden_shape=None, source_ids_shape=None,
              source_mask_shape=None, query_ids_shape=None):
        hidden = int(query_hidden_shape[-1])
        init = keras.initializers.TruncatedNormal(stddev=self.initializer_range)
        self.query_kernel = self.add_weight(name="query_kernel", shape=(hidden, self.key_size), initializer=init)
        self.query_bias = self.add_weight(name="query_bias", shape=(self.key_size,), initializer="zeros")
        self.key_kernel = self.add_weight(name="key_kernel", shape=(hidden, self.key_size), initializer=init)
        self.key_bias = self.add_weight(name="key_bias", shape=(self.key_size,), initializer="zeros")
        # g starts near 0.5 (zero bias): neither distribution is favoured at first.
        self.gate_kernel = self.add_weight(name="gate_kernel", shape=(hidden, 1), initializer=init)
        self.gate_bias = self.add_weight(name="gate_bias", shape=(1,), initializer="zeros")
        # The selective-read bonus starts at 0: a pointer trained without it is unchanged.
        self.continuation_kernel = self.add_weight(name="continuation_kernel", shape=(hidden, 1),
                                                   initializer="zeros")
        self.continuation_bias = self.add_weight(name="continuation_bias", shape=(1,), initializer="zeros")
        self.built = True

    def keys(self, source_hidden):
        """``(batch, S, key_size)`` keys of the source positions' hidden states (float32)."""
        return _affine(source_hidden, self.key_kernel, self.key_bias)

    def call(self, query_hidden, vocab_probs, source_hidden, source_ids, source_mask, query_ids):
        return self.mix(query_hidden, vocab_probs, self.keys(source_hidden), source_ids, source_mask, query_ids)

    def mix(self, query_hidden, vocab_probs, source_keys, source_ids, source_mask, query_ids):
        """:meth:`call` with the source's :meth:`keys` computed already (a decoder
        computes them once per source, not once per step)."""
        query = _affine(query_hidden, self.query_kernel, self.query_bias)
        scores = ops.einsum("bpd,bsd->bps", query, ops.cast(source_keys, "float32")) / math.sqrt(self.key_size)
        source_ids = ops.cast(source_ids, "int32")
        previous = ops.pad(source_ids[:, :-1], [[0, 0], [1, 0]], constant_values=-1)  # x_{s-1}
        follows = ops.equal(previous[:, None, :], ops.cast(query_ids, "int32")[:, :, None])
        bonus = _affine(query_hidden, self.continuation_kernel, self.continuation_bias)  # (batch, P, 1)
        scores = scores + bonus * ops.cast(follows, "float32")
        allowed = ops.cast(source_mask, "bool")[:, None, :]
        scores = ops.where(allowed, scores, ops.full_like(scores, -1e9))
        attention = ops.softmax(scores, axis=-1) * ops.cast(allowed, "float32")  # a row without sources: 0
        vocab_size = ops.shape(vocab_probs)[-1]
        copy_probs = _scatter_onto_vocab(attention, source_ids, vocab_size)
        generate = ops.sigmoid(_affine(query_hidden, self.gate_kernel, self.gate_bias))
        # A row with nothing to copy from keeps its vocabulary distribution whole.
        generate = ops.where(ops.any(allowed, axis=-1)[..., None], generate, ops.ones_like(generate))
        return generate * ops.cast(vocab_probs, "float32") + (1.0 - generate) * copy_probs

    def compute_output_spec(self, query_hidden, vocab_probs, *args):
        return keras.KerasTensor(vocab_probs.shape, dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(key_size=self.key_size, initializer_range=self.initializer_range)
        return config


def _affine(x, kernel, bias):
    """``x @ kernel + bias`` in float32 (the pointer's scores and gate stay exact under
    mixed precision; the layer is a few ``hidden x key_size`` products)."""
    return ops.matmul(ops.cast(x, "float32"), ops.cast(kernel, "float32")) + ops.cast(bias, "float32")


def _scatter_onto_vocab(attention, source_ids, vocab_size):
    """``out[b, p, v] = sum_s attention[b, p, s] * (source_ids[b, s] == v)``.

    A segment sum over flat ``(b, p, v)`` indices: O(batch * P * S) work and one
    ``(batch, P, vocab)`` output, where a one-hot product would build a
    ``(batch, S, vocab)`` tensor (hundreds of MB for a decoder's batch of beams)."""
    shape = ops.shape(attention)
    batch, positions = shape[0], shape[1]
    rows = ops.arange(batch * positions, dtype="int32")  # (b, p) flattened
    segment = ops.reshape(rows, (batch, positions, 1)) * vocab_size + source_ids[:, None, :]
    flat = ops.segment_sum(
        ops.reshape(attention, (-1,)),
        ops.reshape(segment, (-1,)),
        num_segments=batch * positions * vocab_size,
    )
    return ops.reshape(flat, (batch, positions, vocab_size))
