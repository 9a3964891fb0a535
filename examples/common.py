"""Helpers shared by the end-to-end examples (UniLM seq2seq on CSL and KgCLUE).

Everything here is ordinary Keras 3 / tf.data: the model is trained with
``model.fit`` on a padded ``tf.data`` pipeline, the loss is Keras'
``SparseCategoricalCrossentropy`` weighted by a per-token sample weight, and
decoding goes through :class:`kerasnlp_plus.generation.Generator` (cached, batched).

Model sources, in the order they are tried by :func:`load_model_and_tokenizer`:

1. ``--config/--checkpoint/--vocab``: a real checkpoint (Google TF or Hugging Face),
   vocabulary simplified bert4keras-style (``load_vocab(simplified=True)``).
2. The small pretrained demo model shipped in ``kerasnlp_plus/assets/demo_model``.
3. A tiny model trained from scratch (random init): only shows that the pipeline
   runs; its scores are NOT comparable to published ones.
"""
import json
import os
import pathlib
import random
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

EXAMPLES_DIR = pathlib.Path(__file__).resolve().parent
REPO_ROOT = EXAMPLES_DIR.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerasnlp_plus.models import build_transformer_model  # noqa: E402
from kerasnlp_plus.tokenizers import Tokenizer, load_vocab  # noqa: E402
from kerasnlp_plus.utils import atomic_path, shared_data_dir  # noqa: E402

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]

# The tiny from-scratch model (used only when no checkpoint and no demo model).
TINY_CONFIG = dict(
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=512,
    max_position_embeddings=512,
)


def set_seed(seed):
    """Python, numpy and TF/Keras seeds (``keras.utils.set_random_seed``)."""
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


# --------------------------------------------------------------------------- data
def read_title_tsv(paths, limit=None):
    """``(title, abstract)`` pairs from ``title<TAB>abstract`` files, in order.

    A malformed line raises ``ValueError`` naming the file and line number.
    ``limit`` keeps the first ``limit`` pairs over all files.
    """
    pairs = []
    for path in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                fields = line.split("\t")
                if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
                    raise ValueError(
                        f"{path}:{lineno}: expected 'title<TAB>abstract' (2 non-empty fields), "
                        f"got {len(fields)} field(s): {line[:80]!r}"
                    )
                pairs.append((fields[0].strip(), fields[1].strip()))
                if limit is not None and len(pairs) >= limit:
                    return pairs
    return pairs


def unilm_pairs(tokenizer, sources, targets, max_source_len, max_target_len):
    """Encode ``[CLS] source [SEP] target [SEP]``; segment 1 on ``target [SEP]``.

    The source is cut to ``max_source_len`` tokens and the target to
    ``max_target_len`` tokens (both counts include their special tokens).
    """
    src = tokenizer.encode_batch(list(sources), maxlen=max_source_len)
    tgt = tokenizer.encode_batch(list(targets), maxlen=max_target_len + 1)  # +1: its [CLS] is dropped
    out = []
    for (s_ids, _), (t_ids, _) in zip(src, tgt):
        ids = list(s_ids) + list(t_ids[1:])
        out.append((ids, [0] * len(s_ids) + [1] * (len(t_ids) - 1)))
    return out


def _to_training_example(token_ids, segment_ids):
    """``([tokens, segments], y, weight)``: position t predicts token t+1, counted
    only where token t+1 is in segment 1 (padding has segment 0, so it is masked)."""
    pad = tf.zeros_like(token_ids[:, :1])
    y = tf.concat([token_ids[:, 1:], pad], axis=1)
    w = tf.cast(tf.concat([segment_ids[:, 1:], pad], axis=1), "float32")
    return (token_ids, segment_ids), y, w


def _to_positions_example(token_ids, segment_ids):
    """Like :func:`_to_training_example`, for ``model.loss_positions_model()``: the
    inputs gain ``Input-Positions`` (the target positions) and the labels/weights are
    taken there only, so the MLM head runs on the title tokens alone."""
    from kerasnlp_plus.pretraining.pipeline import gather_loss_positions

    (tokens, segments), y, w = _to_training_example(token_ids, segment_ids)
    inputs, y, w = gather_loss_positions({"Input-Token": tokens, "Input-Segment": segments}, y, w)
    return inputs, y, w


