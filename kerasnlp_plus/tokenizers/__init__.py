"""Tokenizers with bert4keras' interface.

- ``Tokenizer``: BERT WordPiece (ids identical to ``transformers.BertTokenizerFast``),
  optional word-level ``pre_tokenize`` (WoBERT).
- ``SpTokenizer``: SentencePiece models.
- ``load_vocab`` / ``save_vocab``: vocab files, including bert4keras' simplification
  (``keep_tokens`` for ``build_transformer_model``).

>>> from kerasnlp_plus.pretraining import demo_model_path
>>> from kerasnlp_plus.tokenizers import Tokenizer, load_vocab
>>> token_dict, keep_tokens = load_vocab(demo_model_path() + "/vocab.txt", simplified=True,
...     startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
>>> tokenizer = Tokenizer(token_dict, do_lower_case=True)
>>> token_ids, segment_ids = tokenizer.encode("问题", "答案", maxlen=64)
>>> segment_ids
[0, 0, 0, 0, 1, 1, 1]
"""
from kerasnlp_plus.tokenizers.base import TokenizerBase
from kerasnlp_plus.tokenizers.pre_tokenizers import jieba_pre_tokenize
from kerasnlp_plus.tokenizers.sentencepiece_tokenizer import SpTokenizer
from kerasnlp_plus.tokenizers.vocab import load_vocab, save_vocab
from kerasnlp_plus.tokenizers.wordpiece import Tokenizer

__all__ = ["Tokenizer", "SpTokenizer", "TokenizerBase", "load_vocab", "save_vocab", "jieba_pre_tokenize"]
