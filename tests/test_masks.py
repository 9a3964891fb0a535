"""Properties of the attention masks, positions, attention scale and KV cache.

Each property test perturbs inputs and checks which outputs may (and, as a control,
which must) change; parity with transformers for the lm/unilm masks is in
test_numerics.py."""
import numpy as np
import pytest
from keras import ops

from kerasnlp_plus import masks
from kerasnlp_plus.models import build_transformer_model

VOCAB = 120
SMALL = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=64, mask_token_id=3)


def tiny(application="encoder", **kw):
    args = dict(SMALL, **kw)
    return build_transformer_model(None, application=application, with_mlm="linear", **args)


def sharpen(model, seed=0, std=0.3):
    """Larger random weights (LayerNorm scales kept at 1) so attention is far from
    uniform and changes of scale show in the outputs."""
    rng = np.random.default_rng(seed)
    model.set_weights([w if w.ndim == 1 and np.all(w == 1) else (std * rng.standard_normal(w.shape)).astype(w.dtype)
                       for w in model.get_weights()])
    return model


def run(model, *inputs):
    return np.asarray(model([np.asarray(x, np.int32) for x in inputs], training=False))


def rng_tokens(rng, shape):
    return rng.integers(5, VOCAB, size=shape).astype(np.int32)


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


# --- positions ------------------------------------------------------------------------

def test_hierarchical_table_identity_and_long_inputs():
    m = tiny("encoder", hierarchical_position=True)
    layer = m.get_layer("Embedding-Position")
    table = layer.embeddings.numpy()
    n = table.shape[0]
    q = np.asarray(layer(None, position_ids=np.arange(n * n)[None]))[0]
    np.testing.assert_array_equal(q[:n], table)  # exactly the original table
    alpha = 0.4
    u = (table - alpha * table[:1]) / (1 - alpha)
    i, j = 3, 17
    np.testing.assert_allclose(q[i * n + j], alpha * u[i] + (1 - alpha) * u[j], atol=1e-6)
    ids = rng_tokens(np.random.default_rng(6), (1, n * n))  # 4,096 tokens from 64 positions
    out = run(m, ids, np.zeros_like(ids))
    assert out.shape == (1, n * n, VOCAB) and np.isfinite(out).all()


def test_hierarchical_custom_position_ids():
    m = tiny("encoder", hierarchical_position=0.3, custom_position_ids=True)
    ids = rng_tokens(np.random.default_rng(7), (1, 5))
    far = np.array([[1000, 1001, 1002, 1003, 1004]], np.int32)
    out = np.asarray(m([ids, np.zeros_like(ids), far], training=False))
    near = np.asarray(m([ids, np.zeros_like(ids), np.arange(5)[None]], training=False))
    assert np.isfinite(out).all() and np.abs(out - near).max() > 1e-4


def test_too_long_without_hierarchical_is_a_clear_error():
    m = tiny("encoder")
    ids = np.ones((1, 65), np.int32) * 7
    with pytest.raises(ValueError, match="exceeds the 64 positions.*hierarchical_position"):
        m([ids, np.zeros_like(ids)])


# --- attention scale -------------------------------------------------------------------

def test_log_n_scale_is_standard_at_training_length_and_differs_elsewhere():
    rng = np.random.default_rng(8)
    std = sharpen(tiny("encoder"))
    logn = tiny("encoder", attention_scale="log_n", training_length=16)
    logn.set_weights(std.get_weights())
    ids = rng_tokens(rng, (2, 16))
    segs = np.zeros_like(ids)
    np.testing.assert_allclose(run(logn, ids, segs), run(std, ids, segs), atol=1e-5)  # n == m
    ids = rng_tokens(rng, (2, 40))
    assert np.abs(run(logn, ids, np.zeros_like(ids)) - run(std, ids, np.zeros_like(ids))).max() > 1e-4


def test_log_n_counts_visible_keys_only():
    """With a causal mask query i sees i+1 keys, so in a one-layer model log_n at
    training_length=m scales query m-1 exactly like the standard model (deeper layers
    would mix in the other positions' rescaled states)."""
    rng = np.random.default_rng(9)
    std = sharpen(tiny("lm", num_hidden_layers=1))
    logn = tiny("lm", attention_scale="log_n", training_length=8, num_hidden_layers=1)
    logn.set_weights(std.get_weights())
    ids = rng_tokens(rng, (1, 8))
    segs = np.zeros_like(ids)
    a, b = run(logn, ids, segs), run(std, ids, segs)
    np.testing.assert_allclose(a[:, 7], b[:, 7], atol=1e-5)
    assert np.abs(a[:, 3] - b[:, 3]).max() > 1e-4


# --- KV cache ---------------------------------------------------------------------------

