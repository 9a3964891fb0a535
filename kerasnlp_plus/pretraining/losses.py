"""Loss and metric of pretraining: sparse cross-entropy and accuracy over the scored
positions only (the sample weights are 0 elsewhere; see ``pipeline``)."""
import keras


class _WeightOnlySparseCategoricalCrossentropy(keras.losses.SparseCategoricalCrossentropy):
    """Ignores the padding mask the model's MLM output carries (bert4keras-style, for
    ``Loss`` layers): Keras would rescale a masked ``sum_over_batch_size`` loss by
    ``positions / unpadded positions``, while the pipeline's weights already do the
    normalization. ``tf.identity`` returns the logits without the mask attached."""

    def __call__(self, y_true, y_pred, sample_weight=None):
        import tensorflow as tf

        return super().__call__(y_true, tf.identity(y_pred), sample_weight=sample_weight)


def masked_lm_loss(from_logits=True):
    """Cross-entropy from logits (``from_logits=False``: from probabilities, for a
    ``with_mlm=True`` head), weighted per position. With the pipeline's
    normalized weights, Keras' default ``sum_over_batch_size`` reduction gives the mean
    over the scored positions of the global batch."""
    return _WeightOnlySparseCategoricalCrossentropy(from_logits=from_logits, name="mlm_loss")


def masked_accuracy():
    """Accuracy weighted by the sample weights (pass it as a ``weighted_metrics``)."""
    return keras.metrics.SparseCategoricalAccuracy(name="accuracy")
