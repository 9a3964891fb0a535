"""CSL title generation: the ``title<TAB>abstract`` files and the scores of the
published figures (bert4keras' ``task_seq2seq_autotitle_csl.py``): character
Rouge-1/2/L F with the ``rouge`` package and nltk's sentence BLEU (smoothing
``method1``), the maintained packages bert4keras used, so the numbers stay comparable
(``pip install kerasnlp_plus[examples]``)."""
import os


def read_title_tsv(paths, limit=None):
    """``(title, abstract)`` pairs from ``title<TAB>abstract`` files, in order.

    A malformed line raises ``ValueError`` naming the file and line number.
    ``limit`` keeps the first ``limit`` pairs over all files.
    """
    pairs = []
    for path in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                fields = line.split("\t")
                if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
                    raise ValueError(
                        f"{path}:{lineno}: expected 'title<TAB>abstract' (2 non-empty fields), "
                        f"got {len(fields)} field(s): {line[:80]!r}"
                    )
                pairs.append((fields[0].strip(), fields[1].strip()))
                if limit is not None and len(pairs) >= limit:
                    return pairs
    return pairs


def title_metrics(predictions, references):
    """Rouge-1/2/L F and BLEU, in percent, scored like bert4keras'
    ``task_seq2seq_autotitle_csl.py``: characters joined by spaces, the ``rouge``
    package's F scores, nltk's sentence BLEU with smoothing ``method1``; an empty
    prediction scores 0; all averaged over the references.

    >>> m = title_metrics(["基于深度学习的图像分类"], ["基于深度学习的图像分类"])
    >>> [round(m[k], 6) for k in ("rouge-1", "rouge-2", "rouge-l", "bleu")]
    [100.0, 100.0, 100.0, 100.0]
    """
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge import Rouge

    if len(predictions) != len(references) or not references:
        raise ValueError(f"need as many predictions as references (>0), got "
                         f"{len(predictions)} and {len(references)}")
    rouge, smooth = Rouge(), SmoothingFunction().method1
    totals = {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0, "bleu": 0.0}
    for pred, ref in zip(predictions, references):
        pred, ref = " ".join(pred), " ".join(ref)
        if not pred.strip():
            continue
        scores = rouge.get_scores(hyps=pred, refs=ref)[0]
        for k in ("rouge-1", "rouge-2", "rouge-l"):
            totals[k] += scores[k]["f"]
        totals["bleu"] += sentence_bleu(
            references=[ref.split(" ")], hypothesis=pred.split(" "), smoothing_function=smooth
        )
    return {k: 100.0 * v / len(references) for k, v in totals.items()}


def copy_baseline(abstracts, references, n_chars):
    """:func:`title_metrics` of the trivial "title": the first ``n_chars`` characters
    of each abstract (what a model must beat to add anything)."""
    return title_metrics([a[:n_chars] for a in abstracts], references)


def max_token_run(token_lists):
    """The longest run of one token repeated back to back over all ``token_lists``."""
    longest = 0
    for tokens in token_lists:
        run, prev = 0, object()
        for t in tokens:
            run = run + 1 if t == prev else 1
            prev = t
            longest = max(longest, run)
    return longest
