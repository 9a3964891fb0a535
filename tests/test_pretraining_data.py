"""Pretraining data: whole-word masking on real text, bad lines, determinism of the
sharded output, and the per-task transforms of the input pipeline."""
import logging
import os

import numpy as np
import pytest

from kerasnlp_plus.pretraining import masking, preparation as prepare, records
from kerasnlp_plus.pretraining.packing import pack_documents

N_DOCS = 40


@pytest.fixture(scope="module")
def corpus_file(shared_data, tmp_path_factory):
    lines = []
    with open(shared_data / "corpus" / "CLUECorpusSmall_sampled.txt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                lines.append(line.strip()[:600])  # keep the test quick
            if len(lines) == N_DOCS:
                break
    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, lines


def read_records(path, meta):
    import tensorflow as tf

    spec = records.parse_spec(meta)
    out = []
    for raw in tf.data.TFRecordDataset([str(path)]):
        f = tf.io.parse_single_example(raw, spec)
        out.append({k: v.numpy() for k, v in f.items()})
    return out


def all_records(data_dir, meta, split="train"):
    out = []
    for name in meta["counts"][split]["files"]:
        out.extend(read_records(os.path.join(data_dir, name), meta))
    return out


@pytest.fixture(scope="module")
def wwm_data(corpus_file, vocab_path, tmp_path_factory):
    path, _ = corpus_file
    dyn = tmp_path_factory.mktemp("dyn")
    sta = tmp_path_factory.mktemp("static")
    common = dict(task="mlm", seq_len=64, simplified_vocab=True, docs_per_shard=1000, seed=3, progress=False)
    meta_dyn = prepare.prepare([str(path)], str(dyn), str(vocab_path), dynamic_masking=True, **common)
    meta_sta = prepare.prepare([str(path)], str(sta), str(vocab_path), dynamic_masking=False, **common)
    return (dyn, meta_dyn, all_records(dyn, meta_dyn)), (sta, meta_sta, all_records(sta, meta_sta))


def word_groups(rec):
    """Token tuples of the words of one dynamic-masking record, in order."""
    wids, toks = rec["word_ids"], rec["token_ids"]
    groups, current, last = [], [], 0
    for w, t in zip(wids, toks):
        if w == 0:
            continue
        if w != last and current:
            groups.append(tuple(current))
            current = []
        current.append(int(t))
        last = w
    if current:
        groups.append(tuple(current))
    return groups


def test_word_ids_are_jieba_words(corpus_file, wwm_data):
    """The packed word groups, in order, are exactly jieba's words of the documents,
    each tokenized on its own (checked with jieba and the tokenizer directly)."""
    import jieba

    from kerasnlp_plus.tokenizers import Tokenizer

    _, docs = corpus_file
    (dyn, meta, recs), _ = wwm_data
    tokenizer = Tokenizer(os.path.join(dyn, "vocab.txt"), do_lower_case=True)
    expected = []
    for doc in docs:
        for word in jieba.lcut(doc):
            ids = tokenizer.encode(word)[0][1:-1]
            if ids:
                expected.append(tuple(ids))
    got = [g for rec in recs for g in word_groups(rec)]
    assert got == expected
    assert sum(len(g) > 1 for g in got) > 100  # real multi-token words were kept together


def _check_whole_words(word_ids, labels):
    """Every word is either entirely labelled (masked) or not at all."""
    partial = 0
    for w in np.unique(word_ids[word_ids > 0]):
        hit = labels[word_ids == w] != 0
        partial += int(hit.any() and not hit.all())
    return partial


def test_static_whole_word_masking_on_real_text(wwm_data):
    (_, _, dyn_recs), (_, meta, sta_recs) = wwm_data
    assert len(dyn_recs) == len(sta_recs) > 10
    masked = total = mask_token = 0
    for d, s in zip(dyn_recs, sta_recs):
        # Same packing: the static record's labels restore the dynamic record's tokens.
        restored = np.where(s["labels"] != 0, s["labels"], s["token_ids"])
        np.testing.assert_array_equal(restored, d["token_ids"])
        assert _check_whole_words(d["word_ids"], s["labels"]) == 0
        assert (s["labels"][d["word_ids"] == 0] == 0).all()  # never [CLS]/[SEP]/padding
        masked += int((s["labels"] != 0).sum())
        total += int((d["word_ids"] > 0).sum())
        mask_token += int((s["token_ids"][s["labels"] != 0] == meta["mask_id"]).sum())
    assert 0.14 < masked / total < 0.19
    assert 0.7 < mask_token / masked < 0.9


def test_dynamic_whole_word_masking_on_real_text(wwm_data):
    import tensorflow as tf

    (_, meta, recs), _ = wwm_data
    transform = records.example_transform(meta, seed=5)
    serialized = [records.serialize({k: v.tolist() for k, v in r.items()}) for r in recs]
    masked = total = 0
    first_epoch = []
    for epoch in range(2):
        for i, (rec, raw) in enumerate(zip(recs, serialized)):
            index = epoch * len(recs) + i
            inputs, labels, weights = transform(tf.constant(index, tf.int64), tf.constant(raw))
            labels = labels.numpy()
            assert _check_whole_words(rec["word_ids"], labels) == 0
            np.testing.assert_array_equal(weights.numpy(), (labels != 0).astype("float32"))
            tokens = inputs["Input-Token"].numpy()
            np.testing.assert_array_equal(tokens[labels == 0], rec["token_ids"][labels == 0])
            masked += int((labels != 0).sum())
            total += int((rec["word_ids"] > 0).sum())
            if epoch == 0:
                first_epoch.append(labels)
            elif i == 0:
                assert not np.array_equal(labels, first_epoch[0])  # fresh masks each epoch
    assert 0.14 < masked / total < 0.19
    # Same seed and index: same mask.
    a = transform(tf.constant(7, tf.int64), tf.constant(serialized[0]))[1].numpy()
    b = transform(tf.constant(7, tf.int64), tf.constant(serialized[0]))[1].numpy()
    np.testing.assert_array_equal(a, b)


def test_corrupt_line_is_reported_and_skipped(tmp_path, vocab_path, caplog):
    path = tmp_path / "bad.txt"
    path.write_bytes(
        "第一篇文档讲天气。\n".encode()
        + "第二篇文档讲自然语言处理。\n".encode()
        + b"\xff\xfe broken \xc3\x28 bytes\n"
        + "\x01\x02\x03\x04\x05\x06控".encode()
        + b"\n"
        + "第五篇文档讲北京。\n".encode()
    )
    with caplog.at_level(logging.WARNING, logger="kerasnlp_plus.pretraining"):
        meta = prepare.prepare([str(path)], str(tmp_path / "out"), str(vocab_path), task="lm", seq_len=16,
                               progress=False)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"{path}:3: skipped: invalid UTF-8") for m in messages), messages
    assert any(m.startswith(f"{path}:4: skipped:") and "control" in m for m in messages), messages
    assert meta["counts"]["bad_lines"] == 2
    assert meta["counts"]["train"]["documents"] == 3
    recs = all_records(tmp_path / "out", meta)
    from kerasnlp_plus.tokenizers import Tokenizer

    tok = Tokenizer(str(tmp_path / "out" / "vocab.txt"), do_lower_case=True)
    text = tok.decode([int(t) for r in recs for t in r["token_ids"] if t])
    assert "北京" in text and "天气" in text and "broken" not in text