def unilm_dataset(encoded, batch_size, shuffle=False, seed=0, gather_positions=False):
    """A ``tf.data.Dataset`` of padded batches for ``model.fit`` / ``evaluate``.

    ``gather_positions``: batches for ``model.loss_positions_model()`` (the head
    at the target positions only; the same loss, a faster step)."""
    def gen():
        for ids, segs in encoded:
            yield np.asarray(ids, np.int32), np.asarray(segs, np.int32)

    spec = tf.TensorSpec([None], tf.int32)
    ds = tf.data.Dataset.from_generator(gen, output_signature=(spec, spec))
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(encoded)))
    if shuffle:
        ds = ds.shuffle(len(encoded), seed=seed, reshuffle_each_iteration=True)
    ds = ds.padded_batch(batch_size).map(_to_positions_example if gather_positions else _to_training_example)
    return ds.prefetch(tf.data.AUTOTUNE)


def pad_batch(seqs, value=0):
    """Right-pad int sequences into one ``(batch, max_len)`` int32 array."""
    from kerasnlp_plus.snippets import sequence_padding

    return np.asarray(sequence_padding(seqs, value=value), np.int32)


# ------------------------------------------------------------------------- models
def demo_model_path():
    """Folder of the shipped demo model, or None when it is not installed."""
    try:
        from kerasnlp_plus.pretraining import demo_model_path as _path
        path = _path()
    except Exception:
        path = REPO_ROOT / "kerasnlp_plus" / "assets" / "demo_model"
    path = pathlib.Path(path) if path else None
    if path is not None and (path / "config.json").is_file() and (path / "vocab.txt").is_file():
        return path
    return None


def default_vocab_path():
    """A vocab for the from-scratch model: the demo model's, else the shared data's."""
    demo = demo_model_path()
    if demo is not None:
        return demo / "vocab.txt"
    path = shared_data_dir("vocab", "vocab.txt")
    if path.is_file():
        return path
    raise FileNotFoundError(
        "no vocab found: pass --vocab (a BERT vocab.txt), or install the demo model "
        "(kerasnlp_plus/assets/demo_model)"
    )


def load_model_and_tokenizer(args, application="unilm", log=print):
    """``(model, tokenizer, source)`` from the command line arguments.

    ``args`` needs ``config, checkpoint, vocab, model`` and ``scratch`` (force the
    from-scratch model); ``source`` is ``'checkpoint'``, ``'demo'`` or ``'scratch'``.
    """
    if args.checkpoint or args.config:
        if not args.vocab:
            raise ValueError("--vocab is required with --config/--checkpoint")
        token_dict, keep_tokens = load_vocab(args.vocab, simplified=True, startswith=SPECIAL_TOKENS)
        tokenizer = Tokenizer(token_dict, do_lower_case=True)
        model = build_transformer_model(
            args.config, args.checkpoint, model=args.model, application=application,
            with_mlm=True, keep_tokens=keep_tokens, **_dropout_overrides(args),
        )
        log(f"model: {args.model} from {args.checkpoint or args.config} "
            f"(vocab simplified to {len(keep_tokens)} tokens)")
        return model, tokenizer, "checkpoint"
    demo = None if getattr(args, "scratch", False) else demo_model_path()
    if demo is not None:
        tokenizer = Tokenizer(str(demo / "vocab.txt"), do_lower_case=True)
        model = build_transformer_model(str(demo), str(demo), application=application, with_mlm=True,
                                        **_dropout_overrides(args))
        log(f"model: the pretrained demo model in {demo}")
        return model, tokenizer, "demo"
    vocab = args.vocab or default_vocab_path()
    token_dict, keep_tokens = load_vocab(str(vocab), simplified=True, startswith=SPECIAL_TOKENS)
    tokenizer = Tokenizer(token_dict, do_lower_case=True)
    model = build_transformer_model(
        None, application=application, with_mlm=True, vocab_size=len(keep_tokens), **TINY_CONFIG,
        **_dropout_overrides(args),
    )
    log("model: NO pretrained weights found: training a tiny model FROM SCRATCH "
        f"({TINY_CONFIG['num_hidden_layers']} layers, hidden {TINY_CONFIG['hidden_size']}, "
        f"vocab {len(keep_tokens)}). This only shows the pipeline; its scores are not "
        "comparable to published ones.")
    return model, tokenizer, "scratch"


