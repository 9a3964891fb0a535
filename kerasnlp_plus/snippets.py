"""bert4keras-compatible helpers: ``sequence_padding`` and ``AutoRegressiveDecoder``.

Scripts written for bert4keras 0.11 keep working with only their imports changed::

    from kerasnlp_plus.snippets import sequence_padding, AutoRegressiveDecoder

``AutoRegressiveDecoder`` is the *uncached* reference decoder: every step re-runs the
user's ``predict`` on the whole prefix, one source at a time, exactly like bert4keras.
For speed use :class:`kerasnlp_plus.generation.Generator`, which returns the same
beams (with ``length_penalty=0``) from a batch of sources and a key/value cache.

Both decoders accept the same constraint options:

* ``trie=``: a :class:`kerasnlp_plus.generation.Trie` of allowed outputs. At each step
  only ``trie.next_ones(prefix)`` may follow ``prefix`` (the generated ids, without
  ``start_id``), so every output is a path in the trie;
* ``prefix_allowed_tokens=fn(batch_index, prefix_ids) -> allowed ids`` (the GENRE /
  transformers callback); ``batch_index`` is always 0 here, one source per call.

A prefix with no allowed continuation (a complete key that no longer key extends, or
an empty list from the callback) may only be followed by ``end_id``, so the sequence
ends instead of failing. Put ``end_id`` into the keys when one key can be a prefix of
another (``S [SEP] P [SEP]`` with ``min_ends=2`` ends right after the second [SEP]).
"""
import numpy as np

__all__ = ["sequence_padding", "softmax", "AutoRegressiveDecoder"]


def sequence_padding(inputs, length=None, value=0, seq_dims=1, mode="post"):
    """Pad (or truncate) a list of sequences to one numpy array (bert4keras semantics).

    Args:
        inputs: list of array-likes with the same number of dimensions.
        length: target length (an int, or a tuple of ints, one per ``seq_dims``);
            default: the longest in ``inputs`` along each padded dimension.
        value: the padding value.
        seq_dims: how many leading dimensions of each element are padded.
        mode: ``'post'`` pads/truncates at the end, ``'pre'`` at the start.

    >>> sequence_padding([[1, 2, 3], [4]]).tolist()
    [[1, 2, 3], [4, 0, 0]]
    >>> sequence_padding([[1, 2, 3], [4]], length=2, mode="pre").tolist()
    [[1, 2], [0, 4]]
    """
    if mode not in ("post", "pre"):
        raise ValueError(f'mode must be "post" or "pre", got {mode!r}')
    inputs = [np.asarray(x) for x in inputs]
    if length is None:
        length = np.max([np.shape(x)[:seq_dims] for x in inputs], axis=0)
    elif not hasattr(length, "__getitem__"):
        length = [length]
    slices = [np.s_[: length[i]] for i in range(seq_dims)]
    slices = tuple(slices) if len(slices) > 1 else slices[0]
    pad_width = [(0, 0) for _ in np.shape(inputs[0])]
    outputs = []
    for x in inputs:
        x = x[slices]  # truncation keeps the start in both modes, as bert4keras
        for i in range(seq_dims):
            pad = int(length[i]) - np.shape(x)[i]
            pad_width[i] = (0, pad) if mode == "post" else (pad, 0)
        outputs.append(np.pad(x, pad_width, "constant", constant_values=value))
    return np.array(outputs)


def softmax(x, axis=-1):
    """Numerically stable softmax in numpy."""
    x = x - np.max(x, axis=axis, keepdims=True)
    x = np.exp(x)
    return x / np.sum(x, axis=axis, keepdims=True)


# --- constraints, shared with kerasnlp_plus.generation.generator ------------------------
def make_allowed_fn(trie=None, prefix_allowed_tokens=None):
    """``fn(batch_index, prefix) -> allowed ids`` from a trie or a callback, or None."""
    if trie is not None and prefix_allowed_tokens is not None:
        raise ValueError("pass either trie= or prefix_allowed_tokens=, not both")
    if trie is not None:
        if not hasattr(trie, "next_ones"):
            raise ValueError(f"trie must have a next_ones(prefix) method, got {type(trie).__name__}")
        return lambda batch_index, prefix: trie.next_ones(prefix)
    if prefix_allowed_tokens is not None:
        if not callable(prefix_allowed_tokens):
            raise ValueError("prefix_allowed_tokens must be callable: fn(batch_index, prefix_ids) -> ids")
        return prefix_allowed_tokens
    return None


