"""Our BERT / ALBERT against Hugging Face transformers (PyTorch) on the same random
weights, written under the real checkpoint names, on real Chinese text with padding."""
import json

import numpy as np
import pytest

from reference import (
    hf_forward,
    hf_reference,
    read_manifest,
    scale_manifest,
    write_config,
    write_google_checkpoint,
)

from kerasnlp_plus.models import build_transformer_model

TOL = dict(atol=1e-5, rtol=1e-5)
BERT_DIMS = {768: 32, 3072: 64, 1536: 64, 512: 64}  # RBT3 names, tiny shapes
ALBERT_DIMS = {312: 48, 1248: 96, 512: 64}


@pytest.fixture(scope="module")
def batch(shared_data):
    """Real KgCLUE questions paired with their answers, and CSL titles, tokenized by the
    reference tokenizer with the shared vocab, padded with 0 to one length."""
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast(vocab_file=str(shared_data / "vocab" / "vocab.txt"), do_lower_case=True)
    rows = [json.loads(line) for line in open(shared_data / "kgclue" / "dev.json", encoding="utf-8")][:2]
    titles = [line.split("\t")[0] for line in open(shared_data / "csl" / "csl_title_dev.tsv", encoding="utf-8")][:2]
    encoded = [tok(r["question"], r["answer"].split(" ||| ")[-1]) for r in rows] + [tok(t) for t in titles]
    length = max(len(e["input_ids"]) for e in encoded)
    ids = np.zeros((len(encoded), length), dtype=np.int32)
    segs = np.zeros_like(ids)
    for i, e in enumerate(encoded):
        ids[i, : len(e["input_ids"])] = e["input_ids"]
        segs[i, : len(e["token_type_ids"])] = e["token_type_ids"]
    assert (ids == 0).any() and (segs == 1).any(), "the batch must exercise padding and segments"
    return ids, segs


def visible_mask(application, ids, segs):
    """The mask each application defines, written out independently of kerasnlp_plus."""
    n = ids.shape[1]
    keys = (ids != 0)[:, None, :]
    if application == "encoder":
        rule = np.ones((1, n, n), dtype=bool)
    elif application == "lm":
        rule = np.tril(np.ones((n, n), dtype=bool))[None]
    else:  # unilm: source sees source; target sees source and earlier target
        seg = segs.astype(bool)
        src_i, src_j = ~seg[:, :, None], ~seg[:, None, :]
        rule = np.where(src_i, src_j, src_j | np.tril(np.ones((n, n), dtype=bool))[None])
    return rule & keys


@pytest.fixture(scope="module")
def bert_checkpoint(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rbt3_tiny")
    manifest = scale_manifest(read_manifest(shared_data / "ckpt_meta/chinese_rbt3_L-3_H-768_A-12/variables.tsv"),
                              BERT_DIMS)
    weights = write_google_checkpoint(manifest, str(folder / "bert_model.ckpt"), seed=1)
    raw = json.load(open(shared_data / "ckpt_meta/chinese_rbt3_L-3_H-768_A-12/bert_config.json"))
    raw.update(hidden_size=32, intermediate_size=64, num_attention_heads=4, max_position_embeddings=64)
    config = write_config(folder / "bert_config.json", **raw)
    return config, folder / "bert_model.ckpt", weights, raw


def hf_config(raw, **extra):
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "max_position_embeddings", "type_vocab_size", "embedding_size")
    return dict({k: raw[k] for k in keys if k in raw}, hidden_act="gelu", layer_norm_eps=1e-12,
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **extra)


def sequence_output(model):
    """The last layer's hidden states (lm/unilm models output MLM probabilities, as in
    bert4keras), read by the bert4keras layer name."""
    import keras

    return keras.Model(model.inputs, model.get_layer(f"Transformer-{model.num_layers - 1}-FeedForward-Norm").output)


@pytest.mark.parametrize("application", ["encoder", "lm", "unilm"])
def test_bert_matches_transformers(bert_checkpoint, batch, application):
    config, ckpt, weights, raw = bert_checkpoint
    ids, segs = batch
    ours = build_transformer_model(config, ckpt, application=application, with_pool=True, with_nsp=True,
                                   with_mlm="linear")
    pooled, nsp, mlm = ours.predict([ids, segs], verbose=0)  # bert4keras' output layout
    seq = sequence_output(build_transformer_model(config, ckpt, application=application)).predict(
        [ids, segs], verbose=0)
    ref = hf_reference(weights, hf_config(raw), "bert")
    r_seq, r_pooled, r_mlm, r_nsp = hf_forward(ref, ids, segs, visible_mask(application, ids, segs))
    real = ids != 0  # outputs at padding positions are undefined; compare real tokens
    np.testing.assert_allclose(seq[real], r_seq[real], **TOL)
    np.testing.assert_allclose(mlm[real], r_mlm[real], **TOL)
    np.testing.assert_allclose(pooled, r_pooled, **TOL)
    e = np.exp(r_nsp - r_nsp.max(-1, keepdims=True))
    np.testing.assert_allclose(nsp, e / e.sum(-1, keepdims=True), **TOL)
    assert np.abs(r_mlm).max() > 0.1, "logits too small for the comparison to mean anything"


