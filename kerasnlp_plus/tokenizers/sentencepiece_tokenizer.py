"""SentencePiece tokenizer with the same interface as ``Tokenizer`` (bert4keras
``SpTokenizer``): for ALBERT/T5-style models whose vocab is a ``.model`` file."""
import sentencepiece as _spm

from kerasnlp_plus.tokenizers import _text
from kerasnlp_plus.tokenizers.base import TokenizerBase, check_file

_DEFAULT = object()


class SpTokenizer(TokenizerBase):
    """Tokenizer over a SentencePiece model.

    Special tokens come from the model's pieces: pad and unk are the model's own
    (``pad_id()``/``unk_id()``, else a ``[PAD]`` piece), ``[MASK]`` if present, and
    the framing tokens default to ``[CLS]``/``[SEP]`` when the model has those
    pieces (no framing otherwise). Pass ``token_start``/``token_end`` to choose
    other pieces, or ``None`` to leave them out.

    Example (``spm_model`` is the path of a ``.model`` file, here UER-py's 100k-piece
    ``cluecorpussmall_spm.model``; no SentencePiece model ships with the package):

    >>> sp = SpTokenizer(spm_model)
    >>> sp.tokenize("兰州公交集团")
    ['[CLS]', '▁', '兰州', '公交', '集团', '[SEP]']
    >>> sp.decode(sp.encode("兰州公交集团")[0])
    '兰州公交集团'
    """

    def __init__(self, sp_model_path, token_start=_DEFAULT, token_end=_DEFAULT,
                 pre_tokenize=None):
        path = check_file(sp_model_path, "sentencepiece model")
        self.sp_model = _spm.SentencePieceProcessor(model_file=path)
        self._model_path = path
        self._vocab_size = self.sp_model.get_piece_size()

        if token_start is _DEFAULT:
            token_start = "[CLS]" if self._piece_id("[CLS]") is not None else None
        if token_end is _DEFAULT:
            token_end = "[SEP]" if self._piece_id("[SEP]") is not None else None
        super().__init__(token_start=token_start, token_end=token_end, pre_tokenize=pre_tokenize)
        for role, piece in (("start", token_start), ("end", token_end)):
            if piece is not None and self._piece_id(piece) is None:
                raise ValueError(
                    f"sentencepiece model {path!r} has no piece {piece!r} "
                    f"(needed as the {role} token)"
                )

        sp = self.sp_model
        pad_id = sp.pad_id() if sp.pad_id() >= 0 else self._piece_id("[PAD]")
        self._token_pad_id = pad_id
        self._token_pad = None if pad_id is None else sp.id_to_piece(pad_id)
        self._token_unk_id = sp.unk_id()
        self._token_unk = sp.id_to_piece(sp.unk_id())
        self._token_mask_id = self._piece_id("[MASK]")
        self._token_cls_id = self._piece_id("[CLS]")
        self._token_sep_id = self._piece_id("[SEP]")
        self._token_start_id = None if token_start is None else self._piece_id(token_start)
        self._token_end_id = None if token_end is None else self._piece_id(token_end)

    def _piece_id(self, piece):
        """Id of ``piece`` if the model has it (piece_to_id gives unk otherwise)."""
        i = self.sp_model.piece_to_id(piece)
        return i if self.sp_model.id_to_piece(i) == piece else None

    def _prepare(self, text):
        if self._pre_tokenize is None:
            return text
        # bert4keras: the words are joined by spaces, which sentencepiece then
        # treats as word boundaries.
        return " ".join(self._pre_tokenize(text))

    def _tokenize(self, text):
        return self.sp_model.encode(self._prepare(text), out_type=str)

    def _encode_content(self, text):
        return self.sp_model.encode(self._prepare(text))

    def _encode_content_batch(self, texts):
        return self.sp_model.encode([self._prepare(t) for t in texts])

    def token_to_id(self, token):
        """Id of the piece; unknown pieces give the unk id."""
        return self.sp_model.piece_to_id(token)

    def id_to_token(self, i):
        """The piece of id ``i``; ``''`` for ids beyond the model (as bert4keras)."""
        return self.sp_model.id_to_piece(i) if 0 <= i < self._vocab_size else ""

    def _is_decodable(self, i):
        if not 0 <= i < self._vocab_size:
            return False
        sp = self.sp_model
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            return False
        # User-defined specials such as [MASK] or [unused1] are not "control"
        # pieces for sentencepiece, so its decoder would print them.
        return not _text.is_special(sp.id_to_piece(i))

    def decode(self, ids):
        """Text of ``ids`` with special pieces ([CLS], [SEP], [PAD], ...) dropped."""
        return self.sp_model.decode([int(i) for i in ids if self._is_decodable(int(i))])

    def rematch(self, text, tokens):
        """Indices of the characters of ``text`` behind each piece.

        The leading ``▁`` (word boundary) of a piece maps to nothing, so a bare
        ``▁`` piece and special pieces map to ``[]``; characters that NFKC
        normalization expands (``㎏`` -> ``kg``) map to the one source character.
        """
        normalized, offsets = self.sp_model.normalize(text, with_offsets=True)
        return _text.locate_pieces(
            normalized, tokens,
            piece_of=lambda token: "" if _text.is_special(token) else token.lstrip("\u2581"),
            source_indices=lambda start, end: sorted(set(offsets[start:end])),
        )