def _shard_bytes(folder, meta):
    return {name: open(os.path.join(folder, name), "rb").read()
            for split in ("train", "eval") for name in meta["counts"][split]["files"]}


def test_same_seed_same_shards_with_1_and_2_processes(corpus_file, vocab_path, tmp_path):
    path, _ = corpus_file
    kw = dict(task="mlm", seq_len=32, docs_per_shard=8, eval_fraction=0.1, progress=False)
    m1 = prepare.prepare([str(path)], str(tmp_path / "p1"), str(vocab_path), processes=1, seed=11, **kw)
    m2 = prepare.prepare([str(path)], str(tmp_path / "p2"), str(vocab_path), processes=2, seed=11, **kw)
    b1, b2 = _shard_bytes(tmp_path / "p1", m1), _shard_bytes(tmp_path / "p2", m2)
    assert len(b1) >= 5 and b1.keys() == b2.keys()
    assert b1 == b2
    assert m1["counts"] == m2["counts"]
    m3 = prepare.prepare([str(path)], str(tmp_path / "p3"), str(vocab_path), processes=1, seed=12, **kw)
    assert _shard_bytes(tmp_path / "p3", m3) != b1  # the seed matters

    # A rerun skips finished shards and rewrites a missing one identically.
    victim = os.path.join(tmp_path / "p1", m1["counts"]["train"]["files"][1])
    other = os.path.join(tmp_path / "p1", m1["counts"]["train"]["files"][0])
    os.remove(victim)
    mtime = os.stat(other).st_mtime_ns
    prepare.prepare([str(path)], str(tmp_path / "p1"), str(vocab_path), processes=1, seed=11, **kw)
    assert os.stat(other).st_mtime_ns == mtime
    assert _shard_bytes(tmp_path / "p1", m1) == b1
    assert not [f for f in os.listdir(tmp_path / "p1") if ".tmp" in f]
    # Other options: the shards are rewritten, not skipped.
    m4 = prepare.prepare([str(path)], str(tmp_path / "p1"), str(vocab_path), processes=1, seed=12, **kw)
    assert _shard_bytes(tmp_path / "p1", m4) == _shard_bytes(tmp_path / "p3", m3)


