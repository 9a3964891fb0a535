"""Mixed precision: forward pass, a training step and the cache under float16 and
bfloat16 policies."""
import numpy as np
import pytest
from keras import ops

from kerasnlp_plus import masks
from tiny_transformer import rng_tokens, run, tiny


def _ranks(application, ids, segs):
    return np.asarray(masks.application_ranks(application, ops.convert_to_tensor(ids),
                                              ops.convert_to_tensor(segs)))


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