def constraint_mask(allowed_fn, batch_index, prefixes, vocab_size, end_id, no_repeat_ngram_size=0):
    """Boolean ``(len(prefixes), vocab_size)``: which next tokens each prefix may take,
    or None when nothing is constrained.

    ``allowed_fn(batch_index, prefix)`` gives the allowed ids (None: all; an id
    outside the vocabulary is an error naming it and the batch row);
    ``no_repeat_ngram_size`` bans tokens that would repeat an n-gram of the prefix. A
    prefix left with no allowed token may only take ``end_id``, so it ends.
    """
    if allowed_fn is None and not no_repeat_ngram_size:
        return None
    n_rows = len(prefixes)
    if allowed_fn is None:
        mask = np.ones((n_rows, vocab_size), bool)
    else:
        from kerasnlp_plus.generation.validation import allowed_token_ids  # here: avoids an import cycle

        mask = np.zeros((n_rows, vocab_size), bool)
        for i, prefix in enumerate(prefixes):
            prefix = [int(t) for t in prefix]
            allowed = allowed_token_ids(allowed_fn(batch_index, prefix), vocab_size, batch_index, prefix)
            mask[i, slice(None) if allowed is None else allowed] = True
    if no_repeat_ngram_size:
        n = int(no_repeat_ngram_size)
        for i, prefix in enumerate(prefixes):
            prefix = [int(t) for t in prefix]
            if len(prefix) < n:
                continue
            tail = prefix[len(prefix) - n + 1:]
            for j in range(len(prefix) - n + 1):
                if prefix[j:j + n - 1] == tail:
                    mask[i, prefix[j + n - 1]] = False
    mask[~mask.any(axis=1), end_id] = True
    return mask


def select_topk(scores, k, mask=None):
    """Flat indices of the ``k`` best entries of ``scores`` in ``argpartition`` order
    (bert4keras' beam step); with a boolean ``mask``, only among allowed entries (fewer
    when fewer are allowed). Selecting among the allowed entries, rather than over
    ``-inf``-filled scores, keeps ``argpartition`` fast under a trie."""
    if mask is None:
        k = min(k, scores.size)  # more beams than (beam, token) pairs: keep them all
        return scores.argpartition(-k, axis=None)[-k:]
    allowed = np.flatnonzero(mask)
    if len(allowed) <= k:
        return allowed
    return allowed[scores.ravel()[allowed].argpartition(-k)[-k:]]


def apply_mask(scores, mask, fill):
    """``scores`` with the entries where ``mask`` is False set to ``fill``. For
    probabilities (``fill=0``) a row whose allowed tokens all have probability 0
    becomes uniform over them, so it can still be sampled."""
    scores = np.where(mask, scores, fill)
    if fill == 0:
        empty = scores.sum(axis=1) <= 0
        scores[empty] = mask[empty]
    return scores


