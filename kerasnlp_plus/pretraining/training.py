"""Pretraining with Keras ``fit`` under a ``tf.distribute`` strategy (the engine
behind ``pretraining/pretrain.py``).

Resuming: a crash-safe state (``state.py``: weights, optimizer state and the dropout
seed generators, written to a temporary folder and renamed) is saved at the end of
every Keras epoch, and one Keras epoch is ``checkpoint_every`` steps, so a killed run
restarts at the last multiple of ``checkpoint_every``. The input pipeline is a pure
function of the step (seeded shuffling, stateless masks), and the restart skips the
batches already consumed, so the resumed run sees exactly the batches the
uninterrupted run would have and draws the same dropout masks.

Under ``MultiWorkerMirroredStrategy`` every worker runs the same saves (their
variable reads are part of the same program), but only the chief writes into the
run folder; the others save into a temporary folder that is deleted at once and
write no logs, checkpoints or exports.
"""
import json
import logging
import os
import shutil
import tempfile
import time

import numpy as np

from kerasnlp_plus.pretraining.losses import masked_accuracy, masked_lm_loss
from kerasnlp_plus.pretraining.pipeline import make_dataset
from kerasnlp_plus.pretraining.preparation import load_keep_tokens, load_meta
from kerasnlp_plus.pretraining.schedule import WarmupLinearDecay

logger = logging.getLogger("kerasnlp_plus.pretraining")

#: Variables excluded from weight decay (matched against variable paths).
NO_DECAY = ["gamma", "beta", "bias", "Norm"]


def build_pretraining_model(
    meta,
    keep_tokens=None,
    config_path=None,
    init_checkpoint=None,
    family="bert",
    dropout_rate=0.1,
    with_copy=False,
    **size,
):
    """The model to pretrain for the records described by ``meta``: the task's
    application, an MLM head returning logits, random weights or ``init_checkpoint``.

    ``family``: the architecture (``build_transformer_model``'s ``model``).
    ``keep_tokens``: the data's vocab simplification (``load_keep_tokens``), applied
    when ``init_checkpoint`` has the original vocabulary.
    ``size``: ``hidden_size``, ``num_layers``, ``num_heads``, ``intermediate_size``,
    ``max_position`` (or their config-file spellings, see ``TransformerConfig``) when
    there is no config file. ``with_copy``: add the copy mechanism
    (``layers/copy.py``; the output is then probabilities, not logits).
    """
    from kerasnlp_plus.models import TransformerConfig, build_transformer_model

    kwargs = dict(
        model=family,
        application=meta["application"],
        with_mlm=True if with_copy else "linear",
        dropout_rate=dropout_rate,
        attention_dropout_rate=dropout_rate,
    )
    if with_copy:
        kwargs["with_copy"] = True
    if config_path is not None:
        config = TransformerConfig.from_json_file(config_path)
        if init_checkpoint is None or config.vocab_size == meta["vocab_size"]:
            keep_tokens = None  # only an original-vocab checkpoint on simplified data is sliced
        net = build_transformer_model(config_path, init_checkpoint, keep_tokens=keep_tokens, **kwargs)
    else:
        if init_checkpoint is not None:
            raise ValueError("--init-checkpoint needs --config (the checkpoint's bert_config.json)")
        net = build_transformer_model(None, vocab_size=meta["vocab_size"], **size, **kwargs)
    if net.vocab_size != meta["vocab_size"]:
        raise ValueError(
            f"model vocab_size {net.vocab_size} != data vocab_size {meta['vocab_size']} "
            f"(config {config_path}); prepare the data with the model's vocab"
        )
    if net.max_position < meta["seq_len"]:
        raise ValueError(f"model max_position {net.max_position} < data seq_len {meta['seq_len']}")
    return net


