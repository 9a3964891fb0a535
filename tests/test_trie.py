"""Trie: every answer checked against a plain dict/set reference built here."""
import os
import pickle
import random
from collections import defaultdict

import numpy as np
import pytest

from kerasnlp_plus.generation.trie import MAX_TOKEN_ID, Trie

SEP = 102
UNK = 100


class Reference:
    """The obvious (slow, large) implementation: dicts of tuples."""

    def __init__(self):
        self.values = {}
        self.next = defaultdict(set)

    def add(self, ids, value=None):
        ids = tuple(ids)
        vals = self.values.setdefault(ids, [])
        if value is not None:
            vals.append(value)
        for d in range(len(ids)):
            self.next[ids[:d]].add(ids[d])


def check_against(trie, ref, prefixes):
    assert len(trie) == len(ref.values)
    for p in prefixes:
        got = trie.next_ones(list(p))
        assert got.tolist() == sorted(ref.next.get(p, ())), p
        assert trie.has_prefix(p) == (p in ref.next or p in ref.values)
    for k, vals in ref.values.items():
        assert k in trie
        assert trie.get(k) == vals
    assert sorted(map(tuple, trie.keys())) == sorted(ref.values)


def random_keys(rng, n, alphabet, max_len):
    return [
        [rng.choice(alphabet) for _ in range(rng.randint(0, max_len))] for _ in range(n)
    ]


def all_prefixes(keys):
    out = set()
    for k in keys:
        k = tuple(k)
        out.update(k[:d] for d in range(len(k) + 1))
    return out


# Small alphabet -> many shared prefixes and branches; the large ids exercise the
# code-point mapping around the UTF-16 surrogate block and above the BMP.
ALPHABET = [0, 1, 2, 3, 5, SEP, 0xD7FE, 0xD7FF, 0xD800, 0xE000, 70000, MAX_TOKEN_ID]


@pytest.fixture(scope="module")
def random_case():
    rng = random.Random(1234)
    keys = random_keys(rng, 3000, ALPHABET, 9)
    keys += [k + [1, 2] for k in keys[:300]]  # keys that extend other keys
    keys += keys[:200]  # exact duplicates
    trie, ref = Trie(), Reference()
    for i, k in enumerate(keys):
        value = None if i % 7 == 0 else f"值{i}"
        trie.add(k, value)
        ref.add(k, value)
    return trie, ref, keys, rng


def test_random_keys_match_reference(random_case):
    trie, ref, keys, rng = random_case
    prefixes = all_prefixes(keys)
    # Prefixes that are not in the trie (random continuations of real ones).
    prefixes |= {p + (rng.choice(ALPHABET),) for p in rng.sample(sorted(prefixes), 500)}
    check_against(trie, ref, prefixes)
    assert any(p not in ref.next and p not in ref.values for p in prefixes)


def test_next_ones_array_properties(random_case):
    trie, ref, keys, _ = random_case
    first = trie.next_ones([])
    assert first.tolist() == sorted({k[0] for k in keys if k})
    assert np.issubdtype(first.dtype, np.integer)
    assert np.all(np.diff(first) > 0)
    with pytest.raises(ValueError):
        first[0] = 7  # a read-only view: callers cannot corrupt the trie
    # numpy arrays and tuples work as prefixes, like lists.
    k = next(k for k in keys if len(k) > 3)
    assert trie.next_ones(np.array(k[:2])).tolist() == trie.next_ones(tuple(k[:2])).tolist()


def test_unknown_ids_and_non_prefixes_give_empty(random_case):
    trie, _, _, _ = random_case
    assert trie.next_ones([4]).tolist() == []  # 4 never occurs in any key
    assert trie.next_ones([-1]).tolist() == []
    assert trie.next_ones([10**9]).tolist() == []
    assert trie.get([4], "none") == "none"
    assert [4] not in trie and not trie.has_prefix([4])


