"""What every tokenizer shares: [CLS]/[SEP] framing, truncation, input checks.

Subclasses provide ``_tokenize(text)`` (tokens without [CLS]/[SEP]),
``_encode_content(text)`` and ``_encode_content_batch(texts)`` (ids without
[CLS]/[SEP]), ``token_to_id`` and ``id_to_token``.
"""
import operator
import os


def type_name(value):
    """``int``, ``NoneType``, ``numpy.ndarray``: the type as an error should name it."""
    cls = type(value)
    if cls.__module__ == "builtins":
        return cls.__name__
    return f"{cls.__module__}.{cls.__qualname__}"


def _check_text(text, name):
    if isinstance(text, str):
        return
    hint = ""
    if isinstance(text, (bytes, bytearray)):
        hint = " (decode bytes first, e.g. text.decode('utf-8'))"
    raise TypeError(
        f"{name} must be a str (or a list of str tokens), got {type_name(text)}{hint}"
    )


def _is_token_list(value):
    return isinstance(value, (list, tuple)) and all(isinstance(t, str) for t in value)


def pair_lengths(len_first, len_second, budget):
    """Lengths kept by bert4keras' truncation of a pair to ``budget`` tokens.

    bert4keras removes one token at a time from the longer sequence (the first on a
    tie) until the pair fits; this is the closed form of that loop.

    >>> pair_lengths(10, 3, 8), pair_lengths(5, 5, 7), pair_lengths(2, 2, 9)
    ((5, 3), (3, 4), (2, 2))
    """
    if len_first + len_second <= budget:
        return len_first, len_second
    half_first = budget // 2          # a tie trims the first, so it gets the floor
    half_second = budget - half_first
    if len_first <= half_first:
        return len_first, budget - len_first
    if len_second <= half_second:
        return budget - len_second, len_second
    return half_first, half_second