def make_optimizer(
    name="adamw",
    learning_rate=1e-4,
    warmup_steps=1000,
    total_steps=10000,
    weight_decay=0.01,
    global_clipnorm=1.0,
    gradient_accumulation_steps=1,
    beta_2=0.98,
    epsilon=1e-6,
):
    """Keras' ``AdamW`` or ``Lamb`` with warmup + linear decay, global-norm clipping,
    gradient accumulation, and no weight decay on LayerNorm parameters and biases."""
    schedule = WarmupLinearDecay(learning_rate, warmup_steps, total_steps)
    common = dict(
        learning_rate=schedule,
        beta_2=beta_2,
        epsilon=epsilon,
        weight_decay=weight_decay,
        global_clipnorm=global_clipnorm or None,
        gradient_accumulation_steps=gradient_accumulation_steps if gradient_accumulation_steps > 1 else None,
    )
    from kerasnlp_plus.optimizers import AdamW, Lamb  # exact updates for embedding rows

    if name == "adamw":
        opt = AdamW(**common)
    elif name == "lamb":
        opt = Lamb(**common)
    else:
        raise ValueError(f"optimizer must be 'adamw' or 'lamb', got {name!r}")
    opt.exclude_from_weight_decay(var_names=NO_DECAY)
    return opt


def compile_for_pretraining(net, optimizer, steps_per_execution=1, from_logits=True):
    net.compile(
        optimizer=optimizer,
        loss=masked_lm_loss(from_logits=from_logits),
        weighted_metrics=[masked_accuracy()],
        jit_compile=False,
        # Several steps per tf.function call: what keeps a TPU busy (host round trips).
        steps_per_execution=int(steps_per_execution),
    )
    return net


class _Preempt:
    """Test hook: end the process abruptly (no cleanup) after ``steps`` steps."""

    def __new__(cls, steps, accum=1):
        import keras

        class Preempt(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if int(self.model.optimizer.iterations.numpy()) * accum >= steps:
                    logger.warning("simulated preemption after %d steps", steps)
                    os._exit(75)

        return Preempt()


def _tensorboard_available():
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def evaluate_masked(net, data_dir, batch_size=32, seed=0, meta=None):
    """Accuracy and mean cross-entropy over the scored positions of the ``eval`` split,
    and the accuracy of the best unigram guess (always the most frequent label of the
    split, which flatters the baseline)."""
    import tensorflow as tf

    meta = meta or load_meta(data_dir)
    ds = make_dataset(data_dir, batch_size, split="eval", seed=seed, shuffle_buffer=0, repeat=False,
                      normalize=False, drop_remainder=False, meta=meta)
    correct = total = 0.0
    nll = 0.0
    counts = np.zeros(meta["vocab_size"], dtype=np.int64)
    for inputs, labels, weights in ds:
        logits = net(inputs, training=False)
        if getattr(net, "with_mlm", "linear") == "linear":
            logp = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
        else:  # probabilities (a with_copy model)
            logp = tf.math.log(tf.cast(logits, tf.float32) + 1e-12)
        w = weights.numpy()
        y = labels.numpy()
        pred = tf.argmax(logits, axis=-1, output_type=tf.int32).numpy()
        picked = tf.gather(logp, labels, batch_dims=2).numpy()
        correct += float(((pred == y) * w).sum())
        total += float(w.sum())
        nll -= float((picked * w).sum())
        np.add.at(counts, y[w > 0], 1)
    if total == 0:
        raise ValueError(f"no scored positions in the eval split of {data_dir}")
    top = int(counts.argmax())
    return {
        "accuracy": correct / total,
        "loss": nll / total,
        "scored_positions": int(total),
        "unigram_token_id": top,
        "unigram_accuracy": float(counts[top] / total),
    }


def export_model(net, export_dir, data_dir=None, huggingface=False, hf_dtype=None):
    """Write ``bert_model.ckpt`` (+ ``bert_config.json``), ``model.keras``, the vocab and
    optionally ``hf/`` (config.json + model.safetensors)."""
    from kerasnlp_plus.checkpoints import save_google_checkpoint, save_huggingface

    os.makedirs(export_dir, exist_ok=True)
    save_google_checkpoint(net, os.path.join(export_dir, "bert_model.ckpt"))
    # The .keras file holds the model alone (no optimizer or schedule), so that
    # ``keras.models.load_model`` needs nothing beyond ``import kerasnlp_plus``.
    clone = type(net).from_config(net.get_config())
    clone.set_weights(net.get_weights())
    clone.save(os.path.join(export_dir, "model.keras"))
    if huggingface:
        save_huggingface(net, os.path.join(export_dir, "hf"), dtype=hf_dtype)
        if data_dir:
            shutil.copy(os.path.join(data_dir, "vocab.txt"), os.path.join(export_dir, "hf", "vocab.txt"))
    if data_dir:
        shutil.copy(os.path.join(data_dir, "vocab.txt"), os.path.join(export_dir, "vocab.txt"))


def _patch_symbolic_build(net):
    """Keras 3.15's ``_maybe_symbolic_build`` takes a batch of the distributed dataset
    and ``strategy.reduce``s the whole nest, which ``MultiWorkerMirroredStrategy``
    rejects ("Attempt to convert a value ({'Input-Token': PerReplica...}) ... to a
    Tensor"). The batch only supplies shapes for building: take this worker's first
    local value of every leaf instead (no collective at all)."""
    import types

    import tensorflow as tf
    from keras import tree

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tree.map_structure(
                    lambda x: self.distribute_strategy.experimental_local_results(x)[0]
                    if isinstance(x, tf.distribute.DistributedValues) else x,
                    next(it),
                )
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    net._maybe_symbolic_build = types.MethodType(maybe_symbolic_build, net)
    _patch_multi_worker_mean()


def _patch_multi_worker_mean():
    """Keras 3.15 averages each step's logs over a multi-worker cluster with
    ``strategy.reduce("MEAN", v, axis=0)``, which fails on the scalar loss and metrics
    ("Invalid reduction dimension 0 for input with 0 dimensions"). Scalars are
    averaged with ``axis=None`` (an all-reduce of the per-replica values) instead;
    everything else goes to Keras unchanged. Only installed for multi-worker runs."""
    from keras import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "_kerasnlp_plus_patched", False):
        return

    def rank(v):
        values = getattr(v, "values", None)
        return (values[0] if values else v).shape.rank

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None) if rank(v) == 0
                else original(v, strategy, reduction), values)
        return original(values, strategy, reduction)

    reduce_per_replica._kerasnlp_plus_patched = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def _log_data_share(strategy, dataset, task_id):
    """Print a digest of each row of this worker's part of the first global batch."""
    import hashlib

    first = next(iter(strategy.experimental_distribute_dataset(dataset)))
    rows = []
    for local in strategy.experimental_local_results(first[0]["Input-Token"]):
        rows += [hashlib.sha1(r.tobytes()).hexdigest()[:12] for r in local.numpy()]
    print(f"data share: worker {task_id} rows {','.join(rows)}", flush=True)


