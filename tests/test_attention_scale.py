"""The log-n attention scale: standard where the visible keys number the training
length, different elsewhere."""
import numpy as np

from tiny_transformer import rng_tokens, run, sharpen, tiny


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
