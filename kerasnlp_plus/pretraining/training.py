"""Pretraining with Keras ``fit`` under a ``tf.distribute`` strategy (the engine
behind ``pretraining/pretrain.py``).

Resuming: ``keras.callbacks.BackupAndRestore`` saves the weights and the optimizer
state at the end of every Keras epoch, and one Keras epoch is ``checkpoint_every``
steps, so a killed run restarts at the last multiple of ``checkpoint_every``. The
input pipeline is a pure function of the step (seeded shuffling, stateless masks),
and the restart skips the batches already consumed, so the resumed run sees exactly
the batches the uninterrupted run would have.
"""
import json
import logging
import math
import os
import shutil
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
    model="bert",
    dropout_rate=0.1,
    **size,
):
    """The model to pretrain for the records described by ``meta``: the task's
    application, an MLM head returning logits, random weights or ``init_checkpoint``.

    ``keep_tokens``: the data's vocab simplification (``load_keep_tokens``), applied
    when ``init_checkpoint`` has the original vocabulary.
    ``size``: ``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``,
    ``intermediate_size``, ``max_position_embeddings`` when there is no config file.
    """
    from kerasnlp_plus.models import build_transformer_model, read_config

    kwargs = dict(
        model=model,
        application=meta["application"],
        with_mlm="linear",
        dropout_rate=dropout_rate,
        attention_dropout_rate=dropout_rate,
    )
    if config_path is not None:
        _, cfg = read_config(config_path)
        if init_checkpoint is None or cfg["vocab_size"] == meta["vocab_size"]:
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
    import keras

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


def compile_for_pretraining(net, optimizer):
    net.compile(
        optimizer=optimizer,
        loss=masked_lm_loss(),
        weighted_metrics=[masked_accuracy()],
        jit_compile=False,
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
        logp = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
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


def run_pretraining(
    data_dir,
    output_dir,
    strategy,
    steps,
    batch_size,
    checkpoint_every=1000,
    config_path=None,
    init_checkpoint=None,
    model="bert",
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
    gather_positions=False,
    mix_data_dir=None,
):
    """Train and export; returns a summary dict (also written to ``output_dir``).

    ``gather_positions``: run the MLM head only at the scored positions during
    training (``Transformer.loss_positions_model``): same loss, a faster step. The
    backups of such a run resume only with the same setting.

    ``mix_data_dir``: a second folder of records (e.g. MLM next to UniLM seq2seq),
    read in alternate batches; the model is the one ``data_dir``'s task needs (a
    ``unilm`` model reads all-segment-0 MLM rows bidirectionally). Needs
    ``gather_positions`` when the two have different ``seq_len``.

    ``batch_size`` is the global batch per step (split over the replicas).
    ``steps`` must be a multiple of ``checkpoint_every``.
    """
    import keras
    import tensorflow as tf

    meta = load_meta(data_dir)
    if steps % checkpoint_every:
        raise ValueError(
            f"--steps ({steps}) must be a multiple of --checkpoint-every ({checkpoint_every}): "
            "one Keras epoch is one checkpoint interval"
        )
    if batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"batch size {batch_size} is not divisible by {strategy.num_replicas_in_sync} replicas")
    os.makedirs(output_dir, exist_ok=True)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    if mixed_precision:
        keras.mixed_precision.set_global_policy(mixed_precision)

    backup_dir = os.path.join(output_dir, "backup")
    done_epochs = 0
    meta_path = os.path.join(backup_dir, "training_metadata.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            done_epochs = int(json.load(f)["epoch"])
        logger.warning("resuming from %s at step %d", backup_dir, done_epochs * checkpoint_every)
    dataset = make_dataset(
        data_dir, batch_size, seed=seed, shuffle_buffer=shuffle_buffer,
        skip_batches=done_epochs * checkpoint_every // (2 if mix_data_dir else 1), meta=meta,
        gather_positions=gather_positions,
    )
    if mix_data_dir:
        import tensorflow as tf

        mixed = make_dataset(
            mix_data_dir, batch_size, seed=seed, shuffle_buffer=shuffle_buffer,
            skip_batches=done_epochs * checkpoint_every // 2, gather_positions=gather_positions,
        )
        dataset = tf.data.Dataset.choose_from_datasets([dataset, mixed], tf.data.Dataset.range(2).repeat())
    with strategy.scope():
        net = build_pretraining_model(
            meta, keep_tokens=load_keep_tokens(data_dir, meta), config_path=config_path, init_checkpoint=init_checkpoint, model=model,
            dropout_rate=dropout_rate, **(size or {}),
        )
        # The schedule counts optimizer updates (Keras' ``iterations``), which happen
        # once every ``gradient_accumulation_steps`` steps.
        accum = max(1, int(gradient_accumulation_steps))
        warmup = warmup_steps if warmup_steps is not None else max(1, steps // 10)
        opt = make_optimizer(
            optimizer, learning_rate, max(1, warmup // accum), max(2, steps // accum), weight_decay,
            global_clipnorm, gradient_accumulation_steps, epsilon=epsilon,
        )
        # The view shares net's weights; net itself is exported and evaluated.
        train_net = net.loss_positions_model() if gather_positions else net
        compile_for_pretraining(train_net, opt)
    callbacks = [
        keras.callbacks.BackupAndRestore(backup_dir, save_freq="epoch", delete_checkpoint=False),
        keras.callbacks.CSVLogger(os.path.join(output_dir, "history.csv"), append=True),
        keras.callbacks.ModelCheckpoint(
            os.path.join(output_dir, "checkpoints", "epoch-{epoch:05d}.weights.h5"), save_weights_only=True
        ),
    ]
    if _tensorboard_available():
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(output_dir, "logs"), update_freq=log_every))
    else:
        logger.warning("tensorboard is not installed: no TensorBoard logs (pip install tensorboard); "
                       "per-checkpoint metrics go to %s", os.path.join(output_dir, "history.csv"))
    if stop_after_steps:
        callbacks.append(_Preempt(stop_after_steps, accum))
    start = time.time()
    history = train_net.fit(
        dataset, epochs=steps // checkpoint_every, steps_per_epoch=checkpoint_every,
        callbacks=callbacks, verbose=verbose,
    )
    elapsed = time.time() - start
    export_dir = os.path.join(output_dir, "export")
    export_model(net, export_dir, data_dir, export_huggingface, hf_dtype)
    summary = {
        "steps": int(train_net.optimizer.iterations.numpy()) * accum,
        "optimizer_updates": int(train_net.optimizer.iterations.numpy()),
        "resumed_at_step": done_epochs * checkpoint_every,
        "replicas": strategy.num_replicas_in_sync,
        "global_batch_size": batch_size,
        "seq_len": meta["seq_len"],
        "train_seconds_this_run": round(elapsed, 1),
        "history": {k: [float(x) for x in v] for k, v in history.history.items()},
        "export_dir": export_dir,
    }
    if meta["counts"].get("eval", {}).get("examples"):
        summary["eval"] = evaluate_masked(net, data_dir, batch_size=batch_size, seed=seed, meta=meta)
    with open(os.path.join(output_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    return net, summary
