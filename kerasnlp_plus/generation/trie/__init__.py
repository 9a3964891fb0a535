"""A compact prefix tree over token-id sequences, for constrained decoding.

A seq2seq model that must answer with something that exists in a knowledge base
(KgCLUE: "subject [SEP] predicate [SEP]" -> objects; GENRE-style entity linking)
is decoded under a prefix tree: at every step only the token ids that extend the
current output towards some stored key are allowed. :class:`Trie` stores the keys
(sequences of ints) and per-key values, and answers ``next_ones(prefix)``.

Layout (why it is small). A nested-dict trie costs hundreds of bytes per *node*
(the KgCLUE blog post needed ~30 GB for 20.6M triples). Here:

* each token id is mapped to one Unicode code point (``id + 1``, skipping the
  surrogate block), so a key is a short ``str`` and string prefixes are exactly
  id prefixes;
* a `marisa-trie <https://github.com/pytries/marisa-trie>`_ (a succinct, LOUDS
  based trie in C++) stores every key plus every *branching* prefix (a prefix
  with two or more distinct next ids). That is at most about twice the number of
  keys, and because all of them are prefixes of keys, the marisa structure is
  barely larger than for the keys alone;
* the allowed next ids of each stored node are kept in one CSR table (an offset
  array indexed by marisa's node id plus one flat label array);
* a prefix that is not stored is either absent or inside a non-branching chain,
  where exactly one next id exists; it is read from the first stored string under
  that prefix (one marisa predictive-search step);
* values are encoded once (``str`` as UTF-8, anything else pickled) into one
  byte buffer, ordered by key, with one offset array.

Lifecycle. ``add`` only appends to compact buffers (ids as uint16 while they fit,
the value bytes in one buffer, 9 bytes per add besides). The first query
(``next_ones``, ``get``, ``in``, ``len``, ``keys``, ``save``, ...) or an explicit
:meth:`Trie.compile` freezes the buffers into the structure above, vectorised with
numpy on the flat id array (keys are never padded to a common length): a stable
sort of the keys a few ids at a time, the common prefix lengths of sorted
neighbours, and the per-node tables derived from those. Adding after that is
allowed: the next query rebuilds everything (old content plus the new keys), so add
in batches, not one key between queries. ``bench/trie.py`` measures the memory per
key, the build time and the query time (figures in README.md).

The package is split by concern: :mod:`~kerasnlp_plus.generation.trie.build` (the
id encoding and the sort that builds the tables),
:mod:`~kerasnlp_plus.generation.trie.structure` (the :class:`Trie` class) and
:mod:`~kerasnlp_plus.generation.trie.fileformat` (``save`` / ``load``).

Example:

>>> trie = Trie()
>>> trie.add([5, 7, 102, 9, 102], "object A")
>>> trie.add([5, 7, 102, 9, 102], "object B")
>>> trie.add([5, 8, 102, 3, 102])
>>> trie.next_ones([5]).tolist()
[7, 8]
>>> trie.next_ones([5, 7]).tolist()
[102]
>>> trie.next_ones([6]).tolist()
[]
>>> trie.get([5, 7, 102, 9, 102])
['object A', 'object B']
>>> trie.get([5, 8, 102, 3, 102])
[]
>>> trie.get([5, 8], "absent")
'absent'
>>> [5, 8, 102, 3, 102] in trie, [5, 8] in trie, len(trie)
(True, False, 2)
"""

from kerasnlp_plus.generation.trie.structure import MAX_TOKEN_ID, Trie

__all__ = ["Trie", "MAX_TOKEN_ID"]
