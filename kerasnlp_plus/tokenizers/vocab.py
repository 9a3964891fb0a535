"""Reading, simplifying and writing BERT ``vocab.txt`` files."""
import os

from kerasnlp_plus.tokenizers import _text
from kerasnlp_plus.utils import atomic_write_text


def _read_tokens(path, encoding="utf-8"):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"vocab file not found: {path!r}")
    with open(path, encoding=encoding, newline="") as reader:
        # One token per line and the id is the line number, exactly as Google BERT
        # and Hugging Face read it (so ids match the checkpoint's embedding rows).
        # Only the line ending is removed: the shared vocab has tokens such as
        # '\u2028' that ``str.split`` would lose, shifting no ids but renaming them.
        tokens = [line.rstrip("\r\n") for line in reader]
    if tokens and tokens[-1] == "":
        tokens.pop()  # a trailing empty line is not a token
    if not tokens:
        raise ValueError(f"vocab file {path!r} is empty")
    return tokens


def load_vocab(dict_path=None, encoding="utf-8", simplified=False, startswith=None, path=None):
    """Load a BERT vocab file as ``{token: id}`` (id = line number).

    The file is ``dict_path`` (bert4keras' keyword) or ``path``.

    With ``simplified=True`` the tokens that the tokenizer can never produce for
    Chinese text are dropped, by bert4keras' rule: the ``startswith`` tokens come
    first, then every other token is kept unless it is longer than one character
    and its stem (without ``##``) contains a CJK character or a punctuation mark
    (the pre-tokenizer splits those off as single characters, so such tokens are
    unreachable). Returns ``(new_vocab, keep_tokens)`` where ``keep_tokens[i]`` is
    the original id of new id ``i``; pass it to
    ``build_transformer_model(keep_tokens=...)`` to slice the embeddings.

    >>> import tempfile
    >>> tokens = ["[PAD]", "中", "[UNK]", "[CLS]", "[SEP]", "中国", "##国", "bert", "##ing", "[MASK]"]
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     save_vocab(folder + "/vocab.txt", {t: i for i, t in enumerate(tokens)})
    ...     vocab = load_vocab(folder + "/vocab.txt")
    ...     new_vocab, keep = load_vocab(folder + "/vocab.txt", simplified=True,
    ...                                  startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    >>> vocab["[CLS]"]
    3
    >>> keep  # the startswith tokens first; 中国 and ##国 can never be produced
    [0, 2, 3, 4, 9, 1, 7, 8]
    >>> [t for t, i in sorted(new_vocab.items(), key=lambda kv: kv[1])]
    ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', '中', 'bert', '##ing']
    """
    path = _one_path(dict_path, path, "load_vocab")
    tokens = _read_tokens(path, encoding)
    vocab = {}
    for i, token in enumerate(tokens):
        # A repeated token keeps its last id, as in Hugging Face's load_vocab.
        vocab[token] = i
    if not simplified:
        return vocab

    new_vocab, keep_tokens = {}, []
    for token in startswith or []:
        if token not in vocab:
            raise ValueError(
                f"startswith token {token!r} is not in vocab file {os.fspath(path)!r}"
            )
        if token not in new_vocab:
            new_vocab[token] = len(new_vocab)
            keep_tokens.append(vocab[token])
    for token, i in sorted(vocab.items(), key=lambda kv: kv[1]):
        if token in new_vocab:
            continue
        if len(token) > 1 and any(
            _text.is_cjk_character(c) or _text.is_punctuation(c)
            for c in _text.stem(token)
        ):
            continue
        new_vocab[token] = len(new_vocab)
        keep_tokens.append(i)
    return new_vocab, keep_tokens


def _one_path(dict_path, path, function):
    if (dict_path is None) == (path is None):
        raise TypeError(f"{function}: pass the vocab file as dict_path (bert4keras) or path, exactly one")
    return dict_path if path is None else path


def save_vocab(dict_path=None, token_dict=None, encoding="utf-8", path=None, vocab=None):
    """Write ``{token: id}`` as a vocab file, one token per line in id order.

    bert4keras' ``save_vocab(dict_path, token_dict)``; ``path=`` / ``vocab=`` also work.

    The file is written to a temporary file beside ``path`` and renamed over it,
    so a crash never leaves a truncated vocab behind. Ids must be exactly
    ``0..len(vocab)-1`` (otherwise line numbers could not reproduce them).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     save_vocab(folder + "/vocab.txt", {"[PAD]": 0, "[UNK]": 1})
    ...     open(folder + "/vocab.txt", encoding="utf-8").read().split()
    ['[PAD]', '[UNK]']
    """
    path = os.fspath(_one_path(dict_path, path, "save_vocab"))
    if (token_dict is None) == (vocab is None):
        raise TypeError("save_vocab: pass the {token: id} dict as token_dict (bert4keras) or vocab, exactly one")
    vocab = token_dict if vocab is None else vocab
    ordered = sorted(vocab.items(), key=lambda kv: kv[1])
    ids = [i for _, i in ordered]
    if ids != list(range(len(ids))):
        raise ValueError(
            "save_vocab needs ids 0..n-1 without gaps or repeats, because a vocab "
            f"file stores ids as line numbers; got {len(ids)} tokens with ids from "
            f"{ids[0] if ids else None} to {ids[-1] if ids else None}"
        )
    for token, _ in ordered:
        if "\n" in token or "\r" in token:
            raise ValueError(f"token {token!r} contains a line break and cannot be saved")
    atomic_write_text(path, "".join(token + "\n" for token, _ in ordered), encoding=encoding)