def _ranks(application, ids, segs):
    return np.asarray(masks.application_ranks(application, ops.convert_to_tensor(ids),
                                              ops.convert_to_tensor(segs)))


@pytest.mark.parametrize("application", ["lm", "unilm"])
def test_cached_incremental_equals_full_pass(application):
    """Prefill a padded batch of prompts of different lengths, then feed one token per
    row per step: every step's output equals the full forward pass on the unpadded
    sequence of that row."""
    rng = np.random.default_rng(10)
    m = tiny(application)
    prompt_lengths = [6, 3]
    new = 5
    prompts = [rng_tokens(rng, (n,)) for n in prompt_lengths]
    continuations = [rng_tokens(rng, (new,)) for _ in prompt_lengths]
    width = max(prompt_lengths)
    slots = width + new
    cache = m.init_cache(2, slots)

    # slot layout: prompt padded to `width`, then the new tokens of every row
    tokens = np.zeros((2, slots), np.int32)
    segs = np.zeros((2, slots), np.int32)
    positions = np.zeros((2, slots), np.int32)
    for b, (p, c) in enumerate(zip(prompts, continuations)):
        tokens[b, : len(p)] = p
        tokens[b, width:] = c
        positions[b, : len(p)] = np.arange(len(p))
        positions[b, width:] = len(p) + np.arange(new)
        if application == "unilm":
            segs[b, width:] = 1
    if application == "unilm":
        rank = np.cumsum(segs, axis=1)
    else:
        rank = positions
    valid = tokens != 0

    def step(start, stop, cache):
        visible = masks.visibility(rank[:, start:stop], rank, valid & (np.arange(slots) < stop))
        return m.call_with_cache(tokens[:, start:stop], segs[:, start:stop], cache, start, visible,
                                 position_ids=positions[:, start:stop])

    out, cache = step(0, width, cache)
    outputs = [np.asarray(out)[b, len(p) - 1] for b, p in enumerate(prompts)]
    steps = []
    for t in range(new):
        out, cache = step(width + t, width + t + 1, cache)
        steps.append(np.asarray(out)[:, 0])
    for b, (p, c) in enumerate(zip(prompts, continuations)):
        full_ids = np.concatenate([p, c])[None]
        full_segs = np.concatenate([np.zeros(len(p)), np.ones(new)])[None].astype(np.int32)
        if application == "lm":
            full_segs = np.zeros_like(full_segs)
        full = run(m, full_ids, full_segs)[0]
        np.testing.assert_allclose(outputs[b], full[len(p) - 1], atol=1e-5)
        for t in range(new):
            np.testing.assert_allclose(steps[t][b], full[len(p) + t], atol=1e-5)


def test_cache_rejects_plm():
    m = tiny("plm")
    with pytest.raises(ValueError, match="plm"):
        m.call_with_cache(np.ones((1, 1), np.int32), np.zeros((1, 1), np.int32), m.init_cache(1, 4), 0,
                          np.ones((1, 1, 4), bool))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_forward_train_and_cache(policy):
    """Half-precision compute, float32 probabilities; masking stays finite (scores and
    softmax run in float32), a training step runs, the cache takes the compute dtype."""
    import keras

    keras.mixed_precision.set_global_policy(policy)
    try:
        m = tiny("unilm")
        ids = rng_tokens(np.random.default_rng(11), (2, 10))
        segs = np.zeros_like(ids)
        segs[:, 6:] = 1
        out = run(m, ids, segs)
        assert out.dtype == np.float32 and np.isfinite(out).all()
        assert m.get_layer("Transformer-0").compute_dtype == policy.split("_")[1]
        m.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        assert np.isfinite(m.fit([ids, segs], ids, epochs=1, verbose=0).history["loss"][0])
        out = run(m, ids, segs)  # the weights moved
        cache = m.init_cache(2, 10)
        visible = masks.visibility(_ranks("unilm", ids, segs), _ranks("unilm", ids, segs), ids != 0)
        step, cache = m.call_with_cache(ids, segs, cache, 0, visible)
        assert keras.backend.standardize_dtype(cache.dtype) == policy.split("_")[1]
        np.testing.assert_allclose(np.asarray(step, np.float32), out, atol=0.05)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_dropout_from_config_active_in_training_only():
    rng = np.random.default_rng(12)
    m = tiny("encoder", hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3)
    assert m.get_layer("Transformer-0").dropout_rate == 0.3
    ids = rng_tokens(rng, (2, 8))
    x = [ids, np.zeros_like(ids)]
    np.testing.assert_array_equal(np.asarray(m(x, training=False)), np.asarray(m(x, training=False)))
    assert np.abs(np.asarray(m(x, training=True)) - np.asarray(m(x, training=False))).max() > 1e-3
