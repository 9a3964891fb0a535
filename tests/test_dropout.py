"""Dropout rates from the config: active in training only."""
import numpy as np

from tiny_transformer import rng_tokens, tiny


def test_dropout_from_config_active_in_training_only():
    rng = np.random.default_rng(12)
    m = tiny("encoder", hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3)
    assert m.get_layer("Transformer-0").dropout_rate == 0.3
    ids = rng_tokens(rng, (2, 8))
    x = [ids, np.zeros_like(ids)]
    np.testing.assert_array_equal(np.asarray(m(x, training=False)), np.asarray(m(x, training=False)))
    assert np.abs(np.asarray(m(x, training=True)) - np.asarray(m(x, training=False))).max() > 1e-3
