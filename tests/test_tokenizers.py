"""Tokenizer tests: ids pinned against transformers' BertTokenizerFast and the
sentencepiece library on the real shared data; bert4keras behaviour checked by
properties and by an independent re-statement of its truncation loop."""
import json
import os
import random
import unicodedata

import pytest

from kerasnlp_plus.tokenizers import (
    SpTokenizer,
    Tokenizer,
    jieba_pre_tokenize,
    load_vocab,
    save_vocab,
)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

HARD_STRINGS = [
    "",
    " ",
    "我爱Python3.11和GPT-4o，价格￥199.00元！",
    "Café Ünïcode",
    "ＡＢＣ，。！ａｂｃ１２３",
    "emoji😀👍🏽🇨🇳 测试🤖",
    "\x00 \t \u200b",
    "a\x00b\u200bc\ufffdd\x7f\ue000e\U000e0001f\u0378g",  # Cc Cf Co Cn
    "x" * 100,
    "x" * 101,  # longer than 100 characters -> [UNK]
    "supercalifragilisticexpialidocious" * 4,
    "中" * 300,
    "İstanbul ǅ ﬁ Ⅻ ㎏ ½ Straße ΑΒΓ αβγ",
    "\u3000全角空格\u3000与\u00a0不换行\u202f空格",
    "\r\n\u2028\u2029",
    "한국어 日本語のテキスト ภาษาไทย",
    "𠀀𪚥 CJK 扩展",
    "don't won't I'm 1,234,567.89 3.14159",
    "[MASK] [CLS] [SEP] [PAD] [UNK] a[MASK]b",
    "《红楼梦》——曹雪芹……“引号”‘单引号’【括号】",
]


# --------------------------------------------------------------------------- helpers
def hf_reference(vocab_file, do_lower_case, split_special_tokens=False):
    """transformers' BertTokenizerFast over ``vocab_file``.

    transformers 5.x silently ignores ``vocab_file=`` (it builds a 5-token vocab),
    so the vocab is passed as a dict read by transformers' own ``load_vocab``
    there; 4.x takes ``vocab_file=``. Either way the size is checked.
    """
    from transformers import BertTokenizerFast
    from transformers.models.bert import tokenization_bert

    with open(vocab_file, encoding="utf-8") as f:
        n_lines = sum(1 for _ in f)
    kwargs = dict(do_lower_case=do_lower_case, split_special_tokens=split_special_tokens)
    ref = BertTokenizerFast(vocab_file=str(vocab_file), **kwargs)
    if len(ref) != n_lines:
        ref = BertTokenizerFast(vocab=tokenization_bert.load_vocab(str(vocab_file)), **kwargs)
    assert len(ref) == n_lines
    return ref


def read_real_texts(data):
    """Every KgCLUE question, CSL title and abstract, and corpus line."""
    texts = []
    for name in ["train", "dev", "test_public", "test"]:
        with open(data / "kgclue" / f"{name}.json", encoding="utf-8") as f:
            texts += [json.loads(line)["question"] for line in f if line.strip()]
    for name in ["csl_title_dev.tsv", "csl_title_test.tsv", "clge_csl/val.tsv", "clge_csl/test.tsv"]:
        with open(data / "csl" / name, encoding="utf-8") as f:
            for line in f:
                title, abstract = line.rstrip("\n").split("\t")
                texts += [title, abstract]
    for path in sorted((data / "corpus").glob("*.txt")):
        if path.name.startswith("LICENSE"):
            continue
        with open(path, encoding="utf-8") as f:
            texts += [line.rstrip("\n") for line in f]
    return texts


def case_fold(text, do_lower_case):
    """BERT's view of a character string, for checking rematch independently."""
    if do_lower_case:
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    return "".join(
        c for c in text
        # The Rust normalizer drops all "Other" categories (incl. private use).
        if not (c == "\ufffd" or (unicodedata.category(c)[0] == "C" and c not in "\t\n\r"))
    )


