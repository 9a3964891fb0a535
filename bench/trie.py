"""Benchmark kerasnlp_plus.generation.Trie on synthetic KgCLUE-shaped keys.

Keys look like the tokenization of "subject [SEP] predicate [SEP]": subjects of
4-12 Chinese-character ids (drawn from the vocab's CJK range with a Zipf-like
frequency, a third of them extending another subject's first characters, like
"刘德华" / "刘德华（歌曲）"), about 5 distinct predicates per subject from a pool
of 2,000 (2-4 ids each, Zipf popularity), values are object strings of 2-14
characters (from a pool of 300,000). Prints each figure next to its goal with
PASS/FAIL, and the same figures for the nested-dict trie of the kexue.fm 8802
post (the baseline) on a sample.

    python bench/trie.py                 # 1M keys
    python bench/trie.py --keys 20000000 # the size of the full KgCLUE KB
    python bench/trie.py --keys 2000000 --uniform   # uniform characters

For the full knowledge base (20.6M triples) run it with --keys 20600000 if the
machine has the memory (build peak is printed), or read the extrapolation line.
"""
import argparse
import ctypes
import gc
import os
import pathlib
import random
import sys
import tempfile
import time

import numpy as np

from kerasnlp_plus.generation.trie import Trie  # noqa: E402
from kerasnlp_plus.utils import shared_data_dir  # noqa: E402

SEP = 102
GOAL_KEYS_PER_S = 100_000
GOAL_BYTES_PER_KEY = 100
GOAL_NEXT_US = 20
KGCLUE_TRIPLES = 20_600_000

VOCAB = shared_data_dir("vocab", "vocab.txt")


def status(field):
    """VmRSS / VmHWM of this process in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def rss():
    """Resident bytes after garbage collection and after glibc hands freed heap
    pages back (Trie.compile does the same), so that both ends of a delta count
    live memory rather than the allocator's cache of freed pages."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return status("VmRSS")


def cjk_ids():
    """Ids of the single CJK characters of the Chinese BERT vocab."""
    if VOCAB.is_file():
        with open(VOCAB, encoding="utf-8") as f:
            ids = [i for i, t in enumerate(f) if len(t.strip()) == 1 and "\u4e00" <= t.strip() <= "\u9fff"]
        return np.array(ids), f"CJK ids of {VOCAB}"
    return np.arange(672, 7992), "CJK id range 672-7991 (vocab not found)"


