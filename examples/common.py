"""Glue shared by the two fine-tuning examples (what is not library code).

The reusable parts live in the package: :mod:`kerasnlp_plus.tasks` (UniLM seq2seq
data and compile step, callbacks, CSL and KgCLUE data and metrics) and
:mod:`kerasnlp_plus.pretraining.strategy` (the strategy selection). ``Decoder``
(length-sorted batched decoding) stays here until ``Generator`` does that itself.

The scripts import this module by name: Python puts a script's own folder first on
``sys.path``, so ``python examples/seq2seq_autotitle.py`` finds it without any edit.
"""
import json
import time

import numpy as np

from kerasnlp_plus.snippets import sequence_padding


def append_jsonl(path, record):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self):
        return time.perf_counter() - self.start


# ------------------------------------------------------------------------ decoding
class Decoder:
    """Batched beam search over a UniLM model: one place to switch implementations.

    Wraps :class:`kerasnlp_plus.generation.Generator` (encodes the source once,
    extends a key/value cache per step). ``decode(sources, topk, trie, min_ends)``
    takes encoded sources (``[CLS] source [SEP]`` id lists) and returns the
    generated id lists, in input order. Sources are decoded in length-sorted
    batches of ``batch_size`` to keep padding small.
    """

    def __init__(self, model, end_id, maxlen, batch_size=32, minlen=1, **generator_kwargs):
        from kerasnlp_plus.generation import Generator

        # generator_kwargs: e.g. no_repeat_ngram_size
        self.generator = Generator(model, end_id=end_id, maxlen=maxlen, minlen=minlen, **generator_kwargs)
        self.batch_size = batch_size
        self.end_id = end_id

    def decode(self, sources, topk=1, trie=None, min_ends=1, progress=None, node_scores_fn=None,
               source_vocab=False):
        """``node_scores_fn``: look-ahead scores for a batch's sources (see
        ``Generator.beam_search(node_scores=)``). ``source_vocab``: generate only tokens
        of the row's own source (and the end token), a copy constraint for extractive
        tasks such as titles."""
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        results = [None] * len(sources)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if progress is not None:
            batches = progress(batches)
        for idx in batches:
            token_ids = np.asarray(sequence_padding([sources[i] for i in idx]), np.int32)
            segment_ids = np.zeros_like(token_ids)
            kwargs = {"topk": topk, "min_ends": min_ends}
            if trie is not None:
                kwargs["trie"] = trie
            if node_scores_fn is not None:  # look-ahead scores of this batch's sources
                kwargs["node_scores"] = node_scores_fn([sources[i] for i in idx])
            if source_vocab:
                # [CLS]/[SEP] framing excluded; the end id stays allowed
                allowed = [sorted(set(sources[i][1:-1]) | {self.end_id}) for i in idx]
                kwargs["prefix_allowed_tokens"] = lambda b, prefix, allowed=allowed: allowed[b]
            outputs = self.generator.beam_search([token_ids, segment_ids], **kwargs)
            for i, out in zip(idx, outputs):
                results[i] = [int(t) for t in out]
        return results