def bert4keras_truncate(maxlen, first, second=None):
    """bert4keras' truncate_sequences loop, restated: pop the token before [SEP]
    from the longer list (the first on ties) until the total fits; a pair gets one
    extra because the second [CLS] is dropped afterwards."""
    first = list(first)
    second = None if second is None else list(second)
    seqs = [first] if second is None else [first, second]
    if second is not None:
        maxlen += 1
    while sum(len(s) for s in seqs) > maxlen:
        lengths = [len(s) for s in seqs]
        seqs[lengths.index(max(lengths))].pop(-2)
    ids = first
    segs = [0] * len(first)
    if second is not None:
        ids = ids + second[1:]
        segs += [1] * (len(second) - 1)
    return ids, segs


@pytest.fixture(scope="module")
def real_texts(shared_data):
    return read_real_texts(shared_data)


@pytest.fixture(scope="module", params=[False, True], ids=["cased", "uncased"])
def pair(request, vocab_path):
    """(ours, reference) for one casing."""
    lc = request.param
    return Tokenizer(vocab_path, do_lower_case=lc), hf_reference(vocab_path, lc)


@pytest.fixture(scope="module")
def tok(vocab_path):
    return Tokenizer(vocab_path)


@pytest.fixture(scope="module")
def hf_vocab(vocab_path):
    from transformers.models.bert import tokenization_bert

    return tokenization_bert.load_vocab(str(vocab_path))


# ------------------------------------------------------------- ids vs reference
def test_ids_identical_to_bert_tokenizer_fast_on_all_real_text(pair, real_texts):
    ours, ref = pair
    # 25k KgCLUE questions + 8k CSL titles/abstracts + 35k corpus lines.
    assert len(real_texts) > 68_000
    got = [ids for ids, _ in ours.encode_batch(real_texts)]
    want = ref(real_texts)["input_ids"]
    bad = [i for i in range(len(real_texts)) if got[i] != want[i]]
    assert not bad, f"{len(bad)} texts differ, e.g. {real_texts[bad[0]][:80]!r}"


def test_hard_strings_identical_per_text_and_batch(pair, vocab_path):
    ours, _ = pair
    # split_special_tokens: like bert4keras we never treat "[MASK]" typed in the
    # text as the special token; the reference does so only by default.
    ref = hf_reference(vocab_path, ours._do_lower_case, split_special_tokens=True)
    batch = ours.encode_batch(HARD_STRINGS)
    for text, (batch_ids, batch_segs) in zip(HARD_STRINGS, batch):
        want = ref(text)
        ids, segs = ours.encode(text)
        assert ids == want["input_ids"], repr(text)
        assert segs == want["token_type_ids"] == [0] * len(ids)
        assert (batch_ids, batch_segs) == (ids, segs)


def test_hard_strings_without_literal_specials_match_default_reference(pair):
    ours, ref = pair
    for text in HARD_STRINGS:
        if "[" not in text:
            assert ours.encode(text)[0] == ref(text)["input_ids"], repr(text)


def test_long_word_and_empty_text(tok, hf_vocab):
    cls, sep, unk = hf_vocab["[CLS]"], hf_vocab["[SEP]"], hf_vocab["[UNK]"]
    assert tok.encode("x" * 101) == ([cls, unk, sep], [0, 0, 0])
    assert tok.encode("") == ([cls, sep], [0, 0])
    assert tok.encode("", "") == ([cls, sep, sep], [0, 0, 1])
    assert tok.tokenize("") == ["[CLS]", "[SEP]"]
    # bert4keras keeps an unknown word itself as the token (its id is [UNK]).
    assert tok.tokenize("x" * 101) == ["[CLS]", "x" * 101, "[SEP]"]
    assert tok.tokens_to_ids(tok.tokenize("x" * 101)) == [cls, unk, sep]


def test_pairs_identical_to_reference(pair, real_texts):
    ours, ref = pair
    rng = random.Random(0)
    sample = rng.sample(real_texts[:25_000], 200)
    for a, b in zip(sample[::2], sample[1::2]):
        want = ref(a, b)
        assert ours.encode(a, b) == (want["input_ids"], want["token_type_ids"])


