"""Character classes shared by the tokenizers and vocabulary simplification.

These follow the original BERT ``tokenization.py`` (and bert4keras, which copies
it): the same predicates decide where the Hugging Face ``BertPreTokenizer`` splits,
so ``load_vocab(simplified=True)`` and ``Tokenizer.decode`` agree with the engine.
"""
import unicodedata

# Full-width / CJK punctuation after which ``decode`` removes the space it inserted
# (bert4keras' list, kept verbatim so decoded text matches what its users expect).
CJK_PUNCTUATION = (
    "\uff02\uff03\uff04\uff05\uff06\uff07\uff08\uff09\uff0a\uff0b\uff0c\uff0d"
    "\uff0f\uff1a\uff1b\uff1c\uff1d\uff1e\uff20\uff3b\uff3c\uff3d\uff3e\uff3f"
    "\uff40\uff5b\uff5c\uff5d\uff5e\uff5f\uff60\uff62\uff63\uff64\u3000\u3001"
    "\u3003\u3008\u3009\u300a\u300b\u300c\u300d\u300e\u300f\u3010\u3011\u3014"
    "\u3015\u3016\u3017\u3018\u3019\u301a\u301b\u301c\u301d\u301e\u301f\u3030"
    "\u303e\u303f\u2013\u2014\u2018\u2019\u201b\u201c\u201d\u201e\u201f\u2026"
    "\u2027\ufe4f\ufe51\ufe54\u00b7\uff01\uff1f\uff61\u3002"
)


def stem(token):
    """The token without its ``##`` continuation prefix.

    >>> stem("##ing"), stem("中")
    ('ing', '中')
    """
    return token[2:] if token[:2] == "##" else token


def is_space(ch):
    """Whitespace as BERT defines it (space, \\t, \\n, \\r and category Zs)."""
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def is_punctuation(ch):
    """ASCII symbols plus every Unicode ``P*`` character (full- and half-width).

    >>> is_punctuation("，"), is_punctuation("$"), is_punctuation("a")
    (True, True, False)
    """
    code = ord(ch)
    return (
        33 <= code <= 47
        or 58 <= code <= 64
        or 91 <= code <= 96
        or 123 <= code <= 126
        or unicodedata.category(ch).startswith("P")
    )


def is_cjk_character(ch):
    """CJK Unified Ideographs (and extensions / compatibility blocks) as in BERT.

    >>> is_cjk_character("中"), is_cjk_character("。"), is_cjk_character("a")
    (True, False, False)
    """
    code = ord(ch)
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x20000 <= code <= 0x2A6DF
        or 0x2A700 <= code <= 0x2B73F
        or 0x2B740 <= code <= 0x2B81F
        or 0x2B820 <= code <= 0x2CEAF
        or 0xF900 <= code <= 0xFAFF
        or 0x2F800 <= code <= 0x2FA1F
    )


def is_control(ch):
    """Control / format characters (Cc, Cf); BERT drops them (bar whitespace)."""
    return unicodedata.category(ch) in ("Cc", "Cf")


def is_special(token):
    """``[CLS]``-style tokens: non-empty, starting with ``[`` and ending with ``]``."""
    return bool(token) and token[0] == "[" and token[-1] == "]"


def is_dropped(ch):
    """Characters the engine's ``clean_text`` deletes outright.

    The Rust ``BertNormalizer`` (what ``BertTokenizerFast`` runs) drops every
    "Other" character (Cc, Cf, Co private use, Cn unassigned, Cs), not only the
    Cc/Cf that Python BERT drops; real CSL abstracts contain private-use chars.
    """
    return ch == "\ufffd" or (
        unicodedata.category(ch).startswith("C") and ch not in "\t\n\r"
    )


def locate_pieces(normalized, tokens, piece_of, source_indices):
    """``rematch``'s search, shared by the WordPiece and SentencePiece tokenizers:
    find each token's piece in ``normalized``, in order, and map it back to the
    original text. ``piece_of(token)`` gives the text to look for (empty: the token
    maps to ``[]``); ``source_indices(start, end)`` the original characters behind
    ``normalized[start:end]``."""
    token_mapping, offset = [], 0
    for token in tokens:
        piece = piece_of(token)
        if not piece:
            token_mapping.append([])
            continue
        start = normalized.find(piece, offset)
        if start < 0:
            raise ValueError(
                f"rematch: token {token!r} does not occur in the (normalized) text after "
                f"position {offset}; were the tokens made from this text?"
            )
        end = start + len(piece)
        token_mapping.append(source_indices(start, end))
        offset = end
    return token_mapping
