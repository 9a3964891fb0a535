"""Turning documents into packed, fixed-length examples.

A document becomes a list of *units*: lists of token ids that must stay together
(jieba words for whole-word masking, single tokens otherwise). Documents are
concatenated with ``[SEP]`` after each one and cut into examples of at most
``seq_len`` tokens, each starting with ``[CLS]`` (RoBERTa's FULL-SENTENCES packing).
A unit never straddles two examples unless it alone is longer than an example.
Every token gets a word id (its unit's index within the example; ``-1`` for
``[CLS]``/``[SEP]``), which whole-word masking uses.
"""


def segment_words(text):
    """jieba words of ``text`` (jieba's default mode, with its HMM for unknown words).
    The segmentation whole-word masking keeps together."""
    import jieba

    return jieba.lcut(text)


def _content(ids, tokenizer):
    """``ids`` without the [CLS] / [SEP] that ``encode`` framed them with."""
    start = int(tokenizer.start_id is not None)
    end = len(ids) - int(tokenizer.end_id is not None)
    return ids[start:end]


def document_units(tokenizer, texts, whole_words=True):
    """Tokenize ``texts`` into units (see module doc): one list of units per text.

    With ``whole_words`` each jieba word is a unit (all its tokens masked together);
    otherwise each token is its own unit. All words of all texts are tokenized in
    one batched call.
    """
    if whole_words:
        words = [segment_words(t) for t in texts]
        flat = [w for ws in words for w in ws if w.strip()]
        encoded = tokenizer.encode_batch(flat) if flat else []
        out, k = [], 0
        for ws in words:
            doc = []
            for w in ws:
                if not w.strip():
                    continue
                ids = _content(encoded[k][0], tokenizer)
                k += 1
                if ids:
                    doc.append(list(ids))
            out.append(doc)
        return out
    encoded = tokenizer.encode_batch(list(texts)) if texts else []
    return [[[i] for i in _content(ids, tokenizer)] for ids, _ in encoded]


def pack_documents(docs_units, seq_len, cls_id, sep_id):
    """Pack documents (lists of units) into examples of at most ``seq_len`` tokens.

    Returns a list of ``(token_ids, word_ids)`` (Python lists, unpadded).
    """
    if seq_len < 4:
        raise ValueError(f"seq_len must be at least 4, got {seq_len}")
    capacity = seq_len - 1  # after [CLS]
    examples = []
    tokens, words, n_words = [cls_id], [-1], 0

    def flush():
        nonlocal tokens, words, n_words
        if len(tokens) > 1:
            examples.append((tokens, words))
        tokens, words, n_words = [cls_id], [-1], 0

    for units in docs_units:
        if not units:
            continue
        for unit in units:
            while unit:
                room = capacity - (len(tokens) - 1)
                if len(unit) > room and len(tokens) > 1 and len(unit) <= capacity:
                    flush()  # the word goes whole into the next example
                    continue
                piece, unit = unit[:room], unit[room:]
                tokens.extend(piece)
                words.extend([n_words] * len(piece))
                n_words += 1
                if len(tokens) - 1 >= capacity:
                    flush()
        if len(tokens) > 1:  # document separator, if there is room
            if len(tokens) < seq_len:
                tokens.append(sep_id)
                words.append(-1)
            if len(tokens) >= seq_len:
                flush()
    flush()
    return examples
