"""Cached, batched decoding for ``'lm'`` / ``'unilm'`` models with an MLM head.

:class:`Generator` encodes a padded batch of sources once, then feeds only the newest
token of every beam (or sample) through the key/value cache, one compiled step per
token. Beam search, greedy decoding and sampling run as one compiled program
(:mod:`kerasnlp_plus.generation.program`: a ``tf.while_loop`` on device, the trie as a
CSR automaton, the sources' keys/values kept once per source and only the generated
slots gathered by beam parent). The host loop (callbacks, n-gram bans, length
penalty) keeps ``batch * beams`` rows of ``source_length + maxlen`` slots (one
more with ``start_id``);
each step gathers the rows by beam parent, writes the new keys/values at the next slot
and attends over the source's real tokens plus the generated slots. A row of a padded
batch with ``n`` real source tokens gives its generated token ``t`` the position
``n + t`` (segment 1 for UniLM), so each row equals its unpadded full forward pass.

With ``length_penalty=0`` (the default) beam search follows bert4keras 0.11 exactly,
and returns the same ids as :class:`kerasnlp_plus.snippets.AutoRegressiveDecoder`
driven by the same model: summed log-probabilities (``log(p + 1e-12)``), the top
``topk`` (beam, token) pairs of each source kept each step, a beam ends when its last
token is ``end_id`` and it holds ``min_ends`` of them; from ``minlen`` on, the best
beam is returned as soon as it has ended, otherwise ended beams are dropped and the
beam count shrinks. Returned ids keep the final ``end_id`` (and ``start_id`` in front
when one is set), as bert4keras does; ``tokenizer.decode`` drops special tokens.

With ``length_penalty=alpha != 0`` (or ``keep_finished=True``) ended beams go into a
pool instead, ranked by ``score / length**alpha`` (``length`` = generated tokens
without ``start_id``; ``alpha > 0`` favours longer outputs), and are kept until no
live beam can beat the best of them any more: for ``alpha >= 0`` a live beam's best
possible final score is ``score / maxlen**alpha`` (scores only decrease), for
``alpha < 0`` it is ``score / (length + 1)**alpha``. The ``topk`` live beams are the
best non-ended candidates of each step.

Example::

    model = build_transformer_model(config, ckpt, application='unilm', with_mlm=True)
    gen = Generator(model, end_id=tokenizer.end_id, maxlen=32)
    batch = [tokenizer.encode(text, maxlen=256) for text in texts]
    token_ids = sequence_padding([t for t, _ in batch])
    segment_ids = sequence_padding([s for _, s in batch])
    titles = [tokenizer.decode(ids) for ids in gen.beam_search([token_ids, segment_ids], topk=3)]
"""
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from keras import ops

from kerasnlp_plus import masks
from kerasnlp_plus.generation import validation
from kerasnlp_plus.generation.constraints import apply_mask, constraint_mask, make_allowed_fn
from kerasnlp_plus.generation.program import beam_program, sample_program, trie_tensors
from kerasnlp_plus.generation.selection import beam_candidates, beam_step, sample_from, select_topk
from kerasnlp_plus.generation.trie import Trie
from kerasnlp_plus.generation.validation import check_int

__all__ = ["Generator"]


def _program_signature(scalar, with_trie):
    """Input signature of a compiled decoding program: token and segment ids, one
    scalar (``max_length`` or ``seed``), then the trie's CSR tensors when it has one."""
    signature = [
        tf.TensorSpec([None, None], tf.int32, name="token_ids"),
        tf.TensorSpec([None, None], tf.int32, name="segment_ids"),
        scalar,
    ]
    if with_trie:
        signature += [
            tf.TensorSpec([None], tf.int32, name="trie_offsets"),
            tf.TensorSpec([None], tf.int32, name="trie_labels"),
            tf.TensorSpec([None], tf.int32, name="trie_children"),
            tf.TensorSpec([None], tf.int64, name="trie_edge_keys"),
        ]
    return signature