def test_tokenize_matches_reference_tokens(pair, real_texts):
    ours, ref = pair
    for text in real_texts[:2000] + HARD_STRINGS[:6]:
        want = ref.tokenize(text)
        got = ours.tokenize(text)
        assert got[0] == "[CLS]" and got[-1] == "[SEP]"
        got = got[1:-1]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            # Unknown words are returned as themselves (bert4keras), others agree.
            assert g == w or (w == "[UNK]" and ours.token_to_id(g) == ours.unk_id)


# ---------------------------------------------------------------- truncation
def test_truncation_follows_bert4keras_rule(tok, real_texts):
    rng = random.Random(1)
    texts = [t for t in real_texts[:30_000] if t][:400]
    for k in range(200):
        a, b = rng.choice(texts), rng.choice(texts)
        maxlen = rng.randint(3, 80)
        full_a = tok.tokens_to_ids(tok.tokenize(a))
        full_b = tok.tokens_to_ids(tok.tokenize(b))
        assert tok.encode(a, b, maxlen=maxlen) == bert4keras_truncate(maxlen, full_a, full_b)
        assert tok.encode(a, maxlen=maxlen) == bert4keras_truncate(maxlen, full_a)
        ids, segs = tok.encode(a, b, maxlen=maxlen)
        assert len(ids) <= maxlen and ids[0] == tok.cls_id and ids[-1] == tok.sep_id
        assert ids.count(tok.sep_id) == 2 and segs.count(0) == ids.index(tok.sep_id) + 1


def test_truncation_ties_trim_first_and_keeps_shorter(tok):
    # "一二三四五" and "六七八九十": 5 + 5 content tokens, budget 10 - 3 = 7.
    ids, segs = tok.encode("一二三四五", "六七八九十", maxlen=10)
    assert tok.ids_to_tokens(ids) == ["[CLS]", "一", "二", "三", "[SEP]", "六", "七", "八", "九", "[SEP]"]
    assert segs == [0] * 5 + [1] * 5
    # The short side is untouched; the long side is cut from its end.
    ids, _ = tok.encode("一二", "三四五六七八九十", maxlen=8)
    assert tok.ids_to_tokens(ids) == ["[CLS]", "一", "二", "[SEP]", "三", "四", "五", "[SEP]"]


def test_pair_lengths_closed_form_equals_the_loop():
    from kerasnlp_plus.tokenizers.base import pair_lengths

    for a in range(12):
        for b in range(12):
            for budget in range(0, 26):
                first, second = ["C"] + ["a"] * a + ["S"], ["C"] + ["b"] * b + ["S"]
                ids, _ = bert4keras_truncate(budget + 3, first, second)
                want = (ids.count("a"), ids.count("b"))
                assert pair_lengths(a, b, budget) == want, (a, b, budget)


def test_docstring_examples():
    import doctest

    from kerasnlp_plus.tokenizers import _text, base

    for module in (_text, base):
        failures, attempted = doctest.testmod(module)
        assert attempted > 0 and failures == 0, module.__name__


def test_truncate_from_left_and_tokenize_maxlen(tok):
    ids, _ = tok.encode("一二三四五六", maxlen=5, truncate_from="left")
    assert tok.ids_to_tokens(ids) == ["[CLS]", "四", "五", "六", "[SEP]"]
    assert tok.tokenize("一二三四五六", maxlen=4) == ["[CLS]", "一", "二", "[SEP]"]


def test_encode_batch_equals_per_text(tok, real_texts):
    firsts, seconds = real_texts[:300], real_texts[300:600]
    for maxlen in (None, 32):
        assert tok.encode_batch(firsts, maxlen=maxlen) == [tok.encode(a, maxlen=maxlen) for a in firsts]
        assert tok.encode_batch(firsts, seconds, maxlen=maxlen) == [
            tok.encode(a, b, maxlen=maxlen) for a, b in zip(firsts, seconds)
        ]


def test_encode_accepts_token_lists(tok):
    tokens = tok.tokenize("你好世界")
    assert tok.encode(tokens) == tok.encode("你好世界")
    assert tok.encode(tokens, tok.tokenize("再见"), maxlen=6) == tok.encode("你好世界", "再见", maxlen=6)