class KeyGenerator:
    """Deterministic stream of (key ids, value) pairs shaped like KgCLUE."""

    def __init__(self, seed=0, uniform=False):
        self.rng = np.random.default_rng(seed)
        self.chars, self.source = cjk_ids()
        n = len(self.chars)
        self.rng.shuffle(self.chars)
        w = np.ones(n) if uniform else 1.0 / (np.arange(n) + 10.0)
        self.char_cdf = np.cumsum(w / w.sum())
        plen = self.rng.integers(2, 5, 2000)
        self.preds = [self.draw_chars(k).tolist() for k in plen]
        pw = 1.0 / (np.arange(2000) + 5.0)
        self.pred_p = pw / pw.sum()
        self.recent = []
        # A pool of object strings (KB objects repeat: dates, places, people).
        vlen = self.rng.integers(2, 15, 300_000)
        vchars = self.draw_chars(int(vlen.sum())).tolist()
        cut = np.cumsum(vlen).tolist()
        self.values = [
            "".join(chr(0x4E00 + c % 20000) for c in vchars[a:b])
            for a, b in zip([0] + cut[:-1], cut)
        ]

    def draw_chars(self, n):
        idx = np.searchsorted(self.char_cdf, self.rng.random(n))
        return self.chars[np.minimum(idx, len(self.chars) - 1)]

    def chunk(self, n_keys):
        """Exactly n_keys pairs, as Python lists like a tokenizer gives."""
        out = []
        while len(out) < n_keys:
            out += self._subjects(max(1, (n_keys - len(out)) // 4))
        del out[n_keys:]
        return out

    def _subjects(self, n_sub):
        """Pairs for n_sub subjects (about 4.5 pairs each)."""
        rng = self.rng
        lens = rng.integers(4, 13, n_sub)
        chars = self.draw_chars(int(lens.sum())).tolist()
        share = rng.random(n_sub) < 0.33
        n_preds = np.minimum(rng.geometric(1 / 5, n_sub), 40)
        pred_ids = rng.choice(2000, int(n_preds.sum()) * 2, p=self.pred_p).tolist()
        vals = rng.integers(0, len(self.values), int(n_preds.sum())).tolist()
        out, pos, pi, vi = [], 0, 0, 0
        for s in range(n_sub):
            subj = chars[pos : pos + lens[s]]
            pos += lens[s]
            if share[s] and self.recent:  # extend an earlier subject's stem
                stem = self.recent[rng.integers(len(self.recent))]
                subj = stem[: rng.integers(2, 7)] + subj[:4]
            self.recent.append(subj)
            if len(self.recent) > 10000:
                self.recent = self.recent[-5000:]
            seen = set()
            for _ in range(n_preds[s]):
                p = pred_ids[pi]
                pi += 1
                if p in seen:
                    continue
                seen.add(p)
                out.append((subj + [SEP] + self.preds[p] + [SEP], self.values[vals[vi]]))
                vi += 1
        return out


def nested_dict_baseline(pairs, queries):
    """The kexue.fm 8802 style trie: nested dicts, values at the leaves."""
    before = rss()
    t0 = time.perf_counter()
    root = {}
    for key, value in pairs:
        node = root
        for i in key:
            node = node.setdefault(i, {})
        node.setdefault(-1, []).append(value)
    build = time.perf_counter() - t0
    mem = rss() - before

    def next_ones(prefix):
        node = root
        for i in prefix:
            node = node.get(i)
            if node is None:
                return []
        return sorted(k for k in node if k != -1)

    t0 = time.perf_counter()
    for q in queries:
        next_ones(q)
    us = (time.perf_counter() - t0) / len(queries) * 1e6
    del root
    return build, mem, us


def verdict(ok):
    return "PASS" if ok else "FAIL"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200_000)
    ap.add_argument("--chunk", type=int, default=1_000_000, help="pairs generated at a time")
    ap.add_argument("--uniform", action="store_true", help="uniform, not Zipf, characters")
    ap.add_argument("--baseline-keys", type=int, default=200_000, help="0: skip the nested-dict baseline")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          f"(timings are wall clock and suffer when the machine is shared)")
    gen = KeyGenerator(args.seed, args.uniform)
    print(f"characters: {gen.source}, {'uniform' if args.uniform else 'Zipf-like'}")
    # Small inputs are generated up front; big ones are streamed in chunks so the
    # Python lists of the input do not dominate memory. Generation time is
    # excluded from the build time either way.
    trie = Trie()
    base = rss()
    n_pairs, add_time, add_cpu, gen_time = 0, 0.0, 0.0, 0.0
    rnd = random.Random(args.seed)
    while n_pairs < args.keys:
        t0 = time.perf_counter()
        pairs = gen.chunk(min(args.chunk, args.keys - n_pairs))
        gen_time += time.perf_counter() - t0
        if n_pairs == 0:
            base = rss()  # input chunk already resident: count only the trie
            baseline_pairs = pairs[: args.baseline_keys]
        t0, c0 = time.perf_counter(), time.process_time()
        trie.update(pairs)
        add_time += time.perf_counter() - t0
        add_cpu += time.process_time() - c0
        n_pairs += len(pairs)
        if n_pairs < args.keys:
            del pairs
    t0, c0 = time.perf_counter(), time.process_time()
    trie.compile()
    compile_time = time.perf_counter() - t0
    compile_cpu = time.process_time() - c0
    build = add_time + compile_time
    build_cpu = add_cpu + compile_cpu
    peak = status("VmHWM")
    mem = rss() - base
    n_keys = len(trie)
    rate = n_pairs / build
    per_key = mem / n_keys
    usage = trie.memory_usage()
    # Query keys come from the last chunk, sampled only now so that they are
    # not counted in the memory figure above.
    sample_keys = [k for k, _ in pairs]
    print(f"pairs added: {n_pairs:,}; distinct keys: {n_keys:,}; mean key length "
          f"{np.mean([len(k) for k in sample_keys]):.1f} ids; generation {gen_time:.1f} s (not counted)")
    print(f"build: add {add_time:.2f} s + compile {compile_time:.2f} s = {build:.2f} s wall "
          f"({build_cpu:.2f} s CPU of this process)")
    print(f"  build rate       {rate:12,.0f} keys/s   goal >= {GOAL_KEYS_PER_S:,}   {verdict(rate >= GOAL_KEYS_PER_S)}"
          f"   (wall clock; {n_pairs / build_cpu:,.0f} keys per CPU-second)")
    print(f"  resident memory  {per_key:12.1f} B/key    goal <= {GOAL_BYTES_PER_KEY}       {verdict(per_key <= GOAL_BYTES_PER_KEY)}"
          f"   (RSS delta {mem / 2**20:.1f} MiB incl. values; process peak {peak / 2**30:.2f} GiB)")
    print("  structure bytes/key: " + ", ".join(f"{k} {v / n_keys:.1f}" for k, v in usage.items() if v))

    # Random prefixes of existing keys (every depth, empty and full included).
    queries = [k[: rnd.randint(0, len(k))] for k in rnd.choices(sample_keys, k=args.queries)]
    next_ones = trie.next_ones
    t0 = time.perf_counter()
    n_allowed = 0
    for q in queries:
        n_allowed += len(next_ones(q))
    us = (time.perf_counter() - t0) / len(queries) * 1e6
    print(f"  next_ones        {us:12.2f} us/call  goal <= {GOAL_NEXT_US}        {verdict(us <= GOAL_NEXT_US)}"
          f"   ({len(queries):,} random prefixes, {n_allowed / len(queries):.1f} ids allowed on average)")
    gkeys = rnd.choices(sample_keys, k=min(args.queries, 100_000))
    get = trie.get
    t0 = time.perf_counter()
    for k in gkeys:
        get(k)
    gus = (time.perf_counter() - t0) / len(gkeys) * 1e6
    print(f"  get              {gus:12.2f} us/call")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kb.trie")
        t0 = time.perf_counter()
        trie.save(path)
        save_s = time.perf_counter() - t0
        size = os.path.getsize(path)
        t0 = time.perf_counter()
        loaded = Trie.load(path)
        load_s = time.perf_counter() - t0
        same = all(
            loaded.next_ones(q).tolist() == trie.next_ones(q).tolist() for q in queries[:2000]
        ) and all(loaded.get(k) == trie.get(k) for k in gkeys[:2000])
        del loaded
    print(f"  save {save_s:.2f} s, load {load_s:.2f} s, file {size / 2**20:.1f} MiB "
          f"({size / n_keys:.1f} B/key); loaded trie answers the same: {same}")

    if n_pairs < KGCLUE_TRIPLES:
        scale = KGCLUE_TRIPLES / n_pairs
        print(f"extrapolated to the full KgCLUE KB ({KGCLUE_TRIPLES:,} triples, linear in keys): "
              f"build {build * scale / 60:.1f} min, memory {mem * scale / 2**30:.2f} GiB, "
              f"file {size * scale / 2**30:.2f} GiB (not measured at that size)")

    print(f"load average now: {os.getloadavg()[0]:.1f}")
    if args.baseline_keys:
        del trie, queries
        bq = [k[: rnd.randint(0, len(k))] for k in rnd.choices([k for k, _ in baseline_pairs], k=50_000)]
        bbuild, bmem, bus = nested_dict_baseline(baseline_pairs, bq)
        nb = len(baseline_pairs)
        print(f"baseline nested-dict trie (kexue.fm 8802 style) on {nb:,} pairs: "
              f"{nb / bbuild:,.0f} keys/s, {bmem / nb:.0f} B/key, next_ones {bus:.2f} us; "
              f"memory ratio baseline/Trie {bmem / nb / per_key:.1f}x")


if __name__ == "__main__":
    main()
