"""KgCLUE knowledge-base QA as "Seq2Seq + prefix tree" (kexue.fm/archives/8802).

bojone/KgCLUE-bert4keras on Keras 3: a UniLM BERT reads the question and writes
the key of the answer triple, ``S [SEP] P [SEP] M [SEP]`` (subject, predicate, and
the subject's full-width ``（义项）`` disambiguation split off as ``M``, as in the
blog: S and P are what the question mentions, so they come first and M, which
the question rarely states, last). Decoding is constrained by a
:class:`kerasnlp_plus.generation.Trie` over the keys of every triple in the
knowledge base, so every answer is a triple that exists; ``min_ends=3`` stops at
the third [SEP]; ``Trie.get(key)`` returns the stored triple(s) and the first one
is the answer (the annotation keeps one object per (S, P), as bojone notes).

The data is read from the official files (never copied): ``--data-dir`` with
``train.json``, ``dev.json``, ``test_public.json`` (and ``test.json`` for a
submission), ``--kb`` with one ``S<TAB>P<TAB>O`` triple per line (the full
``Knowledge.txt`` has 20.6M lines: it is streamed in chunks and only the trie
keeps it). Scores use the official metric (CLUEbenchmark/KgCLUE
``evaluate_f1_em.py``): EM and F1 (``2*LCS/(len a + len b)``, characters, after
lower-casing and whitespace normalisation) on S, P, O and S+P+O; the score is
``0.5*EM(O) + 0.5*F1(O)``. Predictions are written as the submission format,
json lines ``{"id": ..., "answer": "S ||| P ||| O"}``.

``--lookahead W`` adds look-ahead rescoring (the blog's idea: prefer the branches
whose keys can still cover more of the question): the score of a beam changes at
every step by ``W`` times the change of the most question tokens a key below its
trie node contains (:func:`kerasnlp_plus.generation.lookahead.coverage_scores`,
the Generator's ``node_scores`` hook). ``--load-weights`` skips training and only
answers dev (and test_public), e.g. to compare with and without look-ahead on the
same weights.

Typical run (KgCLUE files in ``kgclue/``)::

    python examples/kgclue_qa.py --data-dir kgclue --kb kgclue/Knowledge.txt \\
        --model roformer --config roformer-sim/bert_config.json \\
        --checkpoint roformer-sim/bert_model.ckpt --vocab roformer-sim/vocab.txt --epochs 3 --beam 3

The trie's size and build time for a base shaped like the full one: ``bench/trie.py``.
"""
import argparse
import itertools
import json
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common  # noqa: E402
from common import keras  # noqa: E402

from kerasnlp_plus.generation.validation import check_sequence_length  # noqa: E402
from kerasnlp_plus.utils import atomic_write_text, shared_data_dir  # noqa: E402

DEFAULT_LR = {"checkpoint": 5e-6, "demo": 1e-3, "scratch": 1e-3}  # a 2.6M-parameter model wants a large rate


# ----------------------------------------------------------------------- metric
def normalize(text):
    """The official normalisation: lower case, whitespace runs -> one space."""
    return " ".join(text.lower().split())