# ------------------------------------------------------- vocabulary lookups
def test_special_ids_and_lookups(tok, hf_vocab):
    for attr, alias, token in [
        ("_token_pad_id", "pad_id", "[PAD]"),
        ("_token_unk_id", "unk_id", "[UNK]"),
        ("_token_cls_id", "cls_id", "[CLS]"),
        ("_token_sep_id", "sep_id", "[SEP]"),
        ("_token_mask_id", "mask_id", "[MASK]"),
    ]:
        assert getattr(tok, attr) == getattr(tok, alias) == hf_vocab[token]
    assert tok._token_start == "[CLS]" and tok._token_end == "[SEP]"
    assert tok._token_start_id == hf_vocab["[CLS]"] and tok._token_end_id == hf_vocab["[SEP]"]
    assert tok._vocab_size == tok.vocab_size == len(hf_vocab)
    for token in ["中", "##s", "[unused1]", "hello"]:
        assert tok.token_to_id(token) == hf_vocab[token]
        assert tok.id_to_token(hf_vocab[token]) == token
    assert tok.token_to_id("no-such-token") == hf_vocab["[UNK]"]
    assert tok.ids_to_tokens(tok.tokens_to_ids(["我", "##们"])) == ["我", "##们"]
    with pytest.raises(KeyError, match="999999"):
        tok.id_to_token(999_999)


# ------------------------------------------------------------------- decode
def test_decode_chinese_round_trips(tok, real_texts):
    """Texts of vocab CJK characters and full-width punctuation come back as is."""
    checked = 0
    for text in real_texts[:25_000]:
        ids = tok.encode(text)[0]
        if tok.unk_id in ids or not all(
            Tokenizer._is_cjk_character(c) or c in "，。？！：；、" for c in text
        ):
            continue
        assert tok.decode(ids) == text
        checked += 1
    assert checked > 1000


def test_decode_english_and_rules(vocab_path):
    lower = Tokenizer(vocab_path, do_lower_case=True)
    text = "the quick brown fox, jumps over the lazy dog!"
    assert lower.decode(lower.encode(text)[0]) == text
    tokens = lower.tokenize("unaffable")
    assert any(t.startswith("##") for t in tokens)  # really exercises ## merging
    assert lower.decode(None, tokens=tokens) == "unaffable"
    # Chinese joined without spaces, English words spaced, no space after （ or ，.
    assert lower.decode(lower.encode("我用bert模型（base），效果好")[0]) == "我用bert模型（base），效果好"
    assert lower.decode(lower.encode("it's 3.5 kg")[0]) == "it's 3.5 kg"
    assert lower.decode([lower.pad_id, lower.cls_id, lower.mask_id, lower.sep_id]) == ""


# ------------------------------------------------------------------- rematch
@pytest.mark.parametrize("lc", [False, True], ids=["cased", "uncased"])
def test_rematch_maps_tokens_to_their_characters(vocab_path, real_texts, lc):
    tok = Tokenizer(vocab_path, do_lower_case=lc)
    for text in real_texts[25_000:25_300] + HARD_STRINGS:
        tokens = tok.tokenize(text)
        mapping = tok.rematch(text, tokens)
        assert len(mapping) == len(tokens)
        assert mapping[0] == [] and mapping[-1] == []
        previous = -1
        for token, chars in zip(tokens[1:-1], mapping[1:-1]):
            assert chars and chars == sorted(chars) and chars[0] >= previous
            previous = chars[-1]
            # Equal, except when lower-casing splits one character into several
            # tokens (Hangul decomposes into jamo): then the token is a part of it.
            folded = case_fold("".join(text[i] for i in chars), lc)
            assert folded == Tokenizer.stem(token) or (lc and Tokenizer.stem(token) in folded)
        # Every character that survives BERT's cleaning belongs to some token.
        covered = {i for chars in mapping for i in chars}
        assert covered == {
            i for i, c in enumerate(text) if case_fold(c, lc) and not c.isspace()
        }


