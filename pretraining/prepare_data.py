#!/usr/bin/env python
"""Raw Chinese text -> sharded TFRecords for MLM / LM / UniLM / PLM pretraining.

Examples:

    # RoBERTa-style MLM with whole-word masking (jieba), static masks, 4 processes
    python pretraining/prepare_data.py --task mlm --input corpus.txt \\
        --vocab vocab.txt --simplified-vocab --seq-len 128 --output data/mlm --processes 4

    # masks drawn at training time instead (records keep the word boundaries)
    python pretraining/prepare_data.py --task mlm --dynamic-masking ...

    # GPT-style LM, UniLM (random split point), permutation LM
    python pretraining/prepare_data.py --task lm|unilm|plm ...

Bad lines (invalid UTF-8, control-character garbage) are reported as
``FILE:LINE: skipped: REASON`` on stderr and skipped. Rerunning the same command
skips the shards already written.
"""
import argparse
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--input", nargs="+", required=True, help="UTF-8 text files")
    p.add_argument("--output", required=True, help="output folder (shards, meta.json, vocab.txt)")
    p.add_argument("--vocab", required=True, help="BERT vocab.txt")
    p.add_argument("--task", choices=["mlm", "lm", "unilm", "plm"], default="mlm")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--doc-format", choices=["lines", "blank", "pairs"], default="lines",
                   help="'lines': one document per line; 'blank': blank line between documents; "
                        "'pairs' (--task unilm): one target<TAB>source pair per line")
    p.add_argument("--simplified-vocab", action="store_true",
                   help="drop the tokens a Chinese tokenizer never produces (bert4keras' rule); "
                        "the reduced vocab is written to OUTPUT/vocab.txt and keep_tokens to meta.json")
    p.add_argument("--cased", action="store_true", help="do not lower-case (default: lower-case)")
    p.add_argument("--no-whole-word-masking", action="store_true", help="MLM: mask tokens independently")
    p.add_argument("--dynamic-masking", action="store_true",
                   help="MLM: store unmasked ids + word ids; masks are drawn in tf.data each epoch")
    p.add_argument("--plm-static-order", action="store_true",
                   help="PLM: store one factorization order per example (default: drawn at train time)")
    p.add_argument("--mask-rate", type=float, default=0.15)
    p.add_argument("--docs-per-shard", type=int, default=1000)
    p.add_argument("--eval-fraction", type=float, default=0.0,
                   help="fraction of documents held out into eval-*.tfrecord")
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from kerasnlp_plus.pretraining.preparation import prepare

    meta = prepare(
        args.input, args.output, args.vocab, task=args.task, seq_len=args.seq_len,
        doc_format=args.doc_format, simplified_vocab=args.simplified_vocab,
        do_lower_case=not args.cased, whole_word_masking=not args.no_whole_word_masking,
        dynamic_masking=args.dynamic_masking, plm_static_order=args.plm_static_order,
        mask_rate=args.mask_rate, docs_per_shard=args.docs_per_shard,
        eval_fraction=args.eval_fraction, processes=args.processes, seed=args.seed,
        progress=not args.no_progress,
    )
    c = meta["counts"]
    print(f"{args.output}: task {meta['task']}, seq_len {meta['seq_len']}, vocab {meta['vocab_size']}; "
          f"train {c['train']['examples']} examples in {c['train']['shards']} shards, "
          f"eval {c['eval']['examples']}; {c['bad_lines']} bad lines skipped")


if __name__ == "__main__":
    main()
