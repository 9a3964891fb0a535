"""Crash-safe pretraining state: what a killed run resumes from.

A saved state is one folder ``backup/step-NNNNNNNNN/`` holding

- ``model.weights.h5``: the model's weights and the optimizer's state
  (``Model.save_weights`` of the compiled model);
- ``state.json``: the step, the state of every dropout seed generator, and the size
  and SHA-256 of the weights file. It is written last.

The folder is first written as ``backup/.tmp-step-NNNNNNNNN-PID/``, both files are
flushed to disk, and one ``os.rename`` gives it its final name; only then are the
older states removed. A process killed at any instant therefore leaves the previous
state whole (plus a temporary folder, removed on the next save or ignored on load),
or the new one whole. A final folder whose files do not match its ``state.json``
(damaged afterwards, e.g. by hand or by the disk) is reported by name, never loaded.

On storage without an atomic rename (``gs://`` and other ``tf.io.gfile`` paths, as on
a TPU) the state is written locally as above, then copied into ``step-N/`` with
``state.json`` copied last: a folder without ``state.json`` is an unfinished copy and
is skipped on load, so there too a kill leaves the previous state or the new one.

The dropout seed generators are Keras variables outside ``save_weights``; saving
their state is what makes kill + resume exact with dropout on (the pipeline's masks
are already a pure function of ``(seed, example index)``).

The run's options live in ``run_options.json`` beside ``backup/``: a rerun with
different data, batch size, schedule or model refuses, listing the differences.
"""
import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile

from kerasnlp_plus.utils import atomic_path, atomic_write_text, file_sha256

logger = logging.getLogger("kerasnlp_plus.pretraining")

STATE_FORMAT = 1
WEIGHTS_NAME = "model.weights.h5"
STATE_NAME = "state.json"
OPTIONS_NAME = "run_options.json"
_FINAL = re.compile(r"^step-(\d{9})$")
_TEMP_PREFIX = ".tmp-step-"


class StateError(RuntimeError):
    """A saved state that cannot be used (damaged, or from other options)."""


class DiskFullError(OSError):
    """The disk filled up while the run wrote its state or outputs."""


def is_disk_full(exc):
    """True for ENOSPC/EDQUOT however it is wrapped (h5py and TF put errno in the text)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc)
        if "No space left on device" in text or "errno = 28" in text or "Disk quota exceeded" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path):
    with contextlib.suppress(OSError):  # not every file system lets a folder be fsync'ed
        _fsync_file(path)


def seed_generator_variables(net):
    """The state variables of the model's seed generators (dropout), in a stable order."""
    return [v for v in net.variables if v.path.endswith("seed_generator_state")]


def state_dir(backup_dir, step):
    return os.path.join(backup_dir, f"step-{int(step):09d}")


def is_remote(path):
    """A ``tf.io.gfile`` path that is not a local file (``gs://``, ``ram://``, ...)."""
    return "://" in os.fspath(path)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _listdir(folder):
    if is_remote(folder):
        gfile = _gfile()
        return [n.rstrip("/") for n in gfile.listdir(folder)] if gfile.isdir(folder) else []
    return os.listdir(folder) if os.path.isdir(folder) else []


def _save_state_remote(net, backup_dir, step, extra):
    gfile = _gfile()
    local = tempfile.mkdtemp(prefix="kerasnlp_plus-state-")
    try:
        folder = save_state(net, local, step, extra)
        final = state_dir(backup_dir, step)
        if gfile.exists(final):
            gfile.rmtree(final)
        gfile.makedirs(final)
        gfile.copy(os.path.join(folder, WEIGHTS_NAME), f"{final}/{WEIGHTS_NAME}", overwrite=True)
        gfile.copy(os.path.join(folder, STATE_NAME), f"{final}/{STATE_NAME}", overwrite=True)  # the commit
    finally:
        shutil.rmtree(local, ignore_errors=True)
    for name in _listdir(backup_dir):
        m = _FINAL.match(name)
        if m and int(m.group(1)) < int(step):
            gfile.rmtree(f"{backup_dir}/{name}")
    return final