def test_rematch_after_lowercasing_and_accents(vocab_path):
    tok = Tokenizer(vocab_path, do_lower_case=True)
    text = "Café是咖啡"
    tokens = tok.tokenize(text)
    assert tokens == ["[CLS]", "cafe", "是", "咖", "啡", "[SEP]"]
    assert tok.rematch(text, tokens) == [[], [0, 1, 2, 3], [4], [5], [6], []]
    with pytest.raises(ValueError, match="does not occur"):
        tok.rematch("别的文本", tokens)


# --------------------------------------------------------- word-level (WoBERT)
@pytest.fixture
def word_vocab_file(tmp_path):
    tokens = SPECIALS + list("我爱北京天安门中国人民的首都是") + ["北京", "天安门", "中国", "人民", "hello", "##s"]
    path = tmp_path / "vocab.txt"
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return path


def test_pre_tokenize_keeps_vocab_words_whole(word_vocab_file):
    segments = {"我爱北京天安门": ["我", "爱", "北京", "天安门"], "中国人民的首都": ["中国人民", "的", "首都"]}
    tok = Tokenizer(word_vocab_file, pre_tokenize=lambda s: segments[s])
    assert tok.tokenize("我爱北京天安门") == ["[CLS]", "我", "爱", "北京", "天安门", "[SEP]"]
    # "中国人民" and "首都" are not vocab words: they fall back to characters.
    assert tok.tokenize("中国人民的首都") == ["[CLS]", "中", "国", "人", "民", "的", "首", "都", "[SEP]"]
    vocab = load_vocab(word_vocab_file)
    assert tok.encode("我爱北京天安门")[0] == [vocab[t] for t in ["[CLS]", "我", "爱", "北京", "天安门", "[SEP]"]]


def test_jieba_pre_tokenize_matches_word_rule(word_vocab_file, shared_data):
    import jieba

    text_list = ["我爱北京天安门", "中国人民的首都是北京", "hellos 中国", "", "Hello北京！"]
    with open(shared_data / "kgclue" / "dev.json", encoding="utf-8") as f:
        text_list += [json.loads(line)["question"] for line in f][:200]
    for lc in (False, True):
        tok = Tokenizer(word_vocab_file, do_lower_case=lc, pre_tokenize=jieba_pre_tokenize)
        ref = hf_reference(word_vocab_file, lc)
        vocab = load_vocab(word_vocab_file)
        for text in text_list:
            words = jieba.lcut(text.lower() if lc else text, HMM=False)
            want = [vocab["[CLS]"]]
            for w in words:
                want += [vocab[w]] if w in vocab else ref(w, add_special_tokens=False)["input_ids"]
            want.append(vocab["[SEP]"])
            assert tok.encode(text)[0] == want, text
        assert tok.encode_batch(text_list) == [tok.encode(t) for t in text_list]
    assert jieba_pre_tokenize("我爱北京天安门") == jieba.lcut("我爱北京天安门", HMM=False)


# ------------------------------------------------------------- sentencepiece
@pytest.fixture(scope="module")
def spm_path(shared_data):
    return shared_data / "spm" / "cluecorpussmall_spm.model"


@pytest.fixture(scope="module")
def sp_pair(spm_path):
    import sentencepiece as spm

    return SpTokenizer(spm_path), spm.SentencePieceProcessor(model_file=str(spm_path))


def test_sp_tokenizer_matches_sentencepiece(sp_pair, real_texts):
    sp_tok, sp = sp_pair
    cls, sep = sp.piece_to_id("[CLS]"), sp.piece_to_id("[SEP]")
    assert (sp_tok.cls_id, sp_tok.sep_id, sp_tok.pad_id, sp_tok.unk_id) == (cls, sep, sp.pad_id(), sp.unk_id())
    assert sp.id_to_piece(sp_tok.mask_id) == "[MASK]"
    assert sp_tok.vocab_size == sp.get_piece_size()
    texts = real_texts[:3000:3] + HARD_STRINGS
    batch = sp_tok.encode_batch(texts)
    for text, (ids, segs) in zip(texts, batch):
        assert (ids, segs) == sp_tok.encode(text)
        assert ids == [cls] + sp.encode(text) + [sep] and segs == [0] * len(ids)
        assert sp_tok.tokenize(text) == ["[CLS]"] + sp.encode(text, out_type=str) + ["[SEP]"]
        # Special pieces, the unknown piece included, are dropped from decode.
        # ("[MASK]" typed in the text is a user-defined piece for sentencepiece.)
        plain = [
            i for i in sp.encode(text)
            if i != sp.unk_id() and not (sp.id_to_piece(i) in SPECIALS or sp.id_to_piece(i).startswith("[unused"))
        ]
        assert sp_tok.decode(ids) == sp.decode(plain)
    a, b = texts[0], texts[1]
    ids, segs = sp_tok.encode(a, b, maxlen=12)
    assert len(ids) <= 12 and ids[0] == cls and ids.count(sep) == 2
    assert sp_tok.encode(a, b, maxlen=12) == bert4keras_truncate(
        12, [cls] + sp.encode(a) + [sep], [cls] + sp.encode(b) + [sep]
    )


