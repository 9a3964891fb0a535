"""bert4keras-compatible helpers: ``sequence_padding`` and ``AutoRegressiveDecoder``.

Scripts written for bert4keras 0.11 keep working with only their imports changed::

    from kerasnlp_plus.snippets import sequence_padding, AutoRegressiveDecoder

``AutoRegressiveDecoder`` is the *uncached* reference decoder: every step re-runs the
user's ``predict`` on the whole prefix, one source at a time, exactly like bert4keras.
For speed use :class:`kerasnlp_plus.generation.Generator`, which returns the same
beams (with ``length_penalty=0``) from a batch of sources and a key/value cache: both
take the same step, :func:`kerasnlp_plus.generation.selection.beam_step`. Decoding
itself (constraints, selection, sampling) lives in :mod:`kerasnlp_plus.generation`.

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
import builtins
import json
import os
import re
import types
import unicodedata

import numpy as np

# Decoding lives in kerasnlp_plus.generation; AutoRegressiveDecoder below adapts it.
from kerasnlp_plus.generation import validation
from kerasnlp_plus.generation.constraints import apply_mask, constraint_mask, make_allowed_fn
from kerasnlp_plus.generation.selection import beam_step, sample_from

__all__ = [
    "sequence_padding", "softmax", "AutoRegressiveDecoder",
    # bert4keras 0.11.5 names (the rest of its snippets module)
    "is_py2", "basestring", "to_array", "is_string", "strQ2B", "string_matching", "convert_to_unicode", "convert_to_str",
    "lowercase_and_normalize", "open", "parallel_apply_generator", "parallel_apply",
    "truncate_sequences", "text_segmentate", "is_one_of", "DataGenerator", "ViterbiDecoder",
    "insert_arguments", "delete_arguments", "longest_common_substring", "longest_common_subsequence",
    "orthogonally_resize", "uniout",
]


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

        autotitle = AutoTitle(start_id=None, end_id=tokenizer.end_id, maxlen=32)

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

            # mask=...: the last position's output carries no sequence mask
            outputs = [
                keras.layers.Lambda(lambda x: x[:, -1], mask=lambda inputs, mask=None: None)(output)
                for output in model.outputs
            ]
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
        validation.check_decoder(self, topk)
        validation.check_int("topk", topk, 1)
        validation.check_int("min_ends", min_ends, 1)
        allowed_fn = make_allowed_fn(trie, prefix_allowed_tokens)
        n_first = self.first_output_ids.shape[1]
        inputs = [np.array([i]) for i in inputs]
        output_ids, output_scores = self.first_output_ids, np.zeros(1)
        for step in range(self.maxlen):
            scores, states = self.predict(inputs, output_ids, states, temperature, "logits")
            if step == 0:  # the vocabulary is known from the first scores
                validation.check_decoder_vocab(self, scores.shape[1])
            beams = beam_step(
                output_ids, output_scores, scores, topk, self.end_id, min_ends, self.minlen, allowed_fn,
                n_first=n_first, no_repeat_ngram_size=no_repeat_ngram_size,
            )
            if beams.result is not None:
                return beams.result
            # One input row per live beam (the rows are copies of the one source):
            # fewer when fewer pairs were allowed or beams ended, as bert4keras shrinks topk.
            inputs = [i[beams.parents] for i in inputs]
            output_ids, output_scores, topk = beams.ids, beams.scores, len(beams.scores)
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
        validation.check_decoder(self, topk)
        validation.check_int("n", n, 1)
        if topk is not None:
            validation.check_int("topk", topk, 1)
        if topp is not None and not 0 < topp <= 1:
            raise ValueError(f"topp must be in (0, 1], got {topp!r}")
        validation.check_int("min_ends", min_ends, 1)
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


# --- the rest of bert4keras 0.11.5's snippets ------------------------------------------
_builtin_open = builtins.open
# ``from bert4keras.snippets import uniout`` fixed Python 2's printing of Chinese;
# Python 3 needs nothing, so the import is a no-op module.
uniout = types.ModuleType("uniout", "no-op on Python 3 (bert4keras compatibility)")


def to_array(*args):
    """``np.array`` of each argument; one argument gives one array, several a list."""
    results = [np.array(a) for a in args]
    return results[0] if len(args) == 1 else results


is_py2 = False  # bert4keras' flags for Python 2; this package is Python 3 only
basestring = str


def is_string(s):
    return isinstance(s, str)


def strQ2B(ustring):
    """Full-width characters (U+FF01..U+FF5E, ideographic space) to half-width."""
    chars = []
    for uchar in ustring:
        code = ord(uchar)
        if code == 12288:
            code = 32
        elif 65281 <= code <= 65374:
            code -= 65248
        chars.append(chr(code))
    return "".join(chars)


def string_matching(s, keywords):
    """True when ``s`` matches at least one of the regular expressions ``keywords``."""
    return any(re.search(k, s) for k in keywords)


def convert_to_unicode(text, encoding="utf-8", errors="ignore"):
    """``bytes`` decoded to ``str``; a ``str`` is returned as is."""
    return text.decode(encoding, errors=errors) if isinstance(text, bytes) else text


convert_to_str = convert_to_unicode


def lowercase_and_normalize(text):
    """Lower-case, NFD, accents (category Mn) removed."""
    text = unicodedata.normalize("NFD", text.lower())
    return "".join(ch for ch in text if unicodedata.category(ch) != "Mn")


class open:  # noqa: N801  (bert4keras' name; it shadows the builtin on purpose)
    """The builtin ``open`` plus bert4keras' line index: with ``indexable=True`` (or a
    path where the index is cached as JSON) ``f[i]`` is line ``i`` and ``len(f)`` the
    number of lines, without reading the file into memory."""

    def __init__(self, name, mode="r", encoding=None, errors="strict", indexable=False):
        self.name = name
        self.file = _builtin_open(name, mode, encoding=encoding, errors=errors)
        self.encoding = encoding
        self.errors = errors
        self.iterator = None
        if indexable:
            if is_string(indexable) and os.path.exists(indexable):
                with _builtin_open(indexable) as f:
                    self.offsets = json.load(f)
            else:
                self.create_indexes()
                if is_string(indexable):
                    from kerasnlp_plus.utils import atomic_write_text

                    atomic_write_text(indexable, json.dumps(self.offsets))

    def create_indexes(self):
        """Byte offset of every line (read in binary so offsets are exact)."""
        self.offsets, offset = [], 0
        with _builtin_open(self.name, "rb") as f:
            for line in f:
                self.offsets.append(offset)
                offset += len(line)

    def __getitem__(self, key):
        self.seek(self.offsets[key])
        return self.readline()

    def __len__(self):
        return len(self.offsets)

    def __iter__(self):
        for line in self.file:
            yield convert_to_unicode(line, self.encoding or "utf-8", self.errors) if self.encoding else line

    def next(self):
        if self.iterator is None:
            self.iterator = self.__iter__()
        return next(self.iterator)

    __next__ = next

    def read(self):
        return self.file.read()

    def readline(self):
        return self.file.readline()

    def readlines(self):
        return self.file.readlines()

    def write(self, text):
        self.file.write(text)

    def flush(self):
        self.file.flush()

    def close(self):
        self.file.close()

    def tell(self):
        return self.file.tell()

    def seek(self, offset=0):
        return self.file.seek(offset)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, tb):
        self.close()


def parallel_apply_generator(func, iterable, workers, max_queue_size, dummy=False, random_seeds=True):
    """Apply ``func`` to every item with ``workers`` processes (threads if ``dummy``);
    yields ``(index, result)`` as results arrive (unordered), at most
    ``max_queue_size`` items in flight. ``random_seeds``: True gives each worker a
    fresh numpy seed, a list seeds them explicitly."""
    if dummy:
        from multiprocessing.dummy import Pool
    else:
        from multiprocessing import Pool
    if random_seeds is True:
        seeds = list(np.random.SeedSequence().generate_state(workers))
    elif random_seeds in (None, False):
        seeds = [None] * workers
    else:
        seeds = list(random_seeds) + [None] * max(0, workers - len(random_seeds))
    with Pool(workers, _seed_worker, (seeds,)) as pool:
        pending = []
        for i, d in enumerate(iterable):
            pending.append((i, pool.apply_async(func, (d,))))
            while len(pending) >= max_queue_size:
                i0, r0 = pending.pop(0)
                yield i0, r0.get()
        for i0, r0 in pending:
            yield i0, r0.get()


_worker_counter = [0]


def _seed_worker(seeds):
    from multiprocessing import current_process

    identity = current_process()._identity
    index = (identity[0] - 1) if identity else _worker_counter[0]
    _worker_counter[0] += 1
    seed = seeds[index % len(seeds)] if seeds else None
    if seed is not None:
        np.random.seed(int(seed) % (2**32))


def parallel_apply(func, iterable, workers, max_queue_size, callback=None, dummy=False, random_seeds=True,
                   unordered=True):
    """:func:`parallel_apply_generator` collected: a list of results (in input order
    with ``unordered=False``), or ``callback(result)`` for each."""
    generator = parallel_apply_generator(func, iterable, workers, max_queue_size, dummy, random_seeds)
    if callback is None:
        if unordered:
            return [d for _, d in generator]
        return [d for _, d in sorted(generator, key=lambda x: x[0])]
    for _, d in generator:
        callback(d)


def truncate_sequences(maxlen, indices, *sequences):
    """Pop items (at ``indices``, one per sequence or one for all) from the longest
    sequence until the total length is at most ``maxlen``; the lists are modified."""
    sequences = [s for s in sequences if s]
    if not isinstance(indices, (list, tuple)):
        indices = [indices] * len(sequences)
    while True:
        lengths = [len(s) for s in sequences]
        if sum(lengths) <= maxlen:
            return sequences
        i = int(np.argmax(lengths))
        sequences[i].pop(indices[i])


def text_segmentate(text, maxlen, seps="\n", strips=None):
    """Split ``text`` at the separators ``seps`` (tried in order, each a single
    character) into pieces of at most ``maxlen`` characters where possible; each piece
    keeps its separator. ``strips``: characters stripped from both ends."""
    text = text.strip().strip(strips)
    if seps and len(text) > maxlen:
        pieces = text.split(seps[0])
        text, texts = "", []
        for i, p in enumerate(pieces):
            if text and p and len(text) + len(p) > maxlen - 1:
                texts.extend(text_segmentate(text, maxlen, seps[1:], strips))
                text = ""
            text = text + p if i + 1 == len(pieces) else text + p + seps[0]
        if text:
            texts.extend(text_segmentate(text, maxlen, seps[1:], strips))
        return texts
    return [text]


def is_one_of(x, ys):
    """``x in ys`` by identity (safe for arrays and tensors)."""
    return any(x is y for y in ys)


class DataGenerator:
    """Batches for ``model.fit`` (bert4keras ``DataGenerator``).

    Subclass it and write ``__iter__(self, random=False)`` that loops over
    ``self.sample(random)`` (pairs ``(is_end, item)``) and yields batches of
    ``self.batch_size``. ``forfit()`` repeats the batches forever (shuffled) for
    ``model.fit(gen.forfit(), steps_per_epoch=len(gen))``; ``to_dataset`` wraps them in a
    ``tf.data.Dataset``. ``len(gen)`` is the number of batches per pass.
    """

    def __init__(self, data, batch_size=32, buffer_size=None):
        self.data = data
        self.batch_size = batch_size
        if hasattr(self.data, "__len__"):
            self.steps = -(-len(self.data) // self.batch_size)
        else:
            self.steps = None
        self.buffer_size = buffer_size or batch_size * 1000

    def __len__(self):
        return self.steps

    def sample(self, random=False):
        """Yield ``(is_end, item)``; shuffled with ``random`` (a permutation when the
        data has a length, else through a ``buffer_size`` buffer)."""
        if random:
            if self.steps is None:

                def generator():
                    caches, isfull = [], False
                    for d in self.data:
                        caches.append(d)
                        if isfull:
                            yield caches.pop(np.random.randint(len(caches)))
                        elif len(caches) == self.buffer_size:
                            isfull = True
                    while caches:
                        yield caches.pop(np.random.randint(len(caches)))

            else:

                def generator():
                    for i in np.random.permutation(len(self.data)):
                        yield self.data[i]

            data = generator()
        else:
            data = iter(self.data)
        try:
            d_current = next(data)
        except StopIteration:
            return
        for d_next in data:
            yield False, d_current
            d_current = d_next
        yield True, d_current

    def __iter__(self, random=False):
        raise NotImplementedError(f"{type(self).__name__} must define __iter__(self, random=False)")

    def forfit(self, random=True):
        """The batches of ``__iter__`` forever, as an iterator that ``model.fit`` also
        takes. Lists in a batch become tuples: Keras 3 feeds a generator through
        ``tf.data``, which reads a list as one tensor, so bert4keras' ``yield
        [token_ids, segment_ids], labels`` would fail there. And Keras 3 fixes every
        dimension that its first two batches agree on, so a later batch padded to
        another length would stop training; these batches keep every dimension but
        those of size 1 open."""
        return _ForFit(self._forfit_batches(random))

    def _forfit_batches(self, random):
        while True:
            for d in self.__iter__(random):
                yield _lists_to_tuples(d)

    def fortest(self, random=False):
        while True:
            for d in self.__iter__(random):
                yield _lists_to_tuples(d[0])

    def to_dataset(self, types, shapes, names=None, padded_batch=False):
        """A ``tf.data.Dataset`` of the items of ``forfit`` batched by ``batch_size``.

        Here ``__iter__`` must yield single examples (not batches), as in bert4keras;
        ``types``/``shapes`` describe one example; ``names`` wraps them in dicts;
        ``padded_batch`` pads variable lengths."""
        import tensorflow as tf

        if names is None:
            generator = self.forfit
        else:
            if is_string(names):
                warps = lambda k, v: {k: v}  # noqa: E731
            elif is_string(names[0]):
                warps = lambda k, v: dict(zip(k, v))  # noqa: E731
            else:
                warps = lambda k, v: tuple(dict(zip(i, j)) for i, j in zip(k, v))  # noqa: E731

            def generator():
                for d in self.forfit():
                    yield warps(names, d)

            types = warps(names, types)
            shapes = warps(names, shapes)

        def spec(t, s):
            # ``shapes`` has lists as leaves (``[None]``): walk the structure of ``types``
            if isinstance(t, dict):
                return {k: spec(t[k], s[k]) for k in t}
            if isinstance(t, (list, tuple)):
                return tuple(spec(ti, si) for ti, si in zip(t, s))
            return tf.TensorSpec(shape=[None] * len(s) if padded_batch else s, dtype=t)

        signature = spec(types, shapes)
        dataset = tf.data.Dataset.from_generator(generator, output_signature=signature)
        if padded_batch:
            return dataset.padded_batch(self.batch_size, shapes)
        return dataset.batch(self.batch_size)


def _ForFit(batches):
    """``batches`` (a generator of Keras batches) as an iterator that Keras 3 reads
    with every dimension variable: a ``GeneratorDataAdapter`` (Keras' own reader of
    generators, which ``model.fit`` uses as it is) whose tf.data signature has no
    fixed sizes. Without TensorFlow's Keras reader, the generator itself."""
    try:
        from keras.src.trainers.data_adapters.generator_data_adapter import GeneratorDataAdapter
    except ImportError:  # another Keras layout: the plain generator still works for fixed shapes
        return batches

    class ForFit(GeneratorDataAdapter):
        def __init__(self, generator):
            super().__init__(generator)
            self._iterator = None

        def get_tf_dataset(self):
            import tensorflow as tf

            if self._output_signature is None:
                from keras.src.trainers.data_adapters import data_adapter_utils

                spec = data_adapter_utils.get_tensor_spec(self._first_batches)
                def relaxed(s):  # sizes 1 stay (a ``[label]`` column: Keras' losses squeeze it)
                    if not isinstance(s, tf.TensorSpec):  # e.g. the spec of a None target
                        return s
                    return tf.TensorSpec([None if d != 1 else 1 for d in s.shape], s.dtype)

                self._output_signature = tf.nest.map_structure(relaxed, spec)
            return super().get_tf_dataset()

        def __iter__(self):
            return self

        def __next__(self):  # bert4keras' forfit is a generator: next() works
            if self._iterator is None:
                self._iterator = self.generator()
            return next(self._iterator)

        def map_batches(self, fn):
            """The same batches passed through ``fn`` (the models' host-side input checks)."""
            return ForFit(fn(batch) for batch in self.generator())

    return ForFit(batches)