class AutoRegressiveDecoder:
    """Base class of autoregressive decoders: beam search and random sampling
    (the bert4keras 0.11 contract; uncached, one source at a time).

    Subclass it and define ``predict(self, inputs, output_ids, states)`` decorated by
    :meth:`wraps`; it returns the next-token probabilities (``default_rtype='probas'``)
    or logits (``'logits'``) of every row of ``output_ids``, and, with
    ``use_states=True``, the new states as a second element.

    Args:
        start_id: id put in front of the outputs (None: start from nothing, as UniLM
            does after the source's [SEP]).
        end_id: the id that ends a sequence.
        maxlen: the most decoding steps.
        minlen: sequences shorter than this are not checked for ending.

    Example (UniLM title generation, as in bert4keras' ``task_seq2seq_autotitle.py``)::

        class AutoTitle(AutoRegressiveDecoder):
            @AutoRegressiveDecoder.wraps(default_rtype='probas')
            def predict(self, inputs, output_ids, states):
                token_ids, segment_ids = inputs
                token_ids = np.concatenate([token_ids, output_ids], 1)
                segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
                return self.last_token(model).predict([token_ids, segment_ids], verbose=0)

            def generate(self, text, topk=1):
                token_ids, segment_ids = tokenizer.encode(text, maxlen=64)
                output_ids = self.beam_search([token_ids, segment_ids], topk=topk)
                return tokenizer.decode(output_ids)

        autotitle = AutoTitle(start_id=None, end_id=tokenizer._token_end_id, maxlen=32)

    ``beam_search`` returns the best sequence's ids *including* the final ``end_id``
    when it ended (bert4keras does; ``tokenizer.decode`` drops it) and ``start_id`` in
    front when one is set.
    """

    def __init__(self, start_id, end_id, maxlen, minlen=1):
        self.start_id = start_id
        self.end_id = end_id
        self.maxlen = maxlen
        self.minlen = minlen
        self.models = {}
        if start_id is None:
            self.first_output_ids = np.empty((1, 0), dtype=int)
        else:
            self.first_output_ids = np.array([[self.start_id]])

    @staticmethod
    def wraps(default_rtype="probas", use_states=False):
        """Decorate ``predict``: adds the ``temperature`` and ``rtype`` arguments
        (``'probas'`` or ``'logits'``, the latter meaning log-probabilities) and the
        ``(prediction, states)`` pair when ``use_states`` is False."""
        if default_rtype not in ("probas", "logits"):
            raise ValueError(f"default_rtype must be 'probas' or 'logits', got {default_rtype!r}")

        def actual_decorator(predict):
            def new_predict(self, inputs, output_ids, states, temperature=1, rtype=default_rtype):
                if rtype not in ("probas", "logits"):
                    raise ValueError(f"rtype must be 'probas' or 'logits', got {rtype!r}")
                prediction = predict(self, inputs, output_ids, states)
                if not use_states:
                    prediction = (prediction, None)
                if default_rtype == "logits":
                    prediction = (softmax(np.asarray(prediction[0]) / temperature), prediction[1])
                elif temperature != 1:
                    probas = np.power(prediction[0], 1.0 / temperature)
                    probas = probas / probas.sum(axis=-1, keepdims=True)
                    prediction = (probas, prediction[1])
                if rtype == "probas":
                    return prediction
                return np.log(prediction[0] + 1e-12), prediction[1]

            new_predict.__wrapped__ = predict
            new_predict.__doc__ = predict.__doc__
            return new_predict

        return actual_decorator

    def last_token(self, model):
        """A Keras model with ``model``'s inputs that returns only the last position's
        output(s) (cached per model)."""
        if model not in self.models:
            import keras

            outputs = [keras.layers.Lambda(lambda x: x[:, -1])(output) for output in model.outputs]
            self.models[model] = keras.Model(model.inputs, outputs if len(outputs) > 1 else outputs[0])
        return self.models[model]

    def predict(self, inputs, output_ids, states=None):
        """Define in a subclass (decorated by :meth:`wraps`): the next-token scores of
        every row of ``output_ids`` given the (repeated) ``inputs``."""
        raise NotImplementedError

    # --- helpers -------------------------------------------------------------------
    def _generated(self, output_ids):
        """The ids the model produced (``start_id`` stripped), per row."""
        return output_ids[:, self.first_output_ids.shape[1]:]

    def _constrain(self, scores, output_ids, allowed_fn, no_repeat_ngram_size, fill):
        """Set the scores of disallowed next tokens to ``fill``."""
        mask = constraint_mask(
            allowed_fn, 0, self._generated(output_ids), scores.shape[1], self.end_id, no_repeat_ngram_size
        )
        return scores if mask is None else apply_mask(scores, mask, fill)

    # --- decoding ------------------------------------------------------------------
    def beam_search(
        self,
        inputs,
        topk,
        states=None,
        temperature=1,
        min_ends=1,
        trie=None,
        prefix_allowed_tokens=None,
        no_repeat_ngram_size=0,
    ):
        """Beam search with ``topk`` beams; returns the best sequence (numpy ids).

        Scores are summed log-probabilities. Each step keeps the ``topk`` best
        (beam, token) pairs over all beams; a beam ends when it has emitted ``end_id``
        ``min_ends`` times and its last token is ``end_id``. From ``minlen`` on, after
        each step: if the best beam has ended it is returned, else the ended beams are
        dropped and ``topk`` shrinks by their number. At ``maxlen`` the best is returned.
        ``trie`` / ``prefix_allowed_tokens`` constrain the tokens (module docstring).
        """
        from kerasnlp_plus.generation import validation  # here: avoids an import cycle

        validation.check_decoder(self, topk)
        _check_positive("topk", topk)
        _check_positive("min_ends", min_ends)
        allowed_fn = make_allowed_fn(trie, prefix_allowed_tokens)
        inputs = [np.array([i]) for i in inputs]
        output_ids, output_scores = self.first_output_ids, np.zeros(1)
        for step in range(self.maxlen):
            scores, states = self.predict(inputs, output_ids, states, temperature, "logits")
            if step == 0:  # the vocabulary is known from the first scores
                validation.check_decoder_vocab(self, scores.shape[1])
            mask = constraint_mask(
                allowed_fn, 0, self._generated(output_ids), scores.shape[1], self.end_id, no_repeat_ngram_size
            )
            if step == 0:  # after the first step the input is repeated topk times
                inputs = [np.repeat(i, topk, axis=0) for i in inputs]
            scores = output_scores.reshape((-1, 1)) + scores
            indices = select_topk(scores, topk, mask)
            indices_1 = indices // scores.shape[1]  # beam (row)
            indices_2 = (indices % scores.shape[1]).reshape((-1, 1))  # token (column)
            output_ids = np.concatenate([output_ids[indices_1], indices_2], 1)
            output_scores = np.take_along_axis(scores, indices, axis=None)
            if len(indices) < len(inputs[0]):  # fewer allowed pairs than beams
                inputs = [i[: len(indices)] for i in inputs]
                topk = len(indices)
            is_end = output_ids[:, -1] == self.end_id
            end_counts = (output_ids == self.end_id).sum(1)
            if output_ids.shape[1] >= self.minlen:
                best = output_scores.argmax()
                if is_end[best] and end_counts[best] >= min_ends:
                    return output_ids[best]
                flag = ~is_end | (end_counts < min_ends)  # unfinished beams
                if not flag.all():  # drop the finished ones
                    inputs = [i[flag] for i in inputs]
                    output_ids = output_ids[flag]
                    output_scores = output_scores[flag]
                    end_counts = end_counts[flag]
                    topk = int(flag.sum())
        return output_ids[output_scores.argmax()]

    def random_sample(
        self,
        inputs,
        n,
        topk=None,
        topp=None,
        states=None,
        temperature=1,
        min_ends=1,
        trie=None,
        prefix_allowed_tokens=None,
        no_repeat_ngram_size=0,
        seed=None,
    ):
        """Sample ``n`` sequences; returns a list of ``n`` id arrays (finished ones
        first, in the order they finished, then the unfinished, as bert4keras does).

        ``topk`` samples from the ``topk`` most probable tokens only; ``topp`` from the
        smallest set whose probability reaches ``topp`` (nucleus). ``seed``: an int or a
        ``numpy.random.Generator`` (None: numpy's global state, as bert4keras).
        """
        from kerasnlp_plus.generation import validation  # here: avoids an import cycle

        validation.check_decoder(self, topk)
        _check_positive("n", n)
        if topk is not None:
            _check_positive("topk", topk)
        if topp is not None and not 0 < topp <= 1:
            raise ValueError(f"topp must be in (0, 1], got {topp!r}")
        _check_positive("min_ends", min_ends)
        allowed_fn = make_allowed_fn(trie, prefix_allowed_tokens)
        choice = np.random.choice if seed is None else np.random.default_rng(seed).choice
        inputs = [np.array([i]) for i in inputs]
        output_ids = self.first_output_ids
        results = []
        for step in range(self.maxlen):
            probas, states = self.predict(inputs, output_ids, states, temperature, "probas")
            if step == 0:  # the vocabulary is known from the first scores
                validation.check_decoder_vocab(self, probas.shape[1])
            probas = self._constrain(probas, output_ids, allowed_fn, no_repeat_ngram_size, 0.0)
            probas = probas / probas.sum(axis=1, keepdims=True)
            if step == 0:  # after the first step everything is repeated n times
                probas = np.repeat(probas, n, axis=0)
                inputs = [np.repeat(i, n, axis=0) for i in inputs]
                output_ids = np.repeat(output_ids, n, axis=0)
            sample_ids = sample_from(probas, topk, topp, choice)
            output_ids = np.concatenate([output_ids, sample_ids[:, None]], 1)
            is_end = output_ids[:, -1] == self.end_id
            end_counts = (output_ids == self.end_id).sum(1)
            if output_ids.shape[1] >= self.minlen:
                flag = is_end & (end_counts >= min_ends)  # finished
                if flag.any():
                    results.extend(output_ids[flag])
                    flag = ~flag
                    inputs = [i[flag] for i in inputs]
                    output_ids = output_ids[flag]
                    end_counts = end_counts[flag]
                    if len(output_ids) == 0:
                        break
        results.extend(output_ids)
        return results