def test_real_kb_subset(shared_data, vocab_path):
    with open(vocab_path, encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    assert vocab["[SEP]"] == SEP and vocab["[UNK]"] == UNK

    def encode(text):
        return [vocab.get(ch, UNK) for ch in text]

    path = shared_data / "kgclue" / "Knowledge_subset_from_answers.txt"
    trie, ref, keys = Trie(), Reference(), []
    with open(path, encoding="utf-8") as f:
        for line in f:
            s, p, o = line.rstrip("\n").split("\t")
            key = encode(s) + [SEP] + encode(p) + [SEP]
            keys.append(key)
            trie.add(key, o)
            ref.add(key, o)
    assert len(keys) == 22000
    check_against(trie, ref, all_prefixes(keys))
    # A subject's prefix lists exactly the predicates stored for it.
    key = keys[0]
    subject = key[: key.index(SEP) + 1]
    expected = sorted({tuple(k) for k in keys if k[: len(subject)] == subject})
    assert sorted(map(tuple, trie.keys(subject))) == expected
    assert {tuple(k): v for k, v in trie.items(subject)} == {k: ref.values[k] for k in expected}
    assert trie.next_ones(key).tolist() == sorted(ref.next.get(tuple(key), ()))


def test_duplicate_keys_keep_all_values_in_insertion_order():
    trie = Trie()
    trie.add([7, 8], "b")
    trie.add([9], "x")
    trie.add([7, 8], "a")
    trie.add([7, 8])  # no value: key only
    trie.add([7, 8], "b")
    trie.add([7, 8], ("tuple", 1))
    trie.add([7, 8], 3)
    assert trie.get([7, 8]) == ["b", "a", "b", ("tuple", 1), 3]
    assert trie.get([9]) == ["x"]
    assert len(trie) == 2


def test_key_without_value_and_prefix_keys():
    trie = Trie.from_iterable([[1, 2, 3], ([1, 2], "short"), ([1, 2, 3, 4], "long")])
    assert trie.get([1, 2, 3]) == []
    assert trie.get([1]) is None and [1] not in trie
    assert trie.next_ones([1, 2]).tolist() == [3]
    assert trie.next_ones([1, 2, 3]).tolist() == [4]
    assert trie.next_ones([1, 2, 3, 4]).tolist() == []
    assert trie.has_prefix([1, 2, 3, 4]) and not trie.has_prefix([1, 2, 3, 4, 5])


def test_update_tells_pairs_from_two_id_keys():
    trie = Trie().update([(5, 7), [8, 9], ([5, 7], "v"), (np.array([1]), "w")])
    assert sorted(trie.keys()) == [[1], [5, 7], [8, 9]]
    assert trie.get([5, 7]) == ["v"] and trie.get([8, 9]) == [] and trie.get([1]) == ["w"]


def test_empty_trie_and_empty_key():
    trie = Trie()
    assert len(trie) == 0
    assert trie.next_ones([]).tolist() == []
    assert trie.next_ones([1]).tolist() == []
    assert trie.get([], "d") == "d" and [] not in trie
    assert list(trie.keys()) == [] and not trie.has_prefix([])
    trie.add([], "root")
    trie.add([3])
    assert trie.get([]) == ["root"] and [] in trie
    assert trie.next_ones([]).tolist() == [3]
    assert len(trie) == 2


def test_add_after_query_recompiles_and_keeps_old_content():
    rng = random.Random(5)
    trie, ref = Trie(), Reference()
    keys = random_keys(rng, 400, [1, 2, 3, 4], 6)
    for i, k in enumerate(keys[:200]):
        trie.add(k, i if i % 3 else None)
        ref.add(k, i if i % 3 else None)
    assert len(trie) == len(ref.values)  # compiles
    for i, k in enumerate(keys[200:], start=200):
        trie.add(k, str(i))
        ref.add(k, str(i))
    trie.add(keys[0], "late")  # old key gets a value after its first ones
    ref.add(keys[0], "late")
    check_against(trie, ref, all_prefixes(keys))


def test_invalid_keys_are_rejected_without_side_effects():
    trie = Trie.from_iterable([([1, 2], "a")])
    for bad in ([1, -1], [MAX_TOKEN_ID + 1], [1.5], ["a"]):
        with pytest.raises(ValueError):
            trie.add(bad, "x")
    assert sorted(trie.keys()) == [[1, 2]] and trie.get([1, 2]) == ["a"]


def test_save_load_round_trip(tmp_path, random_case):
    trie, ref, keys, _ = random_case
    path = tmp_path / "kb.trie"
    trie.save(path)
    loaded = Trie.load(path)
    check_against(loaded, ref, all_prefixes(keys))
    assert os.listdir(tmp_path) == ["kb.trie"]  # no temporary file left behind
    # Saving over an existing file replaces it (here with an empty trie).
    Trie().save(path)
    assert len(Trie.load(path)) == 0
    # pickle goes through the same format
    again = pickle.loads(pickle.dumps(loaded))
    assert again.get(keys[1]) == ref.values[tuple(keys[1])]
    assert again.next_ones(keys[1][:1]).tolist() == sorted(ref.next[tuple(keys[1][:1])])
    # A loaded trie accepts more keys.
    loaded.add([3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3], "new")
    assert loaded.get([3] * 11) == ["new"] and len(loaded) == len(ref.values) + 1


def test_corrupt_or_missing_file_errors_name_the_path(tmp_path):
    trie = Trie.from_iterable([([1, 2, 3], "a"), ([1, 4], "b")])
    good = tmp_path / "good.trie"
    trie.save(good)
    data = good.read_bytes()
    cases = {
        "garbage.trie": b"not a trie at all",
        "truncated.trie": data[: len(data) - 5],
        "flipped.trie": data[:-1] + bytes([data[-1] ^ 0xFF]),
        "trailing.trie": data + b"x",
        "badheader.trie": data[:8] + b"\xff" * 8 + data[16:],
    }
    for name, content in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(ValueError, match=str(p).replace("\\", "\\\\")):
            Trie.load(p)
    missing = tmp_path / "missing.trie"
    with pytest.raises(FileNotFoundError, match="missing.trie"):
        Trie.load(missing)
    assert Trie.load(good).get([1, 4]) == ["b"]


def test_update_accepts_a_mapping():
    trie = Trie().update({(1, 2): "a", (3,): "b"})
    assert trie.get([1, 2]) == ["a"] and trie.get([3]) == ["b"] and len(trie) == 2


def test_save_compiles_pending_adds(tmp_path):
    trie = Trie()
    trie.add([4, 5, 6], "x")
    trie.save(tmp_path / "t.trie")  # no query before: save compiles first
    loaded = Trie.load(tmp_path / "t.trie")
    assert loaded.get([4, 5, 6]) == ["x"] and loaded.next_ones([4]).tolist() == [5]


# ----------------------------------------------------- ragged build internals
from kerasnlp_plus.generation.trie import build as trie_build  # noqa: E402


def _ragged(rows, dtype):
    lens = np.array([len(r) for r in rows], np.int32)
    starts = np.zeros(len(rows), np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    return np.array([i for r in rows for i in r], dtype), starts, lens


@pytest.mark.parametrize("bits,dtype,alphabet", [
    (16, np.uint16, [0, 1, 2, 65534]),
    (21, np.uint32, [0, 1, 65535, MAX_TOKEN_ID]),
])
def test_sort_rows_matches_python_sort(bits, dtype, alphabet):
    rng = random.Random(bits)
    stems = [[rng.choice(alphabet) for _ in range(n)] for n in range(14)]
    rows = []
    for _ in range(1500):  # shared stems of every length: ties across many 4-id words
        stem = rng.choice(stems)
        rows.append(stem + [rng.choice(alphabet) for _ in range(rng.randint(0, 5))])
    rows += rows[:100] + [[]] * 3
    ids, starts, lens = _ragged(rows, dtype)
    order, new, lcp = trie_build.sort_rows(ids, starts, lens, bits)
    expected = sorted(range(len(rows)), key=lambda i: (rows[i], i))  # stable
    assert order.tolist() == expected
    srt = [rows[i] for i in expected]
    assert new.tolist() == [True] + [a != b for a, b in zip(srt, srt[1:])]
    for p in np.flatnonzero(new[1:]) + 1:
        a, b = srt[p - 1], srt[p]
        d = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        assert lcp[p] == d


def test_previous_smaller_matches_brute_force():
    rng = np.random.default_rng(0)
    for n in (1, 2, 50, 3000):
        a = rng.integers(0, 6, n).astype(np.int32)
        a[0] = -1
        got = trie_build._previous_smaller(a)
        for i in range(1, n):
            assert got[i] == max(j for j in range(i) if a[j] < a[i])


def test_tiny_chunks_give_the_same_structure(monkeypatch, random_case):
    """Batch/segment/chunk boundaries everywhere: same file bytes, same answers."""
    trie, ref, keys, _ = random_case
    expected = trie.to_bytes()
    small = Trie()
    rng = random.Random(1234)  # the same adds as random_case
    adds = random_keys(rng, 3000, ALPHABET, 9)
    adds += [k + [1, 2] for k in adds[:300]] + adds[:200]
    for name, size in (("_BATCH", 3), ("_SEGMENTS", 2), ("_CHUNK", 5)):
        monkeypatch.setattr(trie_build, name, size)
    for i, k in enumerate(adds):
        small.add(k, None if i % 7 == 0 else f"值{i}")
    assert small.to_bytes() == expected
    check_against(small, ref, all_prefixes(keys))


def test_uint16_ids_widen_on_first_large_id():
    rng = random.Random(3)
    trie, ref = Trie(), Reference()
    small = [0, 1, 2, 65534, SEP]
    keys = random_keys(rng, 500, small, 10)
    for i, k in enumerate(keys):
        trie.add(k, str(i))
        ref.add(k, str(i))
    assert trie._p_ids.typecode == "H"  # compact pending buffer while ids fit
    with pytest.raises(ValueError):
        trie.add([1, -1], "bad")  # rejected, buffer stays uint16
    assert trie._p_ids.typecode == "H"
    check_against(trie, ref, all_prefixes(keys))  # compiled from uint16 ids
    more = random_keys(rng, 500, small + [65535, 70000], 10)  # 65535 + 1 needs > 16 bits
    for i, k in enumerate(more):
        trie.add(k, f"m{i}")
        ref.add(k, f"m{i}")
    assert trie._p_ids.typecode == "I"
    with pytest.raises(ValueError):
        trie.add([MAX_TOKEN_ID + 1])
    check_against(trie, ref, all_prefixes(keys + more))
