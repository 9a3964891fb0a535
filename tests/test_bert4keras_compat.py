"""The bert4keras 0.11.5 compatibility surface: CRF against brute-force enumeration,
bert4keras itself as a numerical reference (when it is available), the model
behaviours scripts rely on, and the backend / snippets / optimizers / tokenizers names.

The reference runs in a separate process (tests/b4k_reference.py) with bert4keras
0.11.5 on tf_keras: set ``KERASNLP_PLUS_B4K_REFERENCE`` to a folder holding both
(``pip install --no-deps --target DIR bert4keras==0.11.5 tf-keras~=2.21``); the
default is ``.b4k-ref`` in the repository, installed there on first use. Where it cannot
be installed, those comparisons fail.
"""
import itertools
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

from kerasnlp_plus import backend as b4k_backend
from kerasnlp_plus import optimizers, snippets
from kerasnlp_plus.backend import K
from kerasnlp_plus.layers import ConditionalRandomField, LayerNormalization, Loss
from kerasnlp_plus.models import build_transformer_model
from kerasnlp_plus.tokenizers import load_vocab, save_vocab

DEMO = pathlib.Path(__file__).resolve().parents[1] / "kerasnlp_plus" / "assets" / "demo_model"
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
REFERENCE = os.environ.get("KERASNLP_PLUS_B4K_REFERENCE", str(REPO_ROOT / ".b4k-ref"))


def _install_reference(folder):
    """bert4keras 0.11.5 and the tf_keras that matches the installed TensorFlow, into
    ``folder`` (``pip --target --no-deps``: nothing of the test environment changes).
    A machine without the package index skips the comparisons instead."""
    import tensorflow as tf

    major_minor = ".".join(tf.__version__.split(".")[:2])
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", folder,
         "bert4keras==0.11.5", f"tf-keras=={major_minor}.*"],
        capture_output=True, text=True, timeout=300,
    )
    return done.returncode == 0
TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)


# --- CRF and Viterbi against brute force --------------------------------------------
def _path_score(scores, trans, path):
    return sum(scores[t, path[t]] for t in range(len(path))) + sum(
        trans[path[t - 1], path[t]] for t in range(1, len(path)))


def _crf_case(seed=0, batch=3, length=4, labels=3):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(batch, length, labels)).astype("float32")
    trans = rng.normal(size=(labels, labels)).astype("float32")
    lengths = [length, length - 1, 2][:batch]
    mask = np.array([[1.0] * n + [0.0] * (length - n) for n in lengths], "float32")
    gold = rng.integers(0, labels, size=(batch, length)).astype("float32") * mask
    return scores, trans, mask, gold, lengths


def _crf_model(trans, labels, lr_multiplier=1):
    x = keras.Input((None, labels))
    crf = ConditionalRandomField(lr_multiplier=lr_multiplier)
    model = keras.Model(x, crf(keras.layers.Masking(0.0)(x)))
    crf._trans.assign(trans / lr_multiplier)
    return model, crf


@pytest.mark.parametrize("lr_multiplier", [1, 100])
def test_crf_negative_log_likelihood_equals_brute_force(lr_multiplier):
    scores, trans, mask, gold, lengths = _crf_case()
    model, crf = _crf_model(trans, 3, lr_multiplier)
    np.testing.assert_allclose(ops.convert_to_numpy(crf.trans), trans, rtol=1e-5)
    y_pred = model.predict(scores * mask[..., None], verbose=0)
    assert np.isneginf(y_pred[1, 3]).all() and np.isfinite(y_pred[1, :3]).all()  # padding -> -inf
    loss = ops.convert_to_numpy(crf.sparse_loss(gold, y_pred))
    for b, n in enumerate(lengths):
        paths = list(itertools.product(range(3), repeat=n))
        all_scores = np.array([_path_score(scores[b], trans, p) for p in paths])
        log_z = np.log(np.exp(all_scores - all_scores.max()).sum()) + all_scores.max()
        expected = log_z - _path_score(scores[b], trans, gold[b, :n].astype(int))
        np.testing.assert_allclose(loss[b], expected, rtol=1e-5, atol=1e-5)
        assert loss[b] > 0
    dense = ops.convert_to_numpy(crf.dense_loss(np.eye(3)[gold.astype(int)], y_pred))
    np.testing.assert_allclose(dense, loss, rtol=1e-6)


def test_viterbi_decoder_finds_the_best_path_by_enumeration():
    rng = np.random.default_rng(3)
    for length in (1, 2, 5):
        nodes = rng.normal(size=(length, 4))
        trans = rng.normal(size=(4, 4))
        decoded = snippets.ViterbiDecoder(trans).decode(nodes)
        best = max(itertools.product(range(4), repeat=length), key=lambda p: _path_score(nodes, trans, p))
        assert list(decoded) == list(best)
        # starts/ends restrict the first and last labels
        decoded = snippets.ViterbiDecoder(trans, starts=[0], ends=[0]).decode(nodes)
        allowed = [p for p in itertools.product(range(4), repeat=length) if p[0] == 0 and p[-1] == 0]
        best = max(allowed, key=lambda p: _path_score(nodes, trans, p))
        assert list(decoded) == list(best)
    with pytest.raises(ValueError, match="nodes must be"):
        snippets.ViterbiDecoder(trans).decode(np.zeros((3, 5)))