def sample_from(probas, topk, topp, choice):
    """One token per row of ``probas`` after top-k then top-p filtering (bert4keras
    order and tie rules); ``choice`` is ``np.random.choice``-like."""
    k_indices = p_indices = None
    if topk is not None:
        topk = min(topk, probas.shape[1])  # above the vocabulary: every token is in the top k
        k_indices = probas.argpartition(-topk, axis=1)[:, -topk:]
        probas = np.take_along_axis(probas, k_indices, axis=1)
        probas = probas / probas.sum(axis=1, keepdims=True)
    if topp is not None:
        p_indices = probas.argsort(axis=1)[:, ::-1]
        probas = np.take_along_axis(probas, p_indices, axis=1)
        cumsum_probas = np.cumsum(probas, axis=1)
        flag = np.roll(cumsum_probas >= topp, 1, axis=1)  # past the nucleus
        flag[:, 0] = False
        probas[flag] = 0
        probas = probas / probas.sum(axis=1, keepdims=True)
    sample_ids = np.array([choice(len(p), p=p) for p in probas]).reshape((-1, 1))
    if p_indices is not None:
        sample_ids = np.take_along_axis(p_indices, sample_ids, axis=1)
    if k_indices is not None:
        sample_ids = np.take_along_axis(k_indices, sample_ids, axis=1)
    return sample_ids[:, 0]


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
