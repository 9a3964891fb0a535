"""UniLM seq2seq fine-tuning (bert4keras' ``task_seq2seq_autotitle*.py`` recipe):
one BERT with the UniLM mask reads ``[CLS] source [SEP] target [SEP]`` (segment 1 on
``target [SEP]``) and is scored on the target tokens only.

The input pipeline is built for ``tf.distribute``: each element is a *global* batch
of exactly ``batch_size`` rows (the last one filled with weight-0 copies), padded to
that batch's longest row, shuffled from stateless seeds ``(seed, epoch)``, with
weights normalized over the global batch (the pretraining pipeline's
``normalize_weights``) and the pretraining loss (``sum_over_batch_size`` without the
padding mask). Keras splits every global batch row-wise over the replicas, and the
sum of the replicas' losses is the mean cross entropy over all target tokens of the
global batch: 1, 2 or N replicas give the same gradients (tested to 1e-5).
"""
import numpy as np

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]

# The tiny from-scratch model (used only when no checkpoint and no demo model).
TINY_CONFIG = dict(
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=512,
    max_position_embeddings=512,
)


# ----------------------------------------------------------------------- models
def _dropout_overrides(dropout):
    return {} if dropout is None else {"dropout_rate": dropout, "attention_dropout_rate": dropout}


def default_vocab_path():
    """A vocab for the from-scratch model: the demo model's, else the shared data's."""
    import pathlib

    from kerasnlp_plus.pretraining import demo_model_path
    from kerasnlp_plus.utils import shared_data_dir

    for path in (pathlib.Path(demo_model_path()) / "vocab.txt", shared_data_dir("vocab", "vocab.txt")):
        if path.is_file():
            return path
    raise FileNotFoundError(
        "no vocab found: pass --vocab (a BERT vocab.txt), or install the demo model "
        "(kerasnlp_plus/assets/demo_model)"
    )


def load_model_and_tokenizer(config=None, checkpoint=None, vocab=None, model="bert", scratch=False,
                             dropout=None, application="unilm", log=print, with_copy=None):
    """``(model, tokenizer, source)``, the model with an MLM head (probabilities).

    Sources, in order: ``config``/``checkpoint`` (Google TF or Hugging Face; ``vocab``
    required, simplified bert4keras-style with ``load_vocab(simplified=True)``), the
    shipped demo model, a tiny model from scratch (``scratch=True`` forces it; random
    init, only shows that a pipeline runs). ``source`` is ``'checkpoint'``, ``'demo'``
    or ``'scratch'``. ``dropout``: overrides the config's rates. ``with_copy``: add a
    copy mechanism (a pointer over the source tokens, ``layers/copy.py``); ``None``:
    exactly when the checkpoint holds a trained one (the demo model does). A pointer
    the checkpoint lacks starts from random weights and is trained by the fine-tuning.
    """
    import pathlib

    from kerasnlp_plus.models import build_transformer_model
    from kerasnlp_plus.pretraining import demo_model_path
    from kerasnlp_plus.tokenizers import Tokenizer, load_vocab

    from kerasnlp_plus.checkpoints import has_copy_weights

    overrides = _dropout_overrides(dropout)

    def pointer(checkpoint_path):
        use = has_copy_weights(checkpoint_path) if with_copy is None and checkpoint_path else bool(with_copy)
        return {"with_copy": True} if use else {}
    if checkpoint or config:
        if not vocab:
            raise ValueError("--vocab is required with --config/--checkpoint")
        token_dict, keep_tokens = load_vocab(vocab, simplified=True, startswith=SPECIAL_TOKENS)
        tokenizer = Tokenizer(token_dict, do_lower_case=True)
        net = build_transformer_model(config, checkpoint, model=model, application=application, with_mlm=True,
                                      keep_tokens=keep_tokens, **overrides, **pointer(checkpoint))
        log(f"model: {model} from {checkpoint or config} (vocab simplified to {len(keep_tokens)} tokens)")
        return net, tokenizer, "checkpoint"
    demo = pathlib.Path(demo_model_path())
    if not scratch and (demo / "config.json").is_file() and (demo / "vocab.txt").is_file():
        tokenizer = Tokenizer(str(demo / "vocab.txt"), do_lower_case=True)
        net = build_transformer_model(str(demo), str(demo), application=application, with_mlm=True, **overrides,
                                      **pointer(str(demo)))
        log(f"model: the pretrained demo model in {demo}"
            + (" with its pretrained copy mechanism (a pointer over the source tokens)" if net.with_copy else ""))
        return net, tokenizer, "demo"
    token_dict, keep_tokens = load_vocab(str(vocab or default_vocab_path()), simplified=True,
                                         startswith=SPECIAL_TOKENS)
    tokenizer = Tokenizer(token_dict, do_lower_case=True)
    net = build_transformer_model(None, application=application, with_mlm=True, vocab_size=len(keep_tokens),
                                  **TINY_CONFIG, **overrides, **pointer(None))
    log("model: NO pretrained weights found: training a tiny model FROM SCRATCH "
        f"({TINY_CONFIG['num_hidden_layers']} layers, hidden {TINY_CONFIG['hidden_size']}, "
        f"vocab {len(keep_tokens)}). This only shows the pipeline; its scores are not "
        "comparable to published ones.")
    return net, tokenizer, "scratch"