def add_strategy_args(parser):
    """``--replicas``: the device options shared with ``pretraining/pretrain.py``."""
    g = parser.add_argument_group("devices (the strategy selection of pretraining/pretrain.py)")
    g.add_argument("--replicas", type=int, default=None,
                   help="N logical CPU replicas + MirroredStrategy (testing on a CPU). Default: all local "
                        "GPUs (MirroredStrategy), or the cluster of TF_CONFIG (MultiWorkerMirroredStrategy)")
    g.add_argument("--dropout", type=float, default=None,
                   help="dropout rate (default: the checkpoint's config; 0.1 from scratch)")


def _dropout_overrides(args):
    rate = getattr(args, "dropout", None)
    return {} if rate is None else {"dropout_rate": rate, "attention_dropout_rate": rate}


def select_strategy(args, log=print):
    """The ``tf.distribute`` strategy for ``args`` (call before any TF op: logical CPU
    devices and multi-worker clusters must be set up first)."""
    from kerasnlp_plus.pretraining.strategy import select_strategy as _select

    strategy, kind = _select(replicas=getattr(args, "replicas", None))
    if strategy.num_replicas_in_sync > 1:
        log(f"strategy: {kind} ({strategy.num_replicas_in_sync} replicas; --batch-size is the global batch)")
    return strategy


def compile_unilm(model, lr, weight_decay=0.0, train_model=None):
    """Adam (or AdamW with ``weight_decay``) and the token-weighted cross entropy.

    ``train_model``: the model to compile instead of ``model`` (e.g.
    ``model.loss_positions_model()``, which shares ``model``'s weights).

    ``mean_with_sample_weight`` divides the summed loss by the number of target
    tokens in the batch, as bert4keras' ``sum(loss * mask) / sum(mask)`` does.
    """
    # kerasnlp_plus' Adam/AdamW: Keras' own, with exact updates for repeated embedding rows.
    from kerasnlp_plus.optimizers import Adam, AdamW

    if weight_decay:
        optimizer = AdamW(lr, weight_decay=weight_decay)
        optimizer.exclude_from_weight_decay(var_names=["Norm", "bias", "Bias"])
    else:
        optimizer = Adam(lr)
    loss = keras.losses.SparseCategoricalCrossentropy(
        from_logits=model.with_mlm == "linear", reduction="mean_with_sample_weight"
    )
    # Variable-length batches: no XLA (it would recompile for every new shape).
    train_model = model if train_model is None else train_model
    train_model.compile(optimizer=optimizer, loss=loss, jit_compile=False)
    return train_model


class BatchLossHistory(keras.callbacks.Callback):
    """Keras reports the running epoch mean in ``logs['loss']``; this recovers each
    batch's own loss from consecutive running means (exact for equal weights per
    batch, close otherwise) and keeps them in ``self.losses``."""

    def __init__(self):
        super().__init__()
        self.losses = []
        self._prev_mean = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._prev_mean = 0.0

    def on_train_batch_end(self, batch, logs=None):
        mean = float(logs["loss"])
        self.losses.append((batch + 1) * mean - batch * self._prev_mean)
        self._prev_mean = mean


def save_weights_atomic(model, path):
    """``model.save_weights`` through a temporary file: a crash never leaves a
    half-written best-weights file."""
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp, overwrite=True)


