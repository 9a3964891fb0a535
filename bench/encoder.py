"""Forward and training-step time of the same BERT weights in kerasnlp_plus (Keras 3 on
TensorFlow) and in Hugging Face transformers (PyTorch), on this machine's CPU.

    python bench/encoder.py                 # BERT-base shape, batch 8 x 128
    python bench/encoder.py --layers 4 --hidden 256 --heads 4 --intermediate 1024

Prints the median of several timed runs (after warm-up) for each variant and the
ratio to the PyTorch baseline measured in the same run (>1 means we are faster).
Needs the test extra (torch, transformers).
"""
import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def median_time(fn, repeat, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--intermediate", type=int, default=3072)
    parser.add_argument("--vocab", type=int, default=21128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    import keras
    import tensorflow as tf
    import torch
    import transformers

    from kerasnlp_plus.checkpoints import save_huggingface
    from kerasnlp_plus.models import build_transformer_model

    torch.set_num_threads(args.threads)
    keras.utils.set_random_seed(0)
    config = dict(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                  num_attention_heads=args.heads, intermediate_size=args.intermediate,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ours = build_transformer_model(None, with_mlm="linear", **config)
    with tempfile.TemporaryDirectory() as folder:
        save_huggingface(ours, folder)
        ref = transformers.BertForMaskedLM.from_pretrained(folder)
    rng = np.random.default_rng(0)
    ids = rng.integers(106, args.vocab, size=(args.batch, args.length)).astype(np.int32)
    segs = np.zeros_like(ids)
    labels = rng.integers(106, args.vocab, size=ids.shape).astype(np.int32)
    t_ids, t_segs = torch.tensor(ids, dtype=torch.long), torch.tensor(segs, dtype=torch.long)
    t_labels = torch.tensor(labels, dtype=torch.long)

    # --- forward ---
    ref.eval()
    with torch.no_grad():
        r_out = ref(input_ids=t_ids, token_type_ids=t_segs).logits.numpy()

    def torch_forward():
        with torch.no_grad():
            ref(input_ids=t_ids, token_type_ids=t_segs)

    x = [tf.constant(ids), tf.constant(segs)]
    graph_forward = tf.function(lambda: ours(x, training=False))
    xla_forward = tf.function(lambda: ours(x, training=False), jit_compile=True)
    diff = float(np.abs(np.asarray(xla_forward()) - r_out).max())
    results = {
        "forward  torch (eager, no_grad)": median_time(torch_forward, args.repeat),
        "forward  ours  (tf.function)": median_time(graph_forward, args.repeat),
        "forward  ours  (tf.function, jit_compile=True)": median_time(xla_forward, args.repeat),
    }

    # --- training step: MLM cross-entropy over every position, AdamW ---
    ref.train()
    t_opt = torch.optim.AdamW(ref.parameters(), lr=1e-5)

    def torch_train():
        t_opt.zero_grad()
        loss = ref(input_ids=t_ids, token_type_ids=t_segs, labels=t_labels).loss
        loss.backward()
        t_opt.step()

    opt = keras.optimizers.AdamW(1e-5)
    opt.build(ours.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    y = tf.constant(labels)

    def make_step(jit):
        @tf.function(jit_compile=jit)
        def step():
            with tf.GradientTape() as tape:
                loss = loss_fn(y, ours(x, training=True))
            grads = tape.gradient(loss, ours.trainable_variables)
            opt.apply(grads, ours.trainable_variables)
            return loss

        return step

    results["train    torch (eager, AdamW)"] = median_time(torch_train, args.repeat)
    results["train    ours  (tf.function, AdamW)"] = median_time(make_step(False), args.repeat)
    results["train    ours  (tf.function, jit_compile=True)"] = median_time(make_step(True), args.repeat)

    print(f"shape: {args.layers} layers, hidden {args.hidden}, vocab {args.vocab}, batch {args.batch} x {args.length}; "
          f"threads {args.threads}; median of {args.repeat}")
    print(f"max |ours(XLA) - torch| MLM logits on the same weights: {diff:.2e}")
    for name, seconds in results.items():
        base = results["forward  torch (eager, no_grad)" if name.startswith("forward") else "train    torch (eager, AdamW)"]
        print(f"{name:50s} {seconds * 1000:9.1f} ms   speed vs torch: {base / seconds:5.2f}x")


if __name__ == "__main__":
    main()
