"""Loss and metric of pretraining: sparse cross-entropy and accuracy over the scored
positions only (the sample weights are 0 elsewhere; see ``pipeline``)."""
import keras


def masked_lm_loss():
    """Cross-entropy from logits, weighted per position. With the pipeline's
    normalized weights, Keras' default ``sum_over_batch_size`` reduction gives the mean
    over the scored positions of the global batch."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, name="mlm_loss")


def masked_accuracy():
    """Accuracy weighted by the sample weights (pass it as a ``weighted_metrics``)."""
    return keras.metrics.SparseCategoricalAccuracy(name="accuracy")
