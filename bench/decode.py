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

Ours is reported cold (a fresh Generator: tracing and the step's XLA compilation
included) and warm for batches of 1, 6 and 8, in both step modes (each step
XLA-compiled, and no XLA; the loop is a graph ``tf.while_loop`` in both), then the per-step time (32 steps minus 1
step, over 31) against a floor measured on this machine: the bytes a step must touch
(every weight once, the source keys/values once per source, the generated ones per
beam) over the measured memory bandwidth, and its FLOPs over the measured matmul rate;
the floor is the larger of the two. Beside the floor, the step's weight products
alone: the same kernels on the same ``batch x beams`` rows in one function, in the
step's mode (the floor's FLOP rate is a 2048^3 product's, which a product of 24 rows
does not reach). Last, a single source's cold call taken apart on a fresh
Generator: tracing the program, then its first run (graph optimisation,
instantiation and, with XLA, the step's compilation).

Run (2 shared CPU cores: minutes)::

    .venv/bin/python bench/decode.py
    .venv/bin/python bench/decode.py --baseline-examples 2   # quicker, extrapolated
"""
import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402


import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

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
    parser.add_argument("--no-jit", action="store_true",
                        help="per-step, full-cache and trie figures without XLA (cold/warm show both modes)")
    parser.add_argument("--repeats", type=int, default=3, help="timed Generator runs (best kept)")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    config = DATA / "ckpt_meta" / "chinese_rbt3_L-3_H-768_A-12" / "bert_config.json"
    model = build_transformer_model(str(config), application="unilm", with_mlm=True)
    sources, tokenizer = load_sources(args.examples, args.src_len)
    end_id = tokenizer.end_id
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

    # --- Generator: cold (fresh Generator: trace + step compile included), then warm -------
    # Both step modes: each model step XLA-compiled on its own (jit_compile=True) and
    # plain TensorFlow kernels (jit_compile=False); the loop is a graph in both.
    def make(jit=not args.no_jit):
        return Generator(model, end_id=end_id, maxlen=args.steps, minlen=args.steps, jit_compile=jit)

    def timed(generator, batch, **kwargs):
        t0 = time.perf_counter()
        out = generator.beam_search([token_ids[:batch], segment_ids[:batch]], topk=args.topk, **kwargs)
        return time.perf_counter() - t0, out

    batches = sorted({b for b in (1, 6, len(sources)) if b <= len(sources)})
    base_per_source = t_base / len(sources)
    for jit in (True, False):
        cold, warm, outputs = {}, {}, {}
        for batch in batches:
            cold[batch], _ = timed(make(jit), batch)
        warm_generator = make(jit)
        for batch in batches:
            timed(warm_generator, batch)  # compile this shape class
            runs = [timed(warm_generator, batch) for _ in range(args.repeats)]
            warm[batch] = min(t for t, _ in runs)
            outputs[batch] = runs[0][1]
        if jit == (not args.no_jit):
            generator, generated = warm_generator, outputs[len(sources)]
        same = sum(a == b for a, b in zip(baseline, outputs[len(sources)]))
        mode = "each step XLA-compiled (jit_compile=True)" if jit else "no XLA (jit_compile=False)"
        print(f"\nGenerator, graph loop, {mode}:")
        print(f"{'':28s}{'bert4keras':>12s}{'ours cold':>12s}{'ours warm':>12s}{'cold x':>9s}{'warm x':>9s}")
        for batch in batches:
            b4k = base_per_source * batch  # one source at a time: linear in the batch
            print(f"{'batch of %d' % batch:28s}{b4k:11.2f}s{cold[batch]:11.2f}s{warm[batch]:11.3f}s"
                  f"{b4k / cold[batch]:8.1f}x{b4k / warm[batch]:8.1f}x")
        print(f"identical outputs to bert4keras on the {n_base} baseline sources (length penalty 0): {same}/{n_base}")

    # --- per-step time against this machine's floor ----------------------------------------
    step_times = {}
    for batch in (1, len(sources)):
        args_ = dict(inputs=[token_ids[:batch], segment_ids[:batch]], topk=args.topk, min_ends=1,
                     temperature=1.0, trie=None)
        generator._run_program(**args_, max_length=1)
        one = min(_clock(lambda: generator._run_program(**args_, max_length=1)) for _ in range(args.repeats))
        full = min(_clock(lambda: generator._run_program(**args_)) for _ in range(args.repeats))
        step_times[batch] = (full - one) / (args.steps - 1)
    # the same step with a full cache (every beam a copy of its source's slots, all gathered)
    full_cache = Generator(model, end_id=end_id, maxlen=args.steps, minlen=args.steps,
                           jit_compile=not args.no_jit, lean_cache=False)
    batch = len(sources)
    args_ = dict(inputs=[token_ids, segment_ids], topk=args.topk, min_ends=1, temperature=1.0, trie=None)
    full_cache._run_program(**args_, max_length=1)
    full_cache._run_program(**args_)
    one = min(_clock(lambda: full_cache._run_program(**args_, max_length=1)) for _ in range(args.repeats))
    full = min(_clock(lambda: full_cache._run_program(**args_)) for _ in range(args.repeats))
    full_step = (full - one) / (args.steps - 1)
    print(f"\nstep, batch of {batch}: lean cache {1000 * step_times[batch]:.2f} ms, full per-beam cache "
          f"{1000 * full_step:.2f} ms ({full_step / step_times[batch]:.2f}x); batch 1 -> {batch}: "
          f"{step_times[batch] / step_times[1]:.2f}x per step")
    bandwidth, flops_rate = measure_machine()
    print(f"\nmachine (measured now, loaded by others): memory bandwidth {bandwidth / 1e9:.1f} GB/s, "
          f"matmul {flops_rate / 1e9:.0f} GFLOP/s (float32, TensorFlow, all threads)")
    for batch in (1, len(sources)):
        source_len = int(np.ceil(token_ids.shape[1] / generator.length_bucket) * generator.length_bucket)
        nbytes, flops = step_cost(model, batch, args.topk, source_len, args.steps)
        floor = max(nbytes / bandwidth, flops / flops_rate)
        print(f"batch of {batch}: step {1000 * step_times[batch]:.2f} ms; floor {1000 * floor:.2f} ms "
              f"({nbytes / 2**20:.0f} MiB touched -> {1000 * nbytes / bandwidth:.2f} ms, "
              f"{flops / 1e9:.2f} GFLOP -> {1000 * flops / flops_rate:.2f} ms); ratio {step_times[batch] / floor:.2f}x")
        # The floor's FLOP rate is a 2048^3 product's; the step's products have only
        # batch x beams rows. Time those very products (same kernels, same rows, same
        # step mode) with nothing else around them: what the step cannot go below here.
        products = weight_products_time(model, batch * args.topk, not args.no_jit, args.repeats)
        print(f"  the step's weight products alone ({batch * args.topk} rows, every kernel and E^T once): "
              f"{1000 * products:.2f} ms ({flops / products / 1e9:.0f} GFLOP/s), {products / floor:.2f}x the floor; "
              f"step / products {step_times[batch] / products:.2f}x")

    # --- where a single source's cold call goes ------------------------------------------
    cold_generator = make()
    program = cold_generator._program(args.topk, 1, 1.0, False)
    program_args = [tf.constant(x) for x in cold_generator._bucketed([token_ids[:1], segment_ids[:1]])[:2]]
    program_args.append(tf.constant(args.steps, tf.int32))
    t0 = time.perf_counter()
    concrete = program.get_concrete_function(*program_args)
    t_trace = time.perf_counter() - t0
    t_first = _clock(lambda: concrete(*program_args)[0].numpy())
    t_warm = min(_clock(lambda: concrete(*program_args)[0].numpy()) for _ in range(args.repeats))
    print(f"\none source, cold, taken apart (a fresh Generator in this already warm process, {'no XLA' if args.no_jit else 'XLA step'}): "
          f"tracing the program {t_trace:.2f} s ({len(concrete.graph.get_operations())} ops in its outer graph), "
          f"first run {t_first:.2f} s (graph optimisation, instantiation{', XLA compile' if not args.no_jit else ''}),"
          f" warm run {t_warm:.3f} s; together {t_trace + t_first:.2f} s (it moves with the load as the table's cold "
          f"figures do); bert4keras {base_per_source:.2f} s per source, so tracing alone is "
          f"{t_trace / base_per_source:.0%} of it")

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
    def run(**kwargs):
        return timed(generator, len(sources), **kwargs)

    run(trie=trie)  # warm-up (builds the device automaton once)
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


def _clock(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure_machine():
    """Memory bandwidth (bytes read + written by a 256 MiB copy) and float32 matmul
    rate (2048 x 2048, TensorFlow), best of a few runs each."""
    import tensorflow as tf

    src = np.ones(2**26, np.float32)
    dst = np.empty_like(src)
    copy = min(_clock(lambda: np.copyto(dst, src)) for _ in range(5))
    bandwidth = 2 * src.nbytes / copy
    a = tf.random.normal([2048, 2048])
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, a)))
    matmul()
    t = min(_clock(lambda: matmul().numpy()) for _ in range(5))
    return bandwidth, 2 * 2048**3 / t


def weight_products_time(model, rows, jit, repeats):
    """Seconds for the products a decoding step does with the weights, alone: ``rows``
    float32 rows through every 2-D kernel of the layers and the MLM head, and through
    ``E^T``, in one ``tf.function`` (XLA-compiled when the step is), best of a few."""
    kernels = [w for w in model.weights if len(w.shape) == 2 and not w.path.startswith("Embedding-")]
    kernels.append(tf.Variable(model.mlm_output_kernel()))
    rng = np.random.default_rng(0)
    inputs = {n: tf.constant(rng.standard_normal((rows, n), np.float32)) for n in {int(w.shape[0]) for w in kernels}}

    @tf.function(jit_compile=jit, autograph=False)
    def products():
        return tf.add_n([tf.reduce_sum(tf.matmul(inputs[int(w.shape[0])], w)) for w in kernels])

    products()
    return min(_clock(lambda: products().numpy()) for _ in range(max(5, repeats)))


def step_cost(model, batch, beams, source_len, steps):
    """Bytes and FLOPs of one decoding step at its least: every weight read once
    (the MLM head reads the whole token embedding), the cache read once (the
    source's keys/values once per source row, the generated ones per beam, at the
    middle step), float32."""
    rows = batch * beams
    weights = sum(int(np.prod(w.shape)) for w in model.weights)
    hidden, layers = model.hidden_size, model.num_layers
    generated = steps // 2
    cache = layers * 2 * hidden * (batch * source_len + rows * generated)
    nbytes = 4 * (weights + cache)
    embeddings = int(np.prod(model.position_embedding.weights[0].shape)) + model.type_vocab_size * hidden
    flops = 2 * rows * (weights - embeddings) + 4 * rows * layers * hidden * (source_len + generated)
    return nbytes, flops


if __name__ == "__main__":
    main()