def test_crf_trains_and_saves_as_keras(tmp_path):
    scores, trans, mask, gold, _ = _crf_case(batch=3)
    x = keras.Input((None, 3))
    crf = ConditionalRandomField(lr_multiplier=10)
    model = keras.Model(x, crf(keras.layers.Masking(0.0)(keras.layers.Dense(3)(x))))
    model.compile(optimizer=optimizers.Adam(5e-2), loss=crf.sparse_loss, metrics=[crf.sparse_accuracy])
    history = model.fit(scores * mask[..., None], gold, epochs=10, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    model.save(tmp_path / "crf.keras")
    again = keras.models.load_model(tmp_path / "crf.keras", compile=False)
    np.testing.assert_allclose(again.predict(scores, verbose=0), model.predict(scores, verbose=0), rtol=1e-6)


# --- bert4keras 0.11.5 itself as the reference ----------------------------------------
# bert4keras' layer names for BERT (node -1: ``.output``; ALBERT reuses one layer per
# name across depths, read there with ``get_output_at(depth)``).
BLOCK_STEPS = ("MultiHeadSelfAttention", "MultiHeadSelfAttention-Dropout", "MultiHeadSelfAttention-Add",
               "MultiHeadSelfAttention-Norm", "FeedForward", "FeedForward-Dropout", "FeedForward-Add",
               "FeedForward-Norm")
HEADS = ("Pooler", "Pooler-Dense", "NSP-Proba", "MLM-Dense", "MLM-Norm", "MLM-Bias", "MLM-Activation")
TAP_LAYERS = 3


def _tap_names(kind):
    """[(bert4keras name, node), ...] and, for each, the name of ours that reaches it."""
    names = [("Embedding-Token", 0), ("Embedding-Segment", -1), ("Embedding-Position", -1), ("Embedding-Norm", -1),
             ("Embedding-Dropout", -1)]
    if kind == "albert":
        names.append(("Embedding-Mapping", -1))
        names += [(f"Transformer-{step}", depth) for depth in range(TAP_LAYERS) for step in BLOCK_STEPS]
    else:
        names += [(f"Transformer-{depth}-{step}", -1) for depth in range(TAP_LAYERS) for step in BLOCK_STEPS]
    return names + [(name, -1) for name in HEADS]


def _our_tap(model, name, node):
    if name == "Embedding-Position":  # ours holds the table; bert4keras' output is the sum
        return model.get_layer("Embedding-Norm").input
    if node >= 0 and name.startswith("Transformer-"):  # ALBERT: one name per depth
        name = name.replace("Transformer-", f"Transformer-{node}-", 1)
    return model.get_layer(name).output


def _write_tap_checkpoints(shared_data, folder):
    """Google-layout BERT (RBT3's names) and ALBERT (albert_tiny_zh_google's names)
    checkpoints with random weights at small sizes, and a batch of real text."""
    from reference import read_manifest, scale_manifest, write_config, write_google_checkpoint

    from kerasnlp_plus.tokenizers import Tokenizer

    inputs = {}
    for kind, meta, config_name, dims in (
        ("bert", "chinese_rbt3_L-3_H-768_A-12", "bert_config.json", {768: 32, 3072: 64, 512: 64}),
        ("albert", "albert_tiny_zh_google", "albert_config_tiny_g.json", {312: 48, 1248: 96, 512: 64}),
    ):
        meta = shared_data / "ckpt_meta" / meta
        manifest = [v for v in read_manifest(meta / "variables.tsv") if "/adam_" not in v[0]]
        prefix = str(folder / kind / "model.ckpt")
        write_google_checkpoint(scale_manifest(manifest, dims), prefix, seed=11, std=0.1)
        raw = json.loads((meta / config_name).read_text(encoding="utf-8"))
        raw.update(hidden_size=dims.get(raw["hidden_size"]), intermediate_size=dims.get(raw["intermediate_size"]),
                   num_attention_heads=4, max_position_embeddings=64, num_hidden_layers=TAP_LAYERS,
                   hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
        inputs[f"taps_{kind}_config"] = np.array(str(write_config(folder / kind / "config.json", **raw)))
        inputs[f"taps_{kind}_checkpoint"] = np.array(prefix)
        inputs[f"taps_{kind}_names"] = np.array(json.dumps(_tap_names(kind)))
    tokenizer = Tokenizer(str(shared_data / "vocab" / "vocab.txt"), do_lower_case=True)
    question = json.loads(open(shared_data / "kgclue" / "dev.json", encoding="utf-8").readline())
    title = open(shared_data / "csl" / "csl_title_dev.tsv", encoding="utf-8").readline().split("\t")[0]
    encoded = [tokenizer.encode(question["question"], question["answer"].split(" ||| ")[-1]), tokenizer.encode(title)]
    inputs["taps_ids"] = snippets.sequence_padding([ids for ids, _ in encoded]).astype("float32")
    inputs["taps_segs"] = snippets.sequence_padding([segs for _, segs in encoded]).astype("float32")
    return inputs


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shared_data):
    if not os.path.isdir(os.path.join(REFERENCE, "bert4keras")) and not _install_reference(REFERENCE):
        # A skipped comparison proves nothing: fail, naming what is missing.
        pytest.fail(f"bert4keras 0.11.5 reference not found in {REFERENCE} and pip could not install it "
                    "there (set KERASNLP_PLUS_B4K_REFERENCE to a folder holding bert4keras and tf_keras)")
    folder = tmp_path_factory.mktemp("b4k_ref")
    rng = np.random.default_rng(7)
    scores, trans, mask, gold, _ = _crf_case(seed=5)
    inputs = dict(
        crf_scores=scores, crf_trans=trans, crf_mask=mask, crf_labels=gold,
        ln_x=rng.normal(size=(2, 3, 6)).astype("float32"), ln_c=rng.normal(size=(2, 5)).astype("float32"),
        ln_w0=rng.normal(size=6).astype("float32"), ln_w1=rng.normal(size=6).astype("float32"),
        ln_w2=rng.normal(size=(5, 4)).astype("float32"), ln_w3=rng.normal(size=(4, 6)).astype("float32"),
        ln_w4=rng.normal(size=(4, 6)).astype("float32"),
        sm_x=rng.normal(size=(2, 4, 3)).astype("float32"), sm_x3=rng.normal(size=(2, 4, 4)).astype("float32"),
        sm_mask=np.array([[1, 1, 0, 0], [1, 1, 1, 0]], "float32"),
        pl_t=np.array([0, 500, 1000, 1500, 2000, 3000], "float32"),
        bg_params=rng.normal(size=(2, 5, 3)).astype("float32"), bg_idx=np.array([[0, 4], [2, 2]]),
        ml_true=np.array([[1, 0, 1, 0], [0, 0, 0, 1]], "float32"), ml_pred=rng.normal(size=(2, 4)).astype("float32"),
        sml_true=np.array([[0, 2], [3, 3]]),
        text=np.array("今天天气很好，我们去公园散步。公园里有很多人！大家都很开心，孩子们在草地上玩耍。"),
        gp_x=rng.normal(size=(2, 5, 8)).astype("float32"),
        gp_w0=rng.normal(size=(8, 16)).astype("float32"), gp_w1=rng.normal(size=16).astype("float32"),
        egp_w0=rng.normal(size=(8, 8)).astype("float32"), egp_w1=rng.normal(size=8).astype("float32"),
        egp_w2=rng.normal(size=(8, 4)).astype("float32"), egp_w3=rng.normal(size=4).astype("float32"),
        memm_l=rng.normal(size=(3, 2)).astype("float32"), memm_r=rng.normal(size=(3, 2)).astype("float32"),
        so_beta=rng.normal(size=8).astype("float32"), so_gamma=rng.normal(size=8).astype("float32"),
        fn_x=rng.normal(size=(2, 6, 4)).astype("float32"),
        an_x=rng.normal(size=(2, 3, 5)).astype("float32"), an_bias=rng.normal(size=(2, 3, 5)).astype("float32"),
        an_mask=np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], "float32"),
        opt_init=rng.normal(size=(5, 3)).astype("float32"),
        # rows 1 and 3 get a gradient at the first step only
        opt_grads=(rng.normal(size=(3, 5, 3)) * np.array([[1, 1, 1, 1, 1.0], [1, 0, 1, 0, 1], [1, 0, 1, 0, 1]])[
            ..., None]).astype("float32"),
        or_a=rng.normal(size=(4, 4)),
        af_matrix=rng.normal(size=(130, 128)).astype("float32"), af_bias=rng.normal(size=4).astype("float32"),
        af_matrix_grads=rng.normal(size=(3, 130, 128)).astype("float32"),
        af_bias_grads=rng.normal(size=(3, 4)).astype("float32"),
        emb_table=rng.normal(size=(6, 4)).astype("float32"), emb_ids=np.array([[0, 3, 5, 0], [2, 1, 0, 0]], "float32"),
        ffn_w0=rng.normal(size=(4, 6)).astype("float32"), ffn_w1=rng.normal(size=6).astype("float32"),
        ffn_w2=rng.normal(size=(6, 4)).astype("float32"), ffn_w3=rng.normal(size=4).astype("float32"),
        ffn_glu_w0=rng.normal(size=(4, 6)).astype("float32"), ffn_glu_w1=rng.normal(size=6).astype("float32"),
        ffn_glu_w2=rng.normal(size=(4, 6)).astype("float32"), ffn_glu_w3=rng.normal(size=6).astype("float32"),
        ffn_glu_w4=rng.normal(size=(6, 4)).astype("float32"), ffn_glu_w5=rng.normal(size=4).astype("float32"),
    )
    inputs["gp_x"][1, 3:] = 0  # padding (Masking(0.0) masks it)
    inputs.update(_write_tap_checkpoints(shared_data, folder))
    np.savez(folder / "in.npz", **inputs)
    env = dict(os.environ, TF_KERAS="1", TF_USE_LEGACY_KERAS="1", PYTHONPATH=REFERENCE, TF_CPP_MIN_LOG_LEVEL="3",
               CUDA_VISIBLE_DEVICES="")
    script = pathlib.Path(__file__).with_name("b4k_reference.py")
    done = subprocess.run([sys.executable, str(script), str(folder / "in.npz"), str(folder / "out.npz")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return inputs, dict(np.load(folder / "out.npz"))


def test_crf_matches_bert4keras(reference):
    inputs, ref = reference
    model, crf = _crf_model(inputs["crf_trans"], 3)
    y_pred = model.predict(inputs["crf_scores"] * inputs["crf_mask"][..., None], verbose=0)
    np.testing.assert_allclose(np.where(np.isinf(y_pred), -1e30, y_pred), ref["crf_y_pred"], rtol=1e-6)
    loss = ops.convert_to_numpy(crf.sparse_loss(inputs["crf_labels"], y_pred))
    np.testing.assert_allclose(loss, ref["crf_sparse_loss"], rtol=1e-5)
    accuracy = ops.convert_to_numpy(crf.sparse_accuracy(inputs["crf_labels"], y_pred))
    np.testing.assert_allclose(accuracy, ref["crf_sparse_accuracy"], rtol=1e-6)
    n = int(inputs["crf_mask"][0].sum())
    decoded = snippets.ViterbiDecoder(inputs["crf_trans"], starts=[0], ends=[0]).decode(inputs["crf_scores"][0, :n])
    np.testing.assert_array_equal(decoded, ref["viterbi"][0])


def test_conditional_layer_norm_matches_bert4keras(reference):
    inputs, ref = reference
    layer = LayerNormalization(conditional=True, hidden_units=4)
    out = layer([inputs["ln_x"], inputs["ln_c"]])
    layer.set_weights([inputs[f"ln_w{i}"] for i in range(5)])
    out = ops.convert_to_numpy(layer([inputs["ln_x"], inputs["ln_c"]]))
    np.testing.assert_allclose(out, ref["ln"], rtol=1e-5, atol=1e-5)


def test_backend_functions_match_bert4keras(reference):
    inputs, ref = reference
    np.testing.assert_allclose(
        b4k_backend.sequence_masking(inputs["sm_x"], inputs["sm_mask"], -1e4, 1), ref["sequence_masking"], rtol=1e-6)
    np.testing.assert_allclose(
        b4k_backend.sequence_masking(inputs["sm_x3"], inputs["sm_mask"], -1e4, [1, 2]), ref["sequence_masking_axes"],
        rtol=1e-6)
    ours = [float(b4k_backend.piecewise_linear(t, {1000: 1, 2000: 0.1})) for t in inputs["pl_t"]]
    np.testing.assert_allclose(ours, ref["piecewise_linear"], rtol=1e-6)
    np.testing.assert_allclose(b4k_backend.batch_gather(inputs["bg_params"], inputs["bg_idx"]), ref["batch_gather"])
    np.testing.assert_allclose(
        b4k_backend.multilabel_categorical_crossentropy(inputs["ml_true"], inputs["ml_pred"]), ref["mcce"], rtol=1e-5)
    np.testing.assert_allclose(
        b4k_backend.sparse_multilabel_categorical_crossentropy(inputs["sml_true"], inputs["ml_pred"]), ref["smcce"],
        rtol=1e-5)


def test_snippets_match_bert4keras(reference):
    inputs, ref = reference
    text = str(inputs["text"])
    assert snippets.text_segmentate(text, 12, "\n。！？，", "，") == json.loads(str(ref["text_segmentate"]))
    assert snippets.truncate_sequences(5, -1, [1, 2, 3, 4, 5], [6, 7, 8]) == json.loads(str(ref["truncate"]))
    length, span = snippets.longest_common_substring("我爱北京天安门", "北京天安门广场")
    assert [length, list(span)] == json.loads(str(ref["lcs_substring"]))
    assert snippets.longest_common_subsequence("科学技术是生产力", "科技是第一生产力")[0] == int(ref["lcs_subsequence_len"])
    np.testing.assert_array_equal(snippets.sequence_padding([[1, 2, 3], [4]], length=2, mode="pre"), ref["padding"])


def _masked(layer, x):
    xi = keras.Input((None, x.shape[-1]))
    return keras.Model(xi, layer(keras.layers.Masking(0.0)(xi)))


def _finite(y):
    return np.where(np.isinf(y), np.sign(y) * 1e30, y)


def test_global_pointers_match_bert4keras(reference):
    from kerasnlp_plus.layers import EfficientGlobalPointer, GlobalPointer

    inputs, ref = reference
    x = inputs["gp_x"]
    for name, layer in (("gp", GlobalPointer(2, 4)), ("gp_norope", GlobalPointer(2, 4, RoPE=False, tril_mask=False)),
                        ("egp", EfficientGlobalPointer(2, 4))):
        model = _masked(layer, x)
        layer.set_weights([inputs[f"{name.split('_')[0]}_w{i}"] for i in range(len(layer.weights))])
        ours = model.predict(x, verbose=0)
        assert ours.shape == (2, 2, 5, 5)
        np.testing.assert_allclose(_finite(ours), ref[name], rtol=1e-5, atol=1e-4, err_msg=name)
        assert np.isneginf(ours[1, :, 3:, :]).all() and np.isneginf(ours[1, :, :, 3:]).all()  # padded spans
    again = GlobalPointer.from_config(GlobalPointer(2, 4, RoPE=False).get_config())
    assert again.RoPE is False and again.heads == 2


@pytest.mark.parametrize("name", ["memm", "memm_lowrank"])
def test_memm_matches_bert4keras(reference, name):
    from kerasnlp_plus.layers import MaximumEntropyMarkovModel

    inputs, ref = reference
    scores, mask, labels = inputs["crf_scores"], inputs["crf_mask"], inputs["crf_labels"]
    if name == "memm":
        memm, weights = MaximumEntropyMarkovModel(lr_multiplier=1), [inputs["crf_trans"]]
    else:
        memm, weights = MaximumEntropyMarkovModel(lr_multiplier=2, hidden_dim=2), [inputs["memm_l"], inputs["memm_r"]]
    model = _masked(memm, scores)
    memm.set_weights([w / memm.lr_multiplier for w in weights])
    y = model.predict(scores * mask[..., None], verbose=0)
    np.testing.assert_allclose(ops.convert_to_numpy(memm.sparse_loss(labels, y)), ref[f"{name}_sparse_loss"], rtol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(memm.sparse_accuracy(labels, y)), ref[f"{name}_sparse_accuracy"],
                               rtol=1e-6)
    onehot = np.eye(3)[labels.astype(int)]
    np.testing.assert_allclose(ops.convert_to_numpy(memm.dense_loss(onehot, y)), ref[f"{name}_dense_loss"], rtol=1e-5)
    if name == "memm_lowrank":  # the transitions a ViterbiDecoder needs
        np.testing.assert_allclose(ops.convert_to_numpy(memm.trans), weights[0] @ weights[1].T, rtol=1e-5)


def test_memm_trains_and_saves_as_keras(tmp_path):
    from kerasnlp_plus.layers import MaximumEntropyMarkovModel

    scores, trans, mask, gold, _ = _crf_case(batch=3)
    x = keras.Input((None, 3))
    memm = MaximumEntropyMarkovModel(lr_multiplier=10, hidden_dim=2)
    model = keras.Model(x, memm(keras.layers.Masking(0.0)(keras.layers.Dense(3)(x))))
    model.compile(optimizer=optimizers.Adam(5e-2), loss=memm.sparse_loss, metrics=[memm.sparse_accuracy])
    history = model.fit(scores * mask[..., None], gold, epochs=10, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    model.save(tmp_path / "memm.keras")
    again = keras.models.load_model(tmp_path / "memm.keras", compile=False)
    np.testing.assert_allclose(again.predict(scores, verbose=0), model.predict(scores, verbose=0), rtol=1e-6)


def test_poolings_and_scale_offset_match_bert4keras(reference):
    from kerasnlp_plus.layers import GlobalAveragePooling1D, GlobalMaxPooling1D, ScaleOffset

    inputs, ref = reference
    x = inputs["gp_x"]
    np.testing.assert_allclose(_masked(GlobalAveragePooling1D(), x).predict(x, verbose=0), ref["gap"], rtol=1e-5)
    np.testing.assert_allclose(_masked(GlobalMaxPooling1D(), x).predict(x, verbose=0), ref["gmp"], rtol=1e-6)
    layer = ScaleOffset()
    model = _masked(layer, x)
    layer.set_weights([inputs["so_beta"], inputs["so_gamma"]])
    np.testing.assert_allclose(model.predict(x, verbose=0), ref["scale_offset"], rtol=1e-6)


def test_embedding_concatenate_sinusoidal_feedforward_match_bert4keras(reference, tmp_path):
    from kerasnlp_plus import layers

    inputs, ref = reference
    emb = layers.Embedding(6, 4, mask_zero=True)
    ids = inputs["emb_ids"]
    emb.build(ids.shape)
    emb.set_weights([inputs["emb_table"]])
    np.testing.assert_allclose(emb(ids), ref["emb_lookup"], rtol=1e-6)
    np.testing.assert_array_equal(ops.convert_to_numpy(emb.compute_mask(ids)), ref["emb_mask"])  # first kept
    np.testing.assert_allclose(emb(inputs["fn_x"], mode="dense"), ref["emb_dense"], rtol=1e-5, atol=1e-6)
    x = inputs["gp_x"]
    masked = keras.layers.Masking(0.0).compute_mask(x)
    concat = layers.Concatenate1D()
    np.testing.assert_array_equal(ops.convert_to_numpy(concat.compute_mask([x, x[:, :2]], [masked, None])),
                                  ref["concat_mask"])
    assert concat([x, x[:, :2]]).shape == (2, 7, 8)
    for mode in ("add", "mul", "zero", "concat"):
        ours = layers.SinusoidalPositionEmbedding(4, mode)(inputs["fn_x"])
        np.testing.assert_allclose(ours, ref[f"sinusoidal_{mode}"], rtol=1e-5, atol=1e-6, err_msg=mode)
    for name, activation in (("ffn", "gelu"), ("ffn_glu", ["gelu", "linear"])):
        xi = keras.Input((None, 4))
        ffn = layers.FeedForward(6, activation)
        model = keras.Model(xi, ffn(xi))
        ffn.set_weights([inputs[f"{name}_w{i}"] for i in range(len(ffn.weights))])
        np.testing.assert_allclose(model.predict(inputs["fn_x"], verbose=0), ref[name], rtol=1e-5, atol=1e-5,
                                   err_msg=name)
    model.save(tmp_path / "ffn.keras")
    again = keras.models.load_model(tmp_path / "ffn.keras")
    np.testing.assert_allclose(again.predict(inputs["fn_x"], verbose=0), ref["ffn_glu"], rtol=1e-5, atol=1e-5)
    assert set(layers.custom_objects) >= {"FeedForward", "GlobalPointer", "ConditionalRandomField", "Loss"}


def test_more_backend_functions_match_bert4keras(reference):
    inputs, ref = reference
    x = inputs["fn_x"]
    B = b4k_backend
    np.testing.assert_allclose(B.align(x[0], [0, 2], 4), ref["align"])
    np.testing.assert_allclose(B.reshape(x, (3, 2), 1), ref["reshape"])
    np.testing.assert_allclose(B.flatten(x.reshape(2, 3, 2, 4), 1, 3), ref["flatten"])
    np.testing.assert_allclose(B.pool1d(x, 2, 2, padding="same"), ref["pool1d_max"], rtol=1e-6)
    np.testing.assert_allclose(B.pool1d(x, 3, 1, pool_mode="avg"), ref["pool1d_avg"], rtol=1e-6)
    np.testing.assert_allclose(B.divisible_temporal_padding(x, 4), ref["divisible_temporal_padding"])
    np.testing.assert_allclose(B.root_mean_square(x, axis=-1, keepdims=True), ref["root_mean_square"], rtol=1e-6)
    for fn in (B.gelu_erf, B.gelu_tanh, B.swish, B.leaky_relu):
        np.testing.assert_allclose(fn(x), ref[fn.__name__], rtol=1e-5, atol=1e-6, err_msg=fn.__name__)
    for method in ("softmax", "squared_relu", "softmax_plus"):
        ours = B.attention_normalize(inputs["an_x"], inputs["an_mask"], -1, method, inputs["an_bias"])
        np.testing.assert_allclose(ours, ref[f"attention_normalize_{method}"], rtol=1e-5, atol=1e-7, err_msg=method)
    np.testing.assert_allclose(B.Sinusoidal()((7, 6)), ref["sinusoidal_init"], rtol=1e-5, atol=1e-6)
    assert B.symbolic(len) is len and B.is_tf_keras is True and isinstance(B.get_available_gpus(), list)


def test_lazy_optimization_and_lion_match_bert4keras(reference):
    inputs, ref = reference
    AdamLazy = optimizers.extend_with_lazy_optimization(optimizers.Adam)
    ours = {}
    for name, optimizer in (
        ("lazy", AdamLazy(learning_rate=0.1, include_in_lazy_optimization=["table"])),
        ("not_lazy", AdamLazy(learning_rate=0.1, include_in_lazy_optimization=["other"])),
        ("lion", optimizers.Lion(learning_rate=0.1)),
    ):
        var = keras.Variable(inputs["opt_init"], name="table")
        optimizer.build([var])
        for grad in inputs["opt_grads"]:
            optimizer.apply([ops.convert_to_tensor(grad)], [var])
        ours[name] = var.numpy()
    np.testing.assert_allclose(ours["lion"], ref["opt_lion"], rtol=1e-6)
    # Keras' Adam adds epsilon to sqrt(v) before bias correction, bert4keras' after:
    # 3 steps of lr 0.1 differ by up to ~2e-5 here, laziness or not
    for name in ("lazy", "not_lazy"):
        np.testing.assert_allclose(ours[name], ref[f"opt_{name}"], atol=1e-4, err_msg=name)
    # lazy: rows 1 and 3 stop where the first step left them (without laziness Adam's
    # momentum moves them on, in both); the other rows move exactly as without laziness
    for result in (ours, {k: ref[f"opt_{k}"] for k in ("lazy", "not_lazy")}):
        assert np.abs(result["lazy"][[1, 3]] - result["not_lazy"][[1, 3]]).min() > 1e-3
    np.testing.assert_array_equal(ours["lazy"][[0, 2, 4]], ours["not_lazy"][[0, 2, 4]])
    first_step = AdamLazy(learning_rate=0.1, include_in_lazy_optimization=["table"])
    var = keras.Variable(inputs["opt_init"], name="table")
    first_step.build([var])
    first_step.apply([ops.convert_to_tensor(inputs["opt_grads"][0])], [var])
    np.testing.assert_array_equal(ours["lazy"][[1, 3]], var.numpy()[[1, 3]])


def test_adafactor_matches_bert4keras(reference, tmp_path):
    inputs, ref = reference
    for name, kwargs in (("adafactor", {}), ("adafactor_beta1", dict(learning_rate=None, beta1=0.9, beta2=0.99))):
        optimizer = optimizers.AdaFactor(**kwargs)
        variables = [keras.Variable(inputs["af_matrix"], name="matrix"), keras.Variable(inputs["af_bias"], name="bias")]
        optimizer.build(variables)
        for step in range(3):
            optimizer.apply([ops.convert_to_tensor(inputs["af_matrix_grads"][step]),
                             ops.convert_to_tensor(inputs["af_bias_grads"][step])], variables)
        np.testing.assert_allclose(variables[0].numpy(), ref[f"{name}_matrix"], rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(variables[1].numpy(), ref[f"{name}_bias"], rtol=1e-5, atol=1e-6, err_msg=name)
        assert np.abs(variables[0].numpy() - inputs["af_matrix"]).max() > 1e-4  # it moved
    assert optimizer.factored_shape((130, 128)) is not None and optimizer.factored_shape((130, 64)) is None
    config = optimizer.get_config()
    assert config["learning_rate"] is None and config["beta1"] == 0.9
    assert optimizers.AdaFactor.from_config(config).get_config()["beta2"] == 0.99
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])  # in fit's compiled step too
    model.compile(optimizer=optimizers.AdaFactor(beta1=0.9), loss="mse")
    history = model.fit(np.ones((4, 3)), np.zeros((4, 2)), epochs=3, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]


def test_pure_python_snippets_match_bert4keras(reference):
    inputs, ref = reference
    matches = [snippets.string_matching("bert/encoder/layer_0", k)
               for k in (["layer_\\d"], ["pooler", "encoder"], ["^encoder"], [])]
    assert matches == ref["string_matching"].tolist()
    assert [snippets.is_one_of(1, [1.0, 2]), snippets.is_one_of(np.array(1), [1]),
            snippets.is_one_of("a", ["b"])] == ref["is_one_of"].tolist()
    np.testing.assert_allclose(snippets.orthogonally_resize(inputs["or_a"], (6, 5)), ref["orthogonally_resize"])
    np.testing.assert_allclose(snippets.softmax(inputs["fn_x"], axis=1), ref["softmax"], rtol=1e-6)
    converted = [snippets.convert_to_unicode("中文".encode("utf-8")), snippets.convert_to_str("中文"),
                 snippets.convert_to_unicode("abc")]
    assert converted == json.loads(str(ref["convert"]))
    ours = sorted(snippets.parallel_apply_generator(lambda x: x * 3, range(7), 2, 3, dummy=True))
    np.testing.assert_array_equal(np.array(ours), ref["parallel_apply_generator"])

    class Base:
        def __init__(self, a=1):
            self.a = a

    class WithArguments(Base):
        @snippets.insert_arguments(b=2, c=3)
        @snippets.delete_arguments("d")
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)

    obj = WithArguments(a=5, c=7)
    assert (obj.a, obj.b, obj.c) == (5, 2, 7)
    with pytest.raises(TypeError, match="'d'"):
        WithArguments(d=1)


@pytest.mark.parametrize("kind", ["bert", "albert"])
def test_layer_names_reach_bert4keras_outputs(reference, kind):
    """Every bert4keras layer name of BERT / ALBERT (embeddings, each block's eight
    steps, pooler, NSP, MLM) reaches the tensor bert4keras 0.11.5 computes under that
    name, on the same Google checkpoint (compared at the real, unpadded tokens)."""
    inputs, ref = reference
    model = build_transformer_model(str(inputs[f"taps_{kind}_config"]), str(inputs[f"taps_{kind}_checkpoint"]),
                                    model=kind, with_pool=True, with_nsp=True, with_mlm=True)
    names = [tuple(n) for n in json.loads(str(inputs[f"taps_{kind}_names"]))]
    taps = keras.Model(model.inputs, [_our_tap(model, name, node) for name, node in names])
    ours = taps.predict([inputs["taps_ids"], inputs["taps_segs"]], verbose=0)
    real = inputs["taps_ids"] != 0
    assert (~real).any()  # the batch has padding
    for (name, node), value in zip(names, ours):
        expected = ref[f"taps_{kind}/{name}/{node}"]
        assert value.shape == expected.shape, name
        if value.ndim >= 3:  # sequence outputs: padded rows are undefined in both
            value, expected = value[real], expected[real]
        np.testing.assert_allclose(value, expected, atol=1e-5, rtol=1e-5, err_msg=f"{name} (node {node})")
    assert len(names) == (6 if kind == "albert" else 5) + 8 * TAP_LAYERS + len(HEADS)


# --- model behaviours ------------------------------------------------------------------
@pytest.fixture(scope="module")
def batch():
    ids = np.array([[101, 800, 900, 102, 0, 0], [101, 700, 600, 500, 400, 102]])
    return ids, np.array([[0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1]])


def test_output_layout_follows_bert4keras(batch):
    shapes = {}
    for flags in ["", "pool", "pool+nsp", "mlm", "pool+mlm", "pool+nsp+mlm"]:
        model = build_transformer_model(None, with_pool="pool" in flags, with_nsp="nsp" in flags,
                                        with_mlm="mlm" in flags, **TINY)
        outputs = model.outputs
        shapes[flags] = [tuple(o.shape) for o in outputs]
    assert shapes[""] == [(None, None, 16)]
    assert shapes["pool"] == [(None, 16)]  # two outputs -> the second alone
    assert shapes["pool+nsp"] == [(None, 16), (None, 2)]  # more -> all but the first
    assert shapes["mlm"] == [(None, None, 50)]
    assert shapes["pool+mlm"] == [(None, 16), (None, None, 50)]
    assert shapes["pool+nsp+mlm"] == [(None, 16), (None, 2), (None, None, 50)]


@pytest.mark.parametrize("application", ["lm", "unilm"])
def test_lm_and_unilm_imply_mlm_and_float_inputs(application):
    model = build_transformer_model(None, application=application, **TINY)
    assert model.with_mlm is True and tuple(model.output.shape) == (None, None, 50)
    assert [x.dtype for x in model.inputs] == ["float32", "float32"]
    linear = build_transformer_model(None, application=application, with_mlm="linear", **TINY)
    assert linear.with_mlm == "linear"


def test_loss_layer_receives_the_padding_mask_and_float_segment_ids(batch):
    ids, segs = batch
    model = build_transformer_model(DEMO / "config.json", DEMO, application="unilm")
    seen = {}

    class CrossEntropy(Loss):
        def compute_loss(self, inputs, mask=None):
            y_true, y_mask, y_pred = inputs
            seen["mask_is_none"] = [m is None for m in mask]
            y_mask = y_mask[:, 1:] * K.cast(mask[2], K.floatx())[:, 1:]  # float segment ids * mask
            loss = K.sparse_categorical_crossentropy(y_true[:, 1:], y_pred[:, :-1])
            return K.sum(loss * y_mask) / K.sum(y_mask)

    output = CrossEntropy(2)(model.inputs + model.outputs)
    train = keras.Model(model.inputs, output)
    train.compile(optimizer=optimizers.Adam(1e-5))
    measured = train.evaluate([ids, segs], verbose=0)
    assert seen["mask_is_none"] == [True, True, False]  # inputs: none; the MLM output: token_ids != 0
    probas = model.predict([ids, segs], verbose=0)
    picked = np.take_along_axis(probas[:, :-1], ids[:, 1:, None], axis=-1)[..., 0]
    weight = segs[:, 1:] * (ids[:, 1:] != 0)
    expected = -(np.log(picked) * weight).sum() / weight.sum()
    np.testing.assert_allclose(measured, expected, rtol=1e-4)


def test_bert4keras_layer_names_and_attributes(batch, tmp_path):
    ids, segs = batch
    model = build_transformer_model(DEMO / "config.json", DEMO)
    for name in ["Input-Token", "Input-Segment", "Embedding-Token", "Embedding-Segment", "Embedding-Position",
                 "Embedding-Norm", "Transformer-0-FeedForward-Norm", "Transformer-3-FeedForward-Norm"]:
        assert model.get_layer(name) is not None
    assert model.get_layer("Transformer-3-FeedForward-Norm").output is model.output
    tap = keras.Model(model.inputs, model.get_layer("Transformer-1-FeedForward-Norm").output)
    assert tap.predict([ids, segs], verbose=0).shape == (2, 6, 128)
    assert isinstance(model.initializer, keras.initializers.TruncatedNormal)
    assert model.initializer.stddev == 0.02
    assert b4k_backend.search_layer(model.output, "Embedding-Token") is model.get_layer("Embedding-Token")
    assert b4k_backend.search_layer(model.output, "no-such-layer") is None
    mlm = build_transformer_model(DEMO / "config.json", DEMO, with_mlm=True)
    assert mlm.get_layer("MLM-Norm") is not None
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again.predict([ids, segs], verbose=0), model.predict([ids, segs], verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_load_weights_from_checkpoint_remembers_keep_tokens():
    keep = [0, 100, 101, 102, 103, 800, 900]
    full = build_transformer_model(DEMO / "config.json", DEMO)
    handle = build_transformer_model(DEMO / "config.json", None, keep_tokens=keep, return_keras_model=False)
    assert handle.model.keep_tokens == keep
    handle.load_weights_from_checkpoint(DEMO)  # bert4keras' multi-GPU pattern: load after building
    np.testing.assert_array_equal(
        handle.model.get_layer("Embedding-Token").embeddings.numpy(),
        full.get_layer("Embedding-Token").embeddings.numpy()[keep])


# --- backend, snippets, tokenizers, optimizers ------------------------------------------
def test_K_has_the_keras2_backend_functions():
    x = np.array([[1.0, 2.0], [3.0, 4.0]], "float32")
    assert float(K.eval(K.sum(x))) == 10.0
    assert K.eval(K.cast(K.greater(x, 2), K.floatx())).tolist() == [[0, 0], [1, 1]]
    probs = np.array([[0.25, 0.75]], "float32")
    np.testing.assert_allclose(K.eval(K.sparse_categorical_crossentropy(np.array([1]), probs)), [-np.log(0.75)],
                               rtol=1e-6)
    np.testing.assert_allclose(K.eval(K.logsumexp(x, 1)), np.log(np.exp(x).sum(1)), rtol=1e-6)
    assert K.eval(K.where(x > 2, x, 0.0)).tolist() == [[0, 0], [3, 4]]
    assert K.int_shape(K.constant(x)) == (2, 2) and K.epsilon() > 0 and K.floatx() == "float32"
    assert callable(K.rnn) and callable(K.set_value) and callable(K.batch_set_value)


def test_set_gelu_switches_the_activation_of_new_models(batch):
    ids, segs = batch
    try:
        b4k_backend.set_gelu("tanh")
        tanh = build_transformer_model(DEMO / "config.json", DEMO).predict([ids, segs], verbose=0)
        b4k_backend.set_gelu("erf")
        erf = build_transformer_model(DEMO / "config.json", DEMO).predict([ids, segs], verbose=0)
    finally:
        b4k_backend.set_gelu("erf")
    assert 1e-6 < np.abs(tanh - erf).max() < 1e-1
    with pytest.raises(ValueError, match="erf' or 'tanh"):
        b4k_backend.set_gelu("exact")


class _Batches(snippets.DataGenerator):
    def __iter__(self, random=False):
        batch = []
        for is_end, d in self.sample(random):
            batch.append(d)
            if len(batch) == self.batch_size or is_end:
                yield [np.array(batch), np.array(batch) * 2], np.array(batch)
                batch = []


def test_data_generator():
    gen = _Batches(list(range(10)), batch_size=4)
    assert len(gen) == 3
    flags = [is_end for is_end, _ in gen.sample()]
    assert flags == [False] * 9 + [True]
    batches = list(iter(gen))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    first = next(gen.forfit())
    assert isinstance(first, tuple) and isinstance(first[0], tuple)  # tf.data-friendly
    assert sorted(np.concatenate([b[1] for b in itertools.islice(gen.forfit(), 3)]).tolist()) == list(range(10))

    class Single(snippets.DataGenerator):
        def __iter__(self, random=False):
            for _, d in self.sample(random):
                yield list(range(d + 1)), [d]

    dataset = Single([1, 3, 2], batch_size=2).to_dataset(
        types=("float32", "float32"), shapes=([None], [None]), names=("a", "b"), padded_batch=True)
    item = next(iter(dataset))
    assert set(item) == {"a", "b"} and item["a"].shape[0] == 2


def test_indexable_open_and_text_helpers(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("第一行\n第二行\nthird\n", encoding="utf-8")
    with snippets.open(path, encoding="utf-8", indexable=str(tmp_path / "index.json")) as f:
        assert len(f) == 3 and f[1] == "第二行\n" and f[2] == "third\n"
    assert json.loads((tmp_path / "index.json").read_text()) == [0, 10, 20]
    assert snippets.to_array([1, 2]).tolist() == [1, 2]
    a, b = snippets.to_array([[1]], [[2]])
    assert a.shape == b.shape == (1, 1)
    pieces = snippets.text_segmentate("一二三。四五六七八。九十", 6, "。")
    assert "".join(pieces) == "一二三。四五六七八。九十" and all(len(p) <= 6 for p in pieces)
    assert snippets.lowercase_and_normalize("ÀB") == "ab"
    assert snippets.strQ2B("ＡＢＣ　１２３！") == "ABC 123!"  # bert4keras' own strQ2B fails on Python 3
    assert snippets.parallel_apply(lambda x: x * x, range(6), 2, 4, dummy=True, unordered=False) == [
        0, 1, 4, 9, 16, 25]
    from kerasnlp_plus.snippets import uniout  # noqa: F401  (a no-op on Python 3, as in bert4keras)


def test_vocab_functions_take_bert4keras_keywords(tmp_path):
    token_dict = load_vocab(dict_path=DEMO / "vocab.txt")
    lines = (DEMO / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert token_dict["[CLS]"] == lines.index("[CLS]") and token_dict["[SEP]"] == lines.index("[SEP]")
    save_vocab(dict_path=tmp_path / "v.txt", token_dict={"[PAD]": 0, "[UNK]": 1})
    assert (tmp_path / "v.txt").read_text(encoding="utf-8") == "[PAD]\n[UNK]\n"
    with pytest.raises(TypeError, match="exactly one"):
        load_vocab()
    from kerasnlp_plus.tokenizers import Tokenizer

    assert Tokenizer(token_dict=token_dict).encode("你好")[0] == Tokenizer(token_dict).encode("你好")[0]


def _step(optimizer, steps=1, start=(1.0, -2.0), grad=(0.5, 0.25)):
    var = keras.Variable(np.array(start, "float32"), name="kernel")
    optimizer.build([var])
    for _ in range(steps):
        optimizer.apply([ops.convert_to_tensor(np.array(grad, "float32"))], [var])
    return var.numpy()


def test_optimizer_extensions_map_onto_keras():
    AdamWD = optimizers.extend_with_weight_decay(optimizers.Adam)
    ours = _step(AdamWD(0.1, weight_decay_rate=0.01), steps=3)
    reference = _step(keras.optimizers.AdamW(0.1, weight_decay=0.01, epsilon=1e-6), steps=3)
    np.testing.assert_allclose(ours, reference, rtol=1e-6)
    assert np.allclose(_step(AdamWD(0.1, weight_decay_rate=0.01, exclude_from_weight_decay=["kernel"]), steps=3),
                       _step(optimizers.Adam(0.1), steps=3))

    AdamLR = optimizers.extend_with_piecewise_linear_lr(optimizers.Adam)
    opt = AdamLR(1.0, lr_schedule={10: 1, 20: 0.1})
    assert abs(float(opt.learning_rate) - 0.0) < 1e-7  # step 0 of the warm-up
    opt.iterations.assign(5)
    assert abs(float(opt.learning_rate) - 0.5) < 1e-6
    opt.iterations.assign(15)
    assert abs(float(opt.learning_rate) - 0.55) < 1e-6

    AdamGA = optimizers.extend_with_gradient_accumulation(optimizers.Adam)
    assert AdamGA(1e-3, grad_accum_steps=4).gradient_accumulation_steps == 4

    AdamPW = optimizers.extend_with_parameter_wise_lr(optimizers.Adam)
    start = np.array([1.0, -2.0], "float32")
    plain = _step(optimizers.Adam(0.1)) - start
    scaled = _step(AdamPW(0.1, paramwise_lr_schedule={"kernel": 0.5})) - start
    np.testing.assert_allclose(scaled, plain * 0.5, rtol=1e-5)

    AdamLA = optimizers.extend_with_layer_adaptation(optimizers.Adam)
    delta = _step(AdamLA(0.1)) - start
    np.testing.assert_allclose(np.linalg.norm(delta), np.linalg.norm(start), rtol=1e-5)  # trust ratio

    AdamLH = optimizers.extend_with_lookahead(optimizers.Adam)
    fast = _step(optimizers.Adam(0.1), steps=2)
    slow_synced = _step(AdamLH(0.1, steps_per_slow_update=2, slow_step_size=0.5), steps=2)
    np.testing.assert_allclose(slow_synced, start + 0.5 * (fast - start), rtol=1e-5)

    AdamEMA = optimizers.extend_with_exponential_moving_average(optimizers.Adam)
    opt = AdamEMA(0.1, ema_momentum=0.5)
    var = keras.Variable(np.array([1.0, -2.0], "float32"))
    opt.build([var])
    values = []
    for _ in range(3):
        opt.apply([ops.convert_to_tensor(np.array([0.5, 0.25], "float32"))], [var])
        values.append(var.numpy().copy())
    opt.apply_ema_weights()
    expected = 0.5 * (0.5 * values[0] + 0.5 * values[1]) + 0.5 * values[2]
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-5)
    opt.reset_old_weights()
    np.testing.assert_allclose(var.numpy(), values[2])

    with pytest.raises(ValueError, match="bias_correction"):
        optimizers.Adam(1e-3, bias_correction=False)
    assert optimizers.extend_with_weight_decay_v2 is optimizers.extend_with_weight_decay


def test_backend_rotary_equals_roformer_rotation():
    """bert4keras' ``apply_rotary_position_embeddings(sinusoidal_embeddings(...))`` rotates
    exactly as ``model='roformer'`` does (whose rotation is pinned to transformers')."""
    from kerasnlp_plus.layers.rotary import apply_rotary

    x = np.random.default_rng(0).standard_normal((2, 7, 3, 8)).astype("float32")
    sinusoidal = b4k_backend.sinusoidal_embeddings(np.arange(7, dtype="float32")[None], 8)
    ours = np.asarray(b4k_backend.apply_rotary_position_embeddings(sinusoidal[:, :, None, :], x))
    np.testing.assert_allclose(ours, np.asarray(apply_rotary(x, np.arange(7)[None])), atol=1e-6)
    assert np.abs(ours - x).max() > 0.1  # a rotation happened


def test_forfit_trains_on_batches_of_other_lengths_than_the_first_two():
    """Keras 3 fixes the dimensions its first two batches agree on; bert4keras'
    per-batch padding changes them later (a shorter last batch). ``forfit`` keeps them open."""

    class Padded(snippets.DataGenerator):
        def __iter__(self, random=False):
            batch = []
            for is_end, n in self.sample(random):
                batch.append([1] * n)
                if len(batch) == self.batch_size or is_end:
                    ids = snippets.sequence_padding(batch)
                    yield [ids, np.zeros_like(ids)], np.ones((len(batch), 1))
                    batch = []

    gen = Padded([5, 5, 5, 5, 3], batch_size=2)  # lengths 5, 5, then 3
    assert [b[0][0].shape[1] for b in iter(gen)] == [5, 5, 3]
    ids, segs = keras.Input((None,)), keras.Input((None,))
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(4, 3)(ids) + ops.expand_dims(segs, -1))
    model = keras.Model([ids, segs], keras.layers.Dense(1)(pooled))
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=2, verbose=0).history
    assert len(history["loss"]) == 2 and np.isfinite(history["loss"]).all()
    first = next(gen.forfit())
    assert first[0][0].shape == (2, 5) and first[1].shape == (2, 1)
    # a model of ours still checks the ids of every batch on the host
    bert = build_transformer_model(None, **TINY)  # vocab_size 50
    bert.compile(optimizer="sgd", loss="mse")

    class OutOfVocabulary(Padded):
        def __iter__(self, random=False):
            for (ids, segs), _ in super().__iter__(random):
                yield [ids * 70, segs], np.zeros(ids.shape + (16,))

    with pytest.raises(Exception, match="token ids must lie in"):
        bert.fit(OutOfVocabulary([3, 3], batch_size=2).forfit(), steps_per_epoch=1, epochs=1, verbose=0)


# --- completeness: every public name of bert4keras 0.11.5's five modules ----------------
# Names deliberately not provided, each with why (the issue covers the BERT family, the
# masks, decoding and training; not other model families).
NOT_PROVIDED = {
    "layers": {
        # other model families
        "GatedAttentionUnit": "GAU-alpha",
        "RelativePositionEmbedding": "NEZHA's relative positions",
        "RelativePositionEmbeddingT5": "T5",
        # bert4keras' own multi-GPU data parallelism; tf.distribute does it here
        # (examples' --replicas, pretraining's MultiWorkerMirroredStrategy)
        "BatchSplit": "data_parallel's batch split",
        "BatchConcat": "data_parallel's batch concat",
        # patches of Keras < 2.3 / TF < 1.15 internals (Node.arguments), not API
        "Node": "Keras 2 internals patch", "NodeBase": "Keras 2 internals patch",
        "Model": "Keras < 2.3 patch of keras.models.Model (Keras' own Model is used here)",
    },
    "snippets": {
        "WebServing": "a bottle HTTP server, not model code",
        "Hook": "the module wrapper behind 'from snippets import uniout' (which works here)",
    },
}
OUR_MODULES = {"backend": "kerasnlp_plus.backend", "layers": "kerasnlp_plus.layers",
               "optimizers": "kerasnlp_plus.optimizers", "snippets": "kerasnlp_plus.snippets",
               "tokenizers": "kerasnlp_plus.tokenizers"}


def _public_names(path):
    """Top-level public names a module defines (def, class, assignment), including
    those under module-level ``if``/``try`` (bert4keras picks implementations by
    Keras flavour there), not those inside functions or classes."""
    import ast

    names = []

    def visit(statements):
        for node in statements:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.append(node.name)
            elif isinstance(node, ast.Assign):
                names.extend(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)

    visit(ast.parse(pathlib.Path(path).read_text(encoding="utf-8")).body)
    return [n for n in dict.fromkeys(names) if not n.startswith("_")]


@pytest.mark.parametrize("module", sorted(OUR_MODULES))
def test_every_bert4keras_name_is_here(reference, module):
    import importlib

    names = _public_names(os.path.join(REFERENCE, "bert4keras", f"{module}.py"))
    assert len(names) > 4, names  # the reference was parsed
    ours = importlib.import_module(OUR_MODULES[module])
    excluded = NOT_PROVIDED.get(module, {})
    missing = [n for n in names if n not in excluded and not hasattr(ours, n)]
    assert not missing, f"bert4keras.{module} names missing from {OUR_MODULES[module]}: {missing}"
    stale = [n for n in excluded if n not in names or hasattr(ours, n)]
    assert not stale, f"exclusions that are no longer needed: {stale}"


def test_small_bert4keras_names():
    from kerasnlp_plus import layers, tokenizers

    assert layers.Layer().supports_masking is True
    seen = []

    class Built:
        @layers.integerize_shape
        def build(self, input_shape):
            seen.append(input_shape)

    class Dimension:  # TF1's shape entries
        def __init__(self, value):
            self.value = value

    Built().build([Dimension(None), Dimension(3)])
    assert seen == [[None, 3]]
    AdamLR = optimizers.extend_with_piecewise_linear_lr(optimizers.Adam, name="AdamLR")
    assert AdamLR.__name__ == "AdamLR" and keras.saving.get_custom_objects()["AdamLR"] is AdamLR
    assert optimizers.LionV2 is optimizers.Lion and optimizers.custom_objects["Adam"] is optimizers.Adam
    assert snippets.is_py2 is False and snippets.basestring is str
    assert issubclass(tokenizers.Tokenizer, tokenizers.TokenizerBase)
