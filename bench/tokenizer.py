"""Encode throughput of kerasnlp_plus' Tokenizer vs transformers' BertTokenizerFast.

Both tokenize the same real texts (CSL abstracts + KgCLUE questions) with the
shared Chinese BERT vocab; the ids are checked to be identical first. Prints the
best-of-N time of each and the ratio ours/theirs (below 1 means we are faster).

    .venv/bin/python bench/tokenizer.py                 # defaults below
    .venv/bin/python bench/tokenizer.py --lower --repeat 5

Per text: ``ours.encode(t)`` vs ``ref(t)["input_ids"]`` in a Python loop.
Batch:    ``ours.encode_batch(texts)`` vs ``ref(texts)["input_ids"]``.
"""
import argparse
import json
import pathlib
import time

from kerasnlp_plus.utils import shared_data_dir  # noqa: E402


def load_texts(data, n_csl, n_kgclue):
    abstracts = []
    for name in ["csl_title_dev.tsv", "csl_title_test.tsv", "clge_csl/val.tsv", "clge_csl/test.tsv"]:
        with open(data / "csl" / name, encoding="utf-8") as f:
            abstracts += [line.rstrip("\n").split("\t")[1] for line in f]
    questions = []
    for name in ["train", "dev", "test_public", "test"]:
        with open(data / "kgclue" / f"{name}.json", encoding="utf-8") as f:
            questions += [json.loads(line)["question"] for line in f if line.strip()]
    return abstracts[:n_csl] + questions[:n_kgclue]


def best_time(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=shared_data_dir())
    parser.add_argument("--n-csl", type=int, default=4000, help="CSL abstracts (4,000 exist)")
    parser.add_argument("--n-kgclue", type=int, default=4000, help="KgCLUE questions")
    parser.add_argument("--lower", action="store_true", help="do_lower_case=True")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from transformers import BertTokenizerFast
    from transformers.models.bert import tokenization_bert

    from kerasnlp_plus.tokenizers import Tokenizer

    data = pathlib.Path(args.data)
    vocab_file = data / "vocab" / "vocab.txt"
    texts = load_texts(data, args.n_csl, args.n_kgclue)
    ours = Tokenizer(vocab_file, do_lower_case=args.lower)
    # transformers 5.x ignores vocab_file= (it would build a 5-token vocab), so
    # the vocab goes in as a dict read by transformers' own loader.
    theirs = BertTokenizerFast(vocab=tokenization_bert.load_vocab(str(vocab_file)),
                               do_lower_case=args.lower)
    theirs.model_max_length = 10**9  # no "sequence too long" warnings; no truncation either way

    assert [ids for ids, _ in ours.encode_batch(texts)] == theirs(texts)["input_ids"], \
        "ids differ from BertTokenizerFast"
    n_chars = sum(map(len, texts))
    print(f"{len(texts)} texts ({args.n_csl} CSL abstracts + {args.n_kgclue} KgCLUE questions), "
          f"{n_chars} characters, do_lower_case={args.lower}, best of {args.repeat}")

    rows = [
        ("per text", lambda: [ours.encode(t) for t in texts],
         lambda: [theirs(t)["input_ids"] for t in texts]),
        ("batch", lambda: ours.encode_batch(texts),
         lambda: theirs(texts)["input_ids"]),
    ]
    for name, ours_fn, theirs_fn in rows:
        t_ours = best_time(ours_fn, args.repeat)
        t_theirs = best_time(theirs_fn, args.repeat)
        print(f"{name:9s} ours {t_ours:7.3f} s   BertTokenizerFast {t_theirs:7.3f} s   "
              f"ratio ours/theirs {t_ours / t_theirs:5.2f}")


if __name__ == "__main__":
    main()
