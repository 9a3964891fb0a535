"""Masking and factorization orders, on the host (NumPy) and in ``tf.data`` (TF).

Whole-word masking (WWM): every token carries a word id (``-1`` for tokens that are
never masked: ``[CLS]``, ``[SEP]``, padding). Words are drawn in a random order and
taken while fewer than ``round(rate * maskable_tokens)`` tokens are chosen (at least
one), so all tokens of a chosen word are masked together. Each chosen word is then
replaced by ``[MASK]`` (80%), by random tokens (10%) or kept (10%). Labels hold the
original token at chosen positions and 0 elsewhere (0 is ``[PAD]``, never a target).

The NumPy and the TF versions implement the same rule; the TF one runs in the input
pipeline with stateless seeds ``(seed, example_index)`` so that masks are fresh every
epoch, reproducible, and independent of the number of replicas.
"""
import numpy as np

MASK_RATE = 0.15
MASK_PROBS = (0.8, 0.1, 0.1)  # [MASK], random token, unchanged


def mask_whole_words_np(token_ids, word_ids, rng, mask_id, vocab_size, random_low, rate=MASK_RATE):
    """Host-side whole-word masking of one example.

    Args:
        token_ids: int array ``(length,)``.
        word_ids: int array ``(length,)``; ``-1`` = never masked; tokens sharing an id
            form one word.
        rng: ``numpy.random.Generator``.
        mask_id: id of ``[MASK]``.
        vocab_size, random_low: random replacements are drawn from
            ``[random_low, vocab_size)`` (the ordinary tokens).

    Returns:
        ``(masked_token_ids, labels)``.
    """
    token_ids = np.asarray(token_ids, dtype=np.int64)
    word_ids = np.asarray(word_ids, dtype=np.int64)
    maskable = word_ids >= 0
    n_words = int(word_ids.max()) + 1 if maskable.any() else 0
    labels = np.zeros_like(token_ids)
    if n_words == 0:
        return token_ids.copy(), labels
    wid = np.where(maskable, word_ids, 0)
    word_len = np.bincount(wid[maskable], minlength=n_words)
    keys = rng.random(n_words)
    action = rng.random(n_words)
    random_tokens = rng.integers(random_low, vocab_size, size=token_ids.shape)
    perm = np.argsort(keys, kind="stable")
    before = np.cumsum(word_len[perm]) - word_len[perm]
    target = max(1, int(np.round(rate * word_len.sum())))
    chosen = np.zeros(n_words, dtype=bool)
    chosen[perm] = before < target
    token_chosen = maskable & chosen[wid]
    token_action = action[wid]
    out = np.where(token_chosen & (token_action < MASK_PROBS[0]), mask_id, token_ids)
    out = np.where(
        token_chosen & (token_action >= MASK_PROBS[0]) & (token_action < MASK_PROBS[0] + MASK_PROBS[1]),
        random_tokens,
        out,
    )
    labels[token_chosen] = token_ids[token_chosen]
    return out, labels


def plm_order_np(token_ids, rng):
    """A random factorization order: ``[CLS]`` (position 0) first, the other
    non-padding positions in a random order; padding gets rank 0 (it is never
    attended to). Returns the rank of every position."""
    token_ids = np.asarray(token_ids)
    n = int((token_ids != 0).sum())
    order = np.zeros(token_ids.shape, dtype=np.int64)
    if n > 1:
        order[1:n] = rng.permutation(n - 1) + 1
    return order


def unilm_split_np(token_ids, rng):
    """Segment ids with a random split point: positions ``< s`` are the source
    (segment 0), the non-padding positions ``>= s`` the target (segment 1), with
    ``s`` uniform in ``[2, n-1]`` (``n`` non-padding tokens)."""
    token_ids = np.asarray(token_ids)
    n = int((token_ids != 0).sum())
    segs = np.zeros(token_ids.shape, dtype=np.int64)
    if n >= 3:
        s = int(rng.integers(2, n))
        segs[s:n] = 1
    return segs


# ----------------------------------------------------------------------------- TF
def mask_whole_words_tf(token_ids, word_ids, seed, mask_id, vocab_size, random_low, rate=MASK_RATE):
    """The TF twin of :func:`mask_whole_words_np` for one example, with a stateless
    ``seed`` (int ``(2,)``). Returns ``(masked_token_ids, labels)``."""
    import tensorflow as tf

    token_ids = tf.cast(token_ids, tf.int32)
    word_ids = tf.cast(word_ids, tf.int32)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    maskable = word_ids >= 0
    n_words = tf.maximum(tf.reduce_max(word_ids) + 1, 1)
    wid = tf.where(maskable, word_ids, 0)
    word_len = tf.math.unsorted_segment_sum(tf.cast(maskable, tf.int32), wid, n_words)
    keys = tf.random.stateless_uniform([n_words], seeds[0])
    action = tf.random.stateless_uniform([n_words], seeds[1])
    random_tokens = tf.random.stateless_uniform(
        tf.shape(token_ids), seeds[2], minval=random_low, maxval=vocab_size, dtype=tf.int32
    )
    perm = tf.argsort(keys, stable=True)
    sorted_len = tf.gather(word_len, perm)
    before = tf.cumsum(sorted_len, exclusive=True)
    target = tf.maximum(1, tf.cast(tf.round(rate * tf.cast(tf.reduce_sum(word_len), tf.float32)), tf.int32))
    chosen = tf.scatter_nd(perm[:, None], tf.cast(before < target, tf.int32), [n_words]) > 0
    token_chosen = maskable & tf.gather(chosen, wid) & (tf.reduce_sum(word_len) > 0)
    token_action = tf.gather(action, wid)
    out = tf.where(token_chosen & (token_action < MASK_PROBS[0]), mask_id, token_ids)
    out = tf.where(
        token_chosen & (token_action >= MASK_PROBS[0]) & (token_action < MASK_PROBS[0] + MASK_PROBS[1]),
        random_tokens,
        out,
    )
    labels = tf.where(token_chosen, token_ids, 0)
    return out, labels


def plm_order_tf(token_ids, seed):
    """The TF twin of :func:`plm_order_np` with a stateless ``seed``."""
    import tensorflow as tf

    length = tf.shape(token_ids)[0]
    valid = tf.cast(token_ids, tf.int32) != 0
    n = tf.reduce_sum(tf.cast(valid, tf.int32))
    keys = tf.random.stateless_uniform([length], tf.cast(seed, tf.int64))
    positions = tf.range(length)
    # Content positions 1..n-1 get a random key; [CLS] and padding sort apart.
    content = (positions >= 1) & (positions < n)
    keys = tf.where(content, keys, 2.0)
    ranks = tf.argsort(tf.argsort(keys, stable=True), stable=True) + 1  # content ranks 1..n-1
    return tf.where(content, ranks, 0)