class _RemoteCSVLogger:
    """``history.csv`` on a ``gs://``-style path: Keras' ``CSVLogger`` fails there
    (``GFile`` has no ``closed``) and object stores cannot append, so the whole file
    is rewritten after each epoch (it is small: one row per checkpoint interval)."""

    def __new__(cls, path):
        import keras
        import tensorflow as tf

        class RemoteCSVLogger(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.text = tf.io.gfile.GFile(path, "r").read() if tf.io.gfile.exists(path) else ""

            def on_epoch_end(self, epoch, logs=None):
                keys = sorted(logs or {})
                if not self.text:
                    self.text = ",".join(["epoch", *keys]) + "\n"
                self.text += ",".join([str(epoch), *(repr(float(logs[k])) for k in keys)]) + "\n"
                with tf.io.gfile.GFile(path, "w") as f:
                    f.write(self.text)

        return RemoteCSVLogger()


def _copy_tree(local, remote):
    import tensorflow as tf

    for root, _, files in os.walk(local):
        target = os.path.join(remote, os.path.relpath(root, local)).rstrip("/.") if root != local else remote
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.copy(os.path.join(root, name), f"{target}/{name}", overwrite=True)


def run_options(data_dir, meta, **options):
    """The options a run folder remembers: those that shape the trained weights.
    The data is identified by its ``meta.json`` (content, not path), so a moved data
    folder still resumes; the path is kept for the message."""
    import hashlib

    import tensorflow as tf

    with tf.io.gfile.GFile(os.path.join(data_dir, "meta.json"), "rb") as f:
        data_id = hashlib.sha256(f.read()).hexdigest()[:16]
    config_path = options.get("config_path")
    if config_path:
        with open(config_path, "rb") as f:
            options["config_sha256"] = hashlib.sha256(f.read()).hexdigest()[:16]
    data = data_dir if "://" in os.fspath(data_dir) else os.path.abspath(data_dir)
    return {"data": data, "data_meta_sha256": data_id, **options}


def _size_in_file_keys(size):
    """``size`` (config fields in either spelling) keyed as in a config file."""
    from kerasnlp_plus.models.config import TransformerConfig, file_key

    fields, rest = TransformerConfig.split_overrides(size or {})
    if rest:
        raise ValueError(f"size: not model config fields: {sorted(rest)}")
    return {file_key(name): value for name, value in fields.items()}


def _name_bad_shard(data_dir, meta, error):
    """The shard a ``DataLossError`` came from (TF's message names none)."""
    import tensorflow as tf

    from kerasnlp_plus.pretraining.pipeline import shard_files

    for split in ("train", "eval"):
        for path in shard_files(data_dir, split, meta, check=False):
            try:
                for _ in tf.data.TFRecordDataset(path):
                    pass
            except tf.errors.DataLossError as e:
                return ValueError(f"shard {path} is damaged ({e.message.strip()}); rerun prepare_data.py with "
                                  "the same command to rewrite it")
    return ValueError(f"a shard of {data_dir} could not be read: {error}")


def run_pretraining(
    data_dir,
    output_dir,
    strategy,
    steps,
    batch_size,
    checkpoint_every=1000,
    config_path=None,
    init_checkpoint=None,
    family="bert",
    size=None,
    dropout_rate=0.1,
    optimizer="adamw",
    learning_rate=1e-4,
    warmup_steps=None,
    weight_decay=0.01,
    global_clipnorm=1.0,
    gradient_accumulation_steps=1,
    epsilon=1e-6,
    mixed_precision=None,
    seed=0,
    deterministic=False,
    shuffle_buffer=10000,
    log_every=100,
    export_huggingface=False,
    hf_dtype=None,
    stop_after_steps=None,
    verbose=2,
    force_new=False,
    resume=False,
    on_cluster_joined=None,
    steps_per_execution=1,
    gather_positions=False,
    mix_data_dir=None,
    with_copy=False,
):
    """Train and export; returns a summary dict (also written to ``output_dir``).

    ``family``: the architecture (``build_transformer_model``'s ``model``). ``size``:
    the model's size when there is no ``config_path`` (``TransformerConfig`` fields,
    either spelling).

    ``gather_positions``: run the MLM head only at the scored positions during
    training (``Transformer.loss_positions_model``): same loss, a faster step. The
    backups of such a run resume only with the same setting.

    ``mix_data_dir``: a second folder of records (e.g. MLM next to UniLM seq2seq),
    read in alternate batches; the model is the one ``data_dir``'s task needs (a
    ``unilm`` model reads all-segment-0 MLM rows bidirectionally). Needs
    ``gather_positions`` when the two have different ``seq_len``.

    ``with_copy``: pretrain with the copy mechanism (a pointer over the segment-0
    tokens mixed into the MLM probabilities, ``layers/copy.py``); exports keep its
    weights under ``cls/copy`` (Google) and ``cls.copy`` (Hugging Face).

    ``batch_size`` is the global batch per step (split over the replicas).
    ``steps`` must be a multiple of ``checkpoint_every``.
    A rerun into the same ``output_dir`` resumes from its last saved state when the
    options are the same, and refuses (listing the differences) when they differ;
    ``force_new`` deletes the old run first, ``resume`` insists on a state to resume.
    Raises ``state.DiskFullError`` when the disk fills (the previous state is intact).
    """
    import keras
    import tensorflow as tf

    from kerasnlp_plus.pretraining.state import (
        DiskFullError,
        check_run_options,
        find_state,
        is_disk_full,
        is_remote,
        make_backup_callback,
    )
    from kerasnlp_plus.pretraining.strategy import worker_role

    meta = load_meta(data_dir)
    if steps % checkpoint_every:
        raise ValueError(
            f"--steps ({steps}) must be a multiple of --checkpoint-every ({checkpoint_every}): "
            "one Keras epoch is one checkpoint interval"
        )
    if checkpoint_every % max(1, int(steps_per_execution)):
        raise ValueError(f"--steps-per-execution ({steps_per_execution}) must divide --checkpoint-every "
                         f"({checkpoint_every})")
    if batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"batch size {batch_size} is not divisible by {strategy.num_replicas_in_sync} replicas")
    task_type, task_id, chief = worker_role(strategy)
    accum = max(1, int(gradient_accumulation_steps))
    warmup = warmup_steps if warmup_steps is not None else max(1, steps // 10)
    options = run_options(
        data_dir, meta, steps=int(steps), batch_size=int(batch_size), checkpoint_every=int(checkpoint_every),
        config_path=os.path.abspath(config_path) if config_path else None,
        # run_options.json keeps the keys (and the config-file spelling of the size) it
        # has always had, so that run folders written before still resume.
        init_checkpoint=os.path.abspath(init_checkpoint) if init_checkpoint else None, model=family,
        size=_size_in_file_keys(size) or None, dropout_rate=float(dropout_rate), optimizer=optimizer,
        learning_rate=float(learning_rate), warmup_steps=int(warmup), weight_decay=float(weight_decay),
        global_clipnorm=float(global_clipnorm or 0), gradient_accumulation_steps=accum, epsilon=float(epsilon),
        mixed_precision=mixed_precision, seed=int(seed), shuffle_buffer=int(shuffle_buffer),
        # the gathered-head view saves its own weight layout; the mixed data changes the batches
        gather_positions=bool(gather_positions),
        mix_data=os.path.abspath(mix_data_dir) if mix_data_dir and not is_remote(mix_data_dir) else mix_data_dir,
        # only when set: run folders written before the option still resume
        **({"with_copy": True} if with_copy else {}),
    )
    if chief:
        tf.io.gfile.makedirs(output_dir)
    check_run_options(output_dir, options, force_new=force_new, resume=resume, write=chief)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    if mixed_precision:
        keras.mixed_precision.set_global_policy(mixed_precision)

    backup_dir = os.path.join(output_dir, "backup")
    found = find_state(backup_dir)
    done_step = found[0] if found else 0
    if done_step % checkpoint_every or done_step > steps:
        raise ValueError(f"saved state of step {done_step} in {backup_dir} does not fit --steps {steps} "
                         f"--checkpoint-every {checkpoint_every}")
    done_epochs = done_step // checkpoint_every
    if found:
        logger.warning("resuming from %s at step %d", found[1], done_step)
    dataset = make_dataset(
        data_dir, batch_size, seed=seed, shuffle_buffer=shuffle_buffer,
        skip_batches=done_step // (2 if mix_data_dir else 1), meta=meta,
        gather_positions=gather_positions,
    )
    if mix_data_dir:
        import tensorflow as tf

        mixed = make_dataset(
            mix_data_dir, batch_size, seed=seed, shuffle_buffer=shuffle_buffer,
            skip_batches=done_step // 2, gather_positions=gather_positions,
        )
        dataset = tf.data.Dataset.choose_from_datasets([dataset, mixed], tf.data.Dataset.range(2).repeat())
    with strategy.scope():
        net = build_pretraining_model(
            meta, keep_tokens=load_keep_tokens(data_dir, meta), config_path=config_path, init_checkpoint=init_checkpoint, family=family,
            dropout_rate=dropout_rate, with_copy=with_copy, **(size or {}),
        )
        # The schedule counts optimizer updates (Keras' ``iterations``), which happen
        # once every ``gradient_accumulation_steps`` steps.
        opt = make_optimizer(
            optimizer, learning_rate, max(1, warmup // accum), max(2, steps // accum), weight_decay,
            global_clipnorm, gradient_accumulation_steps, epsilon=epsilon,
        )
        # The view shares net's weights; net itself is exported and evaluated.
        train_net = net.loss_positions_model() if gather_positions else net
        compile_for_pretraining(train_net, opt, steps_per_execution, from_logits=not with_copy)
    if on_cluster_joined is not None:
        # Under MultiWorkerMirroredStrategy creating the variables broadcast the chief's
        # initial values: every worker has been reached.
        on_cluster_joined()
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        _patch_symbolic_build(train_net)
    callbacks = [make_backup_callback(backup_dir, checkpoint_every, write=chief,
                                      checkpoints_dir=os.path.join(output_dir, "checkpoints"), strategy=strategy)]
    if chief:
        history_csv = os.path.join(output_dir, "history.csv")
        callbacks.append(_RemoteCSVLogger(history_csv) if is_remote(history_csv)
                         else keras.callbacks.CSVLogger(history_csv, append=True))
        if _tensorboard_available():
            callbacks.append(keras.callbacks.TensorBoard(os.path.join(output_dir, "logs"), update_freq=log_every))
        else:
            logger.warning("tensorboard is not installed: no TensorBoard logs (pip install tensorboard); "
                           "per-checkpoint metrics go to %s", os.path.join(output_dir, "history.csv"))
    if stop_after_steps:
        callbacks.append(_Preempt(stop_after_steps, accum))
    if os.environ.get("KERASNLP_PLUS_LOG_DATA_SHARE"):  # test hook: which rows this worker reads
        _log_data_share(strategy, dataset, task_id)
    start = time.time()
    export_dir = os.path.join(output_dir, "export")
    try:
        history = train_net.fit(
            dataset, epochs=steps // checkpoint_every, steps_per_epoch=checkpoint_every,
            initial_epoch=done_epochs, callbacks=callbacks, verbose=verbose,
        )
        elapsed = time.time() - start
        if chief:
            if is_remote(export_dir):  # written locally, then copied (gs:// on a TPU)
                local = tempfile.mkdtemp(prefix="kerasnlp_plus-export-")
                try:
                    export_model(net, local, data_dir if not is_remote(data_dir) else None,
                                 export_huggingface, hf_dtype)
                    _copy_tree(local, export_dir)
                finally:
                    shutil.rmtree(local, ignore_errors=True)
            else:
                export_model(net, export_dir, data_dir, export_huggingface, hf_dtype)
    except DiskFullError:
        raise
    except tf.errors.DataLossError as e:
        raise _name_bad_shard(data_dir, meta, e) from e
    except Exception as e:
        if is_disk_full(e):
            raise DiskFullError(
                28, f"disk full while writing into {output_dir} ({type(e).__name__}); the last saved state in "
                f"{backup_dir} is intact: free some space and rerun the same command to resume",
            ) from e
        raise
    summary = {
        "steps": int(train_net.optimizer.iterations.numpy()) * accum,
        "optimizer_updates": int(train_net.optimizer.iterations.numpy()),
        "resumed_at_step": done_step,
        "replicas": strategy.num_replicas_in_sync,
        "workers": strategy.extended._num_workers if hasattr(strategy.extended, "_num_workers") else 1,
        "global_batch_size": batch_size,
        "seq_len": meta["seq_len"],
        "train_seconds_this_run": round(elapsed, 1),
        "history": {k: [float(x) for x in v] for k, v in history.history.items()},
        "export_dir": export_dir if chief else None,
        "chief": chief,
    }
    if meta["counts"].get("eval", {}).get("examples"):
        summary["eval"] = evaluate_masked(net, data_dir, batch_size=batch_size, seed=seed, meta=meta)
    if chief:
        from kerasnlp_plus.utils import atomic_write_text

        if is_remote(output_dir):
            with tf.io.gfile.GFile(os.path.join(output_dir, "summary.json"), "w") as f:
                f.write(json.dumps(summary, indent=1))
        else:
            atomic_write_text(os.path.join(output_dir, "summary.json"), json.dumps(summary, indent=1))
    return net, summary