def test_sp_tokenizer_lookups_decode_rematch(sp_pair):
    sp_tok, sp = sp_pair
    assert sp_tok.token_to_id("兰州") == sp.piece_to_id("兰州") != sp.unk_id()
    assert sp_tok.id_to_token(sp.piece_to_id("兰州")) == "兰州"
    assert sp_tok.id_to_token(10**9) == ""
    text = "兰州公交集团明起至8月底 Hello  World！ＡＢＣ㎏"
    ids = sp_tok.encode(text)[0] + [sp_tok.pad_id, sp_tok.mask_id, sp_tok.unk_id]
    assert sp_tok.decode(ids) == sp.decode(sp.encode(text))
    tokens = sp_tok.tokenize(text)
    mapping = sp_tok.rematch(text, tokens)
    assert len(mapping) == len(tokens) and mapping[0] == [] and mapping[-1] == []
    for token, chars in zip(tokens, mapping):
        piece = token.lstrip("\u2581")
        if chars:
            # The source characters normalize (NFKC) to the piece.
            assert unicodedata.normalize("NFKC", "".join(text[i] for i in chars)) == piece
        else:
            assert piece == "" or token in ("[CLS]", "[SEP]")


def test_sp_tokenizer_configurable_framing(spm_path):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    bare = SpTokenizer(spm_path, token_start=None, token_end=None)
    assert bare.encode("兰州") == (sp.encode("兰州"), [0] * len(sp.encode("兰州")))
    with pytest.raises(ValueError, match=r"\[BOS\].*start"):
        SpTokenizer(spm_path, token_start="[BOS]")


# ------------------------------------------------------------ vocab files
SIMPLIFIED_SIZE = 13_585  # from bert4keras' rule on the shared 21,128-token vocab


def test_load_vocab_matches_transformers(vocab_path, hf_vocab):
    assert load_vocab(vocab_path) == dict(hf_vocab)


def test_simplified_vocab(vocab_path, real_texts):
    full = load_vocab(vocab_path)
    new_vocab, keep_tokens = load_vocab(vocab_path, simplified=True, startswith=SPECIALS)
    assert len(new_vocab) == len(keep_tokens) == SIMPLIFIED_SIZE
    assert 0.5 < SIMPLIFIED_SIZE / len(full) < 0.7
    inverse = {i: t for t, i in full.items()}
    assert [inverse[i] for i in keep_tokens[:5]] == SPECIALS
    assert list(new_vocab.values()) == list(range(len(new_vocab)))
    assert all(inverse[keep_tokens[i]] == t for t, i in new_vocab.items())
    # No kept multi-character token contains a CJK character.
    assert not [
        t for t in new_vocab
        if len(t) > 1 and any(Tokenizer._is_cjk_character(c) for c in Tokenizer.stem(t))
    ]
    # Every dropped token is unreachable: the pre-tokenizer always splits it apart.
    engine = Tokenizer(vocab_path)._engine
    split = lambda s: engine.pre_tokenizer.pre_tokenize_str(engine.normalizer.normalize_str(s))
    for token in set(full) - set(new_vocab):
        stem = Tokenizer.stem(token)
        if token.startswith("##"):
            assert len(split("a" + stem)) > 1, token  # cannot continue a word
        else:
            assert len(split(token)) > 1, token
    # And nothing the tokenizer produces on the real text is lost.
    small = Tokenizer(new_vocab)
    texts = real_texts[::7]
    big_ids = [ids for ids, _ in Tokenizer(vocab_path).encode_batch(texts)]
    small_ids = [ids for ids, _ in small.encode_batch(texts)]
    assert all([keep_tokens[i] for i in s] == b for s, b in zip(small_ids, big_ids))