def _lists_to_tuples(structure):
    if isinstance(structure, (list, tuple)):
        return tuple(_lists_to_tuples(x) for x in structure)
    if isinstance(structure, dict):
        return {k: _lists_to_tuples(v) for k, v in structure.items()}
    return structure


class ViterbiDecoder:
    """Viterbi decoding of a linear-chain CRF (bert4keras ``ViterbiDecoder``).

    ``trans[i, j]``: score of label ``j`` after ``i`` (``K.eval(crf.trans)``);
    ``starts`` / ``ends``: the labels a path may start / end with (None: any).
    ``decode(nodes)`` takes the emission scores ``(length, num_labels)`` and returns
    the highest-scoring label path (sum of emissions and transitions).
    """

    def __init__(self, trans, starts=None, ends=None):
        self.trans = np.asarray(trans)
        if self.trans.ndim != 2 or self.trans.shape[0] != self.trans.shape[1]:
            raise ValueError(f"ViterbiDecoder: trans must be a square matrix, got shape {self.trans.shape}")
        self.num_labels = len(self.trans)
        self.non_starts = [] if starts is None else [i for i in range(self.num_labels) if i not in starts]
        self.non_ends = [] if ends is None else [i for i in range(self.num_labels) if i not in ends]

    def decode(self, nodes):
        nodes = np.array(nodes, dtype=np.float64)  # a copy: the caller's scores are kept
        if nodes.ndim != 2 or nodes.shape[1] != self.num_labels:
            raise ValueError(
                f"ViterbiDecoder.decode: nodes must be (length, {self.num_labels}), got shape {nodes.shape}"
            )
        nodes[0, self.non_starts] -= np.inf
        nodes[-1, self.non_ends] -= np.inf
        labels = np.arange(self.num_labels).reshape((1, -1))
        scores = nodes[0].reshape((-1, 1))
        paths = labels
        for step in range(1, len(nodes)):
            totals = scores + self.trans + nodes[step].reshape((1, -1))
            best_previous = totals.argmax(0)
            scores = totals.max(0).reshape((-1, 1))
            paths = np.concatenate([paths[:, best_previous], labels], 0)
        return paths[:, scores[:, 0].argmax()]


