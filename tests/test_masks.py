"""Properties of the attention masks: each test perturbs inputs and checks which
outputs may (and, as a control, which must) change; parity with transformers for the
lm/unilm masks is in test_numerics.py."""
import numpy as np
import pytest

from kerasnlp_plus import masks
from tiny_transformer import VOCAB, rng_tokens, run, tiny


def test_lm_never_sees_the_future():
    rng = np.random.default_rng(0)
    m = tiny("lm")
    ids = rng_tokens(rng, (2, 12))
    segs = np.zeros_like(ids)
    base = run(m, ids, segs)
    for t in (0, 5, 10):
        changed = ids.copy()
        changed[:, t + 1:] = rng_tokens(rng, changed[:, t + 1:].shape)
        out = run(m, changed, segs)
        np.testing.assert_array_equal(out[:, : t + 1], base[:, : t + 1])
        assert np.abs(out[:, t + 1:] - base[:, t + 1:]).max() > 1e-5  # control: the future did change


def test_unilm_source_never_sees_the_target():
    rng = np.random.default_rng(1)
    m = tiny("unilm")
    ids = rng_tokens(rng, (2, 14))
    segs = np.array([[0] * 8 + [1] * 6, [0] * 5 + [1] * 9], np.int32)
    base = run(m, ids, segs)
    changed = np.where(segs == 1, rng_tokens(rng, ids.shape), ids)
    out = run(m, changed, segs)
    src = segs == 0
    np.testing.assert_array_equal(out[src], base[src])
    assert np.abs(out[~src] - base[~src]).max() > 1e-5
    # the target is causal: changing target token k leaves earlier target positions alone
    k = 10
    later = ids.copy()
    later[:, k:] = rng_tokens(rng, later[:, k:].shape)
    out = run(m, later, segs)
    np.testing.assert_array_equal(out[:, :k], base[:, :k])
    # ... while the source is bidirectional: changing its last token moves its first output
    first = ids.copy()
    first[:, 4] = (first[:, 4] + 1 - 5) % (VOCAB - 5) + 5
    assert np.abs(run(m, first, segs)[:, 0] - base[:, 0]).max() > 1e-5


def test_plm_prediction_ignores_own_token_and_later_in_order():
    rng = np.random.default_rng(2)
    m = tiny("plm")
    n = 10
    ids = rng_tokens(rng, (1, n))
    segs = np.zeros_like(ids)
    permutation = rng.permutation(n)
    order = np.argsort(permutation)[None].astype(np.int32)  # order[i] = step at which i is predicted
    base = run(m, ids, segs, order)
    for i in range(n):
        later = order[0] >= order[0, i]  # i itself and every position after it in the order
        changed = ids.copy()
        changed[0, later] = rng_tokens(rng, (int(later.sum()),))
        np.testing.assert_allclose(run(m, changed, segs, order)[0, i], base[0, i], atol=1e-6)
    # control: the last position in the order depends on the earlier ones
    last = int(np.argmax(order[0]))
    changed = ids.copy()
    changed[0, order[0] < order[0, last]] = rng_tokens(rng, (n - 1,))
    assert np.abs(run(m, changed, segs, order)[0, last] - base[0, last]).max() > 1e-5


def test_plm_trains_one_step():
    import keras

    m = tiny("plm")
    rng = np.random.default_rng(3)
    ids = rng_tokens(rng, (4, 8))
    order = np.stack([np.argsort(rng.permutation(8)) for _ in range(4)]).astype(np.int32)
    m.compile(optimizer=keras.optimizers.Adam(1e-2),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = m.fit([ids, np.zeros_like(ids), order], ids, epochs=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_padding_is_invisible():
    rng = np.random.default_rng(4)
    m = tiny("encoder")
    ids = rng_tokens(rng, (1, 6))
    segs = np.zeros_like(ids)
    padded = np.concatenate([ids, np.zeros((1, 4), np.int32)], axis=1)
    np.testing.assert_allclose(run(m, padded, np.zeros_like(padded))[:, :6], run(m, ids, segs), atol=1e-5)


def test_custom_attention_mask_combines_with_application():
    """An encoder given a causal mask as input equals the 'lm' model."""
    rng = np.random.default_rng(5)
    enc = tiny("encoder", custom_attention_mask=True)
    lm = tiny("lm")
    lm.set_weights(enc.get_weights())
    ids = rng_tokens(rng, (2, 9))
    segs = np.zeros_like(ids)
    causal = np.broadcast_to(np.tril(np.ones((9, 9), np.float32)), (2, 9, 9))
    out = np.asarray(enc([ids, segs, causal], training=False))
    np.testing.assert_allclose(out, run(lm, ids, segs), atol=1e-5)


def test_mask_layer_rule():
    ids = np.array([[101, 5, 102, 7, 8, 102, 0]])
    segs = np.array([[0, 0, 0, 1, 1, 1, 0]])
    m = np.asarray(masks.AttentionMask("unilm")(ids, segs)).astype(int)[0]
    assert m[1].tolist() == [1, 1, 1, 0, 0, 0, 0]  # source row: source only
    assert m[4].tolist() == [1, 1, 1, 1, 1, 0, 0]  # target row: source + target so far
    assert m[:, 6].sum() == 0  # padding is never a key
    with pytest.raises(ValueError, match="application"):
        masks.AttentionMask("bidirectional")
