"""Training-step time with the MLM head over every position (the baseline) and only at
the positions that carry loss (``Transformer.loss_positions_model``), same weights,
same batch, measured in the same run.

    python bench/train_step.py                  # demo-model and BERT-base shapes
    python bench/train_step.py --only demo      # the demo model's shape only

Cases: ``seq2seq`` is a UniLM batch like the main job's (``[CLS] abstract [SEP]
title [SEP]``, loss on the title tokens); ``mlm`` is a pretraining batch with 15% of
the tokens masked. For each case it prints the loss of both variants on the same
batch before any update (they must agree), the median step time of each (after
warm-up) and the ratio baseline / gathered (> 1: the gathered step is faster).
"""
import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SHAPES = {
    # the shipped demo model (kerasnlp_plus/assets/demo_model/config.json)
    "demo": dict(vocab_size=13585, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                 intermediate_size=512),
    # BERT-base (chinese_L-12_H-768_A-12), vocab simplified as in the examples
    "bert-base": dict(vocab_size=13585, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                      intermediate_size=3072),
}
# (batch, source length, target length) of seq2seq; (batch, length) of mlm
CASES = {
    "demo": {"seq2seq": (16, 224, 24), "mlm": (32, 128)},
    "bert-base": {"seq2seq": (4, 224, 24), "mlm": (4, 128)},
}


def interleaved_median_times(first, second, repeat, warmup=2):
    """Median times of two functions timed in alternation, so that a change in the
    machine's load during the run hits both alike (the machine may be shared)."""
    for _ in range(warmup):
        first()
        second()
    times = ([], [])
    for _ in range(repeat):
        for fn, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def make_batch(case, dims, vocab_size, rng):
    """``(token_ids, segment_ids, labels, weights)``, all ``(batch, length)``."""
    if case == "seq2seq":
        batch, src, tgt = dims
        length = src + tgt
        tokens = rng.integers(5, vocab_size, (batch, length)).astype("int32")
        segments = np.zeros_like(tokens)
        segments[:, src:] = 1
        labels = np.concatenate([tokens[:, 1:], np.zeros((batch, 1), "int32")], axis=1)
        weights = np.concatenate([segments[:, 1:], np.zeros((batch, 1), "int32")], axis=1).astype("float32")
    else:
        batch, length = dims
        tokens = rng.integers(5, vocab_size, (batch, length)).astype("int32")
        segments = np.zeros_like(tokens)
        chosen = rng.random((batch, length)) < 0.15
        chosen[:, 0] = False
        labels = np.where(chosen, tokens, 0).astype("int32")
        tokens = np.where(chosen, 4, tokens).astype("int32")  # [MASK]
        weights = chosen.astype("float32")
    return tokens, segments, labels, weights


def run_case(shape, case, dims, repeat):
    import keras
    import tensorflow as tf

    from kerasnlp_plus.models import build_transformer_model
    from kerasnlp_plus.optimizers import Adam
    from kerasnlp_plus.pretraining.pipeline import gather_loss_positions

    keras.utils.set_random_seed(0)
    application = "unilm" if case == "seq2seq" else "encoder"
    model = build_transformer_model(None, application=application, with_mlm="linear", dropout_rate=0.0,
                                     attention_dropout_rate=0.0, **SHAPES[shape])
    gathered = model.loss_positions_model()
    tokens, segments, labels, weights = make_batch(case, dims, SHAPES[shape]["vocab_size"],
                                                   np.random.default_rng(0))
    full_x = {"Input-Token": tokens, "Input-Segment": segments}
    g_x, g_y, g_w = gather_loss_positions(full_x, tf.constant(labels), tf.constant(weights))
    g_x = {k: np.asarray(v) for k, v in g_x.items()}
    g_y, g_w = np.asarray(g_y), np.asarray(g_w)

    def compile_(m):
        m.compile(optimizer=Adam(1e-4), jit_compile=False,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                   reduction="mean_with_sample_weight"))

    compile_(model)
    compile_(gathered)
    loss_full = float(model.test_on_batch(full_x, labels, sample_weight=weights))
    loss_gathered = float(gathered.test_on_batch(g_x, g_y, sample_weight=g_w))
    t_full, t_gathered = interleaved_median_times(
        lambda: model.train_on_batch(full_x, labels, sample_weight=weights),
        lambda: gathered.train_on_batch(g_x, g_y, sample_weight=g_w),
        repeat,
    )
    print(f"{shape:9s} {case:7s} batch {dims}: loss full {loss_full:.6f} gathered {loss_gathered:.6f} "
          f"(|diff| {abs(loss_full - loss_gathered):.1e}); step full head {1000 * t_full:.0f} ms, "
          f"head at {g_x['Input-Positions'].shape[1]} loss positions {1000 * t_gathered:.0f} ms; "
          f"ratio {t_full / t_gathered:.2f}x", flush=True)
    return t_full / t_gathered


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SHAPES), help="one model shape only")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for shape in [args.only] if args.only else ["demo", "bert-base"]:
        for case, dims in CASES[shape].items():
            run_case(shape, case, dims, args.repeat)


if __name__ == "__main__":
    main()