class TokenizerBase:
    """bert4keras-compatible framing around a subclass' content tokenizer."""

    def __init__(self, token_start="[CLS]", token_end="[SEP]", pre_tokenize=None):
        if pre_tokenize is not None and not callable(pre_tokenize):
            raise TypeError(
                "pre_tokenize must be a callable text -> list of words, got "
                f"{type_name(pre_tokenize)}"
            )
        self._token_pad = "[PAD]"
        self._token_unk = "[UNK]"
        self._token_mask = "[MASK]"
        self._token_start = token_start
        self._token_end = token_end
        self._pre_tokenize = pre_tokenize

    # ----------------------------------------------------------- public aliases
    @property
    def vocab_size(self):
        return self._vocab_size

    @property
    def pad_id(self):
        return self._token_pad_id

    @property
    def unk_id(self):
        return self._token_unk_id

    @property
    def cls_id(self):
        return self._token_cls_id

    @property
    def sep_id(self):
        return self._token_sep_id

    @property
    def mask_id(self):
        return self._token_mask_id

    @property
    def start_id(self):
        return self._token_start_id

    @property
    def end_id(self):
        return self._token_end_id

    # --------------------------------------------------------------- conversions
    def tokens_to_ids(self, tokens):
        return [self.token_to_id(token) for token in tokens]

    def ids_to_tokens(self, ids):
        return [self.id_to_token(i) for i in ids]

    # ------------------------------------------------------------------ framing
    def _n_start(self):
        return int(self._token_start is not None)

    def _n_end(self):
        return int(self._token_end is not None)

    def _budget(self, maxlen, pair):
        """Content tokens allowed by ``maxlen`` once [CLS]/[SEP] are counted."""
        if maxlen is None:
            return None
        try:
            if isinstance(maxlen, bool):
                raise TypeError
            maxlen = operator.index(maxlen)  # int, numpy integer; not float or str
        except TypeError:
            raise TypeError(
                f"maxlen must be an int or None, got {type_name(maxlen)}"
            ) from None
        n_special = self._n_start() + self._n_end() * (2 if pair else 1)
        if maxlen < n_special:
            names = ", ".join(
                t for t in [self._token_start] + [self._token_end] * (2 if pair else 1) if t
            )
            raise ValueError(
                f"maxlen={maxlen} is too small: the special tokens ({names}) of "
                f"{'a pair' if pair else 'one text'} need maxlen >= {n_special}"
            )
        return maxlen - n_special

    def _frame(self, first, second, budget, truncate_from):
        """[CLS] first [SEP] (second [SEP]) with segment ids, truncated to budget."""
        if budget is not None:
            if second is None:
                keep_first, keep_second = min(len(first), budget), 0
            else:
                keep_first, keep_second = pair_lengths(len(first), len(second), budget)
            if truncate_from == "right":
                first = first[:keep_first]
                if second is not None:
                    second = second[:keep_second]
            else:
                first = first[len(first) - keep_first:]
                if second is not None:
                    second = second[len(second) - keep_second:]
        start = [] if self._token_start is None else [self._token_start_id]
        end = [] if self._token_end is None else [self._token_end_id]
        token_ids = start + list(first) + end
        segment_ids = [0] * len(token_ids)
        if second is not None:
            tail = list(second) + end
            token_ids += tail
            segment_ids += [1] * len(tail)
        return token_ids, segment_ids

    def _content_ids(self, value, name):
        if isinstance(value, str):
            return self._encode_content(value)
        if _is_token_list(value):
            # bert4keras accepts the output of tokenize() (with [CLS]/[SEP]) here.
            tokens = list(value)
            if self._token_start is not None and tokens[:1] == [self._token_start]:
                tokens = tokens[1:]
            if self._token_end is not None and tokens[-1:] == [self._token_end]:
                tokens = tokens[:-1]
            return self.tokens_to_ids(tokens)
        _check_text(value, name)

    @staticmethod
    def _check_truncate_from(truncate_from):
        if truncate_from not in ("right", "left"):
            raise ValueError(
                f"truncate_from must be 'right' or 'left', got {truncate_from!r}"
            )

    # --------------------------------------------------------------- public API
    def tokenize(self, text, maxlen=None):
        """Tokens of ``text`` framed by [CLS] ... [SEP], cut to ``maxlen`` tokens."""
        _check_text(text, "text")
        budget = self._budget(maxlen, pair=False)
        tokens = self._tokenize(text)
        if budget is not None:
            tokens = tokens[:budget]
        if self._token_start is not None:
            tokens.insert(0, self._token_start)
        if self._token_end is not None:
            tokens.append(self._token_end)
        return tokens

    def encode(self, first, second=None, maxlen=None, truncate_from="right"):
        """``(token_ids, segment_ids)`` of one text or a pair.

        Pairs are laid out ``[CLS] first [SEP] second [SEP]`` with segment 0 up to
        and including the first [SEP]. With ``maxlen`` the longer side loses tokens
        from its end (``truncate_from='left'``: its start) until the whole fits,
        keeping the special tokens. ``first``/``second`` may also be token lists
        such as ``tokenize()`` returns.
        """
        self._check_truncate_from(truncate_from)
        budget = self._budget(maxlen, pair=second is not None)
        first_ids = self._content_ids(first, "first")
        second_ids = None if second is None else self._content_ids(second, "second")
        return self._frame(first_ids, second_ids, budget, truncate_from)

    def encode_batch(self, firsts, seconds=None, maxlen=None, truncate_from="right"):
        """``encode`` over lists of texts, tokenizing them all in one engine call.

        Returns a list of ``(token_ids, segment_ids)``, one per text (or pair).
        """
        self._check_truncate_from(truncate_from)
        firsts = self._check_batch(firsts, "firsts")
        if seconds is not None:
            seconds = self._check_batch(seconds, "seconds")
            if len(seconds) != len(firsts):
                raise ValueError(
                    f"firsts and seconds must have the same length, got "
                    f"{len(firsts)} and {len(seconds)}"
                )
        budget = self._budget(maxlen, pair=seconds is not None)
        first_ids = self._batch_content_ids(firsts, "firsts")
        if seconds is None:
            return [self._frame(a, None, budget, truncate_from) for a in first_ids]
        second_ids = self._batch_content_ids(seconds, "seconds")
        return [
            self._frame(a, b, budget, truncate_from) for a, b in zip(first_ids, second_ids)
        ]

    @staticmethod
    def _check_batch(values, name):
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise TypeError(
                f"{name} must be a list of str, got {type_name(values)}"
            )
        return list(values)

    def _batch_content_ids(self, values, name):
        if all(isinstance(v, str) for v in values):
            return self._encode_content_batch(values)
        for i, v in enumerate(values):
            if not isinstance(v, str) and not _is_token_list(v):
                _check_text(v, f"{name}[{i}]")
        texts = [v for v in values if isinstance(v, str)]
        encoded = iter(self._encode_content_batch(texts))
        return [
            next(encoded) if isinstance(v, str) else self._content_ids(v, name)
            for v in values
        ]

    # ------------------------------------------------------------ for subclasses
    def _tokenize(self, text):
        raise NotImplementedError

    def _encode_content(self, text):
        return self._encode_content_batch([text])[0]

    def _encode_content_batch(self, texts):
        raise NotImplementedError

    def token_to_id(self, token):
        raise NotImplementedError

    def id_to_token(self, i):
        raise NotImplementedError

    def decode(self, ids):
        raise NotImplementedError


def check_file(path, what):
    """``os.fspath(path)``, or FileNotFoundError naming the missing file."""
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(
            f"{what} must be a path (str or os.PathLike), got {type_name(path)}"
        ) from None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path!r}")
    return path