def lcs_length(a, b):
    """Length of the longest common subsequence of two strings (characters)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for ca in a:
        cur = [0]
        for j, cb in enumerate(b):
            cur.append(prev[j] + 1 if ca == cb else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def f1_sim(text_a, text_b):
    """``2*LCS/(len a + len b)``; 0 when both are empty (as the official script)."""
    if not text_a and not text_b:
        return 0.0
    return 2.0 * lcs_length(text_a, text_b) / (len(text_a) + len(text_b))


def kgclue_metrics(predictions, references):
    """Official KgCLUE metrics, in percent, over ``(S, P, O)`` string triples.

    >>> m = kgclue_metrics([("a", "b", "xyz")], [("a", "c", "xy")])
    >>> m["EM_S"], m["EM_P"], m["EM_O"], m["F1_O"], m["score"]
    (100.0, 0.0, 0.0, 80.0, 40.0)
    """
    if len(predictions) != len(references) or not references:
        raise ValueError(f"need as many predictions as references (>0), got "
                         f"{len(predictions)} and {len(references)}")
    m = {f"{a}_{b}": 0.0 for a in ("EM", "F1") for b in ("All", "S", "P", "O")}
    for pred, ref in zip(predictions, references):
        ps, pp, po = map(normalize, pred)
        rs, rp, ro = map(normalize, ref)
        m["EM_S"] += ps == rs
        m["EM_P"] += pp == rp
        m["EM_O"] += po == ro
        m["EM_All"] += (ps, pp, po) == (rs, rp, ro)
        m["F1_S"] += f1_sim(ps, rs)
        m["F1_P"] += f1_sim(pp, rp)
        m["F1_O"] += f1_sim(po, ro)
        m["F1_All"] += f1_sim(ps + pp + po, rs + rp + ro)
    m = {k: 100.0 * v / len(references) for k, v in m.items()}
    m["score"] = 0.5 * m["EM_O"] + 0.5 * m["F1_O"]
    return m


# ------------------------------------------------------------------------- data
def subject_split(s):
    """``'龙晶（游戏）' -> ('龙晶', '游戏')``; ``('s', '')`` without a disambiguation."""
    if s.endswith("）") and "（" in s:
        i = s.index("（")
        return s[:i], s[i + 1 : -1]
    return s, ""


def split_answer(answer, where):
    parts = answer.split(" ||| ")
    if len(parts) != 3:
        raise ValueError(f"{where}: answer must be 'S ||| P ||| O', got {answer!r}")
    return tuple(parts)


def read_questions(path, limit=None):
    """``[(id, question, (S, P, O) or None)]`` from a KgCLUE json-lines file."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                qid, question = d["id"], d["question"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: not a KgCLUE record ({e!r}): {line[:80]!r}") from None
            answer = d.get("answer")
            out.append((qid, question, None if answer is None else split_answer(answer, f"{path}:{lineno}")))
            if limit is not None and len(out) >= limit:
                break
    return out


class KeyEncoder:
    """Token ids of ``S [SEP] P [SEP] M [SEP]`` keys, batched through the tokenizer."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.sep = tokenizer.end_id

    def content_ids(self, texts):
        return [ids[1:-1] for ids, _ in self.tokenizer.encode_batch(list(texts))]

    def encode(self, triples):
        """Keys for ``(S, P, ...)`` tuples (the full subject with its disambiguation)."""
        subj, meaning = zip(*(subject_split(t[0]) for t in triples)) if triples else ((), ())
        sep = [self.sep]
        return [
            s + sep + p + sep + m + sep
            for s, p, m in zip(
                self.content_ids(subj), self.content_ids([t[1] for t in triples]), self.content_ids(meaning)
            )
        ]


def iter_kb(path, limit=None, skip_bad=False, stats=None):
    """Stream ``(S, P, O)`` from an ``S<TAB>P<TAB>O`` file (O whitespace-normalised)."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if limit is not None and lineno > limit:
                break
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 3 or not parts[0] or not parts[1]:
                if skip_bad:
                    if stats is not None:
                        stats["bad_lines"] = stats.get("bad_lines", 0) + 1
                    continue
                raise ValueError(f"{path}:{lineno}: expected 'S<TAB>P<TAB>O', got {line[:80]!r} "
                                 "(use --skip-bad-kb-lines to skip such lines)")
            yield parts[0], parts[1], " ".join(parts[2].split())


def rss_mb():
    """Resident memory of this process in MB (from /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_mb():
    """Peak resident memory of this process so far, in MB (``ru_maxrss``)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_kb_trie(path, key_encoder, max_key_len, limit=None, skip_bad=False, chunk=20000, log=print):
    """Stream the knowledge base into a Trie: key ``S [SEP] P [SEP] M [SEP]`` ->
    value ``'S<TAB>P<TAB>O'`` (the original strings, so answers are exact KB text).

    Returns ``(trie, stats)``; keys longer than ``max_key_len`` tokens (which the
    decoder could never finish) are skipped and counted.
    """
    from tqdm import tqdm

    from kerasnlp_plus.generation import Trie

    stats = {"triples": 0, "too_long": 0}
    rss0, timer = rss_mb(), common.Timer()
    trie = Trie()
    it = iter_kb(path, limit, skip_bad, stats)
    with tqdm(desc=f"trie over {os.path.basename(path)}", unit=" triples", mininterval=2) as bar:
        while True:
            triples = list(itertools.islice(it, chunk))
            if not triples:
                break
            for key, (s, p, o) in zip(key_encoder.encode(triples), triples):
                if len(key) > max_key_len:
                    stats["too_long"] += 1
                    continue
                trie.add(key, f"{s}\t{p}\t{o}")
            stats["triples"] += len(triples)
            bar.update(len(triples))
    stats["add_seconds"] = timer()
    trie.compile()
    stats["total_seconds"] = timer()
    stats["compile_seconds"] = stats["total_seconds"] - stats["add_seconds"]
    stats["keys"] = len(trie)
    stats["trie_bytes"] = trie.memory_usage()["total"]
    stats["rss_growth_mb"] = rss_mb() - rss0
    stats["peak_rss_mb"] = peak_rss_mb()
    log(f"trie: {stats['triples']:,} triples -> {stats['keys']:,} keys in {stats['total_seconds']:.1f} s "
        f"(tokenize+add {stats['add_seconds']:.1f} s, compile {stats['compile_seconds']:.1f} s); "
        f"{stats['trie_bytes'] / 2**20:.1f} MiB compiled, process RSS +{stats['rss_growth_mb']:.0f} MB"
        + (f"; {stats['too_long']} keys over {max_key_len} tokens skipped" if stats["too_long"] else "")
        + (f"; {stats['bad_lines']} malformed lines skipped" if stats.get("bad_lines") else ""))
    return trie, stats