def test_packing_keeps_words_whole_and_respects_length():
    docs = [[[5, 6, 7], [8], [9, 10]], [[11, 12, 13, 14]], [[15] * 9]]
    examples = pack_documents(docs, seq_len=6, cls_id=2, sep_id=3)
    for tokens, words in examples:
        assert tokens[0] == 2 and len(tokens) <= 6 and len(words) == len(tokens)
    assert examples[0] == ([2, 5, 6, 7, 8], [-1, 0, 0, 0, 1])
    assert examples[1][0] == [2, 9, 10, 3]  # the word [9, 10] moved whole, then [SEP]
    flat = [t for tokens, _ in examples for t in tokens if t not in (2, 3)]
    assert flat == [5, 6, 7, 8, 9, 10, 11, 12, 13, 14] + [15] * 9  # an over-long word is split


def test_lm_unilm_plm_transforms():
    import tensorflow as tf

    tokens = [2, 11, 12, 13, 14, 15, 3, 0]
    rng = np.random.default_rng(0)
    segs = masking.unilm_split_np(np.array(tokens), rng)
    for task, feats in [
        ("lm", {"token_ids": tokens, "segment_ids": [0] * 8}),
        ("unilm", {"token_ids": tokens, "segment_ids": segs.tolist()}),
        ("plm", {"token_ids": tokens, "segment_ids": [0] * 8}),
    ]:
        meta = {"task": task, "seq_len": 8, "features": list(feats), "plm_predict_fraction": 0.5}
        inputs, labels, weights = records.example_transform(meta, seed=1)(
            tf.constant(3, tf.int64), tf.constant(records.serialize(feats)))
        labels = labels.numpy()
        if task == "lm":
            assert labels.tolist() == [11, 12, 13, 14, 15, 3, 0, 0]
        elif task == "unilm":
            s = int(np.argmax(segs))
            assert 2 <= s < 7 and segs[s:7].all() and not segs[7]
            assert labels.tolist() == [0] * (s - 1) + tokens[s:7] + [0, 0]
        else:
            order = inputs["Input-Order"].numpy()
            assert order[0] == 0 and sorted(order[1:7].tolist()) == [1, 2, 3, 4, 5, 6] and order[7] == 0
            scored = np.nonzero(labels)[0]
            assert sorted(order[scored].tolist()) == [4, 5, 6]  # the last half of the order
            np.testing.assert_array_equal(labels[scored], np.array(tokens)[scored])
        np.testing.assert_array_equal(weights.numpy(), (labels != 0).astype("float32"))


def test_schedule_and_weight_decay_exclusions():
    import keras

    from kerasnlp_plus.pretraining.schedule import WarmupLinearDecay
    from kerasnlp_plus.pretraining.training import make_optimizer

    s = WarmupLinearDecay(1e-3, warmup_steps=10, total_steps=110)
    got = [float(s(k)) for k in (0, 5, 10, 60, 110, 200)]
    np.testing.assert_allclose(got, [0, 5e-4, 1e-3, 5e-4, 0, 0], atol=1e-9)
    assert WarmupLinearDecay.from_config(s.get_config()).get_config() == s.get_config()

    opt = make_optimizer("adamw", learning_rate=0.1, warmup_steps=1, total_steps=10, weight_decay=0.5)
    kernel = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
    gamma = keras.Variable(np.ones((2,), "float32"), name="gamma")
    bias = keras.Variable(np.ones((2,), "float32"), name="bias")
    opt.build([kernel, gamma, bias])
    for _ in range(2):  # step 0 has learning rate 0 (warmup)
        opt.apply_gradients([(np.zeros((2, 2), "float32"), kernel), (np.zeros(2, "float32"), gamma),
                             (np.zeros(2, "float32"), bias)])
    assert float(kernel.numpy()[0, 0]) < 1.0  # decayed
    np.testing.assert_array_equal(gamma.numpy(), 1.0)
    np.testing.assert_array_equal(bias.numpy(), 1.0)
