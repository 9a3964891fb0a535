"""The TPU code path on a CPU (issue 13 item 4), everything but the TPU resolver:
data and output on a non-local ``tf.io.gfile`` file system (``ram://``, standing in
for ``gs://``), fixed batch shapes (``drop_remainder``), ``steps_per_execution``,
the ``mixed_bfloat16`` policy, the state saved with ``state.json`` as the commit
marker (no atomic rename on object stores) and resumed from there."""
import json
import os

import keras
import pytest
import tensorflow as tf

from kerasnlp_plus.pretraining.preparation import prepare
from kerasnlp_plus.pretraining.state import find_state

SIZE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64)


@pytest.fixture()
def bf16_policy():
    old = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(old)  # run_pretraining sets the global policy


def copy_to(local, remote):
    tf.io.gfile.makedirs(remote)
    # Sorted: TF's ram:// file system loses "a" when "a.json" was written before it.
    for name in sorted(os.listdir(local)):
        tf.io.gfile.copy(os.path.join(local, name), f"{remote}/{name}", overwrite=True)


def test_tpu_path_on_cpu_with_gfile_paths(shared_data, vocab_path, tmp_path, bf16_policy):
    from kerasnlp_plus.pretraining.pipeline import make_dataset
    from kerasnlp_plus.pretraining.training import run_pretraining

    lines = (shared_data / "corpus" / "chnsenticorp.txt").read_text(encoding="utf-8").splitlines()[:40]
    (tmp_path / "docs.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    prepare([str(tmp_path / "docs.txt")], str(tmp_path / "data"), str(vocab_path), task="mlm", seq_len=32,
            simplified_vocab=True, dynamic_masking=True, progress=False)
    data, out = "ram://kerasnlp_plus_tpu/data", "ram://kerasnlp_plus_tpu/run"
    copy_to(tmp_path / "data", data)

    # Fixed shapes: every batch is exactly the global batch, as XLA on a TPU requires.
    spec = make_dataset(data, 8).element_spec
    assert spec[0]["Input-Token"].shape.as_list() == [8, 32] and spec[1].shape.as_list() == [8, 32]

    kwargs = dict(steps=4, batch_size=8, checkpoint_every=2, size=SIZE, learning_rate=1e-3, warmup_steps=1,
                  shuffle_buffer=64, seed=3, mixed_precision="mixed_bfloat16", steps_per_execution=2, verbose=0)
    net, summary = run_pretraining(data, out, tf.distribute.get_strategy(), **kwargs)
    assert summary["steps"] == 4 and summary["resumed_at_step"] == 0
    assert net.dtype_policy.name == "mixed_bfloat16" and net.steps_per_execution == 2
    gfile = tf.io.gfile
    for name in ("run_options.json", "summary.json", "history.csv", "backup/step-000000004/state.json",
                 "backup/step-000000004/model.weights.h5", "checkpoints/epoch-00002.weights.h5",
                 "export/model.keras", "export/bert_config.json", "export/bert_model.ckpt.index"):
        assert gfile.exists(f"{out}/{name}"), name
    assert not gfile.exists(f"{out}/backup/step-000000002")  # the older state was removed
    assert json.loads(gfile.GFile(f"{out}/summary.json").read())["steps"] == 4

    # An unfinished copy (weights but no state.json yet) is skipped, not loaded.
    gfile.makedirs(f"{out}/backup/step-000000006")
    gfile.copy(f"{out}/backup/step-000000004/model.weights.h5", f"{out}/backup/step-000000006/model.weights.h5")
    assert find_state(f"{out}/backup")[0] == 4
    # The same call again resumes from the state on the gfile path (nothing left to train).
    net2, again = run_pretraining(data, out, tf.distribute.get_strategy(), **kwargs)
    assert again["resumed_at_step"] == 4 and again["steps"] == 4
    for a, b in zip(net.weights, net2.weights):
        assert (a.numpy() == b.numpy()).all(), a.path
