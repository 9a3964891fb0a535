"""Decoding speed: cached batched ``Generator`` vs bert4keras' uncached decoder.

Model: RBT3 shape (the real ``chinese_rbt3_L-3_H-768_A-12/bert_config.json``: 3 layers,
hidden 768, 21,128 tokens) with random weights, ``application='unilm'``,
``with_mlm=True``. Sources: real CSL abstracts, truncated to ``--src-len`` tokens.
Both decoders run beam search with ``--topk`` beams for exactly ``--steps`` tokens
(``minlen = maxlen = steps``: neither checks for the end token before the last step).

* baseline: ``AutoRegressiveDecoder`` driven the bert4keras way (the AutoTitle
  script: concatenate source + outputs, ``last_token(model).predict``), one source at
  a time; every step re-runs the whole prefix;
* Generator: the whole batch at once, source encoded once, one cached step per token.

Then the trie overhead: the Generator run again under a ``Trie`` of ``--trie-keys``
random keys plus the paths generated above (so the constrained search is not cut
short), reported per decoding step against the unconstrained run.

Run (2 shared CPU cores: minutes)::

    .venv/bin/python bench/decode.py
    .venv/bin/python bench/decode.py --baseline-examples 2   # quicker, extrapolated
"""
import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import keras  # noqa: E402

from kerasnlp_plus.generation import Generator, Trie  # noqa: E402
from kerasnlp_plus.models import build_transformer_model  # noqa: E402
from kerasnlp_plus.snippets import AutoRegressiveDecoder, sequence_padding  # noqa: E402
from kerasnlp_plus.utils import shared_data_dir  # noqa: E402

DATA = shared_data_dir()


def load_sources(n, src_len):
    from kerasnlp_plus.tokenizers import Tokenizer

    tokenizer = Tokenizer(str(DATA / "vocab" / "vocab.txt"), do_lower_case=True)
    sources = []
    with open(DATA / "csl" / "csl_title_dev.tsv", encoding="utf-8") as f:
        for line in f:
            title, abstract = line.rstrip("\n").split("\t", 1)
            sources.append(tokenizer.encode(abstract, maxlen=src_len))
            if len(sources) == n:
                break
    return sources, tokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--src-len", type=int, default=128)
    parser.add_argument("--topk", type=int, default=3)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--baseline-examples", type=int, default=None,
                        help="run the slow baseline on only this many sources and extrapolate")
    parser.add_argument("--trie-keys", type=int, default=100_000)
    parser.add_argument("--no-jit", action="store_true", help="Generator without XLA")
    parser.add_argument("--repeats", type=int, default=3, help="timed Generator runs (best kept)")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    config = DATA / "ckpt_meta" / "chinese_rbt3_L-3_H-768_A-12" / "bert_config.json"
    model = build_transformer_model(str(config), application="unilm", with_mlm=True)
    sources, tokenizer = load_sources(args.examples, args.src_len)
    end_id = tokenizer._token_end_id
    token_ids = sequence_padding([t for t, _ in sources])
    segment_ids = sequence_padding([s for _, s in sources])
    lengths = [len(t) for t, _ in sources]
    print(f"model: RBT3 shape (random weights), unilm, with_mlm=True; {len(sources)} CSL abstracts, "
          f"source lengths {min(lengths)}-{max(lengths)}, beam {args.topk}, {args.steps} new tokens")

    # --- baseline: the bert4keras AutoTitle decoder -------------------------------------
    class AutoTitle(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype="probas")
        def predict(self, inputs, output_ids, states):
            token_ids, segment_ids = inputs
            token_ids = np.concatenate([token_ids, output_ids], 1)
            segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
            return self.last_token(model).predict([token_ids, segment_ids], verbose=0)

    autotitle = AutoTitle(start_id=None, end_id=end_id, maxlen=args.steps, minlen=args.steps)
    autotitle.beam_search(sources[0], topk=args.topk)  # warm-up (graph building)
    n_base = args.baseline_examples or len(sources)
    t0 = time.perf_counter()
    baseline = [list(autotitle.beam_search(list(src), topk=args.topk)) for src in sources[:n_base]]
    t_base = (time.perf_counter() - t0) * len(sources) / n_base
    note = "" if n_base == len(sources) else f" (measured on {n_base}, scaled to {len(sources)})"
    print(f"uncached AutoRegressiveDecoder, one source at a time: {t_base:.2f} s{note}")

    # --- Generator -----------------------------------------------------------------------
    generator = Generator(model, end_id=end_id, maxlen=args.steps, minlen=args.steps,
                          jit_compile=not args.no_jit)

    def run(**kwargs):
        t0 = time.perf_counter()
        out = generator.beam_search([token_ids, segment_ids], topk=args.topk, **kwargs)
        return time.perf_counter() - t0, out

    t_first, _ = run()
    print(f"Generator first call (tracing + XLA compile): {t_first:.2f} s")
    t_gen, generated = min(run() for _ in range(args.repeats))
    same = sum(a == b for a, b in zip(baseline, generated))
    print(f"Generator, batch of {len(sources)}, cached: {t_gen:.2f} s "
          f"(best of {args.repeats}; {1000 * t_gen / args.steps:.1f} ms per step)")
    print(f"speedup: {t_base / t_gen:.1f}x; identical outputs on the {n_base} baseline sources: {same}/{n_base}")

    # --- trie overhead -----------------------------------------------------------------------
    rng = np.random.default_rng(0)
    trie = Trie()
    t0 = time.perf_counter()
    for ids in rng.integers(106, tokenizer.vocab_size, size=(args.trie_keys, args.steps)):
        trie.add(ids)
    for ids in generated:  # admit the unconstrained outputs and branch off them
        trie.add(ids)
        for cut in rng.integers(1, args.steps, size=8):
            trie.add(list(ids[:cut]) + list(rng.integers(106, tokenizer.vocab_size, size=args.steps - cut)))
    trie.compile()
    print(f"trie: {len(trie)} keys, built in {time.perf_counter() - t0:.2f} s")
    run(trie=trie)  # warm-up
    # Interleaved runs, best of each: the machine is shared, so single runs are noisy.
    plain, constrained_runs = [], []
    for _ in range(args.repeats):
        plain.append(run()[0])
        constrained_runs.append(run(trie=trie))
    t_plain = min(plain)
    t_trie, constrained = min(constrained_runs)
    assert all(ids in trie for ids in constrained), "a constrained output is not a trie key"
    overhead = (t_trie - t_plain) / t_plain
    print(f"Generator without / with trie (interleaved, best of {args.repeats}): {t_plain:.2f} s / {t_trie:.2f} s "
          f"({1000 * t_plain / args.steps:.1f} / {1000 * t_trie / args.steps:.1f} ms per step); "
          f"trie overhead {100 * overhead:+.1f}% per step; constrained outputs equal to unconstrained: "
          f"{sum(a == b for a, b in zip(generated, constrained))}/{len(generated)}")


if __name__ == "__main__":
    main()
