"""The copy mechanism (``with_copy=True``, ``layers/copy.py``): its distribution
against a NumPy pointer-generator written from See et al. (2017), the UniLM
visibility properties with it, the training view, ``.keras`` files, checkpoints,
and every decoding path against the uncached bert4keras decoder."""
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from generation_fixtures import END, MAXLEN, assert_generator_matches_uncached, padded, tiny_model
from generation_fixtures import abstracts, tokenizer  # noqa: F401  (fixtures)
from test_generation_program import CHECK

from kerasnlp_plus.checkpoints import has_copy_weights
from kerasnlp_plus.generation import Generator
from kerasnlp_plus.models import build_transformer_model

TINY = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            dropout_rate=0.0, attention_dropout_rate=0.0)
# [CLS] source [SEP] target [SEP], padding; source tokens 5..9 (7 twice), target 20, 21
TOKENS = np.array([[2, 5, 6, 7, 7, 9, 3, 20, 21, 3, 0, 0]])
SEGMENTS = np.array([[0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0]])


def copy_model(seed=1, **kw):
    keras.utils.set_random_seed(seed)
    model = build_transformer_model(None, application="unilm", with_mlm=True, with_copy=True, **{**TINY, **kw})
    # a gate that mixes both distributions visibly
    model.copy_mechanism.gate_kernel.assign(np.random.default_rng(seed).normal(0, 0.5, (16, 1)).astype("float32"))
    c = model.copy_mechanism  # the selective-read bonus counts too
    c.continuation_kernel.assign(np.random.default_rng(seed + 1).normal(0, 0.5, (16, 1)).astype("float32"))
    c.continuation_bias.assign([1.5])
    return model


def reference_pointer_generator(model, hidden, vocab_probs, token_ids, segment_ids):
    """p = g p_vocab + (1 - g) sum_{s: x_s = w} a_s over the source tokens, with
    a = softmax(q.k / sqrt(d) + c_t [x_{s-1} = x_t]), c_t = u.h_t + e (NumPy)."""
    c = model.copy_mechanism
    w = {v.path.split("/")[-1]: np.asarray(v, np.float64) for v in c.weights}
    h = np.asarray(hidden, np.float64)
    q = h @ w["query_kernel"] + w["query_bias"]
    k = h @ w["key_kernel"] + w["key_bias"]
    out = np.zeros(vocab_probs.shape)
    for b in range(h.shape[0]):
        source = [s for s in range(h.shape[1]) if token_ids[b, s] != 0 and segment_ids[b, s] == 0]
        for t in range(h.shape[1]):
            scores = np.array([q[b, t] @ k[b, s] / np.sqrt(c.key_size)
                               + (h[b, t] @ w["continuation_kernel"] + w["continuation_bias"])[0]
                               * (s > 0 and token_ids[b, s - 1] == token_ids[b, t])
                               for s in source])
            a = np.exp(scores - scores.max())
            a /= a.sum()
            g = 1 / (1 + np.exp(-(h[b, t] @ w["gate_kernel"] + w["gate_bias"])[0]))
            out[b, t] = g * vocab_probs[b, t]
            for s, weight in zip(source, a):
                out[b, t, token_ids[b, s]] += (1 - g) * weight
    return out


def test_distribution_equals_the_pointer_generator_formula():
    model = copy_model()
    probs = np.asarray(model([TOKENS, SEGMENTS]))
    hidden_model = keras.Model(model.inputs, model._sequence_output)
    hidden = np.asarray(hidden_model([TOKENS, SEGMENTS]))
    vocab = np.asarray(model.mlm_head(hidden))
    expected = reference_pointer_generator(model, hidden, vocab, TOKENS, SEGMENTS)
    valid = TOKENS[0] != 0
    np.testing.assert_allclose(probs[0, valid], expected[0, valid], atol=1e-6)
    np.testing.assert_allclose(probs[0, valid].sum(-1), 1.0, atol=1e-5)
    # the copy part lands on source tokens only: elsewhere p is g * p_vocab < p_vocab
    others = [v for v in range(60) if v not in (2, 3, 5, 6, 7, 9)]
    assert np.all(probs[0, 7, others] < vocab[0, 7, others])
    assert np.all(probs[0, 7, [5, 6, 7, 9]] > vocab[0, 7, [5, 6, 7, 9]] * 0.99)


def test_selective_read_moves_the_pointer_one_position_on():
    """With a large continuation bonus, after writing source token x the pointer
    copies the token that follows x in the source."""
    model = copy_model()
    model.copy_mechanism.continuation_kernel.assign(np.zeros((16, 1), "float32"))
    model.copy_mechanism.continuation_bias.assign([30.0])
    model.copy_mechanism.gate_bias.assign([-30.0])  # copy only
    # position 7 holds target token 6 (the source's second token): next comes 7
    tokens = TOKENS.copy()
    tokens[0, 7] = 6
    probs = np.asarray(model([tokens, SEGMENTS]))
    assert probs[0, 7, 7] > 0.99
    tokens[0, 7] = 9  # followed by [SEP] (3) in the source
    assert np.asarray(model([tokens, SEGMENTS]))[0, 7, 3] > 0.99


