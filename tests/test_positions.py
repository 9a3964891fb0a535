"""Position embeddings: the hierarchical decomposition, custom position ids, and the
error past the table."""
import numpy as np
import pytest

from tiny_transformer import VOCAB, rng_tokens, run, tiny


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
