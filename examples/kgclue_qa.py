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
import json
import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import common  # noqa: E402  (examples/common.py: Timer, append_jsonl)
from kerasnlp_plus.generation import Generator  # noqa: E402
from kerasnlp_plus.generation.validation import check_sequence_length  # noqa: E402
from kerasnlp_plus.pretraining.strategy import (  # noqa: E402
    add_strategy_args,
    check_global_batch,
    strategy_from_args,
    worker_role,
)
from kerasnlp_plus.tasks import seq2seq  # noqa: E402
from kerasnlp_plus.tasks.callbacks import BatchLossHistory, BestWeights, save_weights  # noqa: E402
from kerasnlp_plus.tasks.kgclue import (  # noqa: E402
    KeyEncoder,
    build_kb_trie,
    kgclue_metrics,
    read_questions,
)
from kerasnlp_plus.utils import atomic_write_text, shared_data_dir  # noqa: E402

DEFAULT_LR = {"checkpoint": 5e-6, "demo": 1e-3, "scratch": 1e-3}  # a 2.6M-parameter model wants a large rate


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
    g.add_argument("--copy", action=argparse.BooleanOptionalAction, default=None,
                   help="a copy mechanism (a pointer over the question's tokens, See et al. 2017); default: "
                   "on when the checkpoint holds a trained one (the demo model does)")
    g.add_argument("--dropout", type=float, default=None,
                   help="dropout rate (default: the checkpoint's config; 0.1 from scratch)")
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
    add_strategy_args(p)
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
    """Answer the validation questions after each epoch and put the scores into the
    epoch logs (for ``BestWeights``); ``predictions`` holds the last epoch's answers."""

    def __init__(self, answer_fn, records, args, log=print, write=True):
        super().__init__()
        self.answer_fn, self.records, self.args, self.log, self.write = answer_fn, records, args, log, write
        self.history, self.predictions = [], None
        self.output = pathlib.Path(args.output)

    def write_predictions(self, *_):
        write_predictions(self.output / "dev_predictions.json", self.records, self.predictions)

    def on_epoch_end(self, epoch, logs=None):
        timer = common.Timer()
        self.predictions = self.answer_fn([q for _, q, _ in self.records])
        metrics = kgclue_metrics(self.predictions, [a for _, _, a in self.records])
        record = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}, **metrics,
                  "decode_seconds": timer()}
        if logs is not None:
            logs.update(metrics)  # for BestWeights
        self.history.append(record)
        if self.write:
            common.append_jsonl(self.output / "metrics.jsonl", record)
        self.log(f"\nepoch {epoch + 1}: dev score {metrics['score']:.2f} (EM_O {metrics['EM_O']:.2f}, "
                 f"F1_O {metrics['F1_O']:.2f}, EM_All {metrics['EM_All']:.2f}) on {len(self.predictions)} "
                 f"questions, {record['decode_seconds']:.1f} s")
        for (_, q, a), pr in list(zip(self.records, self.predictions))[: self.args.show]:
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
    strategy = strategy_from_args(args, log)  # before any TF op
    check_global_batch(args.batch_size, strategy)
    chief = worker_role(strategy)[2]  # only the chief writes (several machines)
    keras.utils.set_random_seed(args.seed)
    data_dir, kb_path = resolve_paths(args)
    output = pathlib.Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    if chief and (output / "metrics.jsonl").exists():  # a late worker must not delete the chief's log
        os.unlink(output / "metrics.jsonl")

    train = read_questions(data_dir / "train.json", args.limit_train)
    valid = read_questions(data_dir / "dev.json", args.limit_valid)
    test = [] if args.no_test else read_questions(data_dir / "test_public.json", args.limit_test)
    log(f"data: {len(train)} train / {len(valid)} dev / {len(test)} test_public questions from {data_dir}")

    with strategy.scope():
        model, tokenizer, source = seq2seq.load_model_and_tokenizer(
            args.config, args.checkpoint, args.vocab, args.model, args.scratch, args.dropout, log=log,
            with_copy=args.copy)
    check_sequence_length(model, args.max_question_len + args.max_key_len, "--max-question-len + --max-key-len =")
    keys = KeyEncoder(tokenizer)
    trie, trie_stats = build_kb_trie(kb_path, keys, args.max_key_len, args.limit_kb,
                                     args.skip_bad_kb_lines, log=log)

    lr = args.lr if args.lr is not None else DEFAULT_LR[source]
    with strategy.scope():
        seq2seq.compile_unilm(model, lr, args.weight_decay)
    log(f"optimizer: {'AdamW' if args.weight_decay else 'Adam'} lr {lr:g}; {model.count_params():,} parameters")

    def encode(records):
        q_ids = [ids for ids, _ in tokenizer.encode_batch([q for _, q, _ in records], maxlen=args.max_question_len)]
        a_ids = [k[: args.max_key_len] for k in keys.encode([a for _, _, a in records])]
        return [(q + a, [0] * len(q) + [1] * len(a)) for q, a in zip(q_ids, a_ids)]

    # Global batches, the same for any number of replicas (see kerasnlp_plus.tasks.seq2seq).
    train_encoded = encode(train)
    train_ds = seq2seq.unilm_dataset(train_encoded, args.batch_size, shuffle=True, seed=args.seed, repeat=True)
    valid_ds = seq2seq.unilm_dataset(encode(valid), args.batch_size)
    decoder = Generator(model, end_id=keys.sep, maxlen=args.max_key_len)

    def answer(questions):
        """``(S, P, O)`` per question: trie-constrained decoding, then Trie.get."""
        from tqdm import tqdm

        sources = [ids for ids, _ in tokenizer.encode_batch(list(questions), maxlen=args.max_question_len)]
        from kerasnlp_plus.generation.lookahead import coverage_scores

        def lookahead_scores(batch):  # per-node look-ahead scores of a batch's questions
            return coverage_scores(trie, batch, weight=args.lookahead)

        outs = decoder.beam_search_many(
            sources, topk=args.beam, batch_size=args.decode_batch_size, trie=trie, min_ends=3,
            node_scores=lookahead_scores if args.lookahead else None,
            progress=lambda b: tqdm(b, desc="answering", leave=False, disable=not args.verbose))
        preds = []
        for out in outs:
            if out and out[-1] != keys.sep and out.count(keys.sep) == 2:
                out = out + [keys.sep]
            values = trie.get(out)
            preds.append(tuple(values[0].split("\t")) if values else ("", "", ""))
        return preds

    if args.load_weights:
        return evaluate_only(args, model, answer, valid, test, output, timer, log, chief)
    evaluator = QAEvaluator(answer, valid, args, log=log, write=chief)
    best_weights = BestWeights(output / "best.weights.h5", "score", model=model, write=chief, log=log,
                               on_improve=evaluator.write_predictions)
    batch_losses = BatchLossHistory()
    valid_loss_before = float(model.evaluate(valid_ds, verbose=0))
    log(f"dev loss before training: {valid_loss_before:.4f}")
    fit_timer = common.Timer()
    history = model.fit(train_ds, validation_data=valid_ds, epochs=args.epochs,
                        steps_per_epoch=seq2seq.num_batches(train_encoded, args.batch_size), shuffle=False,
                        callbacks=[batch_losses, evaluator, best_weights], verbose=args.verbose)
    fit_seconds = fit_timer()
    best = evaluator.history[best_weights.best_epoch - 1]

    results = {
        "model_source": source, "lr": lr, "kb": str(kb_path), "trie": trie_stats, "beam": args.beam,
        "train_questions": len(train), "dev_questions": len(valid),
        "valid_loss_before": valid_loss_before,
        "valid_loss_after": float(history.history["val_loss"][-1]),
        "train_loss": [float(x) for x in history.history["loss"]],
        "batch_losses": batch_losses.losses,
        "replicas": strategy.num_replicas_in_sync,
        "epochs": evaluator.history, "best": best, "fit_seconds": fit_seconds,
    }
    # Only the chief holds best.weights.h5: the other workers would decode with their
    # last weights, only to discard the answers.
    if (test or args.predict) and chief:
        save_weights(model, output / "last.weights.h5")
        model.load_weights(output / "best.weights.h5")
    if test and chief:
        t = common.Timer()
        preds = answer([q for _, q, _ in test])
        results["test_public"] = {**kgclue_metrics(preds, [a for _, _, a in test]), "decode_seconds": t()}
        write_predictions(output / "test_public_predictions.json", test, preds)
        m = results["test_public"]
        log(f"test_public (best dev weights): score {m['score']:.2f} (EM_O {m['EM_O']:.2f}, F1_O {m['F1_O']:.2f}, "
            f"EM_All {m['EM_All']:.2f}) on {len(test)} questions")
    if args.predict and chief:
        subm = read_questions(data_dir / "test.json")
        write_predictions(output / "kgclue_predict.json", subm, answer([q for _, q, _ in subm]))
        log(f"submission: {output / 'kgclue_predict.json'} ({len(subm)} answers)")
    results["total_seconds"] = timer()
    if chief:
        atomic_write_text(output / "results.json", json.dumps(results, ensure_ascii=False, indent=1))
    log(f"\nbest epoch {best['epoch']}: dev score {best['score']:.2f}; dev loss {valid_loss_before:.3f} -> "
        f"{results['valid_loss_after']:.3f}; train+eval {fit_seconds:.0f} s, total {results['total_seconds']:.0f} s")
    if source == "scratch":
        log("note: a tiny model trained from scratch; NOT comparable to the published ~89-91 "
            "(RoFormer-Sim-FT, full KB).")
    return results


def evaluate_only(args, model, answer, valid, test, output, timer, log, chief=True):
    """Answer dev and test_public with saved weights (no training); only the chief
    writes (every worker decodes)."""
    model.load_weights(args.load_weights)
    results = {"weights": args.load_weights, "beam": args.beam, "lookahead": args.lookahead}
    for name, records in (("dev", valid), ("test_public", test)):
        if not records:
            continue
        t = common.Timer()
        preds = answer([q for _, q, _ in records])
        m = results[name] = {**kgclue_metrics(preds, [a for _, _, a in records]), "decode_seconds": t()}
        if chief:
            write_predictions(output / f"{name}_predictions.json", records, preds)
        log(f"{name}: score {m['score']:.2f} (EM_O {m['EM_O']:.2f}, F1_O {m['F1_O']:.2f}, "
            f"EM_All {m['EM_All']:.2f}) on {len(records)} questions, beam {args.beam}, "
            f"look-ahead {args.lookahead:g}, {m['decode_seconds']:.1f} s")
    results["total_seconds"] = timer()
    if chief:
        atomic_write_text(output / "results.json", json.dumps(results, ensure_ascii=False, indent=1))
    return results


if __name__ == "__main__":
    main()