def test_unilm_source_never_sees_the_target_and_no_position_sees_the_future():
    model = copy_model()
    base = np.asarray(model([TOKENS, SEGMENTS]))
    changed_last = TOKENS.copy()
    changed_last[0, 8] = 40  # the second target token
    out = np.asarray(model([changed_last, SEGMENTS]))
    np.testing.assert_array_equal(out[0, :8], base[0, :8])  # source and the first target position
    assert np.abs(out[0, 8] - base[0, 8]).max() > 1e-4  # the position itself does see it
    changed_source = TOKENS.copy()
    changed_source[0, 2] = 41
    out = np.asarray(model([changed_source, SEGMENTS]))
    assert np.abs(out[0, 7, 41] - base[0, 7, 41]) > 1e-4  # the new source token can be copied


def test_loss_positions_view_keras_file_and_training():
    model = copy_model()
    full = np.asarray(model([TOKENS, SEGMENTS]))
    view = model.loss_positions_model()
    picked = np.asarray(view([TOKENS, SEGMENTS, np.array([[6, 7, 8]])]))
    np.testing.assert_allclose(picked, full[:, [6, 7, 8]], atol=1e-7)
    view.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    before = [np.asarray(v).copy() for v in model.copy_mechanism.weights]
    copying = TOKENS.copy()
    copying[0, 7:9] = [6, 7]  # a title that copies the source's "6 7" (the selective read applies)
    view.fit([copying, SEGMENTS, np.array([[6, 7, 8]])], np.array([[6, 7, 3]]), epochs=2, verbose=0)
    moved = [np.abs(np.asarray(v) - b).max() for v, b in zip(model.copy_mechanism.weights, before)]
    assert min(moved) > 0, moved  # every copy weight is trained through the functional graph


def test_keras_file_round_trip(tmp_path):
    model = copy_model()
    model.save(tmp_path / "copy.keras")
    loaded = keras.saving.load_model(tmp_path / "copy.keras")
    assert loaded.with_copy
    np.testing.assert_array_equal(np.asarray(loaded([TOKENS, SEGMENTS])), np.asarray(model([TOKENS, SEGMENTS])))


def test_checkpoint_loads_into_a_model_with_a_copy_head(tmp_path):
    from kerasnlp_plus.checkpoints import save_huggingface

    plain = build_transformer_model(None, application="unilm", with_mlm=True, **TINY)
    save_huggingface(plain, tmp_path / "hf")
    assert not has_copy_weights(tmp_path / "hf")
    model = build_transformer_model(str(tmp_path / "hf"), str(tmp_path / "hf"), application="unilm",
                                    with_mlm=True, with_copy=True)
    for name in ("Embedding-Token", "Transformer-1", "MLM-Dense"):
        for a, b in zip(plain.get_layer(name).weights, model.get_layer(name).weights):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # a gate at -inf leaves exactly the checkpoint's MLM distribution
    model.copy_mechanism.gate_bias.assign([50.0])
    np.testing.assert_allclose(np.asarray(model([TOKENS, SEGMENTS])), np.asarray(plain([TOKENS, SEGMENTS])),
                               atol=1e-6)


def test_bad_combinations_name_the_argument():
    with pytest.raises(ValueError, match="with_copy"):
        build_transformer_model(None, application="lm", with_copy=True, **TINY)
    with pytest.raises(ValueError, match="with_copy"):
        build_transformer_model(None, application="unilm", with_mlm="linear", with_copy=True, **TINY)
    model = copy_model()
    with pytest.raises(ValueError, match="copy_context"):
        model.output_probabilities(np.zeros((1, 1, 16), "float32"))


@pytest.fixture(scope="module")
def copy_unilm():
    model = tiny_model("unilm", end_bias=9.0, with_copy=True)
    model.copy_mechanism.gate_bias.assign([-1.0])  # mostly copying: the pointer decides
    model.copy_mechanism.continuation_bias.assign([3.0])  # the fed token steers the pointer
    return model


@pytest.fixture(scope="module")
def copy_sources(tokenizer, abstracts):  # noqa: F811
    return [tokenizer.encode(text, maxlen=m) for text, m in zip(abstracts[:3], (40, 23, 51))]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_generator_equals_uncached_decoder(copy_unilm, copy_sources, jit_compile):
    assert_generator_matches_uncached(copy_unilm, copy_sources, jit_compile)


def test_host_loop_and_full_cache_equal_the_compiled_lean_program(copy_unilm, copy_sources):
    lean = Generator(copy_unilm, END, MAXLEN, jit_compile=False)
    full = Generator(copy_unilm, END, MAXLEN, jit_compile=False, lean_cache=False)
    host = Generator(copy_unilm, END, MAXLEN, jit_compile=False)
    allow_all = lambda i, prefix: None  # noqa: E731  (a Python callback: the host loop)
    for topk in (1, 3):
        expected = lean.beam_search(padded(copy_sources), topk=topk)
        assert full.beam_search(padded(copy_sources), topk=topk) == expected
        assert host.beam_search(padded(copy_sources), topk=topk, prefix_allowed_tokens=allow_all) == expected
    # most generated tokens are copied from their own source
    outputs = lean.beam_search(padded(copy_sources), topk=3)
    copied = sum(t in src for out, (src, _) in zip(outputs, copy_sources) for t in out if t != END)
    assert copied >= 0.8 * sum(t != END for out in outputs for t in out)


