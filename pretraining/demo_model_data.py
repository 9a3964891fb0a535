#!/usr/bin/env python
"""Build the text inputs of the shipped demo model's pretraining from the staged data
(``kerasnlp_plus.utils.shared_data_dir()``), keeping every held-out file out.

Writes into OUTPUT:

- ``mlm.txt``: one document per line for ``prepare_data.py --task mlm``: the corpora
  (CLUECorpusSmall sample, ChnSentiCorp), LCSTS train/val as ``title。content`` and
  the allowed CSL pairs as ``title。abstract``;
- ``pairs.tsv``: ``target<TAB>source`` pairs for ``prepare_data.py --task unilm
  --doc-format pairs``: LCSTS train/val (content -> headline) and the allowed CSL
  pairs (abstract -> title);
- ``selection.tsv``: the CSL pairs kept out of pretraining to choose the main job's
  settings on (``title<TAB>abstract``, lines 901-1000 and 1901-2000 of
  ``examples/data/csl/train.tsv``);
- ``gsg.tsv``: PEGASUS-style gap-sentence pairs (``target<TAB>source``) from the news
  corpus, for the same ``--task unilm --doc-format pairs``: each document is cut into
  windows of whole sentences that fit a seq2seq row, and the target is the window's most
  salient sentence (highest character-unigram F1 against the rest of the window, as
  PEGASUS' "Ind-Orig" with ROUGE-1). The sentence stays in the source, so the model
  learns to find the key sentence and copy it, the skill a title needs first.

Held out of everything (and any pair whose title or text equals one of theirs):
``csl/csl_title_test.tsv`` (= ``examples/data/csl/valid.tsv``),
``csl/clge_csl/test.tsv``, ``lcsts/test.tsv``; KgCLUE is not read at all.
"""
import argparse
import json
import os
import pathlib
import re
import sys
from collections import Counter


ROOT = pathlib.Path(__file__).resolve().parent.parent
HELD_OUT = ["csl/csl_title_test.tsv", "csl/clge_csl/test.tsv", "lcsts/test.tsv"]
SELECTION_LINES = set(range(900, 1000)) | set(range(1900, 2000))  # 0-based lines of train.tsv
# Gap-sentence windows: a source of at most GSG_WINDOW characters (the seq2seq rows hold
# 160 tokens: [CLS] source [SEP] target [SEP], target cut to 40), a target of
# GSG_MIN..GSG_MAX characters (the length of a CSL title or LCSTS headline).
GSG_WINDOW, GSG_MIN, GSG_MAX = 110, 8, 36
SENTENCE_END = re.compile(r"(?<=[。！？!?；;])")
CLAUSE_END = re.compile(r"(?<=[，,：:])")


def split_sentences(document):
    """Sentences, with any longer than GSG_MAX characters regrouped from its clauses
    into pieces of at most GSG_MAX (news sentences often run past a window)."""
    pieces = []
    for sentence in (s.strip() for s in SENTENCE_END.split(document)):
        if len(sentence) <= GSG_MAX:
            pieces += [sentence] if sentence else []
            continue
        piece = ""
        for clause in CLAUSE_END.split(sentence):
            if piece and len(piece) + len(clause) > GSG_MAX:
                pieces.append(piece)
                piece = ""
            piece += clause
        pieces += [piece] if piece else []
    return pieces


def unigram_f1(a, b):
    common = sum((Counter(a) & Counter(b)).values())
    return 0.0 if not common else 2 * common / (len(a) + len(b))


def gap_sentence_pairs(document):
    """(target, source) pairs from one document: consecutive sentences packed into
    windows of at most GSG_WINDOW characters, each window's most salient sentence of
    GSG_MIN..GSG_MAX characters as its target (kept in the source). A window needs at
    least two sentences, so that the choice means something."""
    sentences = split_sentences(document)
    windows, window = [], []
    for sentence in sentences:
        if len(sentence) > GSG_WINDOW:  # an over-long clause ends the window, unused
            windows.append(window)
            window = []
            continue
        if sum(map(len, window)) + len(sentence) > GSG_WINDOW:
            windows.append(window)
            window = []
        window.append(sentence)
    windows.append(window)
    pairs = []
    for window in windows:
        if len(window) < 2:
            continue
        scored = []
        for i, sentence in enumerate(window):
            core = sentence.rstrip("。！？!?；;，,：:")
            if GSG_MIN <= len(core) <= GSG_MAX:
                rest = "".join(window[:i] + window[i + 1:])
                scored.append((unigram_f1(core, rest), -i, core))
        if scored:
            pairs.append((max(scored)[2], "".join(window)))
    return pairs


def read_pairs(path):
    pairs = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                raise ValueError(f"{path}:{lineno}: expected title<TAB>text, got {len(parts)} fields")
            pairs.append((parts[0].strip(), parts[1].strip()))
    return pairs


def main(argv=None):
    from kerasnlp_plus.utils import atomic_write_text, shared_data_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    data = pathlib.Path(shared_data_dir())
    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    held = set()
    for rel in HELD_OUT:
        for title, text in read_pairs(data / rel):
            held.update((title, text))
    csl = read_pairs(ROOT / "examples" / "data" / "csl" / "train.tsv")
    selection = [pair for i, pair in enumerate(csl) if i in SELECTION_LINES]
    csl_train = [pair for i, pair in enumerate(csl) if i not in SELECTION_LINES]
    lcsts = read_pairs(data / "lcsts" / "train.tsv") + read_pairs(data / "lcsts" / "val.tsv")
    counts = {"csl_pairs": len(csl_train), "lcsts_pairs": len(lcsts), "selection_pairs": len(selection)}

    def clean(pairs, name):
        kept = [(t, x) for t, x in pairs if t not in held and x not in held]
        counts[f"{name}_dropped_overlapping_held_out"] = len(pairs) - len(kept)
        return kept

    csl_train, lcsts = clean(csl_train, "csl"), clean(lcsts, "lcsts")
    overlap = [pair for pair in selection if pair[0] in held or pair[1] in held]
    if overlap:
        raise ValueError(f"selection pairs overlap the held-out files: {overlap[:2]}")
    docs = []
    for name in ("CLUECorpusSmall_sampled.txt", "chnsenticorp.txt"):
        with open(data / "corpus" / name, encoding="utf-8", errors="replace") as f:
            docs += [line.strip() for line in f if line.strip()]
    counts["corpus_documents"] = len(docs)
    # Gap sentences from the news only: the reviews are too short and too colloquial.
    with open(data / "corpus" / "CLUECorpusSmall_sampled.txt", encoding="utf-8", errors="replace") as f:
        gsg = [pair for line in f if line.strip() for pair in gap_sentence_pairs(line.strip().replace("\t", " "))]
    gsg = clean(gsg, "gap_sentence")
    counts["gap_sentence_pairs"] = len(gsg)
    docs += [f"{t}。{x}" for t, x in lcsts + csl_train]
    pairs = lcsts + csl_train
    atomic_write_text(out / "mlm.txt", "".join(d.replace("\t", " ") + "\n" for d in docs))
    atomic_write_text(out / "pairs.tsv", "".join(f"{t}\t{x}\n" for t, x in pairs))
    atomic_write_text(out / "gsg.tsv", "".join(f"{t}\t{x}\n" for t, x in gsg))
    atomic_write_text(out / "selection.tsv", "".join(f"{t}\t{x}\n" for t, x in selection))
    counts.update(mlm_documents=len(docs), seq2seq_pairs=len(pairs))
    atomic_write_text(out / "counts.json", json.dumps(counts, indent=1))
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
