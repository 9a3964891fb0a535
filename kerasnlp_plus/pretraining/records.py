"""The TFRecord schema of each task and the per-example transforms of the input
pipeline (what the model reads and what it is scored on).

Every feature is a fixed-length int64 list of ``seq_len`` values (0-padded):

============================  ==================================================
task                          features
============================  ==================================================
``mlm`` (static masks)        ``token_ids`` (masked), ``segment_ids``, ``labels``
``mlm --dynamic-masking``     ``token_ids`` (unmasked), ``segment_ids``, ``word_ids``
``lm``                        ``token_ids``, ``segment_ids``
``unilm``                     ``token_ids``, ``segment_ids`` (0 source, 1 target)
``plm``                       ``token_ids``, ``segment_ids`` [, ``order``]
============================  ==================================================

``word_ids`` are stored plus one (0 = never masked) so that padding stays 0.
"""
TASKS = ("mlm", "lm", "unilm", "plm")
#: The model application each task trains.
APPLICATION = {"mlm": "encoder", "lm": "lm", "unilm": "unilm", "plm": "plm"}


def feature_names(task, dynamic_masking=False, plm_static_order=False):
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {TASKS}")
    names = ["token_ids", "segment_ids"]
    if task == "mlm":
        names.append("word_ids" if dynamic_masking else "labels")
    if task == "plm" and plm_static_order:
        names.append("order")
    return names


def pad(values, seq_len):
    values = list(values)
    if len(values) > seq_len:
        raise ValueError(f"example of {len(values)} tokens is longer than seq_len {seq_len}")
    return values + [0] * (seq_len - len(values))


def serialize(features):
    """``{name: list of ints}`` -> serialized ``tf.train.Example``."""
    import tensorflow as tf

    feature = {
        k: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x) for x in v]))
        for k, v in features.items()
    }
    # deterministic=True: map fields in a stable order (otherwise it varies between processes)
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def parse_spec(meta):
    import tensorflow as tf

    return {k: tf.io.FixedLenFeature([meta["seq_len"]], tf.int64) for k in meta["features"]}


def next_token_labels(tokens, segments=None):
    """The ``lm`` / ``unilm`` labels: position ``t`` predicts token ``t+1`` (0 = not
    scored; the last position predicts nothing). With ``segments`` (``unilm``) only
    targets in segment 1 are scored, so the source and the padding never are.
    Works on the last axis: one example or a padded batch.
    """
    import tensorflow as tf

    pad = tf.zeros_like(tokens[..., :1])
    nxt = tf.concat([tokens[..., 1:], pad], axis=-1)
    if segments is not None:
        nxt_seg = tf.concat([segments[..., 1:], pad], axis=-1)
        nxt = tf.where(nxt_seg == 1, nxt, 0)
    return nxt


def example_transform(meta, seed=0, mask_rate=None):
    """The per-example function ``(index, serialized) -> (inputs, labels, weights)``
    of the input pipeline for the records described by ``meta`` (their meta JSON).

    ``inputs`` is a dict keyed by the model's input names (``Input-Token``,
    ``Input-Segment``, plus ``Input-Order`` for ``plm``); ``labels``
    holds the target token of each position (0 = not scored); weights are 0/1 floats.
    Random choices (dynamic masks, PLM orders) use stateless seeds ``(seed, index)``.
    """
    import tensorflow as tf

    from kerasnlp_plus.pretraining.masking import MASK_RATE, mask_whole_words_tf, plm_order_tf

    task = meta["task"]
    spec = parse_spec(meta)
    rate = meta.get("mask_rate", MASK_RATE) if mask_rate is None else mask_rate
    plm_fraction = float(meta.get("plm_predict_fraction", 1 / 6))

    def transform(index, serialized):
        f = tf.io.parse_single_example(serialized, spec)
        f = {k: tf.cast(v, tf.int32) for k, v in f.items()}
        tokens, segments = f["token_ids"], f["segment_ids"]
        seed_pair = tf.stack([tf.constant(seed, tf.int64), tf.cast(index, tf.int64)])
        if task == "mlm":
            if "labels" in f:
                labels = f["labels"]
            else:
                tokens, labels = mask_whole_words_tf(
                    tokens, f["word_ids"] - 1, seed_pair, meta["mask_id"], meta["vocab_size"],
                    meta["random_token_low"], rate,
                )
            inputs = {"Input-Token": tokens, "Input-Segment": segments}
        elif task in ("lm", "unilm"):
            labels = next_token_labels(tokens, segments if task == "unilm" else None)
            inputs = {"Input-Token": tokens, "Input-Segment": segments}
        else:  # plm
            order = f["order"] if "order" in f else plm_order_tf(tokens, seed_pair)
            n = tf.reduce_sum(tf.cast(tokens != 0, tf.int32))
            # XLNet's partial prediction: only the last fraction of the order is scored.
            cutoff = tf.cast(tf.math.ceil((1.0 - plm_fraction) * tf.cast(n - 1, tf.float32)), tf.int32)
            scored = (order > tf.maximum(cutoff, 0)) & (tokens != 0)
            labels = tf.where(scored, tokens, 0)
            inputs = {"Input-Token": tokens, "Input-Segment": segments, "Input-Order": order}
        weights = tf.cast(labels != 0, tf.float32)
        return inputs, labels, weights

    return transform
