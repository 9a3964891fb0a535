"""Masked-LM accuracy on long text: what ``examples/long_text_mlm.py`` (hierarchical
positions, kexue.fm 7947) and ``bench/extrapolation.py`` (RoFormer's ``log_n`` scale)
both measure, written once."""
import numpy as np


def with_trained_positions(model, config, rows, **overrides):
    """A copy of ``model`` (built from ``config`` with an MLM head) that keeps only the
    first ``rows`` rows of its position table: the rows it was actually trained on.
    ``overrides`` go to the builder, e.g. ``hierarchical_position=0.4`` to extend those
    rows hierarchically (exactly the same table up to ``rows``)."""
    from kerasnlp_plus.models import build_transformer_model

    short = build_transformer_model(config, None, with_mlm=True, max_position_embeddings=rows, **overrides)
    for layer in short.layers:
        weights = model.get_layer(layer.name).get_weights()
        if layer.name == "Embedding-Position":
            weights = [weights[0][:rows]]
        layer.set_weights(weights)
    return short


def masked_lm_scores(model, token_ids, labels, weights, batch_size):
    """``(accuracy, loss)`` over the positions with weight > 0 of a model with an MLM
    head returning probabilities: the weighted share of argmax hits and the mean cross
    entropy in nats (the loss still moves when a weak model's argmax is the same
    frequent character at every length). Segment ids are all 0."""
    correct = nll = total = 0.0
    for i in range(0, len(token_ids), batch_size):
        x = token_ids[i:i + batch_size]
        probs = np.asarray(model.predict_on_batch([x, np.zeros_like(x)]))
        y, w = labels[i:i + batch_size], weights[i:i + batch_size]
        correct += float(((probs.argmax(-1) == y) * w).sum())
        p_true = np.take_along_axis(probs, y[..., None], axis=-1)[..., 0]
        nll += float((-np.log(np.maximum(p_true, 1e-30)) * w).sum())
        total += float(w.sum())
    return correct / max(total, 1.0), nll / max(total, 1.0)
