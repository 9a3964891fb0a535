"""Running ``pretraining/pretrain.py`` from the tests: the command, its environment, the
small real-corpus records every run trains on, and the weights a run leaves behind.
Shared by test_pretraining_train.py, test_pretraining_faults.py and test_multiworker.py
(each passes its own options)."""
import os
import subprocess
import sys

import h5py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN = os.path.join(REPO, "pretraining", "pretrain.py")
# This checkout's package, CPU only, and no cluster unless a test sets TF_CONFIG itself.
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONPATH=REPO)
ENV.pop("TF_CONFIG", None)
# The model every test run trains: small enough for seconds per step on a CPU.
MODEL_ARGS = ["--hidden-size", "32", "--num-layers", "2", "--num-heads", "2", "--intermediate-size", "64",
              "--max-position", "64"]


def corpus_records(shared_data, vocab_path, root, **prepare_options):
    """Dynamic-masking MLM records (seq 32, simplified vocab) of the first 60 real news
    documents of the shared corpus (400 characters each at most), in ``root/data``;
    the documents are in ``root/docs.txt``. Returns ``root``."""
    from kerasnlp_plus.pretraining.preparation import prepare

    lines = []
    with open(shared_data / "corpus" / "CLUECorpusSmall_sampled.txt", encoding="utf-8") as f:
        for line in f:
            lines.append(line.strip()[:400])
            if len(lines) == 60:
                break
    (root / "docs.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    prepare([str(root / "docs.txt")], str(root / "data"), str(vocab_path), task="mlm", seq_len=32,
            simplified_vocab=True, dynamic_masking=True, progress=False, **prepare_options)
    return root


def pretrain_command(*args, data=None, out=None):
    """``python pretraining/pretrain.py [--data DATA] [--output OUT] ARGS...``."""
    return [sys.executable, PRETRAIN, *([] if data is None else ["--data", str(data)]),
            *([] if out is None else ["--output", str(out)]), *args]


def launch(*args, data=None, out=None, env=None, **popen_options):
    """Start a pretraining run (``env``: :data:`ENV` plus these variables)."""
    return subprocess.Popen(pretrain_command(*args, data=data, out=out), env=dict(ENV, **(env or {})),
                            **popen_options)


def run(*args, data=None, out=None, timeout=300):
    """Run pretraining to the end; its output captured as text."""
    return subprocess.run(pretrain_command(*args, data=data, out=out), capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def h5_arrays(path):
    """Every dataset of an HDF5 file (a saved state's weights) by its path."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def state_weights(run_dir, step):
    """The weights of the state a run saved at ``step``."""
    from kerasnlp_plus.pretraining.state import WEIGHTS_NAME

    return h5_arrays(os.path.join(run_dir, "backup", f"step-{step:09d}", WEIGHTS_NAME))
