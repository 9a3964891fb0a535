"""Fine-tuning tasks: what the end-to-end examples (``examples/``) need beyond the
model, each in one home.

- :mod:`~kerasnlp_plus.tasks.seq2seq`: UniLM seq2seq fine-tuning: model sources
  (checkpoint with a simplified vocab, the demo model, a tiny model from scratch),
  ``[CLS] source [SEP] target [SEP]`` encoding, the input pipeline of global batches
  (the same weights for any number of replicas) and the compile step.
- :mod:`~kerasnlp_plus.tasks.callbacks`: the best-weights callback and per-batch losses.
- :mod:`~kerasnlp_plus.tasks.titles`: CSL title data and its Rouge/BLEU scoring.
- :mod:`~kerasnlp_plus.tasks.kgclue`: KgCLUE questions, the knowledge base and its
  prefix trie, and the official metric.
- :mod:`~kerasnlp_plus.tasks.long_text`: masked-LM accuracy and loss on long text, and a
  model cut to the position rows it was trained on (``examples/long_text_mlm.py``,
  ``bench/extrapolation.py``).

The strategy selection is :mod:`kerasnlp_plus.pretraining.strategy`'s
(``add_strategy_args``, ``strategy_from_args``), the label rule is the pretraining
records' (:func:`kerasnlp_plus.pretraining.records.next_token_labels`), and the weight
normalization and loss are the pretraining pipeline's.
"""