def test_bert_mlm_probabilities_are_softmax_of_logits(bert_checkpoint, batch):
    config, ckpt, _, _ = bert_checkpoint
    ids, segs = batch
    logits = build_transformer_model(config, ckpt, with_mlm="linear").predict([ids, segs], verbose=0)
    probs = build_transformer_model(config, ckpt, with_mlm=True).predict([ids, segs], verbose=0)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(-1, keepdims=True), atol=1e-6)


@pytest.fixture(scope="module")
def albert_checkpoint(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("albert_google_tiny")
    meta = shared_data / "ckpt_meta/albert_tiny_zh_google"
    manifest = scale_manifest(read_manifest(meta / "variables.tsv"), ALBERT_DIMS)
    weights = write_google_checkpoint(manifest, str(folder / "albert_model.ckpt"), seed=2)
    raw = json.load(open(meta / "albert_config_tiny_g.json"))
    raw.update(hidden_size=48, intermediate_size=96, num_attention_heads=4, max_position_embeddings=64,
               num_hidden_layers=3)
    config = write_config(folder / "albert_config.json", **raw)
    return config, folder / "albert_model.ckpt", weights, raw


@pytest.mark.parametrize("application", ["encoder", "unilm"])
def test_albert_google_matches_transformers(albert_checkpoint, batch, application):
    config, ckpt, weights, raw = albert_checkpoint
    ids, segs = batch
    ours = build_transformer_model(config, ckpt, model="albert", application=application, with_pool=True,
                                   with_nsp=True, with_mlm="linear")
    assert ours.family == "albert"
    pooled, nsp, mlm = ours.predict([ids, segs], verbose=0)  # bert4keras' output layout
    seq = sequence_output(build_transformer_model(config, ckpt, model="albert", application=application)).predict(
        [ids, segs], verbose=0)
    ref = hf_reference(weights, hf_config(raw, num_hidden_groups=1, inner_group_num=1), "albert")
    r_seq, r_pooled, r_mlm, r_nsp = hf_forward(ref, ids, segs, visible_mask(application, ids, segs), "albert")
    real = ids != 0
    np.testing.assert_allclose(seq[real], r_seq[real], **TOL)
    np.testing.assert_allclose(mlm[real], r_mlm[real], **TOL)
    np.testing.assert_allclose(pooled, r_pooled, **TOL)
    e = np.exp(r_nsp - r_nsp.max(-1, keepdims=True))
    np.testing.assert_allclose(nsp, e / e.sum(-1, keepdims=True), **TOL)


def test_albert_brightmart_matches_equivalent_bert(shared_data, tmp_path, batch):
    """brightmart's factorized ALBERT equals a BERT whose token table is W1 @ W2, whose
    layers all hold the shared weights, and whose tied MLM decoder is therefore
    (W1 @ W2)^T: the reference is transformers' BertForPreTraining with those weights."""
    meta = shared_data / "ckpt_meta/albert_tiny_brightmart"
    manifest = scale_manifest(read_manifest(meta / "variables.tsv"), ALBERT_DIMS)
    weights = write_google_checkpoint(manifest, str(tmp_path / "albert_model.ckpt"), seed=3)
    raw = json.load(open(meta / "albert_config_tiny.json"))
    raw.update(hidden_size=48, intermediate_size=96, num_attention_heads=4, max_position_embeddings=64)
    config = write_config(tmp_path / "albert_config.json", **raw)
    ours = build_transformer_model(config, tmp_path, model="albert", with_pool=True, with_mlm="linear")
    assert ours.family == "albert_brightmart"
    ids, segs = batch
    pooled, mlm = ours.predict([ids, segs], verbose=0)  # bert4keras' output layout

    bert_weights = {}
    for name, value in weights.items():
        if "/layer_shared/" in name:
            for i in range(raw["num_hidden_layers"]):
                bert_weights[name.replace("layer_shared", f"layer_{i}")] = value
        elif name != "bert/embeddings/word_embeddings_2":
            bert_weights[name] = value
    bert_weights["bert/embeddings/word_embeddings"] = (
        weights["bert/embeddings/word_embeddings"] @ weights["bert/embeddings/word_embeddings_2"])
    ref = hf_reference(bert_weights, hf_config({**raw, "embedding_size": None}), "bert")
    _, r_pooled, r_mlm, _ = hf_forward(ref, ids, segs, visible_mask("encoder", ids, segs))
    np.testing.assert_allclose(mlm, r_mlm, **TOL)
    np.testing.assert_allclose(pooled, r_pooled, **TOL)
