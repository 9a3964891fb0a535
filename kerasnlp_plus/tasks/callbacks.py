"""Callbacks of the fine-tuning examples: the best weights by a score, and each
batch's own training loss.

Why not Keras' ``ModelCheckpoint(save_best_only=True, save_weights_only=True)``: it
saves the model being fit, which is often the gathered-head training view
(``loss_positions_model()``) rather than the model that decodes and is reloaded, and
it writes the ``.weights.h5`` file in place, so a crash during the write destroys the
previous best. :class:`BestWeights` saves a given model with :func:`save_weights`
(through :func:`kerasnlp_plus.utils.atomic_path`).
"""
import os
import shutil
import tempfile

import keras

from kerasnlp_plus.utils import atomic_path


def save_weights(model, path):
    """``model.save_weights(path)`` through a temporary file: a crash never leaves a
    half-written ``.weights.h5`` (nor a temporary file after an error)."""
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp, overwrite=True)


class BestWeights(keras.callbacks.Callback):
    """Save ``model``'s weights to ``path`` whenever ``logs[monitor]`` improves.

    Place it after the callback that puts ``monitor`` into the epoch logs (an
    evaluator). ``on_improve(epoch, logs)`` runs after each save (e.g. to keep that
    epoch's predictions). ``write=False`` (a non-chief worker of a multi-worker
    cluster): track the best and save into a temporary folder that is deleted at once.
    ``best``/``best_epoch`` hold the best value and its 1-based epoch.
    """

    def __init__(self, path, monitor, model=None, mode="max", on_improve=None, write=True, log=None):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"BestWeights: mode must be 'max' or 'min', got {mode!r}")
        self.path, self.monitor, self.mode = path, monitor, mode
        self.net, self.on_improve, self.write, self.log = model, on_improve, write, log
        self.best = self.best_epoch = None

    def improved(self, value):
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise KeyError(f"BestWeights: {self.monitor!r} is not in the epoch logs (keys: {sorted(logs)}); "
                           "put the callback that computes it before BestWeights")
        value = float(logs[self.monitor])
        if not self.improved(value):
            return
        self.best, self.best_epoch = value, epoch + 1
        if self.write:
            save_weights(self.net or self.model, self.path)
            if self.on_improve is not None:
                self.on_improve(epoch, logs)
        else:
            # Every worker of a cluster runs the same saves, as in pretraining (their
            # variable reads are part of the same program); the others' go nowhere.
            folder = tempfile.mkdtemp(prefix="kerasnlp_plus-worker-")
            try:
                save_weights(self.net or self.model, os.path.join(folder, "best.weights.h5"))
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        if self.log is not None:
            where = f"weights saved to {self.path}" if self.write else "the chief saves the weights"
            self.log(f"  * best {self.monitor} so far ({value:.2f}), {where}")


class BatchLossHistory(keras.callbacks.Callback):
    """Keras reports the running epoch mean in ``logs['loss']``; this recovers each
    batch's own loss from consecutive running means (exact for equal weights per
    batch, close otherwise) and keeps them in ``self.losses``."""

    def __init__(self):
        super().__init__()
        self.losses = []
        self._prev_mean = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._prev_mean = 0.0

    def on_train_batch_end(self, batch, logs=None):
        mean = float(logs["loss"])
        self.losses.append((batch + 1) * mean - batch * self._prev_mean)
        self._prev_mean = mean