# ------------------------------------------------------------------------ model
def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g = p.add_argument_group("model (default: the shipped demo model, else a tiny one from scratch)")
    g.add_argument("--config")
    g.add_argument("--checkpoint")
    g.add_argument("--vocab")
    g.add_argument("--model", default="bert", choices=["bert", "roberta", "albert", "roformer"],
                   help="the checkpoint's family; roformer: rotary positions (RoFormer, RoFormer-Sim)")
    g.add_argument("--scratch", action="store_true")
    g = p.add_argument_group("data (read from the official files, never copied)")
    g.add_argument("--data-dir", help="folder with train.json, dev.json, test_public.json "
                   "(default: $KERASNLP_PLUS_SHARED_DATA/kgclue)")
    g.add_argument("--kb", help="S<TAB>P<TAB>O knowledge base (default: DATA_DIR/Knowledge.txt, "
                   "else DATA_DIR/Knowledge_subset_from_answers.txt)")
    g.add_argument("--skip-bad-kb-lines", action="store_true")
    g.add_argument("--limit-kb", type=int)
    g.add_argument("--limit-train", type=int)
    g.add_argument("--limit-valid", type=int)
    g.add_argument("--limit-test", type=int)
    g.add_argument("--no-test", action="store_true", help="skip test_public.json")
    g.add_argument("--predict", action="store_true", help="also write a submission for test.json")
    g = p.add_argument_group("training and decoding")
    g.add_argument("--epochs", type=int, default=2)
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--lr", type=float)
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--max-question-len", type=int, default=64, help="question tokens incl. [CLS]/[SEP]")
    g.add_argument("--max-key-len", type=int, default=64, help="answer-key tokens incl. its 3 [SEP]")
    g.add_argument("--beam", type=int, default=1)
    g.add_argument("--lookahead", type=float, default=0.0, metavar="W",
                   help="look-ahead rescoring weight (0: off)")
    g.add_argument("--load-weights", help="skip training: load these weights, answer dev and test_public")
    g.add_argument("--decode-batch-size", type=int, default=64)
    g.add_argument("--output", default="runs/kgclue_qa")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--show", type=int, default=5)
    g.add_argument("--verbose", type=int, default=1)
    common.add_strategy_args(p)
    return p.parse_args(argv)


def resolve_paths(args):
    data_dir = pathlib.Path(args.data_dir) if args.data_dir else shared_data_dir("kgclue")
    if not (data_dir / "train.json").is_file():
        raise FileNotFoundError(f"{data_dir / 'train.json'} not found: pass --data-dir (the KgCLUE "
                                "datasets folder; the data is not shipped with this project)")
    kb = pathlib.Path(args.kb) if args.kb else next(
        (data_dir / n for n in ("Knowledge.txt", "Knowledge_subset_from_answers.txt")
         if (data_dir / n).is_file()), None)
    if kb is None or not kb.is_file():
        raise FileNotFoundError(f"knowledge base {kb} not found: pass --kb")
    return data_dir, kb


