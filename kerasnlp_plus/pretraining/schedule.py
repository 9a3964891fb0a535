"""Learning-rate schedule: linear warmup to a peak, then linear decay."""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """``peak * step / warmup_steps`` for ``step < warmup_steps``, then linear decay
    to ``end_learning_rate`` at ``total_steps`` (constant after).

    >>> s = WarmupLinearDecay(1e-3, warmup_steps=10, total_steps=110)
    >>> [round(float(s(k)), 6) for k in (0, 5, 10, 60, 110, 200)]
    [0.0, 0.0005, 0.001, 0.0005, 0.0, 0.0]
    """

    def __init__(self, peak_learning_rate, warmup_steps, total_steps, end_learning_rate=0.0):
        if total_steps <= warmup_steps:
            raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")
        self.peak_learning_rate = float(peak_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.end_learning_rate = float(end_learning_rate)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak, end = self.peak_learning_rate, self.end_learning_rate
        warm = peak * step / max(self.warmup_steps, 1)
        frac = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        decay = peak + (end - peak) * ops.minimum(frac, 1.0)
        return ops.where(step < self.warmup_steps, warm, decay)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "end_learning_rate": self.end_learning_rate,
        }
