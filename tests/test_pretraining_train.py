"""Pretraining runs through the CLI in subprocesses (logical CPU devices must be set
up before TF initializes): two replicas equal one, a killed and resumed run equals
an uninterrupted one, and the exported checkpoints reload with the same logits."""
import json
import os
import subprocess

import numpy as np
import pytest
import pretraining_runs
from pretraining_runs import MODEL_ARGS, corpus_records, run

from kerasnlp_plus.pretraining.preparation import prepare

STEPS, EVERY = 6, 2
ARGS = [
    *MODEL_ARGS, "--steps", str(STEPS), "--checkpoint-every", str(EVERY), "--batch-size", "8",
    "--learning-rate", "1e-3", "--warmup-steps", "2", "--dropout", "0", "--shuffle-buffer", "64",
    "--seed", "7", "--deterministic", "--verbose", "0",
    # No clipping: Keras applies global_clipnorm to each replica's share of the
    # gradient before the all-reduce, so clipped runs differ between 1 and 2 replicas.
    "--clipnorm", "0",
]


@pytest.fixture(scope="module")
def data_dir(shared_data, vocab_path, tmp_path_factory):
    """Dynamic-masking MLM records (seq 32) from 60 real news documents."""
    return corpus_records(shared_data, vocab_path, tmp_path_factory.mktemp("pretrain"), eval_fraction=0.05)


def launch(data, out, *extra):
    return pretraining_runs.launch(*ARGS, *extra, data=data, out=out, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)


def finish(proc, expect_rc=0):
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == expect_rc, out[-3000:]
    return out


@pytest.fixture(scope="module")
def runs(data_dir):
    data = data_dir / "data"
    # One replica (with a Hugging Face export too) and two replicas, side by side.
    one = launch(data, data_dir / "one", "--export-huggingface")
    two = launch(data, data_dir / "two", "--replicas", "2")
    out_one, out_two = finish(one), finish(two)
    # Killed abruptly after 3 steps (last backup at step 2), then the same command again.
    finish(launch(data, data_dir / "killed", "--stop-after-steps", "3"), expect_rc=75)
    out_resumed = finish(launch(data, data_dir / "killed"))
    return data_dir, {"one": out_one, "two": out_two, "resumed": out_resumed}


def weights(run_dir):
    import keras

    import kerasnlp_plus  # noqa: F401  (registers the classes)

    model = keras.models.load_model(os.path.join(run_dir, "export", "model.keras"))
    return model, [w.numpy() for w in model.weights]


def summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


def test_two_cpu_replicas_match_one(runs):
    root, logs = runs
    assert "strategy cpu_mirrored (2 replicas)" in logs["two"]
    assert "strategy cpu (1 replicas)" in logs["one"]
    s1, s2 = summary(root / "one"), summary(root / "two")
    assert s1["steps"] == s2["steps"] == STEPS
    _, w1 = weights(root / "one")
    _, w2 = weights(root / "two")
    first = keras_weights_at(root / "one", epoch=1)
    assert any(not np.allclose(a, b, atol=1e-4) for a, b in zip(first, w1))  # training moved them
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(s1["history"]["loss"], s2["history"]["loss"], rtol=1e-5)


def keras_weights_at(run_dir, epoch):
    import keras

    model, _ = weights(run_dir)
    model.load_weights(os.path.join(run_dir, "checkpoints", f"epoch-{epoch:05d}.weights.h5"))
    return [w.numpy() for w in model.weights]


def test_killed_and_resumed_run_matches_uninterrupted(runs):
    root, logs = runs
    s = summary(root / "killed")
    assert s["resumed_at_step"] == 2  # the backup of step 2; step 3 is redone
    assert s["steps"] == STEPS
    _, w1 = weights(root / "one")
    _, wk = weights(root / "killed")
    for a, b in zip(w1, wk):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(summary(root / "one")["history"]["loss"][-2:], s["history"]["loss"], rtol=1e-6)


def test_exported_checkpoints_reload_with_same_logits(runs, data_dir):
    from kerasnlp_plus.models import build_transformer_model
    from kerasnlp_plus.pretraining.pipeline import make_dataset

    root, _ = runs
    trained, _ = weights(root / "one")
    batch = next(iter(make_dataset(str(data_dir / "data"), 4, split="eval", repeat=False, shuffle_buffer=0)))
    inputs = [batch[0]["Input-Token"].numpy(), batch[0]["Input-Segment"].numpy()]
    expected = np.asarray(trained.predict(inputs, verbose=0))
    export = root / "one" / "export"
    google = build_transformer_model(str(export / "bert_config.json"), str(export / "bert_model.ckpt"),
                                     with_mlm="linear")
    hf = build_transformer_model(str(export / "hf"), str(export / "hf"), with_mlm="linear")
    probs = build_transformer_model(str(export / "bert_config.json"), str(export / "bert_model.ckpt"),
                                    with_mlm=True)
    np.testing.assert_allclose(np.asarray(google.predict(inputs, verbose=0)), expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(hf.predict(inputs, verbose=0)), expected, atol=1e-5)
    e = np.exp(expected - expected.max(-1, keepdims=True))
    np.testing.assert_allclose(np.asarray(probs.predict(inputs, verbose=0)), e / e.sum(-1, keepdims=True),
                               atol=1e-6)
    assert os.path.exists(export / "vocab.txt")
    ev = summary(root / "one")["eval"]
    assert 0 <= ev["accuracy"] <= 1 and ev["scored_positions"] > 0


def test_plm_with_lamb_and_gradient_accumulation(shared_data, vocab_path, tmp_path):
    """Permutation LM records (orders drawn in the pipeline), Lamb, 2 accumulation steps:
    4 steps are 2 optimizer updates; the export reloads as a 'plm' model."""
    from kerasnlp_plus.models import build_transformer_model

    lines = (shared_data / "corpus" / "chnsenticorp.txt").read_text(encoding="utf-8").splitlines()[:40]
    (tmp_path / "docs.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    prepare([str(tmp_path / "docs.txt")], str(tmp_path / "data"), str(vocab_path), task="plm", seq_len=32,
            simplified_vocab=True, progress=False)
    args = [a for a in ARGS]
    args[args.index("--steps") + 1] = "4"
    proc = run(*args, "--optimizer", "lamb", "--grad-accum", "2", data=tmp_path / "data", out=tmp_path / "run")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    s = summary(tmp_path / "run")
    assert (s["steps"], s["optimizer_updates"]) == (4, 2)
    export = tmp_path / "run" / "export"
    model = build_transformer_model(str(export / "bert_config.json"), str(export / "bert_model.ckpt"),
                                    application="plm", with_mlm="linear")
    assert [i.name for i in model.inputs] == ["Input-Token", "Input-Segment", "Input-Order"]