def insert_arguments(**arguments):
    """Decorator (for ``__init__``): adds keyword arguments with defaults, stored as
    attributes of ``self``."""

    def actual_decorator(func):
        def new_func(self, *args, **kwargs):
            for k, v in arguments.items():
                setattr(self, k, kwargs.pop(k, v))
            return func(self, *args, **kwargs)

        return new_func

    return actual_decorator


def delete_arguments(*arguments):
    """Decorator (for ``__init__``): rejects the named keyword arguments."""

    def actual_decorator(func):
        def new_func(self, *args, **kwargs):
            for k in arguments:
                if k in kwargs:
                    raise TypeError(f"{type(self).__name__} got an unexpected keyword argument {k!r}")
            return func(self, *args, **kwargs)

        return new_func

    return actual_decorator


def longest_common_substring(source, target):
    """``(length, (i0, i1, j0, j1))`` of a longest common slice
    ``source[i0:i1] == target[j0:j1]``."""
    from difflib import SequenceMatcher

    match = SequenceMatcher(None, source, target, autojunk=False).find_longest_match(
        0, len(source), 0, len(target)
    )
    return match.size, (match.a, match.a + match.size, match.b, match.b + match.size)


def longest_common_subsequence(source, target):
    """``(length, mapping)`` of a longest common subsequence; ``mapping`` lists the
    matched index pairs ``(i, j)`` in order."""
    n, m = len(source), len(target)
    c = np.zeros((n + 1, m + 1), dtype=np.int64)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            if source[i - 1] == target[j - 1]:
                c[i, j] = c[i - 1, j - 1] + 1
            else:
                c[i, j] = max(c[i, j - 1], c[i - 1, j])
    mapping, i, j = [], n, m
    while i > 0 and j > 0:
        if source[i - 1] == target[j - 1]:
            mapping.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif c[i, j - 1] > c[i - 1, j]:
            j -= 1
        else:
            i -= 1
    return int(c[n, m]), mapping[::-1]


def orthogonally_resize(a, new_shape, window=2):
    """Resize a weight matrix by repeating ``window``-blocks and truncating, keeping
    its Frobenius norm (bert4keras' way to grow a model)."""
    if a.ndim != len(new_shape):
        raise ValueError(f"orthogonally_resize: shape {a.shape} and new_shape {new_shape} differ in rank")
    slices, a_norm, w = [], np.linalg.norm(a), window
    for i, (d1, d2) in enumerate(zip(a.shape, new_shape)):
        if d1 != d2:
            k = d2 // d1 + int(d2 % d1 != 0)
            if k > 1:
                if d1 % w:
                    raise ValueError(f"orthogonally_resize: axis {i} of size {d1} is not divisible by window {w}")
                a = a.reshape(a.shape[:i] + (d1 // w, w) + a.shape[i + 1:])
                a = np.repeat(a, k, axis=i)
                a = a.reshape(a.shape[:i] + (d1 * k,) + a.shape[i + 2:])
        slices.append(np.s_[:d2])
    a = a[tuple(slices)]
    return a / np.linalg.norm(a) * a_norm