def save_state(net, backup_dir, step, extra=None):
    """Write the state of ``step`` into ``backup_dir`` (see the module doc); returns
    its folder. On any error (a full disk included) the temporary folder is removed
    and the previous state is left as it was."""
    if is_remote(backup_dir):
        return _save_state_remote(net, backup_dir, step, extra)
    os.makedirs(backup_dir, exist_ok=True)
    final = state_dir(backup_dir, step)
    tmp = os.path.join(backup_dir, f"{_TEMP_PREFIX}{int(step):09d}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
        weights = os.path.join(tmp, WEIGHTS_NAME)
        net.save_weights(weights)
        _fsync_file(weights)
        state = {
            "format": STATE_FORMAT,
            "step": int(step),
            "seed_generators": [[int(x) for x in v.numpy().reshape(-1)] for v in seed_generator_variables(net)],
            "weights_bytes": os.path.getsize(weights),
            "weights_sha256": file_sha256(weights),
        }
        state.update(extra or {})
        atomic_write_text(os.path.join(tmp, STATE_NAME), json.dumps(state, indent=1), fsync=True)
        _fsync_dir(tmp)
        if os.path.exists(final):  # a rerun saving the same step again (e.g. after --force-new)
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(backup_dir)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(e):
            raise DiskFullError(
                errno.ENOSPC,
                f"disk full while saving the state of step {step} into {backup_dir}; "
                f"the previous state there is intact: free some space and rerun the same command to resume",
            ) from e
        raise
    for name in os.listdir(backup_dir):  # older states and temporary folders of killed saves
        path = os.path.join(backup_dir, name)
        m = _FINAL.match(name)
        if (m and int(m.group(1)) < int(step)) or name.startswith(_TEMP_PREFIX):
            shutil.rmtree(path, ignore_errors=True)
    return final


def find_state(backup_dir):
    """``(step, folder, state dict)`` of the newest saved state, or None when there is
    none. Raises ``StateError`` naming the file at fault when it is damaged."""
    gfile = _gfile()
    remote = is_remote(backup_dir)
    names = sorted((n for n in _listdir(backup_dir) if _FINAL.match(n)), reverse=True)
    if remote:  # a folder without state.json is an unfinished copy (see the module doc)
        names = [n for n in names if gfile.exists(f"{backup_dir}/{n}/{STATE_NAME}")]
    if not names:
        legacy = [n for n in ("latest.weights.h5", "training_metadata.json")
                  if gfile.exists(os.path.join(backup_dir, n))]
        if legacy:
            raise StateError(
                f"{backup_dir} holds a state in the old, non-atomic format ({', '.join(legacy)}), which cannot "
                "be checked for damage; rerun with --force-new to start over"
            )
        return None
    folder = os.path.join(backup_dir, names[0])
    state_path = os.path.join(folder, STATE_NAME)
    weights = os.path.join(folder, WEIGHTS_NAME)
    advice = (f"delete {folder} to resume from an older state" if len(names) > 1
              else "rerun with --force-new to start over")
    try:
        with gfile.GFile(state_path, "r") as f:
            state = json.loads(f.read())
    except Exception as e:  # tf.errors.NotFoundError is not an OSError
        raise StateError(f"saved state {state_path} is missing or damaged ({e}); {advice}") from e
    if not gfile.exists(weights):
        raise StateError(f"saved state {folder} has no {WEIGHTS_NAME}; {advice}")
    size = gfile.stat(weights).length
    digest = file_sha256(weights) if not remote else hashlib.sha256(gfile.GFile(weights, "rb").read()).hexdigest()
    if size != state.get("weights_bytes") or digest != state.get("weights_sha256"):
        raise StateError(
            f"saved weights {weights} are damaged ({size} bytes, expected {state.get('weights_bytes')}, "
            f"or a different SHA-256 than {state_path} records); {advice}"
        )
    return int(state["step"]), folder, state


def load_state(net, folder, state, strategy=None):
    """Load a state found by ``find_state`` into a built, compiled model (its
    optimizer is built first, under ``strategy``, so that its state loads too)."""
    if net.optimizer is not None and not net.optimizer.built:
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            net.optimizer.build(net.trainable_variables)
    weights = os.path.join(folder, WEIGHTS_NAME)
    if is_remote(folder):
        local = tempfile.mkdtemp(prefix="kerasnlp_plus-state-")
        try:
            _gfile().copy(weights, os.path.join(local, WEIGHTS_NAME))
            net.load_weights(os.path.join(local, WEIGHTS_NAME))
        finally:
            shutil.rmtree(local, ignore_errors=True)
    else:
        net.load_weights(weights)
    variables = seed_generator_variables(net)
    saved = state.get("seed_generators", [])
    if len(saved) != len(variables):
        raise StateError(f"{folder}: {len(saved)} saved dropout seed states, the model has {len(variables)}")
    for v, values in zip(variables, saved):
        v.assign(_as_state(values, v))


def _as_state(values, variable):
    import numpy as np

    return np.asarray(values, dtype=variable.dtype).reshape(variable.shape)


def make_backup_callback(backup_dir, checkpoint_every, write=True, checkpoints_dir=None, strategy=None):
    """A Keras callback that loads the newest state at the start of ``fit`` and saves
    one at the end of every Keras epoch (``checkpoint_every`` steps).

    ``write=False`` (a non-chief worker) saves into a temporary folder that is deleted
    right away: the save runs on every worker alike, the shared folder gets one writer.
    ``checkpoints_dir``: also keep ``epoch-NNNNN.weights.h5`` there (written atomically).
    """
    import keras

    class CrashSafeBackup(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            found = find_state(backup_dir)
            if found is not None:
                load_state(self.model, found[1], found[2], strategy)

        def on_epoch_end(self, epoch, logs=None):
            step = (epoch + 1) * checkpoint_every
            if not write:
                scratch = tempfile.mkdtemp(prefix="kerasnlp_plus-worker-state-")
                try:
                    save_state(self.model, scratch, step)
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
                return
            if checkpoints_dir and is_remote(checkpoints_dir):
                folder = tempfile.mkdtemp(prefix="kerasnlp_plus-checkpoint-")
                try:
                    name = f"epoch-{epoch + 1:05d}.weights.h5"
                    self.model.save_weights(os.path.join(folder, name))
                    _gfile().makedirs(checkpoints_dir)
                    _gfile().copy(os.path.join(folder, name), f"{checkpoints_dir}/{name}", overwrite=True)
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
            elif checkpoints_dir:
                path = os.path.join(checkpoints_dir, f"epoch-{epoch + 1:05d}.weights.h5")
                try:
                    with atomic_path(path, suffix=".weights.h5") as tmp:
                        self.model.save_weights(tmp)
                except BaseException as e:
                    if is_disk_full(e):
                        raise DiskFullError(errno.ENOSPC, f"disk full while writing {path}; the resume state "
                                            f"in {backup_dir} is intact: free some space and rerun") from e
                    raise
            save_state(self.model, backup_dir, step)

    return CrashSafeBackup()


# ------------------------------------------------------------------- run options
def check_run_options(output_dir, options, force_new=False, resume=False, write=True):
    """Compare ``options`` with those the run folder remembers.

    Same options (or a fresh folder): record them and go on. Different ones: raise
    ``StateError`` listing the differences, unless ``force_new``, which deletes the
    old run's state and outputs first. ``resume=True`` insists on a state to resume.
    ``write=False``: check only (non-chief workers).
    """
    gfile = _gfile()
    path = os.path.join(output_dir, OPTIONS_NAME)
    backup_dir = os.path.join(output_dir, "backup")
    old = None
    if gfile.exists(path):
        with gfile.GFile(path, "r") as f:
            old = json.loads(f.read())
    has_state = any(_FINAL.match(n) for n in _listdir(backup_dir))
    if force_new and resume:
        raise ValueError("--force-new and --resume exclude each other")
    if force_new:
        if write:
            for name in ("backup", "checkpoints", "logs", "export", "history.csv", "summary.json", OPTIONS_NAME):
                target = os.path.join(output_dir, name)
                if gfile.isdir(target):
                    gfile.rmtree(target)
                elif gfile.exists(target):
                    gfile.remove(target)
        old, has_state = None, False
    if resume and not has_state:
        raise StateError(f"--resume: {output_dir} holds no saved state to resume")
    if old is not None:
        keys = sorted(set(old) | set(options))
        # The data counts by content (its meta.json): a moved data folder still resumes;
        # its path is listed only along with a content difference.
        moved = {"data"} if old.get("data_meta_sha256") == options.get("data_meta_sha256") else set()
        diffs = [f"  {k}: was {old.get(k)!r}, now {options.get(k)!r}" for k in keys
                 if old.get(k) != options.get(k) and k not in moved]
        if diffs:
            raise StateError(
                f"{output_dir} belongs to a run with other options ({path}):\n" + "\n".join(diffs)
                + "\nrerun with the old options to resume it, use another --output, "
                "or --force-new to delete that run and start over"
            )
    elif has_state and not force_new:
        raise StateError(f"{output_dir} has a saved state but no {OPTIONS_NAME}: its options are unknown; "
                         "use --force-new to start over")
    if write and old != options:
        text = json.dumps(options, indent=1, sort_keys=True)
        if is_remote(output_dir):
            gfile.makedirs(output_dir)
            with gfile.GFile(path, "w") as f:
                f.write(text)
        else:
            os.makedirs(output_dir, exist_ok=True)
            atomic_write_text(path, text, fsync=True)
    return has_state
