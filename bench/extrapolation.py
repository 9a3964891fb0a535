"""Length extrapolation: masked-LM accuracy read at lengths beyond the trained one.

A small RoFormer pretrained at length 128 (``pretraining/pretrain.py --model roformer``)
reads held-out text at 128, 512 and 1,024 tokens with the standard attention scale and
with the entropy-invariant ``log_n`` scale (``training_length=128``: the scale is 1 at
the trained length), side by side with the BERT demo model (also trained at 128) whose
first 128 position rows are extended hierarchically (kexue.fm 7947; alpha 0.4).

The text: the documents that ``prepare_data.py --eval-fraction F --seed S`` held out of
the inputs (the same ``in_eval_split`` rule, so neither model trained on them; for the
demo model, pretrained with seed 1 and fraction 0.02 on the same first two inputs, these
are its held-out documents too). They are concatenated (each followed by [SEP]) into one
token stream, 15% of its tokens are masked once, and the stream is cut into
``[CLS] ... [SEP]`` rows of each length; only masked tokens inside the part of the
stream that every length covers are scored, so every column scores the same tokens
and only the context around them changes.

    python bench/extrapolation.py --roformer runs/roformer/export
"""
import argparse
import json
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402



def parse_args(argv=None):
    from kerasnlp_plus.utils import shared_data_dir

    corpus = shared_data_dir() / "corpus"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--roformer", required=True,
                   help="RoFormer export folder (bert_config.json + bert_model.ckpt, or a HF folder)")
    p.add_argument("--bert", default=None, help="BERT folder to compare with (default: the demo model)")
    p.add_argument("--vocab", default=None, help="vocab.txt (default: the BERT folder's)")
    p.add_argument("--inputs", nargs="+", default=[str(corpus / "CLUECorpusSmall_sampled.txt"),
                                                    str(corpus / "chnsenticorp.txt")],
                   help="the prepare_data.py inputs, in the same order")
    p.add_argument("--eval-fraction", type=float, default=0.02)
    p.add_argument("--split-seed", type=int, default=1, help="prepare_data.py --seed")
    p.add_argument("--trained-length", type=int, default=128)
    p.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024])
    p.add_argument("--max-tokens", type=int, default=40 * 1022, help="length of the scored token stream")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", help="write the results as JSON here")
    return p.parse_args(argv)


def held_out_stream(inputs, tokenizer, fraction, seed, max_tokens):
    from kerasnlp_plus.pretraining.preparation import in_eval_split
    from kerasnlp_plus.pretraining.text import read_documents

    stream, docs = [], 0
    for i, (_, text) in enumerate(read_documents(inputs)):
        if not in_eval_split(i, seed, fraction):
            continue
        stream.extend(tokenizer.encode(text)[0][1:-1] + [tokenizer.sep_id])
        docs += 1
        if len(stream) >= max_tokens:
            break
    if not docs:
        raise ValueError(f"no held-out documents in {inputs} with eval fraction {fraction}, seed {seed}")
    return np.array(stream[:max_tokens], np.int32), docs


def rows(stream, length, cls_id, sep_id):
    body = length - 2
    n = len(stream) // body
    blocks = stream[: n * body].reshape(n, body)
    ends = np.full((n, 1), 0, np.int32)
    return np.concatenate([ends + cls_id, blocks, ends + sep_id], axis=1), n * body


def main(argv=None):
    args = parse_args(argv)
    import keras

    from kerasnlp_plus.models import build_transformer_model
    from kerasnlp_plus.models.config import resolve_config_path
    from kerasnlp_plus.tasks.long_text import masked_lm_scores, with_trained_positions
    from kerasnlp_plus.tokenizers import Tokenizer
    from kerasnlp_plus.utils import atomic_write_text

    if args.bert is None:
        from kerasnlp_plus.pretraining import demo_model_path

        args.bert = demo_model_path()
    bert_dir, roformer_dir = pathlib.Path(args.bert), pathlib.Path(args.roformer)
    vocab = pathlib.Path(args.vocab) if args.vocab else bert_dir / "vocab.txt"
    keras.utils.set_random_seed(args.seed)
    tokenizer = Tokenizer(str(vocab), do_lower_case=True)
    cls_id, sep_id, mask_id = tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id

    stream, docs = held_out_stream(args.inputs, tokenizer, args.eval_fraction, args.split_seed, args.max_tokens)
    rng = np.random.default_rng(args.seed)
    chosen = (rng.random(len(stream)) < 0.15) & (stream != sep_id)
    covered = min(rows(stream, n, cls_id, sep_id)[1] for n in args.lengths)
    chosen[covered:] = False
    masked_stream = np.where(chosen, mask_id, stream)

    def data(length):
        x, used = rows(masked_stream, length, cls_id, sep_id)
        y, _ = rows(stream, length, cls_id, sep_id)
        w, _ = rows(chosen.astype(np.int32), length, 0, 0)
        return x, y, w.astype(np.float32)

    # RoFormer: one set of weights, two attention scales.
    r_config = resolve_config_path(roformer_dir)
    roformer = build_transformer_model(r_config, roformer_dir, model="roformer", with_mlm=True)
    roformer_log_n = build_transformer_model(r_config, None, model="roformer", with_mlm=True,
                                             attention_scale="log_n", training_length=args.trained_length)
    roformer_log_n.set_weights(roformer.get_weights())

    # BERT: its trained rows extended hierarchically (exactly the table up to trained_length).
    b_config = resolve_config_path(bert_dir)
    full = build_transformer_model(b_config, bert_dir, with_mlm=True)
    bert = with_trained_positions(full, b_config, args.trained_length, hierarchical_position=0.4)

    models = {"RoFormer, standard scale": roformer, "RoFormer, log_n scale": roformer_log_n,
              "BERT demo, hierarchical positions": bert}
    results = {"held_out_documents": docs, "masked_tokens": int(chosen.sum()), "lengths": args.lengths,
               "accuracy": {name: {} for name in models}, "loss": {name: {} for name in models}, "seconds": {}}
    for length in args.lengths:
        x, y, w = data(length)
        assert int(w.sum()) == int(chosen.sum())  # the same tokens at every length
        for name, model in models.items():
            start = time.time()
            acc, loss = masked_lm_scores(model, x, y, w, max(1, args.batch_size * 512 // length))
            results["accuracy"][name][length], results["loss"][name][length] = acc, loss
            results["seconds"][f"{name} @ {length}"] = round(time.time() - start, 1)
        print(f"length {length}: " + " | ".join(
            f"{n} {results['accuracy'][n][length]:.2%} (loss {results['loss'][n][length]:.3f})" for n in models),
            flush=True)

    print(f"\n{docs} held-out documents, {int(chosen.sum())} masked tokens scored at every length\n")
    print("| model (trained at %d): accuracy (loss) | " % args.trained_length
          + " | ".join(str(n) for n in args.lengths) + " |")
    print("|---|" + "---|" * len(args.lengths))
    for name in models:
        print(f"| {name} | " + " | ".join(
            f"{results['accuracy'][name][n]:.2%} ({results['loss'][name][n]:.3f})" for n in args.lengths) + " |")
    if args.output:
        atomic_write_text(args.output, json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