class QAEvaluator(keras.callbacks.Callback):
    """Answer the validation questions after each epoch; keep the best weights by score."""

    def __init__(self, answer_fn, records, args, log=print):
        super().__init__()
        self.answer_fn, self.records, self.args, self.log = answer_fn, records, args, log
        self.best, self.history = None, []
        self.output = pathlib.Path(args.output)

    def on_epoch_end(self, epoch, logs=None):
        timer = common.Timer()
        preds = self.answer_fn([q for _, q, _ in self.records])
        metrics = kgclue_metrics(preds, [a for _, _, a in self.records])
        record = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}, **metrics,
                  "decode_seconds": timer()}
        improved = self.best is None or metrics["score"] > self.best["score"]
        if improved:
            self.best = record
            common.save_weights_atomic(self.model, self.output / "best.weights.h5")
            write_predictions(self.output / "dev_predictions.json", self.records, preds)
        self.history.append(record)
        common.append_jsonl(self.output / "metrics.jsonl", record)
        self.log(f"\nepoch {epoch + 1}: dev score {metrics['score']:.2f} (EM_O {metrics['EM_O']:.2f}, "
                 f"F1_O {metrics['F1_O']:.2f}, EM_All {metrics['EM_All']:.2f}) on {len(preds)} questions, "
                 f"{record['decode_seconds']:.1f} s" + ("  * best, weights saved" if improved else ""))
        for (_, q, a), pr in list(zip(self.records, preds))[: self.args.show]:
            self.log(f"  Q: {q}\n  gold: {' ||| '.join(a)}\n  pred: {' ||| '.join(pr)}")


def write_predictions(path, records, preds):
    atomic_write_text(path, "".join(
        json.dumps({"id": qid, "answer": " ||| ".join(p)}, ensure_ascii=False) + "\n"
        for (qid, _, _), p in zip(records, preds)
    ))