def test_save_vocab_round_trip_and_atomic(vocab_path, tmp_path):
    new_vocab, _ = load_vocab(vocab_path, simplified=True, startswith=SPECIALS)
    out = tmp_path / "simplified.txt"
    save_vocab(out, new_vocab)
    assert load_vocab(out) == new_vocab
    assert os.listdir(tmp_path) == ["simplified.txt"]  # no temporary file left
    before = out.read_bytes()
    with pytest.raises(ValueError, match="0..n-1"):
        save_vocab(out, {"[PAD]": 0, "[UNK]": 2})
    assert out.read_bytes() == before and os.listdir(tmp_path) == ["simplified.txt"]


# -------------------------------------------------------------------- errors
def test_missing_vocab_file_names_path(tmp_path):
    missing = tmp_path / "nope" / "vocab.txt"
    with pytest.raises(FileNotFoundError, match="nope"):
        Tokenizer(missing)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_vocab(missing)
    with pytest.raises(FileNotFoundError, match="missing.model"):
        SpTokenizer(tmp_path / "missing.model")


@pytest.mark.parametrize("absent", ["[UNK]", "[CLS]", "[SEP]"])
def test_vocab_without_required_token(tmp_path, absent):
    path = tmp_path / f"no_{absent[1:-1]}.txt"
    path.write_text("".join(t + "\n" for t in SPECIALS + ["中"] if t != absent), encoding="utf-8")
    with pytest.raises(ValueError) as info:
        Tokenizer(path)
    assert absent in str(info.value) and path.name in str(info.value)


def test_maxlen_too_small(tok):
    with pytest.raises(ValueError, match=r"maxlen=1 .*>= 2"):
        tok.encode("你好", maxlen=1)
    with pytest.raises(ValueError, match=r"maxlen=2 .*>= 3"):
        tok.encode("你好", "世界", maxlen=2)
    with pytest.raises(ValueError, match=r"maxlen=1 .*>= 2"):
        tok.tokenize("你好", maxlen=1)
    with pytest.raises(ValueError, match=r"maxlen=0 .*>= 2"):
        tok.encode_batch(["你好"], maxlen=0)
    assert tok.encode("你好", "世界", maxlen=3) == ([tok.cls_id, tok.sep_id, tok.sep_id], [0, 0, 1])
    with pytest.raises(TypeError, match="float"):
        tok.encode("你好", maxlen=3.5)


@pytest.mark.parametrize(
    "bad, type_name", [(123, "int"), (None, "NoneType"), (b"bytes", "bytes"), ([1, 2], "list"), (3.0, "float")]
)
def test_non_string_input_names_the_type(tok, bad, type_name):
    with pytest.raises(TypeError, match=type_name):
        tok.encode(bad)
    if bad is not None:  # second=None means "no second text"
        with pytest.raises(TypeError, match=type_name):
            tok.encode("好", bad)
    with pytest.raises(TypeError, match=type_name):
        tok.tokenize(bad)
    with pytest.raises(TypeError, match=rf"firsts\[1\].*{type_name}"):
        tok.encode_batch(["好", bad])


def test_tokenizers_pickle(vocab_path, spm_path):
    """Worker processes (multiprocessing, tf.data generators) get working copies."""
    import pickle

    for tok in (Tokenizer(vocab_path, do_lower_case=True, pre_tokenize=jieba_pre_tokenize),
                SpTokenizer(spm_path)):
        copy = pickle.loads(pickle.dumps(tok))
        for text in ["Hello世界，我爱北京天安门", "", "Café 123"]:
            assert copy.encode(text, "第二句") == tok.encode(text, "第二句")
