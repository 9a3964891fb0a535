"""The fine-tuning examples under the strategy selection of pretraining (issue 13
item 3): ``--replicas 2`` (two logical CPU devices + MirroredStrategy, in a fresh
process because the devices must be set up before TF starts) builds the same model,
evaluates the same loss and trains.

NOT equal weights after training: distributing these padded, shuffled
``from_generator`` batches, tf.data re-batches per replica (each replica pads its own
half) and draws another shuffle order, so 2 replicas see other batches than 1
(measured: weights 0.02 apart after 4 steps). Making that exact needs a
replica-independent input pipeline, as pretraining has; see README "Known limits"."""
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONPATH=REPO)
ENV.pop("TF_CONFIG", None)


def h5_arrays(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


@pytest.mark.parametrize("script", ["seq2seq_autotitle.py"])
def test_two_cpu_replicas_build_the_same_model_and_train(script, vocab_path, tmp_path):
    args = ["--scratch", "--vocab", str(vocab_path), "--limit-train", "32", "--limit-valid", "4", "--epochs", "1",
            "--batch-size", "8", "--lr", "3e-3", "--max-source-len", "48", "--max-target-len", "8",
            "--verbose", "0", "--show", "0", "--dropout", "0", "--seed", "3"]
    procs = {n: subprocess.Popen([sys.executable, os.path.join(REPO, "examples", script), *args,
                                  "--output", str(tmp_path / f"r{n}"), *(["--replicas", "2"] if n == 2 else [])],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
             for n in (1, 2)}
    logs = {}
    try:
        for n, p in procs.items():
            logs[n], _ = p.communicate(timeout=400)
            assert p.returncode == 0, logs[n][-3000:]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    assert "strategy: cpu_mirrored (2 replicas" in logs[2] and "strategy:" not in logs[1]
    one, two = h5_arrays(tmp_path / "r1" / "best.weights.h5"), h5_arrays(tmp_path / "r2" / "best.weights.h5")
    r1, r2 = (json.loads((tmp_path / f"r{n}" / "results.json").read_text(encoding="utf-8")) for n in (1, 2))
    # Same initial weights under the strategy: the same validation loss before training
    # (to 1e-4, not 1e-5: each replica pads its own half and the replicas' means are averaged).
    np.testing.assert_allclose(r1["valid_loss_before"], r2["valid_loss_before"], rtol=1e-4)
    # Both trained (4 steps of a global batch of 8).
    assert r2["valid_loss_after"] < r2["valid_loss_before"] and r1["valid_loss_after"] < r1["valid_loss_before"]
    assert len(r2["batch_losses"]) == len(r1["batch_losses"]) == 4
    assert sorted(one) == sorted(two) and all(np.isfinite(v).all() for v in two.values())
