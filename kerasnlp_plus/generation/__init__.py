"""Decoding: the cached batched :class:`Generator` and the :class:`Trie` of allowed outputs.

>>> from kerasnlp_plus.generation import Generator, Trie

Where things live: ``generator.py`` (the :class:`Generator`: host loop, sampling,
``beam_search_many``, export), ``program.py`` (the compiled ``tf.while_loop`` of beam
search), ``selection.py`` (the beam step both decoders take, top-k / top-p
sampling), ``constraints.py`` (trie / callback / n-gram masks), ``lookahead.py``
(look-ahead node scores), ``validation.py`` (argument checks), ``trie/`` (the
:class:`Trie`). :mod:`kerasnlp_plus.snippets` keeps bert4keras' ``AutoRegressiveDecoder``
as a thin adapter over ``selection.beam_step``.
"""
from kerasnlp_plus.generation.generator import Generator
from kerasnlp_plus.generation.trie import Trie

__all__ = ["Generator", "Trie"]
