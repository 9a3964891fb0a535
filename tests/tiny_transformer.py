"""The tiny random model and helpers shared by the property tests of masks, positions,
the attention scale, the KV cache, mixed precision and dropout."""
import numpy as np

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