def test_sampling_with_copy_at_top_k_1_is_greedy(copy_unilm, copy_sources):
    """The compiled sampler reads the pointer too: with top-k 1 it is greedy decoding."""
    generator = Generator(copy_unilm, END, MAXLEN, jit_compile=False)
    greedy = generator.beam_search(padded(copy_sources), topk=1)
    sampled = generator.random_sample(padded(copy_sources), n=2, topk=1, seed=3)
    assert sampled == [[out, out] for out in greedy]


def test_export_with_copy_reproduces_outputs_without_the_package(copy_unilm, copy_sources, tmp_path):
    generator = Generator(copy_unilm, END, MAXLEN, jit_compile=False)
    path = generator.export(tmp_path / "decoder", topk=3)
    token_ids, segment_ids = padded(copy_sources)
    run = subprocess.run(
        [sys.executable, "-c", CHECK, path],
        input=json.dumps({"token_ids": token_ids.tolist(), "segment_ids": segment_ids.tolist()}),
        capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONNOUSERSITE": "1"}, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    served = json.loads(run.stdout.strip().splitlines()[-1])
    expected = generator.beam_search(padded(copy_sources), topk=3)
    assert [r[:n] for r, n in zip(served["ids"], served["lengths"])] == expected


@pytest.mark.parametrize("naming", ["google", "huggingface"])
def test_checkpoint_round_trip_keeps_the_pointer(naming, tmp_path):
    from kerasnlp_plus.checkpoints import save_google_checkpoint, save_huggingface

    model = copy_model()
    if naming == "google":
        save_google_checkpoint(model, str(tmp_path / "bert_model.ckpt"))
        config, checkpoint = str(tmp_path / "bert_config.json"), str(tmp_path / "bert_model.ckpt")
    else:
        save_huggingface(model, tmp_path / "hf")
        config = checkpoint = str(tmp_path / "hf")
    assert has_copy_weights(checkpoint)
    loaded = build_transformer_model(config, checkpoint, application="unilm", with_mlm=True, with_copy=True)
    np.testing.assert_array_equal(np.asarray(loaded([TOKENS, SEGMENTS])), np.asarray(model([TOKENS, SEGMENTS])))
    # a model without the pointer reads the same file (the extra variables are not its)
    plain = build_transformer_model(config, checkpoint, application="unilm", with_mlm=True)
    np.testing.assert_array_equal(np.asarray(plain.mlm_bias.bias), np.asarray(model.mlm_bias.bias))


def test_pretraining_with_copy_exports_a_model_that_decodes(shared_data, vocab_path, tmp_path):
    """``pretrain.py --copy`` on UniLM pair records: it trains the pointer (its weights
    move), and the Hugging Face export rebuilds the same model."""
    from pretraining_runs import MODEL_ARGS, run

    from kerasnlp_plus.pretraining.preparation import prepare

    with open(shared_data / "csl" / "csl_title_dev.tsv", encoding="utf-8") as f:
        pairs = [line.rstrip("\n").split("\t") for _, line in zip(range(40), f)]
    (tmp_path / "pairs.tsv").write_text("".join(f"{t}\t{a[:60]}\n" for t, a in pairs), encoding="utf-8")
    prepare([str(tmp_path / "pairs.tsv")], str(tmp_path / "data"), str(vocab_path), task="unilm", seq_len=64,
            doc_format="pairs", simplified_vocab=True, progress=False)
    out = tmp_path / "run"
    done = run(*MODEL_ARGS, "--steps", "4", "--checkpoint-every", "2", "--batch-size", "8", "--copy",
               "--gather-positions", "--learning-rate", "1e-2", "--export-huggingface", "--verbose", "0",
               data=tmp_path / "data", out=out)
    assert done.returncode == 0, done.stderr[-3000:]
    trained = keras.saving.load_model(out / "export" / "model.keras")
    assert trained.with_copy
    hf = build_transformer_model(str(out / "export" / "hf"), str(out / "export" / "hf"), application="unilm",
                                 with_mlm=True, with_copy=True)
    ids = np.array([[2, 50, 60, 70, 3, 80, 3]])
    segs = np.array([[0, 0, 0, 0, 0, 1, 1]])
    np.testing.assert_allclose(np.asarray(hf([ids, segs])), np.asarray(trained([ids, segs])), atol=1e-6)
    keras.utils.set_random_seed(0)  # the pointer's initial weights are not its trained ones
    fresh = build_transformer_model(str(out / "export" / "hf"), None, application="unilm", with_mlm=True,
                                    with_copy=True)
    assert np.abs(np.asarray(fresh.copy_mechanism.gate_bias) - np.asarray(trained.copy_mechanism.gate_bias)).max() > 0