class Generator:
    """Batched beam search, greedy decoding and sampling with a key/value cache.

    Args:
        model: a :class:`kerasnlp_plus.models.Transformer` (or the handle returned with
            ``return_keras_model=False``) built with ``application='lm'`` or
            ``'unilm'`` and ``with_mlm=True`` (probabilities) or ``'linear'`` (logits).
            A model with a copy mechanism (``with_copy=True``) decodes with its pointer
            in every path: the source's pointer keys are computed once, at the prefill.
        end_id: the id that ends a sequence (e.g. [SEP]).
        maxlen: the most generated tokens (decoding steps).
        minlen: outputs shorter than this are not checked for ending (bert4keras).
        start_id: id fed before the first generated token (None: the source's last
            token predicts the first one, as in UniLM).
        length_penalty: 0 keeps bert4keras' semantics; else the exponent ``alpha`` of
            ``score / length**alpha`` for ranking ended beams (see the module docs).
        keep_finished: keep ended beams until they cannot lose (default: True iff
            ``length_penalty != 0``); False requires ``length_penalty == 0``.
        no_repeat_ngram_size: n > 0 forbids repeating any n-gram of the output.
        segment_id: segment of the generated tokens (default 1 for unilm, 0 for lm).
        jit_compile: compile each model step with XLA (the decoding loop itself
            runs as a TensorFlow graph; the host loop's prefill too).
        length_bucket: pad the source length up to a multiple of this (padding is
            masked, results are unchanged) so batches of similar lengths reuse one
            compiled graph instead of retracing per padded length.
        batch_bucket: in the compiled programs, pad the batch up to a power of
            two (repeating the first source; the extra rows are dropped) so that
            varying batch sizes compile a handful of XLA programs, not one per size
            (the host loop pads the length only).
        device_trie_max_keys: a ``trie`` with at most this many keys is turned into
            an automaton on device (``Trie.to_csr``) and decoding stays in the
            compiled loop; a larger one (a whole knowledge base) is queried from
            the host loop between steps.
        lean_cache: in the compiled program, keep each source's keys/values once
            (not once per beam) and gather only the generated slots by beam parent.

    Beam search and greedy decoding run as one compiled program (a
    ``tf.while_loop``, see :mod:`kerasnlp_plus.generation.program`) unless they need
    the host: ``prefix_allowed_tokens`` (a Python callback), ``no_repeat_ngram_size``,
    ``length_penalty != 0`` / ``keep_finished`` and tries above
    ``device_trie_max_keys`` run the step-by-step host loop, with identical results.
    The program is traced once per (topk, min_ends, temperature, trie or not,
    jit_compile, node_scores or not) with dynamic shapes; XLA then compiles the
    step once per (batch bucket, length bucket). :meth:`random_sample` runs as a
    compiled program too, unless it has ``prefix_allowed_tokens``,
    ``no_repeat_ngram_size`` or a trie above ``device_trie_max_keys``.

    Call :meth:`beam_search`, :meth:`greedy` or :meth:`random_sample` with
    ``[token_ids, segment_ids]``: int arrays ``(batch, length)`` padded with 0 at the
    end (or lists of lists, padded for you).
    """

    def __init__(
        self,
        model,
        end_id,
        maxlen,
        minlen=1,
        start_id=None,
        length_penalty=0.0,
        keep_finished=None,
        no_repeat_ngram_size=0,
        segment_id=None,
        jit_compile=True,
        length_bucket=16,
        batch_bucket=True,
        device_trie_max_keys=1_000_000,
        lean_cache=True,
    ):
        model = getattr(model, "model", model)  # the return_keras_model=False handle
        application = getattr(model, "application", None)
        if application not in ("lm", "unilm"):
            raise ValueError(
                f"Generator needs a model built with application='lm' or 'unilm', got application={application!r}"
            )
        with_mlm = getattr(model, "with_mlm", False)
        if with_mlm not in (True, "softmax", "linear"):
            raise ValueError(
                f"Generator needs a model built with with_mlm=True or 'linear', got with_mlm={with_mlm!r}"
            )
        self.model = model
        self.vocab_size = int(model.vocab_size)
        end_id = check_int("end_id", end_id, 0)
        if end_id >= self.vocab_size:
            raise ValueError(f"end_id={end_id} is outside the vocabulary of size {self.vocab_size}")
        if start_id is not None:
            start_id = check_int("start_id", start_id, 0)
            if start_id >= self.vocab_size:
                raise ValueError(f"start_id={start_id} is outside the vocabulary of size {self.vocab_size}")
        self.end_id, self.start_id = end_id, start_id
        self.maxlen = check_int("maxlen", maxlen, 1)
        self.minlen = check_int("minlen", minlen, 0)
        self.length_penalty = float(length_penalty)
        if keep_finished is None:
            keep_finished = self.length_penalty != 0
        if not keep_finished and self.length_penalty != 0:
            raise ValueError(
                f"keep_finished=False (bert4keras semantics) needs length_penalty=0, got {length_penalty!r}"
            )
        self.keep_finished = bool(keep_finished)
        self.no_repeat_ngram_size = check_int("no_repeat_ngram_size", no_repeat_ngram_size, 0)
        if segment_id is None:
            segment_id = 1 if application == "unilm" else 0
        if application == "unilm" and segment_id != 1:
            # Generated tokens of segment 0 would be visible to the source: not cacheable.
            raise ValueError(f"with application='unilm' generated tokens need segment_id=1, got {segment_id!r}")
        self.segment_id = int(segment_id)
        self.jit_compile = bool(jit_compile)
        self.length_bucket = check_int("length_bucket", length_bucket, 1)
        self._probabilities = with_mlm in (True, "softmax")
        self._prefill_fn = tf.function(self._prefill, jit_compile=self.jit_compile)
        self._step_fn = tf.function(self._step, jit_compile=self.jit_compile)
        self.batch_bucket = bool(batch_bucket)
        self.device_trie_max_keys = check_int("device_trie_max_keys", device_trie_max_keys, 0)
        self.lean_cache = bool(lean_cache)
        self._programs = {}

    # --- the model pieces (traced) ---------------------------------------------------
    def _forward(self, token_ids, segment_ids, position_ids, cache, index, attention_mask, output_positions=None):
        """Hidden states of the new tokens (at ``output_positions`` only, if given) and
        the updated cache (without the MLM head, so the prefill does not project every
        source position onto the vocabulary)."""
        return self.model.call_with_cache(token_ids, segment_ids, cache, index, attention_mask,
                                          position_ids=position_ids, return_hidden=True,
                                          output_positions=output_positions)

    def _prefill_forward(self, token_ids, segment_ids, position_ids, cache, attention_mask, last):
        """``(hidden at last, all hidden or None, cache)`` of a prefill: the source's
        hidden states are kept only for a copy mechanism, which reads them; otherwise
        the last layer works at ``last`` only (``call_with_cache``'s output_positions;
        rotary models pick it after a full last layer)."""
        if getattr(self.model, "copy_mechanism", None) is not None:
            hidden, cache = self._forward(token_ids, segment_ids, position_ids, cache, 0, attention_mask)
            return ops.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0], hidden, cache
        hidden, cache = self._forward(token_ids, segment_ids, position_ids, cache, 0, attention_mask, last)
        return hidden[:, 0], None, cache

    def _copy_context(self, hidden, token_ids, segment_ids, copies):
        """The copy mechanism's source context (``()`` without one), from the source's
        hidden states, ``copies`` rows per source."""
        if getattr(self.model, "copy_mechanism", None) is None:
            return ()
        return tuple(ops.repeat(t, copies, axis=0) for t in self.model.copy_context(hidden, token_ids, segment_ids))

    def _scores(self, hidden, temperature, rtype, copy_context=(), query_ids=None, output_kernel=None):
        """bert4keras' ``wraps`` transformation: probabilities with temperature, or
        their ``log(p + 1e-12)``. ``copy_context``: see :meth:`_copy_context`;
        ``query_ids``: the token fed at ``hidden`` (the copy mechanism reads it);
        ``output_kernel``: ``model.mlm_output_kernel()``, computed once per decode."""
        if copy_context:
            out = self.model.output_probabilities(hidden[:, None], copy_context, query_ids[:, None],
                                                  output_kernel)[:, 0]
        else:
            out = ops.cast(self.model.mlm_head(hidden, output_kernel), "float32")
        if not self._probabilities:
            probas = ops.softmax(out / temperature, axis=-1)
        elif temperature != 1:
            probas = ops.power(out, 1.0 / temperature)
            probas = probas / ops.sum(probas, axis=-1, keepdims=True)
        else:
            probas = out
        return probas if rtype == "probas" else ops.log(probas + 1e-12)

    def _prefill(self, token_ids, segment_ids, copies, total_length, temperature, rtype):
        batch, length = token_ids.shape
        valid = ops.not_equal(token_ids, 0)
        rank = masks.application_ranks(self.model.application, token_ids, segment_ids)
        mask = masks.visibility(rank, rank, valid)
        mask = ops.pad(mask, [[0, 0], [0, 0], [0, total_length - length]], constant_values=False)
        positions = ops.broadcast_to(ops.arange(length, dtype="int32")[None], (batch, length))
        cache = self.model.init_cache(batch, total_length)
        last = ops.sum(ops.cast(valid, "int32"), axis=1) - 1
        hidden, everything, cache = self._prefill_forward(token_ids, segment_ids, positions, cache, mask, last)
        context = self._copy_context(everything, token_ids, segment_ids, 1)
        last_ids = ops.take_along_axis(token_ids, last[:, None], axis=1)[:, 0]
        scores = self._scores(hidden, temperature, rtype, context, last_ids)
        return scores, ops.repeat(cache, copies, axis=1), tuple(ops.repeat(t, copies, axis=0) for t in context)

    def _step(self, token_ids, parents, cache, index, position_ids, source_valid, source_length, temperature, rtype,
              copy_context=(), output_kernel=None):
        cache = ops.take(cache, parents, axis=1)  # reorder the rows by beam parent
        copy_context = tuple(ops.take(t, parents, axis=0) for t in copy_context)
        slots = ops.arange(ops.shape(source_valid)[1], dtype="int32")[None]
        generated = ops.logical_and(slots >= source_length, slots <= index)  # incl. this token
        visible = ops.logical_or(source_valid, generated)
        segments = ops.full_like(token_ids, self.segment_id)
        hidden, cache = self._forward(
            token_ids[:, None], segments[:, None], position_ids[:, None], cache, index, visible[:, None, :]
        )
        return self._scores(hidden[:, 0], temperature, rtype, copy_context, token_ids, output_kernel), cache

    # --- host side ---------------------------------------------------------------------
    def _prepare(self, inputs):
        """``(token_ids, segment_ids)`` as padded int32 arrays, validated."""
        if isinstance(inputs, (list, tuple)) and len(inputs) in (1, 2):
            token_ids, segment_ids = inputs[0], (inputs[1] if len(inputs) == 2 else None)
        else:
            token_ids, segment_ids = inputs, None
        token_ids = _as_batch(token_ids, "token_ids")
        if segment_ids is None:
            segment_ids = np.zeros_like(token_ids)
        else:
            segment_ids = _as_batch(segment_ids, "segment_ids", length=token_ids.shape[1])
            if segment_ids.shape != token_ids.shape:
                raise ValueError(
                    f"segment_ids has shape {segment_ids.shape}, token_ids {token_ids.shape}; they must match"
                )
        if token_ids.shape[0] == 0:
            raise ValueError("token_ids is an empty batch (no source)")
        valid = token_ids != 0
        lengths = valid.sum(axis=1)
        for b, n in enumerate(lengths):
            if n == 0:
                raise ValueError(f"token_ids row {b} is an empty source (no non-zero token)")
            if not valid[b, :n].all():
                raise ValueError(f"token_ids row {b} has padding (0) before a real token; pad at the end")
        if (token_ids < 0).any() or (token_ids >= self.vocab_size).any():
            raise ValueError(f"token_ids must lie in [0, {self.vocab_size}), got ids up to {token_ids.max()}")
        return token_ids.astype("int32"), segment_ids.astype("int32"), lengths.astype("int32")

    def _start(self, inputs, copies, temperature, rtype):
        token_ids, segment_ids, lengths = self._prepare(inputs)
        pad = validation.bucket_padding(self.model, token_ids.shape[1], self.length_bucket)
        if pad:
            token_ids = np.pad(token_ids, [(0, 0), (0, pad)])
            segment_ids = np.pad(segment_ids, [(0, 0), (0, pad)])
        batch, length = token_ids.shape
        first = [] if self.start_id is None else [self.start_id]
        total = length + len(first) + self.maxlen  # cache slots: source + generated
        scores, cache, copy_context = self._prefill_fn(
            tf.constant(token_ids), tf.constant(segment_ids), copies, total, float(temperature), rtype
        )
        source_valid = np.zeros((batch * copies, total), bool)
        source_valid[:, :length] = np.repeat(token_ids != 0, copies, axis=0)
        session = _Session(
            self, cache, np.repeat(lengths, copies), tf.constant(source_valid), length, float(temperature), rtype,
            copy_context,
        )
        if first:
            n = batch * copies
            session.advance(np.full(n, self.start_id, "int32"), np.arange(n, dtype="int32"), column=0)
        else:
            session.scores = np.repeat(np.asarray(scores), copies, axis=0)
        return session, batch, first

    def _check_common(self, topk_name, topk, min_ends, temperature):
        check_int(topk_name, topk, 1)
        check_int("min_ends", min_ends, 1)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")

    # --- decoding ----------------------------------------------------------------------
    def beam_search(
        self, inputs, topk=1, trie=None, prefix_allowed_tokens=None, min_ends=1, temperature=1.0, node_scores=None
    ):
        """Beam search over a padded batch; returns one list of ids per source row.

        Args:
            inputs: ``[token_ids, segment_ids]`` (or ``[token_ids]``), ``(batch, length)``.
            topk: beams per source.
            trie: a :class:`~kerasnlp_plus.generation.Trie`; outputs (without
                ``start_id``) are paths in it. A prefix with no continuation may only
                take ``end_id``.
            prefix_allowed_tokens: ``fn(batch_index, prefix_ids) -> allowed ids``
                instead of ``trie``.
            min_ends: how many ``end_id`` end a sequence (2 for ``S [SEP] P [SEP]``).
            temperature: divides the logits (bert4keras' ``temperature``).
            node_scores: look-ahead rescoring with ``trie``: float ``(batch, nodes)``
                over the nodes of ``trie.to_csr()`` (e.g.
                :func:`kerasnlp_plus.generation.lookahead.coverage_scores`); a step
                from node ``n`` to node ``c`` adds ``node_scores[b, c] -
                node_scores[b, n]`` to the beam's score, so beams are ranked from the
                first step by the best they can still reach. Needs the compiled
                program (a trie of at most ``device_trie_max_keys`` keys).

        >>> from kerasnlp_plus.models import build_transformer_model
        >>> model = build_transformer_model(None, vocab_size=20, hidden_size=8, num_hidden_layers=1,
        ...     num_attention_heads=2, intermediate_size=16, application="unilm", with_mlm=True)
        >>> gen = Generator(model, end_id=3, maxlen=4)  # random weights: only the shapes are meaningful
        >>> token_ids, segment_ids = [[2, 5, 6, 7, 3], [2, 8, 3]], [[0] * 5, [0] * 3]
        >>> ids = gen.beam_search([token_ids, segment_ids], topk=3)
        >>> len(ids), all(1 <= len(row) <= 4 for row in ids)
        (2, True)
        """
        validation.check_generator_call(self, inputs, topk=topk)
        self._check_common("topk", topk, min_ends, temperature)
        allowed_fn = make_allowed_fn(trie, prefix_allowed_tokens)
        if node_scores is not None and not (trie is not None and self._uses_program(trie, prefix_allowed_tokens)):
            raise ValueError("node_scores needs a trie decoded on device (at most device_trie_max_keys keys, "
                             "no prefix_allowed_tokens / no_repeat_ngram_size / length_penalty)")
        if self._uses_program(trie, prefix_allowed_tokens):
            ids, lengths, _ = self._run_program(inputs, topk, min_ends, temperature, trie, node_scores=node_scores)
            return [[int(t) for t in row[:n]] for row, n in zip(ids, lengths)]
        session, batch, first = self._start(inputs, topk, temperature, "logits")
        rows = [_Beams(first, topk) for _ in range(batch)]
        k_max = int(topk)
        for step in range(self.maxlen):
            tokens = np.zeros(batch * k_max, "int32")
            parents = np.arange(batch * k_max, dtype="int32")
            for b, row in enumerate(rows):
                if row.result is not None:
                    continue
                base = b * k_max
                logp = session.scores[base + row.slots]
                if self.keep_finished:
                    candidates, mask = beam_candidates(
                        row.ids, row.scores, logp, self.end_id, allowed_fn, b, len(first), self.no_repeat_ngram_size
                    )
                    self._advance_pool(row, candidates, mask, k_max, min_ends, len(first))
                else:
                    self._advance_bert4keras(row, logp, min_ends, allowed_fn, b, len(first))
                if row.result is None:
                    k = len(row.scores)
                    parents[base:base + k] = base + row.parent_slots
                    tokens[base:base + k] = row.ids[:, -1]
                    row.slots = np.arange(k)
            if all(row.result is not None for row in rows) or step == self.maxlen - 1:
                break
            session.advance(tokens, parents, column=len(first) + step)
        return [self._final(row, len(first)) for row in rows]

    def beam_search_many(self, sources, topk=1, batch_size=32, trie=None, prefix_allowed_tokens=None, min_ends=1,
                         temperature=1.0, node_scores=None, progress=None):
        """:meth:`beam_search` over any number of sources, in length-sorted batches.

        Sorting by length keeps the padding of each batch small (and, with
        ``length_bucket``, the number of compiled shapes too); the results come back
        in input order, the same ids as decoding each source on its own.

        Args:
            sources: encoded sources, each a list of token ids (segment 0) or a
                ``(token_ids, segment_ids)`` pair as ``tokenizer.encode`` returns.
            batch_size: sources per :meth:`beam_search` call.
            prefix_allowed_tokens: ``fn(i, prefix_ids) -> allowed ids`` where ``i``
                indexes ``sources`` (not the batch), e.g. a copy constraint
                ``lambda i, prefix: allowed[i]``.
            node_scores: look-ahead scores with ``trie`` (see :meth:`beam_search`):
                ``fn(batch_sources) -> (len(batch_sources), nodes)``, called with each
                batch's token id lists, or an array ``(len(sources), nodes)``.
            progress: wraps the iterable of batches, e.g. ``tqdm.tqdm``.
            topk, trie, min_ends, temperature: as in :meth:`beam_search`.

        Returns one list of ids per source, in the order of ``sources``.

        >>> from kerasnlp_plus.models import build_transformer_model
        >>> model = build_transformer_model(None, vocab_size=20, hidden_size=8, num_hidden_layers=1,
        ...     num_attention_heads=2, intermediate_size=16, application="unilm", with_mlm=True)
        >>> gen = Generator(model, end_id=3, maxlen=4, jit_compile=False)
        >>> sources = [[2, 5, 6, 7, 3], [2, 8, 3], [2, 9, 9, 3]]
        >>> gen.beam_search_many(sources, topk=2, batch_size=2) == [gen.beam_search([s], topk=2)[0] for s in sources]
        True
        """
        batch_size = check_int("batch_size", batch_size, 1)
        if not isinstance(sources, (list, tuple)) or not sources:
            raise ValueError(f"sources must be a non-empty list of encoded sources, got {type(sources).__name__}")
        pairs = []
        for i, source in enumerate(sources):
            is_pair = (isinstance(source, (tuple, list)) and len(source) == 2
                       and not isinstance(source[0], (int, np.integer)))
            token_ids, segment_ids = source if is_pair else (source, None)
            token_ids = np.asarray(token_ids)
            segment_ids = np.zeros_like(token_ids) if segment_ids is None else np.asarray(segment_ids)
            if token_ids.ndim != 1 or segment_ids.ndim != 1 or not token_ids.size:
                raise ValueError(f"sources[{i}] must be a non-empty list of token ids or a (token_ids, segment_ids) "
                                 f"pair, got token ids of shape {token_ids.shape}")
            if len(segment_ids) != len(token_ids):
                raise ValueError(f"sources[{i}] has {len(token_ids)} token ids but {len(segment_ids)} segment ids")
            pairs.append((token_ids.tolist(), segment_ids.tolist()))
        if node_scores is not None and not callable(node_scores):
            node_scores = np.asarray(node_scores)
            if node_scores.ndim != 2 or len(node_scores) != len(sources):
                raise ValueError(f"node_scores has shape {node_scores.shape}; expected (len(sources), trie nodes) "
                                 f"with len(sources) = {len(sources)}, or a function of each batch's sources")
        if prefix_allowed_tokens is not None and not callable(prefix_allowed_tokens):
            raise ValueError("prefix_allowed_tokens must be callable: fn(source_index, prefix_ids) -> ids")
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))  # stable: ties keep input order
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        results = [None] * len(pairs)
        for indices in (batches if progress is None else progress(batches)):
            kwargs = {}
            if prefix_allowed_tokens is not None:
                kwargs["prefix_allowed_tokens"] = (
                    lambda b, prefix, indices=indices: prefix_allowed_tokens(indices[b], prefix)
                )
            if node_scores is not None:
                kwargs["node_scores"] = (node_scores([pairs[i][0] for i in indices]) if callable(node_scores)
                                         else node_scores[indices])
            inputs = [[pairs[i][0] for i in indices], [pairs[i][1] for i in indices]]
            outputs = self.beam_search(inputs, topk=topk, trie=trie, min_ends=min_ends, temperature=temperature,
                                       **kwargs)
            for i, out in zip(indices, outputs):
                results[i] = out
        return results

    # --- the compiled program --------------------------------------------------------
    def _uses_program(self, trie, prefix_allowed_tokens):
        if prefix_allowed_tokens is not None or self.no_repeat_ngram_size or self.keep_finished:
            return False
        return trie is None or (isinstance(trie, Trie) and len(trie) <= self.device_trie_max_keys)

    def _program(self, topk, min_ends, temperature, with_trie, jit_compile=None, with_node_scores=False):
        """The ``tf.function`` of the whole beam search, traced once per key: the
        signature leaves batch and length dynamic, XLA compiles per concrete shape."""
        jit = self.jit_compile if jit_compile is None else jit_compile
        key = (int(topk), int(min_ends), float(temperature), bool(with_trie), jit, bool(with_node_scores))
        if key not in self._programs:
            # The loop runs as a graph and each model step as its own XLA program:
            # compiling the whole loop with XLA took minutes on a first call (2
            # loaded cores) and ran ~5x slower warm on a batch of 8 (bench/decode.py,
            # README); the trie lookup (ragged ranges, binary search) is not
            # XLA-compilable anyway.
            program = beam_program(
                self, topk, min_ends, float(temperature), with_trie, jit_steps=jit,
                with_node_scores=with_node_scores,
            )
            signature = _program_signature(tf.TensorSpec([], tf.int32, name="max_length"), with_trie)
            if with_node_scores:
                signature.append(tf.TensorSpec([None, None], tf.float64, name="node_scores"))
            self._programs[key] = _traced_once(tf.function(
                program, input_signature=signature, jit_compile=False, autograph=False
            ))
        return self._programs[key]

    def _trie_tensors(self, trie):
        """The trie's device automaton, kept while the trie is unchanged (a rebuilt
        trie has a new marisa structure)."""
        if trie._dirty:
            trie.compile()
        memo = getattr(self, "_trie_memo", None)
        if memo is None or memo[0] is not trie or memo[1] is not trie._m:
            self._trie_memo = memo = (trie, trie._m, trie_tensors(trie, self.vocab_size))
        return memo[2]

    def _bucketed(self, inputs):
        """Validated inputs padded to the length bucket and the batch bucket."""
        token_ids, segment_ids, _ = self._prepare(inputs)
        batch, length = token_ids.shape
        pad = -length % self.length_bucket
        table = getattr(self.model, "position_embedding", None)
        if table is not None and hasattr(table, "max_length"):
            # Padded positions are embedded too: never round up beyond the table.
            pad = max(0, min(pad, table.max_length - length))
        rows = 1 << (batch - 1).bit_length() if self.batch_bucket else batch
        if pad or rows != batch:
            token_ids = np.pad(token_ids, [(0, 0), (0, pad)])
            segment_ids = np.pad(segment_ids, [(0, 0), (0, pad)])
            # Extra rows repeat the first source (a real one: no empty-row corner case).
            token_ids = np.concatenate([token_ids, np.repeat(token_ids[:1], rows - batch, 0)])
            segment_ids = np.concatenate([segment_ids, np.repeat(segment_ids[:1], rows - batch, 0)])
        return token_ids, segment_ids, batch

    def _run_program(self, inputs, topk, min_ends, temperature, trie, max_length=None, node_scores=None):
        token_ids, segment_ids, batch = self._bucketed(inputs)
        args = [tf.constant(token_ids), tf.constant(segment_ids), tf.constant(max_length or self.maxlen, tf.int32)]
        if trie is not None:
            args += list(self._trie_tensors(trie))
        if node_scores is not None:
            node_scores = np.asarray(node_scores, np.float64)
            n_nodes = len(trie.to_csr()[0]) - 1
            if node_scores.shape != (batch, n_nodes):
                raise ValueError(f"node_scores has shape {node_scores.shape}; expected (batch, trie nodes) = "
                                 f"({batch}, {n_nodes})")
            extra = np.repeat(node_scores[:1], len(token_ids) - batch, 0)
            args.append(tf.constant(np.concatenate([node_scores, extra])))
        program = self._program(topk, min_ends, temperature, trie is not None, with_node_scores=node_scores is not None)
        ids, lengths, scores = program(*args)
        return ids.numpy()[:batch], lengths.numpy()[:batch], scores.numpy()[:batch]

    def _sampler(self, n, topk, topp, temperature, min_ends, with_trie):
        """The ``tf.function`` of ``random_sample``, traced once per key (shapes dynamic)."""
        topk = None if topk is None else min(int(topk), self.vocab_size)  # above: every id
        topp = None if topp is None else float(topp)
        key = ("sample", int(n), topk, topp, float(temperature), int(min_ends), bool(with_trie), self.jit_compile)
        if key not in self._programs:
            program = sample_program(self, n, topk, topp, float(temperature), min_ends, with_trie,
                                     jit_steps=self.jit_compile)
            signature = _program_signature(tf.TensorSpec([], tf.int64, name="seed"), with_trie)
            self._programs[key] = _traced_once(tf.function(program, input_signature=signature, jit_compile=False,
                                                           autograph=False))
        return self._programs[key]

    def _run_sampler(self, inputs, n, topk, topp, temperature, min_ends, trie, seed):
        token_ids, segment_ids, batch = self._bucketed(inputs)
        args = [tf.constant(token_ids), tf.constant(segment_ids), tf.constant(int(seed) % 2**63, tf.int64)]
        if trie is not None:
            args += list(self._trie_tensors(trie))
        ids, lengths = self._sampler(n, topk, topp, temperature, min_ends, trie is not None)(*args)
        rows = [[int(t) for t in row[:k]] for row, k in zip(ids.numpy()[:batch * n], lengths.numpy())]
        return [rows[b * n:(b + 1) * n] for b in range(batch)]

    def export(self, path, topk=1, min_ends=1, temperature=1.0, trie=None, jit_compile=False):
        """Write a SavedModel of :meth:`beam_search` (``topk`` beams) to ``path``.

        Two signatures (``serving_default``, also exported as ``serve``, and
        ``serve_max_length``), both returning ``{"ids", "lengths", "scores"}`` (ids
        int32 ``(batch, maxlen)``, one column more with ``start_id``, whatever
        ``max_length`` is, padded with 0 after ``lengths[b]`` ids; scores the summed
        log-probabilities, float64):

        * ``serving_default(token_ids, segment_ids)``: int32 ``(batch, length)``,
          padded with 0 at the end, decoding up to ``maxlen`` tokens;
        * ``serve_max_length(token_ids, segment_ids, max_length)``: at most
          ``max_length`` (int32 scalar, clipped to ``[1, maxlen]``) tokens.

        ``trie`` (at most ``device_trie_max_keys`` keys) is stored in the graph as
        its CSR automaton. The program needs nothing but TensorFlow: load it with
        ``tf.saved_model.load(path).signatures["serving_default"]`` or serve it
        with TF Serving. ``jit_compile=True`` stores XLA-compiled functions (faster
        on CPU; TF Serving then needs ``--xla_cpu_compilation_enabled=true``).
        The outputs equal :meth:`beam_search` run with the same ``jit_compile``.
        """
        import keras

        self._check_common("topk", topk, min_ends, temperature)
        if self.keep_finished or self.no_repeat_ngram_size:
            raise ValueError("export supports the compiled beam search only: length_penalty=0, "
                             "keep_finished=False, no_repeat_ngram_size=0")
        if trie is not None and not (isinstance(trie, Trie) and len(trie) <= self.device_trie_max_keys):
            raise ValueError(f"export needs a Trie of at most device_trie_max_keys={self.device_trie_max_keys} "
                             f"keys, got {trie!r}")
        program = self._program(topk, min_ends, temperature, trie is not None, jit_compile=bool(jit_compile))
        constants = list(self._trie_tensors(trie)) if trie is not None else []
        outputs = lambda ids, lengths, scores: {"ids": ids, "lengths": lengths, "scores": scores}  # noqa: E731
        tokens = tf.TensorSpec([None, None], tf.int32, name="token_ids")
        segments = tf.TensorSpec([None, None], tf.int32, name="segment_ids")

        def serve(token_ids, segment_ids):
            return outputs(*program(token_ids, segment_ids, tf.constant(self.maxlen, tf.int32), *constants))

        def serve_max_length(token_ids, segment_ids, max_length):
            return outputs(*program(token_ids, segment_ids, max_length, *constants))

        archive = keras.export.ExportArchive()
        archive.track(self.model)
        archive.add_endpoint("serve", serve, input_signature=[tokens, segments])
        archive.add_endpoint(
            "serve_max_length", serve_max_length,
            input_signature=[tokens, segments, tf.TensorSpec([], tf.int32, name="max_length")],
        )
        path = os.fspath(path)
        if os.path.exists(path):
            raise FileExistsError(f"export path {path} already exists; remove it or choose another")
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-" + os.path.basename(path) + "-")
        try:  # a complete SavedModel or nothing at ``path``
            archive.write_out(tmp, verbose=False)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    def greedy(self, inputs, **kwargs):
        """:meth:`beam_search` with one beam."""
        return self.beam_search(inputs, topk=1, **kwargs)

    def _advance_bert4keras(self, row, logp, min_ends, allowed_fn, batch_index, n_first):
        """One step of bert4keras 0.11's beam search for one source (the step of
        ``AutoRegressiveDecoder.beam_search`` too)."""
        beams = beam_step(
            row.ids, row.scores, logp, row.k, self.end_id, min_ends, self.minlen, allowed_fn, batch_index,
            n_first, self.no_repeat_ngram_size,
        )
        if beams.result is not None:
            row.result = beams.result
            return
        row.ids, row.scores, row.k = beams.ids, beams.scores, len(beams.scores)
        row.parent_slots = row.slots[beams.parents]

    def _normalized(self, score, length):
        return score / max(length, 1) ** self.length_penalty if self.length_penalty else score

    def _advance_pool(self, row, scores, mask, k_max, min_ends, n_first):
        """One step of beam search with a pool of ended beams (length penalty)."""
        flat = scores.ravel()
        cand = select_topk(scores, min(2 * k_max, flat.size), mask)
        cand = cand[np.argsort(-flat[cand], kind="stable")]
        keep_ids, keep_scores, keep_parents = [], [], []
        for c in cand:
            score = flat[c]
            parent, token = divmod(int(c), scores.shape[1])
            ids = np.append(row.ids[parent], token)
            if token == self.end_id and (ids == self.end_id).sum() >= min_ends and len(ids) >= self.minlen:
                norm = self._normalized(score, len(ids) - n_first)
                if row.pool is None or norm > row.pool[1]:
                    row.pool = (ids, norm)
            else:
                keep_ids.append(ids)
                keep_scores.append(score)
                keep_parents.append(row.slots[parent])
                if len(keep_ids) == k_max:
                    break
        if not keep_ids:
            row.result = row.pool[0]
            return
        row.ids, row.scores = np.stack(keep_ids), np.array(keep_scores)
        row.parent_slots = np.array(keep_parents)
        if row.pool is not None:
            best, length = row.scores.max(), row.ids.shape[1] - n_first
            if self.length_penalty >= 0:
                bound = self._normalized(best, self.maxlen)
            else:
                bound = self._normalized(best, length + 1)
            if row.pool[1] >= bound:
                row.result = row.pool[0]

    def _final(self, row, n_first):
        """The result of a source: its returned beam, else the best at ``maxlen``."""
        if row.result is not None:
            return [int(t) for t in row.result]
        if not self.keep_finished:
            return [int(t) for t in row.ids[row.scores.argmax()]]
        length = row.ids.shape[1] - n_first
        norms = [self._normalized(s, length) for s in row.scores]
        best = int(np.argmax(norms))
        if row.pool is not None and row.pool[1] >= norms[best]:
            return [int(t) for t in row.pool[0]]
        return [int(t) for t in row.ids[best]]

    def random_sample(
        self,
        inputs,
        n=1,
        topk=None,
        topp=None,
        temperature=1.0,
        seed=None,
        trie=None,
        prefix_allowed_tokens=None,
        min_ends=1,
    ):
        """Sample ``n`` outputs per source; returns, per source row, a list of ``n``
        id lists (in sample order).

        ``topk`` keeps the ``topk`` most probable tokens, ``topp`` the smallest set
        reaching probability ``topp`` (both as bert4keras); ``seed`` an int or a
        ``numpy.random.Generator``; ``trie`` / ``prefix_allowed_tokens`` as in
        :meth:`beam_search`.

        Without ``prefix_allowed_tokens`` / ``no_repeat_ngram_size`` (and with a
        trie of at most ``device_trie_max_keys`` keys) sampling runs as one compiled
        program with stateless random ops: an int ``seed`` gives the same samples
        on every call (a ``numpy.random.Generator`` or None: a seed drawn from it).
        The host loop draws from the same distribution with another random stream.
        """
        validation.check_generator_call(self, inputs, topk=topk)
        self._check_common("n", n, min_ends, temperature)
        if topk is not None:
            check_int("topk", topk, 1)
        if topp is not None and not 0 < topp <= 1:
            raise ValueError(f"topp must be in (0, 1], got {topp!r}")
        allowed_fn = make_allowed_fn(trie, prefix_allowed_tokens)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        if prefix_allowed_tokens is None and not self.no_repeat_ngram_size and (
                trie is None or (isinstance(trie, Trie) and len(trie) <= self.device_trie_max_keys)):
            # an int seed is the program's seed as given; else one drawn from the generator
            program_seed = seed if isinstance(seed, (int, np.integer)) else int(rng.integers(2**62))
            return self._run_sampler(inputs, n, topk, topp, temperature, min_ends, trie, program_seed)
        session, batch, first = self._start(inputs, n, temperature, "probas")
        rows = batch * n
        outputs = [list(first) for _ in range(rows)]
        alive = np.ones(rows, bool)
        tokens = np.zeros(rows, "int32")
        for step in range(self.maxlen):
            live = np.flatnonzero(alive)
            probas = session.scores[live]
            for b in range(batch):
                sel = np.flatnonzero(live // n == b)
                if sel.size:
                    mask = constraint_mask(
                        allowed_fn,
                        b,
                        [outputs[i][len(first):] for i in live[sel]],
                        self.vocab_size,
                        self.end_id,
                        self.no_repeat_ngram_size,
                    )
                    if mask is not None:
                        probas[sel] = apply_mask(probas[sel], mask, 0.0)
            probas = probas / probas.sum(axis=1, keepdims=True)
            sampled = sample_from(probas, topk, topp, rng.choice)
            tokens[:] = 0
            for i, token in zip(live, sampled):
                out = outputs[i]
                out.append(int(token))
                tokens[i] = token
                if token == self.end_id and len(out) >= self.minlen and out.count(self.end_id) >= min_ends:
                    alive[i] = False
            if not alive.any() or step == self.maxlen - 1:
                break
            session.advance(tokens, np.arange(rows, dtype="int32"), column=len(first) + step)
        return [outputs[b * n:(b + 1) * n] for b in range(batch)]


class _Beams:
    """Host-side state of one source's beams."""

    def __init__(self, first, topk):
        self.ids = np.array([first], dtype=np.int64).reshape(1, len(first))
        self.scores = np.zeros(1)
        self.slots = np.array([0])  # cache row (within the source's block) of each beam
        self.parent_slots = None
        self.k = int(topk)  # bert4keras' topk, shrinks as beams end
        self.result = None
        self.pool = None  # (ids, normalized score) of the best ended beam


class _Session:
    """The cache and step inputs of one decoding call."""

    def __init__(self, generator, cache, lengths, source_valid, source_length, temperature, rtype, copy_context=()):
        self.generator = generator
        self.cache = cache
        self.copy_context = copy_context
        self.lengths = lengths.astype("int32")
        self.source_valid = source_valid
        self.source_length = source_length
        self.temperature = temperature
        self.rtype = rtype
        self.scores = None

    def advance(self, tokens, parents, column):
        """Feed ``tokens`` (the output column ``column``) after gathering rows by
        ``parents``; sets ``self.scores`` to the next-token scores (numpy)."""
        scores, self.cache = self.generator._step_fn(
            tf.constant(tokens, "int32"),
            tf.constant(parents, "int32"),
            self.cache,
            tf.constant(self.source_length + column, "int32"),
            tf.constant(self.lengths + column, "int32"),
            self.source_valid,
            tf.constant(self.source_length, "int32"),
            self.temperature,
            self.rtype,
            self.copy_context,
        )
        self.copy_context = tuple(tf.gather(t, parents, axis=0) for t in self.copy_context)
        self.scores = np.asarray(scores)


def _traced_once(function):
    """``function`` (a full ``input_signature``: it traces once) without TensorFlow's
    frequent-retracing warning. That detector counts traces per Python code object,
    across ``tf.function`` instances: every program of every Generator in a process
    shares one, so a few fresh Generators (or keys) read as retracing although each
    function traces once (``tests/test_generation_program.py`` checks the counts)."""
    function._omit_frequent_tracing_warning = True
    return function


def _as_batch(x, name, length=None):
    """A 2-D int array from an array or a (ragged) list of lists."""
    if isinstance(x, tf.Tensor):
        x = x.numpy()
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], (list, tuple, np.ndarray)):
        # At call time: kerasnlp_plus.snippets (the bert4keras layer) imports this package.
        from kerasnlp_plus.snippets import sequence_padding

        x = sequence_padding(x, length=length) if len({len(r) for r in x}) > 1 or length else np.asarray(x)
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or not (x.size == 0 or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{name} must be int ids of shape (batch, length), got shape {x.shape} dtype {x.dtype}")
    return x
