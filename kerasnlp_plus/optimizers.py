"""Keras' Adam, AdamW and Lamb with exact updates for embedding gradients.

The gradient of an embedding lookup is a ``tf.IndexedSlices`` in which a row appears
once per occurrence of its token in the batch (and, after a MirroredStrategy
all-reduce, once per replica). Keras 3's TensorFlow optimizers apply such slices one
by one, so a repeated row's second moment gets ``sum(g_i**2)`` instead of
``(sum g_i)**2``: the update differs from the dense one, and 1 and N replicas
disagree. TF 1's optimizers summed duplicate indices first; these classes make the
slices dense before the update, which is exact (and cheap at BERT's vocabulary
sizes). Use them wherever Keras' own would be used::

    from kerasnlp_plus.optimizers import AdamW
    model.compile(optimizer=AdamW(1e-5, weight_decay=0.01), ...)
"""
import keras


class DenseGradientsMixin:
    """Converts ``tf.IndexedSlices`` gradients to dense tensors before ``apply``."""

    def apply(self, grads, trainable_variables=None):
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        return super().apply(grads, trainable_variables)


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class Adam(DenseGradientsMixin, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with exact embedding updates."""


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class AdamW(DenseGradientsMixin, keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` with exact embedding updates."""


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class Lamb(DenseGradientsMixin, keras.optimizers.Lamb):
    """``keras.optimizers.Lamb`` with exact embedding updates."""


__all__ = ["Adam", "AdamW", "DenseGradientsMixin", "Lamb"]
