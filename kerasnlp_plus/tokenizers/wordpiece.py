"""BERT WordPiece tokenizer with bert4keras' interface, on Hugging Face ``tokenizers``.

The engine is the same pipeline ``transformers.BertTokenizerFast`` builds
(``BertNormalizer`` + ``BertPreTokenizer`` + ``WordPiece``, 100-character word
limit), so ids are identical to it; the bert4keras behaviour (framing, truncation,
``decode``, ``rematch``, word-level ``pre_tokenize``) is layered on top in Python.
"""
import os
import re
import unicodedata

from tokenizers import Tokenizer as _EngineTokenizer
from tokenizers import normalizers as _normalizers
from tokenizers import pre_tokenizers as _pre_tokenizers
from tokenizers.models import WordPiece as _WordPiece

from kerasnlp_plus.tokenizers import _text
from kerasnlp_plus.tokenizers.base import TokenizerBase, check_file, type_name
from kerasnlp_plus.tokenizers.vocab import load_vocab

_DECODE_NO_SPACE_AFTER = re.compile(
    "(%s) " % "|".join(re.escape(p) for p in _text.CJK_PUNCTUATION + "+-/={(<[")
)


class Tokenizer(TokenizerBase):
    """BERT WordPiece tokenizer (bert4keras ``Tokenizer``).

    Args:
        vocab_path_or_dict: path of a ``vocab.txt`` or a ``{token: id}`` dict (for
            example the simplified vocab from ``load_vocab(..., simplified=True)``).
        do_lower_case: lower-case and strip accents (uncased / English models).
        pre_tokenize: optional callable ``text -> list of words``; words found in
            the vocab are kept whole (WoBERT-style word tokens), other words are
            tokenized normally. See ``jieba_pre_tokenize``.
        token_start, token_end: framing tokens (``None`` to leave one out).
        word_maxlen: words longer than this many characters become ``[UNK]``
            (100, as in BERT and ``BertTokenizerFast``; bert4keras used 200).
        token_dict: bert4keras' name for ``vocab_path_or_dict``.

    Example:

    >>> from kerasnlp_plus.pretraining import demo_model_path
    >>> tok = Tokenizer(demo_model_path() + "/vocab.txt", do_lower_case=True)
    >>> tok.encode("你好", "世界")  # the demo's simplified vocab; Google's: [101, 872, 1962, 102, 686, 4518, 102]
    ([2, 771, 1861, 3, 585, 4417, 3], [0, 0, 0, 0, 1, 1, 1])
    >>> tok.tokenize("Hello世界")
    ['[CLS]', 'hello', '世', '界', '[SEP]']
    >>> tok.decode(tok.encode("BERT是一个模型。")[0])
    'bert是一个模型。'
    """

    def __init__(
        self,
        vocab_path_or_dict=None,
        do_lower_case=False,
        pre_tokenize=None,
        token_start="[CLS]",
        token_end="[SEP]",
        word_maxlen=100,
        encoding="utf-8",
        token_dict=None,
    ):
        super().__init__(token_start=token_start, token_end=token_end, pre_tokenize=pre_tokenize)
        if token_dict is not None:  # bert4keras' keyword for the first argument
            if vocab_path_or_dict is not None:
                raise TypeError("pass the vocab as vocab_path_or_dict or token_dict (bert4keras), not both")
            vocab_path_or_dict = token_dict
        if isinstance(vocab_path_or_dict, dict):
            source = "the vocab dict"
            token_dict = dict(vocab_path_or_dict)
            for token, i in token_dict.items():
                if not isinstance(token, str) or isinstance(i, bool) or not isinstance(i, int):
                    raise TypeError(
                        "a vocab dict maps str tokens to int ids, got "
                        f"{token!r}: {i!r} ({type_name(token)}: {type_name(i)})"
                    )
        elif isinstance(vocab_path_or_dict, (str, os.PathLike)):
            path = check_file(vocab_path_or_dict, "vocab file")
            source = f"vocab file {path!r}"
            token_dict = load_vocab(path, encoding=encoding)
        else:
            raise TypeError(
                "vocab_path_or_dict must be a vocab file path or a {token: id} dict, "
                f"got {type_name(vocab_path_or_dict)}"
            )
        for role, token in (("unknown", "[UNK]"), ("start", token_start), ("end", token_end)):
            if token is not None and token not in token_dict:
                raise ValueError(
                    f"{source} has no {token!r} token (needed as the {role} token)"
                )

        self._do_lower_case = bool(do_lower_case)
        self._token_dict = token_dict
        self._token_dict_inv = {i: t for t, i in token_dict.items()}
        self._vocab_size = len(token_dict)
        self._word_maxlen = word_maxlen
        self._token_pad_id = token_dict.get(self._token_pad)
        self._token_unk_id = token_dict[self._token_unk]
        self._token_mask_id = token_dict.get(self._token_mask)
        self._token_cls_id = token_dict.get("[CLS]")
        self._token_sep_id = token_dict.get("[SEP]")
        self._token_start_id = None if token_start is None else token_dict[token_start]
        self._token_end_id = None if token_end is None else token_dict[token_end]

        # Exactly the pipeline of transformers' BertTokenizerFast (strip_accents
        # follows lowercase there too); [CLS]/[SEP] are added by us, not the engine,
        # so that truncation can follow bert4keras.
        engine = _EngineTokenizer(
            _WordPiece(
                vocab=token_dict,
                unk_token=self._token_unk,
                continuing_subword_prefix="##",
                max_input_chars_per_word=word_maxlen,
            )
        )
        engine.normalizer = _normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=True,
            strip_accents=self._do_lower_case,
            lowercase=self._do_lower_case,
        )
        engine.pre_tokenizer = _pre_tokenizers.BertPreTokenizer()
        self._engine = engine
        # Case folding alone, applied before pre_tokenize as bert4keras does, and to
        # words that come back as [UNK] (see _engine_tokens).
        self._case_fold = _normalizers.BertNormalizer(
            clean_text=False,
            handle_chinese_chars=False,
            strip_accents=self._do_lower_case,
            lowercase=self._do_lower_case,
        )

    # ----------------------------------------------------------------- engine
    def _engine_tokens(self, text):
        encoding = self._engine.encode(text, add_special_tokens=False)
        tokens = encoding.tokens
        unk = self._token_unk
        if unk in tokens:
            # bert4keras returns an unknown word itself rather than "[UNK]" (its id
            # is still [UNK]'s), so that rematch() can still locate it in the text.
            offsets = encoding.offsets
            for k, token in enumerate(tokens):
                if token == unk:
                    start, end = offsets[k]
                    word = "".join(c for c in text[start:end] if not _text.is_dropped(c))
                    tokens[k] = self._case_fold.normalize_str(word) or unk
        return tokens

    def _words(self, text):
        """pre_tokenize's words of the case-folded text (bert4keras order)."""
        if self._do_lower_case:
            text = self._case_fold.normalize_str(text)
        words = self._pre_tokenize(text)
        if isinstance(words, str):
            raise TypeError("pre_tokenize must return a list of words, got a str")
        return list(words)

    def _is_whole_word(self, word):
        # Whitespace never becomes a token, even if the vocab lists it (the shared
        # vocab has '\u2028').
        return word in self._token_dict and word.strip() != ""

    def _tokenize(self, text):
        if self._pre_tokenize is None:
            return self._engine_tokens(text)
        tokens = []
        for word in self._words(text):
            if self._is_whole_word(word):
                tokens.append(word)
            else:
                tokens.extend(self._engine_tokens(word))
        return tokens

    def _encode_content(self, text):
        if self._pre_tokenize is None:
            # A batch of one skips the offsets that encode() computes: ~15% faster.
            return self._engine.encode_batch_fast([text], add_special_tokens=False)[0].ids
        return self._encode_content_batch([text])[0]

    def _encode_content_batch(self, texts):
        encode = self._engine.encode_batch_fast
        if self._pre_tokenize is None:
            return [e.ids for e in encode(texts, add_special_tokens=False)]
        # Vocabulary words map straight to ids; all other words of all texts go
        # through the engine in one batched call.
        plans, pending = [], []
        for text in texts:
            plan = []
            for word in self._words(text):
                if self._is_whole_word(word):
                    plan.append(self._token_dict[word])
                else:
                    plan.append(None)
                    pending.append(word)
            plans.append(plan)
        encoded = iter([e.ids for e in encode(pending, add_special_tokens=False)])
        out = []
        for plan in plans:
            ids = []
            for item in plan:
                if item is None:
                    ids.extend(next(encoded))
                else:
                    ids.append(item)
            out.append(ids)
        return out

    # ------------------------------------------------------------ conversions
    def token_to_id(self, token):
        """Id of ``token``; unknown tokens give the [UNK] id."""
        return self._token_dict.get(token, self._token_unk_id)

    def id_to_token(self, i):
        try:
            return self._token_dict_inv[i]
        except (KeyError, TypeError):
            raise KeyError(f"id {i!r} is not in the vocab (size {self._vocab_size})") from None

    def decode(self, ids, tokens=None):
        """Readable text: special tokens dropped, Chinese joined, ``##`` merged.

        >>> from kerasnlp_plus.pretraining import demo_model_path
        >>> tok = Tokenizer(demo_model_path() + "/vocab.txt", do_lower_case=True)
        >>> tok.decode(tok.encode("我用BERT，效果不错!")[0])
        '我用bert，效果不错!'
        """
        tokens = tokens or self.ids_to_tokens(ids)
        tokens = [t for t in tokens if not _text.is_special(t)]
        text = ""
        for i, token in enumerate(tokens):
            if token[:2] == "##":
                text += token[2:]
            elif len(token) == 1 and _text.is_cjk_character(token):
                text += token
            elif len(token) == 1 and _text.is_punctuation(token):
                text += token + " "
            elif i > 0 and text and _text.is_cjk_character(text[-1]):
                text += token
            else:
                text += " " + token
        text = re.sub(" +", " ", text)
        text = re.sub("' (re|m|s|t|ve|d|ll) ", "'\\1 ", text)
        text = _DECODE_NO_SPACE_AFTER.sub("\\1", text)
        text = re.sub(r"(\d\.) (\d)", "\\1\\2", text)
        return text.strip()

    # ------------------------------------------------------------------ rematch
    def rematch(self, text, tokens):
        """For each token, the indices of the characters of ``text`` it came from.

        Works after lower-casing and accent stripping; [CLS]/[SEP] (any
        ``[...]`` token) map to ``[]``. Use it to move character spans (NER,
        reading comprehension) to token positions and back.

        >>> from kerasnlp_plus.pretraining import demo_model_path
        >>> tok = Tokenizer(demo_model_path() + "/vocab.txt", do_lower_case=True)
        >>> text = "Café是咖啡"
        >>> tok.rematch(text, tok.tokenize(text))
        [[], [0, 1, 2, 3], [4], [5], [6], []]
        """
        normalized, char_mapping = [], []
        for i, ch in enumerate(text):
            if self._do_lower_case:
                # Lower-case character by character (bert4keras lowers the whole
                # text first, which shifts indices when "İ" becomes two characters).
                ch = unicodedata.normalize("NFD", ch.lower())
                ch = "".join(c for c in ch if unicodedata.category(c) != "Mn")
            ch = "".join(c for c in ch if not _text.is_dropped(c))
            normalized.append(ch)
            char_mapping.extend([i] * len(ch))
        normalized = "".join(normalized)

        return _text.locate_pieces(
            normalized, tokens,
            piece_of=lambda token: "" if _text.is_special(token) else _text.stem(token),
            source_indices=lambda start, end: char_mapping[start:end],
        )

    # ------------------------------------------- bert4keras static helpers
    stem = staticmethod(_text.stem)
    _is_space = staticmethod(_text.is_space)
    _is_punctuation = staticmethod(_text.is_punctuation)
    _is_cjk_character = staticmethod(_text.is_cjk_character)
    _is_control = staticmethod(_text.is_control)
    _is_special = staticmethod(_text.is_special)

    @staticmethod
    def _cjk_punctuation():
        return _text.CJK_PUNCTUATION
