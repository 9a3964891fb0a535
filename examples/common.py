"""Glue shared by the two fine-tuning examples (what is not library code).

The reusable parts live in the package: :mod:`kerasnlp_plus.tasks` (UniLM seq2seq
data and compile step, callbacks, CSL and KgCLUE data and metrics),
:mod:`kerasnlp_plus.pretraining.strategy` (the strategy selection) and
:meth:`kerasnlp_plus.generation.Generator.beam_search_many` (length-sorted batched
decoding).

The scripts import this module by name: Python puts a script's own folder first on
``sys.path``, so ``python examples/seq2seq_autotitle.py`` finds it without any edit.
"""
import json
import time


def append_jsonl(path, record):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self):
        return time.perf_counter() - self.start
