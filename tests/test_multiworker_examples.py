"""The fine-tuning examples under the strategy selection of pretraining (issue 13
item 3): ``--replicas 2`` (two logical CPU devices + MirroredStrategy, in a fresh
process because the devices must be set up before TF starts) trains the same
weights as one replica after a few steps. Dropout 0: its masks depend on each
replica's batch shape."""
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
def test_two_cpu_replicas_train_the_weights_of_one(script, vocab_path, tmp_path):
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
    assert sorted(one) == sorted(two) and len(one) > 20
    for k in one:
        np.testing.assert_allclose(one[k], two[k], atol=1e-5, rtol=1e-5, err_msg=k)
    # Training moved the weights (4 steps), by the same amount on both.
    r1, r2 = (json.loads((tmp_path / f"r{n}" / "results.json").read_text(encoding="utf-8")) for n in (1, 2))
    assert r1["valid_loss_after"] < r1["valid_loss_before"]
    np.testing.assert_allclose(r1["valid_loss_after"], r2["valid_loss_after"], rtol=1e-5)
