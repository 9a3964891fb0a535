"""The beam step's blockwise top-k against ``tf.math.top_k``, A/B in one process.

Same model and sources as ``bench/decode.py`` (RBT3 shape, random weights, 8 CSL
abstracts, beam 3, exactly 32 new tokens). Two Generators are traced, one whose
program ranks with plain ``tf.math.top_k`` (the baseline), one with
``program._top_k``; their runs are interleaved (the machine is shared) and the best
of ``--repeats`` kept. Prints the batch-8 prefill, whole decode and per-step time
of each, the step ratio, and whether the outputs are identical.

Run::

    .venv/bin/python bench/decode_topk.py            # each step XLA-compiled
    .venv/bin/python bench/decode_topk.py --no-jit
"""
import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from decode import DATA, _clock, load_sources  # noqa: E402
from kerasnlp_plus.generation import Generator, program  # noqa: E402
from kerasnlp_plus.models import build_transformer_model  # noqa: E402
from kerasnlp_plus.snippets import sequence_padding  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-jit", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=32)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    config = DATA / "ckpt_meta" / "chinese_rbt3_L-3_H-768_A-12" / "bert_config.json"
    model = build_transformer_model(str(config), application="unilm", with_mlm=True)
    sources, tokenizer = load_sources(8, 128)
    inputs = [sequence_padding([t for t, _ in sources]), sequence_padding([s for _, s in sources])]
    run = dict(inputs=inputs, topk=3, min_ends=1, temperature=1.0, trie=None)

    blockwise = program._top_k
    variants = {"tf.math.top_k (baseline)": lambda x, k, width=256: tf.math.top_k(x, k=k, sorted=True),
                "blockwise _top_k": blockwise}
    generators = {}
    try:
        for name, top_k in variants.items():
            program._top_k = top_k  # read when the program is traced
            generator = Generator(model, end_id=tokenizer.end_id, maxlen=args.steps, minlen=args.steps,
                                  jit_compile=not args.no_jit)
            generator._run_program(**run)
            generator._run_program(**run, max_length=1)
            generators[name] = generator
    finally:
        program._top_k = blockwise
    best = {name: [float("inf"), float("inf")] for name in generators}
    for _ in range(args.repeats):
        for name, generator in generators.items():
            best[name][0] = min(best[name][0], _clock(lambda: generator._run_program(**run, max_length=1)))
            best[name][1] = min(best[name][1], _clock(lambda: generator._run_program(**run)))
    steps = {}
    mode = "no XLA" if args.no_jit else "each step XLA-compiled"
    for name, (one, full) in best.items():
        steps[name] = (full - one) / (args.steps - 1)
        print(f"{name:26s} ({mode}): prefill {1000 * one:.1f} ms, decode {1000 * full:.1f} ms, "
              f"step {1000 * steps[name]:.2f} ms")
    base, ours = steps.values()
    outputs = [g.beam_search(inputs, topk=3) for g in generators.values()]
    print(f"step ratio blockwise / baseline: {ours / base:.3f}; identical outputs: {outputs[0] == outputs[1]}")


if __name__ == "__main__":
    main()
