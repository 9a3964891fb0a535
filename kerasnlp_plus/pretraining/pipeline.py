"""The ``tf.data`` input pipeline over the shards written by ``prepare``.

files -> interleave (deterministic) -> per pass: shuffle(seed, pass) -> enumerate -> skip
-> parse + per-example transform (dynamic masks / PLM orders from stateless seeds
``(seed, example_index)``) -> batch(global batch) -> normalize weights -> prefetch.

Weights are normalized over the *global* batch (``w * B * L / sum(w)``), so that
Keras' ``sum_over_batch_size`` loss equals the mean cross-entropy over the scored
positions of the global batch; with ``R`` replicas each replica's share is summed by
the all-reduce, which makes the gradient the same for any number of replicas.
"""
import os

from kerasnlp_plus.pretraining.preparation import load_meta
from kerasnlp_plus.pretraining.records import example_transform


def shard_files(data_dir, split="train", meta=None):
    meta = meta or load_meta(data_dir)
    files = meta["counts"].get(split, {}).get("files", [])
    files = [os.path.join(data_dir, f) for f in files]
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        raise FileNotFoundError(f"shards listed in {data_dir}/meta.json are missing: {missing[:3]}")
    return files


def normalize_weights(inputs, labels, weights):
    import tensorflow as tf

    total = tf.maximum(tf.reduce_sum(weights), 1.0)
    size = tf.cast(tf.size(weights), tf.float32)
    return inputs, labels, weights * (size / total)


def make_dataset(
    data_dir,
    global_batch_size,
    split="train",
    seed=0,
    shuffle_buffer=10000,
    repeat=True,
    skip_batches=0,
    normalize=True,
    drop_remainder=True,
    meta=None,
):
    """A dataset of ``(inputs, labels, sample_weights)`` global batches.

    Args:
        data_dir: folder written by ``prepare_data.py`` (local or ``gs://``).
        global_batch_size: examples per step over all replicas.
        split: ``'train'`` or ``'eval'``.
        seed: shuffle and masking seed.
        shuffle_buffer: examples in the shuffle buffer (0: no shuffling).
        repeat: cycle forever (training); a new shuffle order and fresh dynamic masks
            each pass.
        skip_batches: batches to skip at the start (resuming at a step).
        normalize: scale the weights over the global batch (see module doc).
    """
    import tensorflow as tf

    meta = meta or load_meta(data_dir)
    files = shard_files(data_dir, split, meta)
    if not files:
        raise ValueError(f"no {split} shards in {data_dir} (see its meta.json counts)")
    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(4, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if repeat:
        # Pass ``e`` is shuffled with seed ``(seed, e)`` and no hidden state, so every
        # iterator over this dataset (Keras' distributed one included) sees the same
        # order: the stream is a pure function of the seed.
        base = ds

        def one_pass(epoch):
            if not shuffle_buffer:
                return base
            return base.shuffle(shuffle_buffer, seed=epoch * 1000003 + seed, reshuffle_each_iteration=False)

        ds = tf.data.Dataset.range(2**62).flat_map(one_pass)
    elif shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
    ds = ds.enumerate()
    if skip_batches:
        ds = ds.skip(int(skip_batches) * int(global_batch_size))
    ds = ds.map(example_transform(meta, seed=seed), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(global_batch_size, drop_remainder=drop_remainder)
    if normalize:
        ds = ds.map(normalize_weights)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE)
