"""Which tokens may come next: a trie or a callback, and n-gram blocking, as a mask.

Used by both decoders (:class:`~kerasnlp_plus.generation.Generator` on the host loop
and :class:`kerasnlp_plus.snippets.AutoRegressiveDecoder`); the compiled program
(:mod:`kerasnlp_plus.generation.program`) applies the same rules to a trie on device.

A prefix with no allowed continuation (a complete key that no longer key extends, or
an empty list from the callback) may only be followed by ``end_id``, so the sequence
ends instead of failing.
"""
import numpy as np

from kerasnlp_plus.generation.validation import allowed_token_ids

__all__ = ["make_allowed_fn", "constraint_mask", "apply_mask"]


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


def apply_mask(scores, mask, fill):
    """``scores`` with the entries where ``mask`` is False set to ``fill``. For
    probabilities (``fill=0``) a row whose allowed tokens all have probability 0
    becomes uniform over them, so it can still be sampled."""
    scores = np.where(mask, scores, fill)
    if fill == 0:
        empty = scores.sum(axis=1) <= 0
        scores[empty] = mask[empty]
    return scores