# ------------------------------------------------------------------------- data
def encode_pairs(tokenizer, sources, targets, max_source_len, max_target_len):
    """``[(token_ids, segment_ids)]`` of ``[CLS] source [SEP] target [SEP]``, segment 1
    on ``target [SEP]``. The source is cut to ``max_source_len`` tokens and the target
    to ``max_target_len`` tokens (both counts include their special tokens).
    """
    src = tokenizer.encode_batch(list(sources), maxlen=max_source_len)
    tgt = tokenizer.encode_batch(list(targets), maxlen=max_target_len + 1)  # +1: its [CLS] is dropped
    out = []
    for (s_ids, _), (t_ids, _) in zip(src, tgt):
        out.append((list(s_ids) + list(t_ids[1:]), [0] * len(s_ids) + [1] * (len(t_ids) - 1)))
    return out


def num_batches(encoded, batch_size):
    """Global batches per pass over ``encoded`` (``steps_per_epoch`` of ``fit``)."""
    return -(-len(encoded) // int(batch_size))


def unilm_dataset(encoded, batch_size, shuffle=False, seed=0, repeat=False, gather_positions=False):
    """A ``tf.data.Dataset`` of ``(inputs, labels, weights)`` global batches.

    Args:
        encoded: ``[(token_ids, segment_ids)]`` (see :func:`encode_pairs`).
        batch_size: rows per global batch (all replicas together). Every batch has
            exactly this many rows: the last one of a pass is filled with copies of
            rows of the same pass that carry no weight, so that every replica always
            gets an equal share.
        shuffle: a new order each pass, from stateless seeds ``(seed, pass)``: the same
            for any number of replicas and for every iterator over the dataset.
        repeat: cycle forever (training: pass ``steps_per_epoch=num_batches(...)`` to
            ``fit``); otherwise one pass.
        gather_positions: batches for ``model.loss_positions_model()`` (the head at
            the target positions only; the same loss, a faster step).

    ``inputs`` is ``{"Input-Token", "Input-Segment"}`` (plus ``"Input-Positions"``),
    ``labels`` follow the pretraining records' ``unilm`` rule (position t predicts
    token t+1 where t+1 is in segment 1) and ``weights`` are normalized over the
    global batch (use :func:`compile_unilm`'s loss).
    """
    import tensorflow as tf

    from kerasnlp_plus.pretraining.pipeline import gather_loss_positions, normalize_weights
    from kerasnlp_plus.pretraining.records import next_token_labels

    n, batch_size = len(encoded), int(batch_size)
    if not n:
        raise ValueError("unilm_dataset: no examples (encoded is empty)")
    if batch_size < 1:
        raise ValueError(f"unilm_dataset: batch_size must be >= 1, got {batch_size}")
    for i, (ids, segs) in enumerate(encoded):
        if len(ids) != len(segs) or not len(ids):
            raise ValueError(f"unilm_dataset: example {i} has {len(ids)} token ids and {len(segs)} segment ids")
    lengths = np.array([len(ids) for ids, _ in encoded], np.int64)
    tokens = tf.RaggedTensor.from_row_lengths(np.concatenate([ids for ids, _ in encoded]).astype(np.int32), lengths)
    segments = tf.RaggedTensor.from_row_lengths(np.concatenate([s for _, s in encoded]).astype(np.int32), lengths)
    filler = num_batches(encoded, batch_size) * batch_size - n

    def one_pass(epoch):
        order = tf.range(n, dtype=tf.int32)
        if shuffle:
            key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
            order = tf.cast(tf.argsort(tf.random.stateless_uniform([n], key)), tf.int32)
        rows = tf.concat([order, tf.gather(order, tf.range(filler) % n)], axis=0)
        scored = tf.concat([tf.ones([n]), tf.zeros([filler])], axis=0)
        return tf.data.Dataset.from_tensor_slices((rows, scored)).batch(batch_size)

    def make_batch(rows, scored):
        token_ids = tf.gather(tokens, rows).to_tensor()  # padded to this global batch's longest row
        segment_ids = tf.gather(segments, rows).to_tensor()
        labels = next_token_labels(token_ids, segment_ids)
        weights = tf.cast(labels != 0, tf.float32) * scored[:, None]
        return {"Input-Token": token_ids, "Input-Segment": segment_ids}, labels, weights

    if repeat:
        ds = tf.data.Dataset.range(2**62).flat_map(one_pass)
    else:
        ds = one_pass(tf.constant(0, tf.int64))
    ds = ds.map(make_batch)
    if gather_positions:
        ds = ds.map(gather_loss_positions)
    ds = ds.map(normalize_weights)
    options = tf.data.Options()
    options.deterministic = True
    # Several workers: each takes its rows of every global batch (as in pretraining).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def compile_unilm(model, lr, weight_decay=0.0, train_model=None):
    """Adam (or AdamW with ``weight_decay``, not on the pretraining's ``NO_DECAY``
    variables) and the pretraining's weighted cross entropy, which with
    :func:`unilm_dataset`'s normalized weights is the mean over the target tokens of
    the global batch (bert4keras' ``sum(loss * mask) / sum(mask)``).

    ``train_model``: the model to compile instead of ``model`` (e.g.
    ``model.loss_positions_model()``, which shares ``model``'s weights). Returns it.
    Call it inside ``strategy.scope()``.
    """
    # kerasnlp_plus' Adam/AdamW: Keras' own, with exact updates for repeated embedding rows.
    from kerasnlp_plus.optimizers import Adam, AdamW
    from kerasnlp_plus.pretraining.losses import masked_lm_loss
    from kerasnlp_plus.pretraining.training import NO_DECAY

    if weight_decay:
        optimizer = AdamW(lr, weight_decay=weight_decay)
        optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    else:
        optimizer = Adam(lr)
    train_model = model if train_model is None else train_model
    # Variable-length batches: no XLA (it would recompile for every new shape).
    train_model.compile(optimizer=optimizer, loss=masked_lm_loss(from_logits=model.with_mlm == "linear"),
                        jit_compile=False)
    import tensorflow as tf

    if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        # Keras 3.15 needs pretraining's workarounds under several workers.
        from kerasnlp_plus.pretraining.training import _patch_symbolic_build

        _patch_symbolic_build(train_model)
    return train_model