def main(args=None, log=print):
    if args is None or isinstance(args, list):
        args = parse_args(args)
    timer = common.Timer()
    strategy = common.select_strategy(args, log)  # before any TF op
    common.set_seed(args.seed)
    data_dir, kb_path = resolve_paths(args)
    output = pathlib.Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    if (output / "metrics.jsonl").exists():
        os.unlink(output / "metrics.jsonl")

    train = read_questions(data_dir / "train.json", args.limit_train)
    valid = read_questions(data_dir / "dev.json", args.limit_valid)
    test = [] if args.no_test else read_questions(data_dir / "test_public.json", args.limit_test)
    log(f"data: {len(train)} train / {len(valid)} dev / {len(test)} test_public questions from {data_dir}")

    with strategy.scope():
        model, tokenizer, source = common.load_model_and_tokenizer(args, application="unilm", log=log)
    check_sequence_length(model, args.max_question_len + args.max_key_len, "--max-question-len + --max-key-len =")
    keys = KeyEncoder(tokenizer)
    trie, trie_stats = build_kb_trie(kb_path, keys, args.max_key_len, args.limit_kb,
                                     args.skip_bad_kb_lines, log=log)

    lr = args.lr if args.lr is not None else DEFAULT_LR[source]
    with strategy.scope():
        common.compile_unilm(model, lr, args.weight_decay)
    log(f"optimizer: {'AdamW' if args.weight_decay else 'Adam'} lr {lr:g}; {model.count_params():,} parameters")

    def encode(records):
        q_ids = [ids for ids, _ in tokenizer.encode_batch([q for _, q, _ in records], maxlen=args.max_question_len)]
        a_ids = [k[: args.max_key_len] for k in keys.encode([a for _, _, a in records])]
        return [(q + a, [0] * len(q) + [1] * len(a)) for q, a in zip(q_ids, a_ids)]

    train_ds = common.unilm_dataset(encode(train), args.batch_size, shuffle=True, seed=args.seed)
    valid_ds = common.unilm_dataset(encode(valid), args.batch_size)
    decoder = common.Decoder(model, end_id=keys.sep, maxlen=args.max_key_len, batch_size=args.decode_batch_size)

    def answer(questions):
        """``(S, P, O)`` per question: trie-constrained decoding, then Trie.get."""
        from tqdm import tqdm

        sources = [ids for ids, _ in tokenizer.encode_batch(list(questions), maxlen=args.max_question_len)]
        node_scores_fn = None
        if args.lookahead:
            from kerasnlp_plus.generation.lookahead import coverage_scores

            def node_scores_fn(batch):
                return coverage_scores(trie, batch, weight=args.lookahead)

        outs = decoder.decode(sources, topk=args.beam, trie=trie, min_ends=3, progress=lambda b: tqdm(
            b, desc="answering", leave=False, disable=not args.verbose), node_scores_fn=node_scores_fn)
        preds = []
        for out in outs:
            if out and out[-1] != keys.sep and out.count(keys.sep) == 2:
                out = out + [keys.sep]
            values = trie.get(out)
            preds.append(tuple(values[0].split("\t")) if values else ("", "", ""))
        return preds

    if args.load_weights:
        return evaluate_only(args, model, answer, valid, test, output, timer, log)
    evaluator = QAEvaluator(answer, valid, args, log=log)
    batch_losses = common.BatchLossHistory()
    valid_loss_before = float(model.evaluate(valid_ds, verbose=0))
    log(f"dev loss before training: {valid_loss_before:.4f}")
    fit_timer = common.Timer()
    history = model.fit(train_ds, validation_data=valid_ds, epochs=args.epochs, shuffle=False,
                        callbacks=[batch_losses, evaluator], verbose=args.verbose)
    fit_seconds = fit_timer()

    results = {
        "model_source": source, "lr": lr, "kb": str(kb_path), "trie": trie_stats, "beam": args.beam,
        "train_questions": len(train), "dev_questions": len(valid),
        "valid_loss_before": valid_loss_before,
        "valid_loss_after": float(history.history["val_loss"][-1]),
        "train_loss": [float(x) for x in history.history["loss"]],
        "batch_losses": batch_losses.losses,
        "epochs": evaluator.history, "best": evaluator.best, "fit_seconds": fit_seconds,
    }
    if test or args.predict:
        common.save_weights_atomic(model, output / "last.weights.h5")
        model.load_weights(output / "best.weights.h5")
    if test:
        t = common.Timer()
        preds = answer([q for _, q, _ in test])
        results["test_public"] = {**kgclue_metrics(preds, [a for _, _, a in test]), "decode_seconds": t()}
        write_predictions(output / "test_public_predictions.json", test, preds)
        m = results["test_public"]
        log(f"test_public (best dev weights): score {m['score']:.2f} (EM_O {m['EM_O']:.2f}, F1_O {m['F1_O']:.2f}, "
            f"EM_All {m['EM_All']:.2f}) on {len(test)} questions")
    if args.predict:
        subm = read_questions(data_dir / "test.json")
        write_predictions(output / "kgclue_predict.json", subm, answer([q for _, q, _ in subm]))
        log(f"submission: {output / 'kgclue_predict.json'} ({len(subm)} answers)")
    results["total_seconds"] = timer()
    atomic_write_text(output / "results.json", json.dumps(results, ensure_ascii=False, indent=1))
    best = evaluator.best
    log(f"\nbest epoch {best['epoch']}: dev score {best['score']:.2f}; dev loss {valid_loss_before:.3f} -> "
        f"{results['valid_loss_after']:.3f}; train+eval {fit_seconds:.0f} s, total {results['total_seconds']:.0f} s")
    if source == "scratch":
        log("note: a tiny model trained from scratch; NOT comparable to the published ~89-91 "
            "(RoFormer-Sim-FT, full KB).")
    return results


def evaluate_only(args, model, answer, valid, test, output, timer, log):
    """Answer dev and test_public with saved weights (no training)."""
    model.load_weights(args.load_weights)
    results = {"weights": args.load_weights, "beam": args.beam, "lookahead": args.lookahead}
    for name, records in (("dev", valid), ("test_public", test)):
        if not records:
            continue
        t = common.Timer()
        preds = answer([q for _, q, _ in records])
        m = results[name] = {**kgclue_metrics(preds, [a for _, _, a in records]), "decode_seconds": t()}
        write_predictions(output / f"{name}_predictions.json", records, preds)
        log(f"{name}: score {m['score']:.2f} (EM_O {m['EM_O']:.2f}, F1_O {m['F1_O']:.2f}, "
            f"EM_All {m['EM_All']:.2f}) on {len(records)} questions, beam {args.beam}, "
            f"look-ahead {args.lookahead:g}, {m['decode_seconds']:.1f} s")
    results["total_seconds"] = timer()
    atomic_write_text(output / "results.json", json.dumps(results, ensure_ascii=False, indent=1))
    return results


if __name__ == "__main__":
    main()
