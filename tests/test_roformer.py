"""RoFormer (rotary positions): numerics against transformers' ``RoFormerForMaskedLM`` on
the same random weights, checkpoints both ways, mask and position properties, and the
KV cache against the uncached pass.

The Google checkpoint is written under the real bert4keras/ZhuiyiTechnology RoFormer
names: the RBT3 manifest (Google BERT names) less ``position_embeddings``. The name map
to transformers is ``reference._google_to_hf_bert`` with ``bert.`` -> ``roformer.``,
written independently of kerasnlp_plus' own mapping.
"""
import json

import keras
import numpy as np
import pytest
from reference import (
    _google_to_hf_bert,
    additive_mask,
    read_manifest,
    scale_manifest,
    write_config,
    write_google_checkpoint,
)
from generation_fixtures import (  # noqa: F401  (fixtures: tokenizer, abstracts, sources)
    abstracts,
    assert_generator_matches_uncached,
    sources,
    tiny_model,
    tokenizer,
)
from tiny_transformer import rng_tokens, run, sharpen
from test_numerics import batch, visible_mask  # noqa: F401  (batch is a fixture)

from kerasnlp_plus import masks
from kerasnlp_plus.checkpoints import save_google_checkpoint, save_huggingface
from kerasnlp_plus.layers.rotary import apply_rotary
from kerasnlp_plus.models import build_transformer_model

TOL = dict(atol=1e-5, rtol=1e-5)
DIMS = {768: 32, 3072: 64, 1536: 64, 512: 64}
SMALL = dict(model="roformer", vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=64, mask_token_id=3)


def tiny(application="encoder", **kw):
    return build_transformer_model(None, application=application, with_mlm="linear", **dict(SMALL, **kw))