def append_jsonl(path, record):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------------ decoding
class Decoder:
    """Batched beam search over a UniLM model: one place to switch implementations.

    Wraps :class:`kerasnlp_plus.generation.Generator` (encodes the source once,
    extends a key/value cache per step). ``decode(sources, topk, trie, min_ends)``
    takes encoded sources (``[CLS] source [SEP]`` id lists) and returns the
    generated id lists, in input order. Sources are decoded in length-sorted
    batches of ``batch_size`` to keep padding small.
    """

    def __init__(self, model, end_id, maxlen, batch_size=32, minlen=1, **generator_kwargs):
        from kerasnlp_plus.generation import Generator

        # generator_kwargs: e.g. no_repeat_ngram_size
        self.generator = Generator(model, end_id=end_id, maxlen=maxlen, minlen=minlen, **generator_kwargs)
        self.batch_size = batch_size
        self.end_id = end_id

    def decode(self, sources, topk=1, trie=None, min_ends=1, progress=None, node_scores_fn=None,
               source_vocab=False):
        """``node_scores_fn``: look-ahead scores for a batch's sources (see
        ``Generator.beam_search(node_scores=)``). ``source_vocab``: generate only tokens
        of the row's own source (and the end token), a copy constraint for extractive
        tasks such as titles."""
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        results = [None] * len(sources)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if progress is not None:
            batches = progress(batches)
        for idx in batches:
            token_ids = pad_batch([sources[i] for i in idx])
            segment_ids = np.zeros_like(token_ids)
            kwargs = {"topk": topk, "min_ends": min_ends}
            if trie is not None:
                kwargs["trie"] = trie
            if node_scores_fn is not None:  # look-ahead scores of this batch's sources
                kwargs["node_scores"] = node_scores_fn([sources[i] for i in idx])
            if source_vocab:
                # [CLS]/[SEP] framing excluded; the end id stays allowed
                allowed = [sorted(set(sources[i][1:-1]) | {self.end_id}) for i in idx]
                kwargs["prefix_allowed_tokens"] = lambda b, prefix, allowed=allowed: allowed[b]
            outputs = self.generator.beam_search([token_ids, segment_ids], **kwargs)
            for i, out in zip(idx, outputs):
                results[i] = [int(t) for t in out]
        return results


# ------------------------------------------------------------------------- metrics
def title_metrics(predictions, references):
    """Rouge-1/2/L F and BLEU, in percent, scored like bert4keras'
    ``task_seq2seq_autotitle_csl.py``: characters joined by spaces, the ``rouge``
    package's F scores, nltk's sentence BLEU with smoothing ``method1``; an empty
    prediction scores 0; all averaged over the references.

    >>> m = title_metrics(["基于深度学习的图像分类"], ["基于深度学习的图像分类"])
    >>> [round(m[k], 6) for k in ("rouge-1", "rouge-2", "rouge-l", "bleu")]
    [100.0, 100.0, 100.0, 100.0]
    """
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge import Rouge

    if len(predictions) != len(references) or not references:
        raise ValueError(f"need as many predictions as references (>0), got "
                         f"{len(predictions)} and {len(references)}")
    rouge, smooth = Rouge(), SmoothingFunction().method1
    totals = {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0, "bleu": 0.0}
    for pred, ref in zip(predictions, references):
        pred, ref = " ".join(pred), " ".join(ref)
        if not pred.strip():
            continue
        scores = rouge.get_scores(hyps=pred, refs=ref)[0]
        for k in ("rouge-1", "rouge-2", "rouge-l"):
            totals[k] += scores[k]["f"]
        totals["bleu"] += sentence_bleu(
            references=[ref.split(" ")], hypothesis=pred.split(" "), smoothing_function=smooth
        )
    return {k: 100.0 * v / len(references) for k, v in totals.items()}


def copy_baseline(abstracts, references, n_chars):
    """:func:`title_metrics` of the trivial "title": the first ``n_chars`` characters
    of each abstract (what a model must beat to add anything)."""
    return title_metrics([a[:n_chars] for a in abstracts], references)


def max_token_run(token_lists):
    """The longest run of one token repeated back to back over all ``token_lists``."""
    longest = 0
    for tokens in token_lists:
        run, prev = 0, object()
        for t in tokens:
            run = run + 1 if t == prev else 1
            prev = t
            longest = max(longest, run)
    return longest


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self):
        return time.perf_counter() - self.start
