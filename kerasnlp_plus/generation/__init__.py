"""Decoding: the cached batched :class:`Generator` and the :class:`Trie` of allowed outputs.

>>> from kerasnlp_plus.generation import Generator, Trie
"""
from kerasnlp_plus.generation.generator import Generator
from kerasnlp_plus.generation.trie import Trie

__all__ = ["Generator", "Trie"]