@pytest.fixture(scope="module")
def roformer_checkpoint(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("roformer_tiny")
    manifest = [v for v in read_manifest(shared_data / "ckpt_meta/chinese_rbt3_L-3_H-768_A-12/variables.tsv")
                if "position_embeddings" not in v[0]]
    weights = write_google_checkpoint(scale_manifest(manifest, DIMS), str(folder / "bert_model.ckpt"), seed=7)
    raw = json.load(open(shared_data / "ckpt_meta/chinese_rbt3_L-3_H-768_A-12/bert_config.json"))
    raw.update(hidden_size=32, intermediate_size=64, num_attention_heads=4, max_position_embeddings=64)
    config = write_config(folder / "bert_config.json", **raw)
    return config, folder / "bert_model.ckpt", weights, raw


def hf_roformer(weights, raw):
    """transformers' RoFormerForMaskedLM holding ``weights`` (Google names), eval mode."""
    import torch
    import transformers

    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "max_position_embeddings", "type_vocab_size")
    config = transformers.RoFormerConfig(**{k: raw[k] for k in keys}, hidden_act="gelu", layer_norm_eps=1e-12,
                                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.RoFormerForMaskedLM(config)
    state = model.state_dict()
    loaded = set()
    for name, value in weights.items():
        hf = _google_to_hf_bert(name)
        hf = "roformer." + hf[len("bert."):] if hf.startswith("bert.") else hf
        if hf not in state:
            continue
        value = np.asarray(value)
        state[hf] = torch.from_numpy(np.ascontiguousarray(value.T if name.endswith("kernel") else value))
        loaded.add(hf)
    missing = [k for k in state if k not in loaded and "embed_positions" not in k and "decoder" not in k]
    assert not missing, f"reference weights not set: {missing}"
    model.load_state_dict(state)
    model.tie_weights()
    return model.eval()


def hf_forward(model, ids, segs, visible):
    import torch

    with torch.no_grad():
        seq = model.roformer(input_ids=torch.as_tensor(ids, dtype=torch.long),
                             token_type_ids=torch.as_tensor(segs, dtype=torch.long),
                             attention_mask=additive_mask(visible))[0]
        return seq.numpy(), model.cls(seq).numpy()


# --- numerics against transformers -----------------------------------------------------

@pytest.mark.parametrize("application", ["encoder", "lm", "unilm"])
def test_roformer_matches_transformers(roformer_checkpoint, batch, application):  # noqa: F811
    config, ckpt, weights, raw = roformer_checkpoint
    ids, segs = batch
    ours = build_transformer_model(config, ckpt, model="roformer", application=application, with_mlm="linear")
    assert ours.family == "roformer" and ours.position_embedding is None
    mlm = ours.predict([ids, segs], verbose=0)
    r_seq, r_mlm = hf_forward(hf_roformer(weights, raw), ids, segs, visible_mask(application, ids, segs))
    real = ids != 0  # outputs at padding positions are undefined
    np.testing.assert_allclose(mlm[real], r_mlm[real], **TOL)
    if application == "encoder":  # the sequence output too (the logits of lm/unilm depend on it)
        seq = build_transformer_model(config, ckpt, model="roformer").predict([ids, segs], verbose=0)
        np.testing.assert_allclose(seq[real], r_seq[real], **TOL)
    assert np.abs(r_mlm).max() > 0.1, "logits too small for the comparison to mean anything"


def test_pool_and_nsp_heads_read_the_bert4keras_names(roformer_checkpoint, batch):  # noqa: F811
    config, ckpt, weights, _ = roformer_checkpoint
    ids, segs = batch
    seq = build_transformer_model(config, ckpt, model="roformer").predict([ids, segs], verbose=0)
    # bert4keras' layout: [sequence, pooled, nsp] -> all but the first
    pooled, nsp = build_transformer_model(config, ckpt, model="roformer", with_pool=True, with_nsp=True).predict(
        [ids, segs], verbose=0)
    expected = np.tanh(seq[:, 0] @ weights["bert/pooler/dense/kernel"] + weights["bert/pooler/dense/bias"])
    np.testing.assert_allclose(pooled, expected, **TOL)
    logits = expected @ weights["cls/seq_relationship/output_weights"].T + weights["cls/seq_relationship/output_bias"]
    e = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(nsp, e / e.sum(-1, keepdims=True), **TOL)


def test_rotary_layout_is_transformers(batch):  # noqa: F811
    """Our rotation of a random (batch, len, heads, d) tensor equals transformers'."""
    import torch
    from transformers.models.roformer.modeling_roformer import (
        RoFormerSelfAttention,
        RoFormerSinusoidalPositionalEmbedding,
    )

    x = np.random.default_rng(0).standard_normal((2, 30, 3, 8)).astype("float32")
    table = RoFormerSinusoidalPositionalEmbedding(64, 8)
    with torch.no_grad():
        table.weight.copy_(table.create_weight())
        sinusoid = table((2, 30))[None, None]  # (1, 1, len, d)
        xt = torch.from_numpy(x).transpose(1, 2)  # (batch, heads, len, d)
        ref, _ = RoFormerSelfAttention.apply_rotary_position_embeddings(sinusoid, xt, xt)
    ours = np.asarray(apply_rotary(x, np.arange(30)[None]))
    np.testing.assert_allclose(ours, ref.transpose(1, 2).numpy(), atol=1e-6)


# --- checkpoints both ways --------------------------------------------------------------

IDS = np.array([[101, 15, 27, 39, 102, 0], [101, 44, 102, 8, 9, 102]], np.int32)
SEGS = np.array([[0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1]], np.int32)


def test_google_checkpoint_round_trip_has_no_position_table(roformer_checkpoint, tmp_path):
    import tensorflow as tf

    config, ckpt, _, _ = roformer_checkpoint
    m = build_transformer_model(config, ckpt, model="roformer", with_pool=True, with_nsp=True, with_mlm=True)
    prefix = save_google_checkpoint(m, tmp_path / "bert_model.ckpt")
    names = set(tf.train.load_checkpoint(prefix).get_variable_to_shape_map())
    assert "bert/encoder/layer_2/attention/self/query/kernel" in names
    assert not any("position_embeddings" in n for n in names)
    again = build_transformer_model(tmp_path / "bert_config.json", tmp_path, model="roformer", with_pool=True,
                                    with_nsp=True, with_mlm=True)
    for a, b in zip(m.predict([IDS, SEGS], verbose=0), again.predict([IDS, SEGS], verbose=0)):
        np.testing.assert_array_equal(a, b)


def test_huggingface_both_ways(roformer_checkpoint, tmp_path):
    """Our save is read by RoFormerForMaskedLM.from_pretrained; a folder written by
    transformers' own save_pretrained loads back into ours with the same logits."""
    import torch
    import transformers

    config, ckpt, weights, raw = roformer_checkpoint
    m = build_transformer_model(config, ckpt, model="roformer", with_mlm="linear")
    save_huggingface(m, tmp_path / "ours")
    assert json.load(open(tmp_path / "ours" / "config.json"))["model_type"] == "roformer"
    ref = transformers.RoFormerForMaskedLM.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        logits = ref(input_ids=torch.tensor(IDS, dtype=torch.long), token_type_ids=torch.tensor(SEGS, dtype=torch.long),
                     attention_mask=torch.tensor(IDS != 0, dtype=torch.long)).logits.numpy()
    ours = m.predict([IDS, SEGS], verbose=0)
    real = IDS != 0
    np.testing.assert_allclose(ours[real], logits[real], **TOL)

    hf_roformer(weights, raw).save_pretrained(tmp_path / "theirs")
    # model='bert' on a RoFormer config.json is recognised from its model_type
    again = build_transformer_model(None, tmp_path / "theirs", with_mlm="linear")
    assert again.family == "roformer"
    np.testing.assert_allclose(again.predict([IDS, SEGS], verbose=0)[real], ours[real], **TOL)
    with pytest.raises(ValueError, match="no pooler"):
        build_transformer_model(None, tmp_path / "theirs", model="roformer", with_pool=True)


def test_keep_tokens_and_keras_file(roformer_checkpoint, tmp_path):
    config, ckpt, weights, _ = roformer_checkpoint
    keep = [0, 100, 101, 102, 103, 671, 4638]
    m = build_transformer_model(config, ckpt, model="roformer", application="unilm", keep_tokens=keep,
                                with_mlm=True)
    np.testing.assert_array_equal(m.token_embedding.embeddings.numpy(),
                                  weights["bert/embeddings/word_embeddings"][keep])
    np.testing.assert_array_equal(m.mlm_bias.bias.numpy(), weights["cls/predictions/output_bias"][keep])
    m.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    assert again.family == "roformer" and again.application == "unilm"
    ids = np.array([[2, 5, 6, 3, 4, 3]], np.int32)
    segs = np.array([[0, 0, 0, 0, 1, 1]], np.int32)
    np.testing.assert_array_equal(m.predict([ids, segs], verbose=0), again.predict([ids, segs], verbose=0))


def test_bad_combinations_are_refused():
    with pytest.raises(ValueError, match="hierarchical_position"):
        tiny(hierarchical_position=True)
    with pytest.raises(ValueError, match="no pooler"):  # NSP reads the pooler too
        save_huggingface(tiny(with_nsp=True), "/nonexistent/never-written")


# --- properties -------------------------------------------------------------------------

def test_outputs_depend_on_relative_positions_only():
    """Shifting every position by the same offset leaves the outputs unchanged (rotary
    scores depend on i - j); moving one token's position changes them (control)."""
    rng = np.random.default_rng(0)
    m = sharpen(tiny(custom_position_ids=True))
    ids = rng_tokens(rng, (2, 10))
    segs = np.zeros_like(ids)
    base_pos = np.broadcast_to(np.arange(10), (2, 10)).astype(np.int32)
    base = np.asarray(m([ids, segs, base_pos], training=False))
    shifted = np.asarray(m([ids, segs, base_pos + 37], training=False))
    np.testing.assert_allclose(shifted, base, atol=1e-4)
    moved = base_pos.copy()
    moved[:, 4] = 8
    assert np.abs(np.asarray(m([ids, segs, moved], training=False)) - base).max() > 1e-3


def test_lm_unilm_and_padding_masks():
    rng = np.random.default_rng(1)
    lm = sharpen(tiny("lm"))
    ids = rng_tokens(rng, (2, 12))
    segs = np.zeros_like(ids)
    base = run(lm, ids, segs)
    changed = ids.copy()
    changed[:, 6:] = rng_tokens(rng, (2, 6))
    out = run(lm, changed, segs)
    np.testing.assert_array_equal(out[:, :6], base[:, :6])
    assert np.abs(out[:, 6:] - base[:, 6:]).max() > 1e-5

    unilm = sharpen(tiny("unilm"))
    segs = np.array([[0] * 7 + [1] * 5] * 2, np.int32)
    base = run(unilm, ids, segs)
    out = run(unilm, np.where(segs == 1, rng_tokens(rng, ids.shape), ids), segs)
    np.testing.assert_array_equal(out[:, :7], base[:, :7])
    assert np.abs(out[:, 7:] - base[:, 7:]).max() > 1e-5

    enc = sharpen(tiny("encoder"))
    short = ids[:1, :6]
    pad = np.concatenate([short, np.zeros((1, 4), np.int32)], axis=1)
    np.testing.assert_allclose(run(enc, pad, np.zeros_like(pad))[:, :6], run(enc, short, np.zeros_like(short)),
                               atol=1e-5)


def test_plm_prediction_ignores_own_token_and_later_in_order():
    rng = np.random.default_rng(2)
    m = sharpen(tiny("plm"))
    ids = rng_tokens(rng, (1, 8))
    order = np.array([[3, 0, 6, 1, 7, 2, 5, 4]], np.int32)  # position i is predicted at step order[i]
    base = np.asarray(m([ids, np.zeros_like(ids), order], training=False))
    target = 2  # predicted at step 6: sees only positions with order < 6
    later_or_self = order[0] >= order[0, target]
    changed = np.where(later_or_self[None], rng_tokens(rng, ids.shape), ids)
    out = np.asarray(m([changed, np.zeros_like(ids), order], training=False))
    np.testing.assert_allclose(out[0, target], base[0, target], atol=1e-5)
    earlier = np.where(~later_or_self[None], rng_tokens(rng, ids.shape), ids)
    assert np.abs(np.asarray(m([earlier, np.zeros_like(ids), order], training=False))[0, target]
                  - base[0, target]).max() > 1e-4


def test_log_n_with_rotary():
    """At the training length the log-n scale equals the standard one; longer, it differs."""
    rng = np.random.default_rng(3)
    std = sharpen(tiny())
    logn = tiny(attention_scale="log_n", training_length=16)
    logn.set_weights(std.get_weights())
    ids = rng_tokens(rng, (2, 16))
    np.testing.assert_allclose(run(logn, ids, np.zeros_like(ids)), run(std, ids, np.zeros_like(ids)), atol=1e-5)
    ids = rng_tokens(rng, (2, 200))  # no position table to run out of
    assert np.abs(run(logn, ids, np.zeros_like(ids)) - run(std, ids, np.zeros_like(ids))).max() > 1e-4


# --- KV cache ---------------------------------------------------------------------------

@pytest.mark.parametrize("application,scale", [("lm", "standard"), ("unilm", "log_n")])
def test_cached_incremental_equals_full_pass(application, scale):
    """A padded batch of prompts prefilled, then one token per row per step, with the
    new tokens at slots that are not their positions: every output equals the full
    pass on the row's unpadded sequence, so each key is rotated at its real position."""
    rng = np.random.default_rng(4)
    m = sharpen(tiny(application, attention_scale=scale, training_length=8))
    lengths, new = [6, 3], 4
    prompts = [rng_tokens(rng, (n,)) for n in lengths]
    continuations = [rng_tokens(rng, (new,)) for _ in lengths]
    width = max(lengths)
    slots = width + new
    tokens = np.zeros((2, slots), np.int32)
    segs = np.zeros((2, slots), np.int32)
    positions = np.zeros((2, slots), np.int32)
    for b, (p, c) in enumerate(zip(prompts, continuations)):
        tokens[b, : len(p)], tokens[b, width:] = p, c
        positions[b, : len(p)] = np.arange(len(p))
        positions[b, width:] = len(p) + np.arange(new)
        if application == "unilm":
            segs[b, width:] = 1
    rank = np.cumsum(segs, axis=1) if application == "unilm" else positions
    valid = tokens != 0

    def step(start, stop, cache):
        visible = masks.visibility(rank[:, start:stop], rank, valid & (np.arange(slots) < stop))
        return m.call_with_cache(tokens[:, start:stop], segs[:, start:stop], cache, start, visible,
                                 position_ids=positions[:, start:stop])

    out, cache = step(0, width, m.init_cache(2, slots))
    prefill = np.asarray(out)
    steps = []
    for t in range(new):
        out, cache = step(width + t, width + t + 1, cache)
        steps.append(np.asarray(out)[:, 0])
    for b, (p, c) in enumerate(zip(prompts, continuations)):
        full_segs = np.concatenate([np.zeros(len(p)), np.full(new, application == "unilm")])[None].astype(np.int32)
        full = run(m, np.concatenate([p, c])[None], full_segs)[0]
        np.testing.assert_allclose(prefill[b, : len(p)], full[: len(p)], atol=1e-4)
        for t in range(new):
            np.testing.assert_allclose(steps[t][b], full[len(p) + t], atol=1e-4)


# The lm variant is slow (the uncached decoder reruns the whole sequence per step); the
# lm cache is also covered at model level by test_cached_incremental_equals_full_pass.
@pytest.mark.parametrize("application", ["unilm", "lm"])
def test_generator_beam_search_equals_uncached_decoder(application, sources):  # noqa: F811
    model = tiny_model(application, end_bias=9.0 if application == "unilm" else 8.0, model="roformer")
    assert_generator_matches_uncached(model, sources, jit_compile=False)
