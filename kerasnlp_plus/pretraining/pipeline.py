"""The ``tf.data`` input pipeline over the shards written by ``prepare``.

per pass: shards in a seeded order -> interleave (deterministic) -> permute blocks of
``shuffle_buffer`` records (stateless seeds) ; passes repeated -> enumerate -> skip
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


def shard_files(data_dir, split="train", meta=None, check=True):
    """The shard paths of ``split``. ``check``: compare each shard's size with the
    manifest of ``meta.json`` and raise naming the damaged one (sizes only: cheap even
    for a large corpus; a same-size corruption is caught by TFRecord's CRCs on read
    and named by ``run_pretraining``)."""
    import tensorflow as tf

    meta = meta or load_meta(data_dir)
    counts = meta["counts"].get(split, {})
    names = counts.get("files", [])
    files = [os.path.join(data_dir, f) for f in names]
    missing = [f for f in files if not tf.io.gfile.exists(f)]
    if missing:
        raise FileNotFoundError(f"shards listed in {data_dir}/meta.json are missing: {missing[:3]}")
    manifest = counts.get("manifest") or {}
    if check:
        for name, path in zip(names, files):
            expected = (manifest.get(name) or {}).get("bytes")
            if expected is not None:
                size = tf.io.gfile.stat(path).length
                if size != expected:
                    raise ValueError(f"shard {path} is damaged: {size} bytes, {expected} in {data_dir}/meta.json; "
                                     "rerun prepare_data.py with the same command to rewrite it")
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
    gather_positions=False,
):
    """A dataset of ``(inputs, labels, sample_weights)`` global batches.

    Args:
        data_dir: folder written by ``prepare_data.py`` (local or ``gs://``).
        global_batch_size: examples per step over all replicas.
        split: ``'train'`` or ``'eval'``.
        seed: shuffle and masking seed.
        shuffle_buffer: records per shuffled block (0: no shuffling). Blocks are
            permuted with stateless seeds, not ``Dataset.shuffle``, whose order differs
            between iterators of the same dataset.
        repeat: cycle forever (training); a new shuffle order and fresh dynamic masks
            each pass.
        skip_batches: batches to skip at the start (resuming at a step).
        normalize: scale the weights over the global batch (see module doc).
        gather_positions: add ``Input-Positions`` and keep labels/weights at the
            scored positions only (for ``Transformer.loss_positions_model``; see
            :func:`gather_loss_positions`); the normalized loss is the same.
    """
    import tensorflow as tf

    meta = meta or load_meta(data_dir)
    files = shard_files(data_dir, split, meta)
    if not files:
        raise ValueError(f"no {split} shards in {data_dir} (see its meta.json counts)")
    files_t = tf.constant(files)
    cycle = min(4, len(files))

    def one_pass(epoch):
        # Pass ``epoch`` reads the shards in a random order and permutes blocks of
        # ``shuffle_buffer`` records, all from stateless seeds ``(seed, epoch, ...)``:
        # every iterator over this dataset (Keras' distributed one included) sees the
        # same stream, a pure function of the seed.
        key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
        order = tf.argsort(tf.random.stateless_uniform([len(files)], key))
        ds = tf.data.Dataset.from_tensor_slices(tf.gather(files_t, order) if shuffle_buffer else files_t)
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=cycle,
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if shuffle_buffer:
            def permute(block_index, block):
                k = tf.stack([key[0], key[1] * 1000003 + block_index])
                return tf.gather(block, tf.argsort(tf.random.stateless_uniform(tf.shape(block)[:1], k)))

            ds = ds.batch(shuffle_buffer).enumerate().map(permute).unbatch()
        return ds

    if repeat:
        ds = tf.data.Dataset.range(2**62).flat_map(one_pass)
    else:
        ds = one_pass(tf.constant(0, tf.int64))
    ds = ds.enumerate()
    if skip_batches:
        ds = ds.skip(int(skip_batches) * int(global_batch_size))
    ds = ds.map(example_transform(meta, seed=seed), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(global_batch_size, drop_remainder=drop_remainder)
    if gather_positions:
        ds = ds.map(gather_loss_positions)
    if normalize:
        ds = ds.map(normalize_weights)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE)


def loss_positions(weights, multiple=8):
    """The positions that carry loss in a batch, for ``Transformer.loss_positions_model``.

    ``weights``: float ``(batch, length)``, > 0 where the loss counts. Returns int32
    ``positions`` ``(batch, P)``: each row's scored positions in order, then padding
    positions (weight 0) to fill the row. ``P`` is the batch's largest count rounded up
    to a multiple of ``multiple`` (at most ``length``), so that few distinct shapes
    reach the traced train step.
    """
    import tensorflow as tf

    scored = weights > 0
    length = tf.shape(weights)[1]
    count = tf.reduce_max(tf.reduce_sum(tf.cast(scored, tf.int32), axis=1))
    size = tf.minimum(length, tf.maximum(multiple, (count + multiple - 1) // multiple * multiple))
    # stable sort: scored positions first, in their order
    order = tf.argsort(tf.cast(~scored, tf.int32), axis=1, stable=True)
    return tf.cast(order[:, :size], tf.int32)


def gather_loss_positions(inputs, labels, weights, multiple=8):
    """``(inputs, labels, weights)`` of a batch -> the same with ``Input-Positions``
    added to the ``inputs`` dict and labels/weights taken at those positions only
    (see :func:`loss_positions`). Apply it before :func:`normalize_weights`."""
    import tensorflow as tf

    positions = loss_positions(weights, multiple)
    inputs = dict(inputs)
    inputs["Input-Positions"] = positions
    return (inputs, tf.gather(labels, positions, batch_dims=1),
            tf.gather(weights, positions, batch_dims=1))
