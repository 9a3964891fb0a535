"""Smoke test of examples/long_text_mlm.py on a tiny random model over the real vocab
(run as a user runs it: a fresh process)."""
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_long_text_mlm_runs_and_hierarchical_is_exact_within_trained_length(tmp_path, shared_data):
    from kerasnlp_plus.checkpoints import save_huggingface
    from kerasnlp_plus.models import build_transformer_model

    model = build_transformer_model(None, vocab_size=21128, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                                    with_mlm=True)
    save_huggingface(model, tmp_path)
    shutil.copy(shared_data / "vocab" / "vocab.txt", tmp_path / "vocab.txt")
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([
        sys.executable, str(REPO / "examples" / "long_text_mlm.py"),
        "--model-dir", str(tmp_path), "--corpus", str(shared_data / "corpus" / "CLUECorpusSmall_sampled.txt"),
        "--lengths", "64", "160", "--train-steps", "2", "--eval-sequences", "3", "--batch-size", "3",
        "--output", str(tmp_path / "results.json"),
    ], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["length"] for r in results] == [64, 160]
    for r in results:
        assert r["masked_tokens"] > 0 and math.isfinite(r["train_loss_last"])
        for key in ("truncated", "hierarchical_before", "hierarchical_after"):
            assert 0.0 <= r[key] <= 1.0
    # At the trained length both readings see the same positions and tokens.
    assert results[0]["hierarchical_before"] == results[0]["truncated"]
