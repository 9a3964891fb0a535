"""Hierarchical position embeddings on long text (kexue.fm 7947), at small scale.

A BERT trained with 512 positions reads 1,024 and 2,048-token sequences once its
position table is extended hierarchically (``hierarchical_position=True``: position
``i*512 + j`` = ``alpha*u[i] + (1-alpha)*u[j]``). This script packs real documents into
sequences of those lengths, masks 15% of the tokens, and reports masked-LM accuracy:

- ``truncated-512``: the same model reading each sequence in independent 512-token
  windows (the usual workaround; the positions it sees are the trained ones);
- ``hierarchical, before``: the whole sequence at once, no further training;
- ``hierarchical, after``: after a short continued MLM training at that length.

The same masked tokens are scored in every row. The blog's figure at 1,536 tokens:
accuracy starts near 38% (BERT-base) and recovers within about 3k steps.

    python examples/long_text_mlm.py                      # the shipped demo model
    python examples/long_text_mlm.py --model-dir chinese_L-12_H-768_A-12 --train-steps 500
"""
import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from kerasnlp_plus.utils import shared_data_dir  # noqa: E402

DEFAULT_CORPUS = shared_data_dir("corpus", "CLUECorpusSmall_sampled.txt")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", help="folder with config.json/bert_config.json, weights and vocab.txt "
                   "(default: the demo model shipped in kerasnlp_plus/assets/demo_model)")
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="raw text, one document per line")
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048])
    p.add_argument("--alpha", type=float, default=0.4)
    p.add_argument("--trained-positions", type=int,
                   help="use only the first N rows of the position table: those the model was "
                   "actually trained on (the demo model was pretrained at length 128)")
    p.add_argument("--train-steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--eval-sequences", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", help="write the results as JSON here")
    return p.parse_args(argv)


def pack(token_streams, length, cls_id, sep_id):
    """Concatenate documents (each followed by [SEP]) and cut ``[CLS] ... [SEP]`` blocks."""
    flat = np.concatenate([np.append(ids, sep_id) for ids in token_streams]).astype(np.int32)
    body = length - 2
    blocks = [flat[i:i + body] for i in range(0, len(flat) - body + 1, body)]
    return np.array([np.concatenate([[cls_id], b, [sep_id]]) for b in blocks], dtype=np.int32)


def mask_tokens(seqs, rng, mask_id, special_ids, rate=0.15):
    """Replace ``rate`` of the non-special tokens by [MASK]; labels and 0/1 weights."""
    candidates = ~np.isin(seqs, list(special_ids))
    chosen = candidates & (rng.random(seqs.shape) < rate)
    return np.where(chosen, mask_id, seqs), seqs.copy(), chosen.astype(np.float32)


def windows(inputs, labels, weights, cls_id, sep_id, window=512):
    """Cut ``[CLS] body [SEP]`` sequences into independent ``window``-token pieces."""
    body = window - 2
    out = ([], [], [])
    for x, y, w in zip(inputs, labels, weights):
        for i in range(1, len(x) - 1, body):
            sl = slice(i, min(i + body, len(x) - 1))
            out[0].append(np.concatenate([[cls_id], x[sl], [sep_id]]))
            out[1].append(np.concatenate([[cls_id], y[sl], [sep_id]]))
            out[2].append(np.concatenate([[0], w[sl], [0]]))
    from kerasnlp_plus.snippets import sequence_padding

    return tuple(sequence_padding(o).astype(np.float32 if k == 2 else np.int32) for k, o in enumerate(out))


def main(argv=None):
    args = parse_args(argv)
    import keras

    from kerasnlp_plus.models import build_transformer_model
    from kerasnlp_plus.models.config import resolve_config_path
    from kerasnlp_plus.tasks.long_text import masked_lm_scores, with_trained_positions
    from kerasnlp_plus.tokenizers import Tokenizer
    from kerasnlp_plus.utils import atomic_write_text

    if args.model_dir is None:
        from kerasnlp_plus.pretraining import demo_model_path

        args.model_dir = demo_model_path()
    folder = pathlib.Path(args.model_dir)
    if not (folder / "vocab.txt").is_file():
        raise FileNotFoundError(f"no vocab.txt in model folder {folder}")
    corpus = pathlib.Path(args.corpus)
    if not corpus.is_file():
        raise FileNotFoundError(f"corpus not found: {corpus} (pass --corpus, one document per line)")
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    tokenizer = Tokenizer(str(folder / "vocab.txt"), do_lower_case=True)
    config = resolve_config_path(folder)

    def load(**kwargs):
        model = build_transformer_model(config, folder, with_mlm=True)
        if not args.trained_positions and not kwargs:
            return model
        return with_trained_positions(model, config, args.trained_positions or model.max_position, **kwargs)

    base = load()
    trained_positions = base.max_position
    if max(args.lengths) > trained_positions ** 2:
        raise ValueError(f"--lengths up to {max(args.lengths)} exceed {trained_positions}**2 positions")

    docs = [line.strip() for line in open(corpus, encoding="utf-8") if line.strip()]
    rng.shuffle(docs)
    streams = [np.array(tokenizer.encode(d)[0][1:-1]) for d in docs]
    held_out, train_streams = streams[: len(streams) // 5], streams[len(streams) // 5:]
    special = {tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id}
    mask_id = tokenizer.mask_id

    results = []
    for length in args.lengths:
        eval_seqs = pack(held_out, length, tokenizer.cls_id, tokenizer.sep_id)[: args.eval_sequences]
        x, y, w = mask_tokens(eval_seqs, rng, mask_id, special)
        xw, yw, ww = windows(x, y, w, tokenizer.cls_id, tokenizer.sep_id, trained_positions)
        truncated = masked_lm_scores(base, xw, yw, ww, args.batch_size)[0]
        long_model = load(hierarchical_position=args.alpha)
        before = masked_lm_scores(long_model, x, y, w, args.batch_size)[0]

        train_seqs = pack(train_streams, length, tokenizer.cls_id, tokenizer.sep_id)
        start = time.time()
        long_model.compile(optimizer=keras.optimizers.AdamW(args.lr, weight_decay=0.01),
                           loss=keras.losses.SparseCategoricalCrossentropy(),
                           weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")])

        def batches():
            while True:
                idx = rng.integers(0, len(train_seqs), size=args.batch_size)
                tx, ty, tw = mask_tokens(train_seqs[idx], rng, mask_id, special)
                yield (tx, np.zeros_like(tx)), ty, tw

        history = long_model.fit(batches(), steps_per_epoch=args.train_steps, epochs=1, verbose=2)
        after = masked_lm_scores(long_model, x, y, w, args.batch_size)[0]
        row = dict(length=length, eval_sequences=len(x), masked_tokens=int(w.sum()),
                   truncated=truncated, hierarchical_before=before, hierarchical_after=after,
                   train_steps=args.train_steps, train_seconds=round(time.time() - start, 1),
                   train_loss_last=float(history.history["loss"][-1]))
        results.append(row)
        print(f"length {length}: truncated-{trained_positions} {truncated:.2%} | hierarchical before "
              f"{before:.2%} | after {args.train_steps} steps {after:.2%} "
              f"({row['train_seconds']} s, {int(w.sum())} masked tokens)", flush=True)

    print("\n| length | truncated to %d | hierarchical, before | hierarchical, after %d steps |" % (
        trained_positions, args.train_steps))
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['length']} | {r['truncated']:.2%} | {r['hierarchical_before']:.2%} | "
              f"{r['hierarchical_after']:.2%} |")
    if args.output:
        atomic_write_text(args.output, json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
