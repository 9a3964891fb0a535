"""The fine-tuning examples under the strategy selection of pretraining (issue 13
item 3): ``--replicas 2`` (two logical CPU devices + MirroredStrategy, in a fresh
process because the devices must be set up before TF starts) ends with the weights
of one replica.

Both examples run with their default training step (the autotitle example's head at
the title positions only, KgCLUE's full head), dropout 0 and a training set that is
not a multiple of the batch, so the last global batch of each pass is filled with
weight-0 rows. What makes the runs equal (``kerasnlp_plus.tasks.seq2seq``): global
batches padded to their own longest row before Keras splits them over the replicas,
shuffling from stateless seeds, and weights normalized over the global batch.
"""
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


def script_args(script, vocab_path, shared_data):
    common = ["--scratch", "--vocab", str(vocab_path), "--limit-train", "30", "--limit-valid", "2", "--epochs", "1",
              "--batch-size", "8", "--lr", "3e-3", "--verbose", "0", "--show", "0", "--dropout", "0", "--seed", "3"]
    if script == "seq2seq_autotitle.py":
        return common + ["--max-source-len", "48", "--max-target-len", "8", "--beam", "1"]
    kgclue = shared_data / "kgclue"
    return common + ["--data-dir", str(kgclue), "--kb", str(kgclue / "Knowledge_subset_from_answers.txt"),
                     "--limit-kb", "500", "--no-test", "--max-question-len", "32", "--max-key-len", "32"]


def test_two_cpu_replicas_end_with_the_weights_of_one(vocab_path, shared_data, tmp_path):
    runs = {(script, n): [sys.executable, os.path.join(REPO, "examples", script),
                          *script_args(script, vocab_path, shared_data), "--output", str(tmp_path / f"{script}-r{n}"),
                          *(["--replicas", "2"] if n == 2 else [])]
            for script in ("seq2seq_autotitle.py", "kgclue_qa.py") for n in (1, 2)}
    procs = {key: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
             for key, cmd in runs.items()}
    logs = {}
    try:
        for key, p in procs.items():
            logs[key], _ = p.communicate(timeout=400)
            assert p.returncode == 0, f"{key}: {logs[key][-3000:]}"
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    for script in ("seq2seq_autotitle.py", "kgclue_qa.py"):
        assert "strategy: cpu_mirrored (2 replicas" in logs[script, 2] and "strategy:" not in logs[script, 1]
        one, two = (tmp_path / f"{script}-r{n}" for n in (1, 2))
        r1, r2 = (json.loads((d / "results.json").read_text(encoding="utf-8")) for d in (one, two))
        assert (r1["replicas"], r2["replicas"]) == (1, 2)
        assert len(r1["batch_losses"]) == len(r2["batch_losses"]) == 4  # 30 examples, global batch 8
        np.testing.assert_allclose(r2["batch_losses"], r1["batch_losses"], rtol=1e-5, err_msg=script)
        np.testing.assert_allclose(r2["valid_loss_before"], r1["valid_loss_before"], rtol=1e-5, err_msg=script)
        np.testing.assert_allclose(r2["valid_loss_after"], r1["valid_loss_after"], rtol=1e-5, err_msg=script)
        assert r1["valid_loss_after"] < r1["valid_loss_before"]  # it trained
        w1, w2 = h5_arrays(one / "best.weights.h5"), h5_arrays(two / "best.weights.h5")
        assert sorted(w1) == sorted(w2) and len(w1) > 20
        for name in w1:
            np.testing.assert_allclose(w2[name], w1[name], atol=1e-5, rtol=0, err_msg=f"{script}: {name}")


def test_batch_size_must_split_over_the_replicas():
    from kerasnlp_plus.pretraining.strategy import check_global_batch

    class TwoReplicas:
        num_replicas_in_sync = 2

    check_global_batch(8, TwoReplicas())
    with pytest.raises(ValueError, match="--batch-size 7 is not divisible by the 2 replicas"):
        check_global_batch(7, TwoReplicas())
