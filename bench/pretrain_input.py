#!/usr/bin/env python
"""Does the pretraining input pipeline keep up with the training step?

Prepares dynamic whole-word-masking MLM records (the pipeline's heaviest path: parse,
draw masks per example, normalize weights) from the real corpus, then measures:

- input: examples/s that ``make_dataset`` delivers (iterating batches, no model);
- step: examples/s that one training step consumes (``train_on_batch`` on a batch
  already in memory, AdamW, after the first, compiling call);

for the demo model's shape and for BERT-base's, and prints the ratio input/step
(goal: at least 5x).

    python bench/pretrain_input.py [--base-steps 4] [--demo-steps 10]
"""
import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from kerasnlp_plus.utils import shared_data_dir  # noqa: E402

DATA = str(shared_data_dir())

SHAPES = {
    # name: (model size, batch size, simplified vocab)
    "demo (4L/128H/4A/512I)": (dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                                    intermediate_size=512, max_position_embeddings=512), 32, True),
    "BERT-base (12L/768H/12A/3072I)": (dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                            intermediate_size=3072, max_position_embeddings=512), 8, False),
}


def prepare_records(folder, simplified, docs=400, seq_len=128):
    from kerasnlp_plus.pretraining.preparation import prepare

    src = os.path.join(folder, "docs.txt")
    with open(os.path.join(DATA, "corpus", "CLUECorpusSmall_sampled.txt"), encoding="utf-8") as f, \
            open(src, "w", encoding="utf-8") as out:
        for i, line in enumerate(f):
            if i == docs:
                break
            out.write(line)
    out_dir = os.path.join(folder, "simplified" if simplified else "full")
    prepare([src], out_dir, os.path.join(DATA, "vocab", "vocab.txt"), task="mlm", seq_len=seq_len,
            simplified_vocab=simplified, dynamic_masking=True, docs_per_shard=100, progress=False)
    return out_dir


def input_rate(data_dir, batch, batches=60):
    from kerasnlp_plus.pretraining.pipeline import make_dataset

    it = iter(make_dataset(data_dir, batch, seed=0, shuffle_buffer=1000))
    for _ in range(5):  # fill buffers
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - start)


def step_rate(data_dir, size, batch, steps):
    import keras

    from kerasnlp_plus.pretraining.pipeline import make_dataset
    from kerasnlp_plus.pretraining.preparation import load_meta
    from kerasnlp_plus.pretraining.training import (
        build_pretraining_model,
        compile_for_pretraining,
        make_optimizer,
    )

    keras.utils.set_random_seed(0)
    net = build_pretraining_model(load_meta(data_dir), dropout_rate=0.1, **size)
    compile_for_pretraining(net, make_optimizer("adamw", 1e-4, 10, 1000))
    x, y, w = next(iter(make_dataset(data_dir, batch, seed=0, shuffle_buffer=0)))
    net.train_on_batch(x, y, sample_weight=w)  # compiles
    start = time.perf_counter()
    for _ in range(steps):
        net.train_on_batch(x, y, sample_weight=w)
    return steps * batch / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo-steps", type=int, default=10)
    p.add_argument("--base-steps", type=int, default=4)
    args = p.parse_args()
    import tensorflow as tf

    print(f"TF {tf.__version__}, {os.cpu_count()} CPU cores visible, seq_len 128, dynamic WWM masking")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (size, batch, simplified) in SHAPES.items():
            data_dir = prepare_records(tmp, simplified)
            steps = args.demo_steps if name.startswith("demo") else args.base_steps
            inp = input_rate(data_dir, batch)
            step = step_rate(data_dir, size, batch, steps)
            print(f"{name}: batch {batch}x128: input {inp:,.0f} examples/s, train step {step:,.1f} examples/s "
                  f"({batch / step:.3f} s/step); input/step = {inp / step:,.1f}x")


if __name__ == "__main__":
    main()
