"""Choosing the next tokens: one beam-search step, top-k and top-p sampling.

:func:`beam_step` is bert4keras 0.11's beam step (summed log-probabilities, the
constraint mask, the top ``topk`` (beam, token) pairs, ending and dropping beams),
written once for both decoders: :class:`~kerasnlp_plus.generation.Generator` calls it
per source on its host loop, :class:`kerasnlp_plus.snippets.AutoRegressiveDecoder`
(the uncached bert4keras adapter) per step; so the two return the same beams.
:func:`sample_from` is the top-k / top-p draw of both decoders' ``random_sample``.
"""
from typing import NamedTuple, Optional

import numpy as np

from kerasnlp_plus.generation.constraints import constraint_mask

__all__ = ["BeamStep", "beam_candidates", "beam_step", "select_topk", "sample_from"]


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


def beam_candidates(ids, scores, logprobs, end_id, allowed_fn=None, batch_index=0, n_first=0,
                    no_repeat_ngram_size=0):
    """The score of every (beam, next token) pair and which pairs are allowed.

    Args:
        ids: ``(beams, t)`` ids so far, ``n_first`` leading ones (``start_id``) not
            generated (constraints see only the generated ones).
        scores: ``(beams,)`` summed log-probabilities so far.
        logprobs: ``(beams, vocab)`` next-token log-probabilities.
        end_id, allowed_fn, batch_index, no_repeat_ngram_size: as in
            :func:`~kerasnlp_plus.generation.constraints.constraint_mask`.

    Returns ``(candidates, mask)``: ``scores[:, None] + logprobs`` and the boolean
    mask of allowed pairs (None: all allowed).
    """
    mask = constraint_mask(allowed_fn, batch_index, ids[:, n_first:], logprobs.shape[1], end_id,
                           no_repeat_ngram_size)
    return scores[:, None] + logprobs, mask


class BeamStep(NamedTuple):
    """The beams after one :func:`beam_step` of one source."""

    ids: np.ndarray  # (k, t + 1) the live beams' ids
    scores: np.ndarray  # (k,) their summed log-probabilities
    parents: np.ndarray  # (k,) the row of the previous beams each one extends
    result: Optional[np.ndarray]  # the returned beam when the search ends here, else None


def beam_step(ids, scores, logprobs, topk, end_id, min_ends=1, minlen=1, allowed_fn=None, batch_index=0,
              n_first=0, no_repeat_ngram_size=0):
    """One step of bert4keras 0.11's beam search for one source.

    Keeps the ``topk`` best allowed (beam, token) pairs (fewer when fewer are
    allowed). A beam has ended when its last token is ``end_id`` and it holds
    ``min_ends`` of them. Once the beams are ``minlen`` ids long: if the best one has
    ended it is the ``result``, else the ended ones are dropped (the caller's beam
    count shrinks to ``len(ids)``). Arguments as in :func:`beam_candidates`.

    >>> logp = np.log([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]])
    >>> step = beam_step(np.array([[1], [2]]), np.log([0.5, 0.5]), logp, topk=2, end_id=0)
    >>> step.ids.tolist(), step.parents.tolist(), step.result
    ([[1, 1]], [0], None)
    """
    candidates, mask = beam_candidates(ids, scores, logprobs, end_id, allowed_fn, batch_index, n_first,
                                       no_repeat_ngram_size)
    indices = select_topk(candidates, topk, mask)
    vocab = candidates.shape[1]
    parents = indices // vocab
    ids = np.concatenate([ids[parents], (indices % vocab)[:, None]], 1)
    scores = np.take_along_axis(candidates, indices, axis=None)
    if ids.shape[1] >= minlen:
        is_end = ids[:, -1] == end_id
        end_counts = (ids == end_id).sum(1)
        best = scores.argmax()
        if is_end[best] and end_counts[best] >= min_ends:
            return BeamStep(ids, scores, parents, ids[best])
        keep = ~is_end | (end_counts < min_ends)  # drop the ended beams
        ids, scores, parents = ids[keep], scores[keep], parents[keep]
    return BeamStep(ids, scores, parents, None)


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
