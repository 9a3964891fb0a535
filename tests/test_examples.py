"""The end-to-end examples: metric functions against hand-computed values, and
one-epoch smoke runs of both examples on a tiny from-scratch model.

The smoke runs check that the pipeline learns (the held-out teacher-forced loss
and the per-batch training loss fall), that metrics come out in range and that
the outputs are written; for KgCLUE, that every answer is a triple of the
knowledge base (the prefix-tree constraint). KgCLUE is read from the shared data
(never copied into the project); CSL comes from examples/data/csl.
"""
import importlib.util
import json
import math
import pathlib
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def common():
    return _load("common")


@pytest.fixture(scope="module")
def autotitle():
    return _load("seq2seq_autotitle")


@pytest.fixture(scope="module")
def kgclue():
    return _load("kgclue_qa")


# ------------------------------------------------------------------ title metrics
def test_title_metrics_hand_computed(common):
    # Characters: ref 深 度 学 习, pred 深 度 模 型.
    # Rouge-1: 2 shared unigrams of 4 and 4 -> F 0.5; Rouge-2: bigram 深度 shared of
    # 3 and 3 -> F 1/3; Rouge-L: LCS 2 -> F 0.5. BLEU (smoothing method1, eps 0.1):
    # p1 2/4, p2 1/3, p3 0/2 -> 0.1/2, p4 0/1 -> 0.1/1, BP 1 -> (0.5*1/3*0.05*0.1)**0.25.
    m = common.title_metrics(["深度模型"], ["深度学习"])
    assert m["rouge-1"] == pytest.approx(50.0, abs=1e-6)
    assert m["rouge-2"] == pytest.approx(100 / 3, abs=1e-6)
    assert m["rouge-l"] == pytest.approx(50.0, abs=1e-6)
    assert m["bleu"] == pytest.approx(100 * (0.5 / 3 * 0.05 * 0.1) ** 0.25, abs=1e-6)


def test_title_metrics_empty_prediction_counts_zero(common):
    both = common.title_metrics(["深度学习", ""], ["深度学习", "深度学习"])
    assert both["rouge-l"] == pytest.approx(50.0)
    assert both["bleu"] == pytest.approx(50.0)
    with pytest.raises(ValueError):
        common.title_metrics(["a"], [])


def test_read_title_tsv_names_bad_line(common, tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("标题一\t摘要一\n只有一列\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.tsv:2"):
        common.read_title_tsv([path])
    assert common.read_title_tsv([path], limit=1) == [("标题一", "摘要一")]


def test_embedded_csl_sample_is_well_formed(common):
    train = common.read_title_tsv([EXAMPLES / "data" / "csl" / "train.tsv"])
    valid = common.read_title_tsv([EXAMPLES / "data" / "csl" / "valid.tsv"])
    assert len(train) == 2000 and len(valid) == 1000
    assert not {a for _, a in train} & {a for _, a in valid}  # no leak into validation


# ---------------------------------------------------------------- KgCLUE metric
def test_lcs_and_f1_hand_computed(kgclue):
    assert kgclue.lcs_length("abcde", "ace") == 3
    assert kgclue.lcs_length("守望星光", "星光守望") == 2
    assert kgclue.f1_sim("abcde", "ace") == pytest.approx(2 * 3 / 8)
    assert kgclue.f1_sim("", "") == 0.0
    assert kgclue.f1_sim("a", "") == 0.0


def test_kgclue_metrics_hand_computed(kgclue):
    preds = [("守望星光", "出品公司", "韩玉玲原创音乐"), ("龙晶", "繁体", "龍晶 X")]
    golds = [("守望星光", "出品公司", "韩玉玲原创音乐"), ("龙晶（游戏）", "繁体", "龍晶")]
    m = kgclue.kgclue_metrics(preds, golds)
    assert m["EM_S"] == 50.0 and m["EM_P"] == 100.0 and m["EM_O"] == 50.0 and m["EM_All"] == 50.0
    # Row 2, O: "龍晶 x" (normalized, 4 chars) vs "龍晶" -> 2*2/6.
    assert m["F1_O"] == pytest.approx(100 * (1 + 4 / 6) / 2)
    # Row 2, S: "龙晶" vs "龙晶（游戏）" -> 2*2/8.
    assert m["F1_S"] == pytest.approx(100 * (1 + 4 / 8) / 2)
    assert m["score"] == pytest.approx(0.5 * m["EM_O"] + 0.5 * m["F1_O"])


def test_subject_split(kgclue):
    assert kgclue.subject_split("龙晶（游戏）") == ("龙晶", "游戏")
    assert kgclue.subject_split("无罪无我") == ("无罪无我", "")
    assert kgclue.subject_split("守望星光（韩玉玲、刘东考演唱歌曲）") == ("守望星光", "韩玉玲、刘东考演唱歌曲")


def test_kb_reader_names_bad_line(kgclue, tmp_path):
    path = tmp_path / "kb.txt"
    path.write_text("龙晶（游戏）\t繁体\t龍晶\n坏行\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"kb\.txt:2"):
        list(kgclue.iter_kb(path))
    stats = {}
    assert list(kgclue.iter_kb(path, skip_bad=True, stats=stats)) == [("龙晶（游戏）", "繁体", "龍晶")]
    assert stats["bad_lines"] == 1


# ------------------------------------------------------------------ smoke runs
def _check_learning(results):
    assert results["model_source"] == "scratch"
    assert results["valid_loss_after"] < results["valid_loss_before"]
    losses = results["batch_losses"]
    assert len(losses) >= 4 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2  # training loss falls within the epoch


def test_autotitle_smoke(autotitle, vocab_path, tmp_path):
    out = tmp_path / "autotitle"
    results = autotitle.main([
        "--scratch", "--vocab", str(vocab_path), "--limit-train", "48", "--limit-valid", "12",
        "--epochs", "1", "--batch-size", "8", "--lr", "3e-3", "--max-source-len", "64",
        "--max-target-len", "12", "--output", str(out), "--verbose", "0", "--show", "2",
    ])
    _check_learning(results)
    best = results["best"]
    for k in ("rouge-1", "rouge-2", "rouge-l", "bleu"):
        assert 0.0 <= best[k] <= 100.0
    assert (out / "best.weights.h5").is_file()
    rows = (out / "valid_predictions.tsv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 12 and all(len(r.split("\t")) == 2 for r in rows)
    assert json.loads((out / "results.json").read_text(encoding="utf-8"))["valid_pairs"] == 12
    assert not list(out.glob(".tmp-*"))  # atomic writes leave no temporary files


def test_kgclue_smoke(kgclue, shared_data, vocab_path, tmp_path):
    out = tmp_path / "kgclue"
    kb_path = shared_data / "kgclue" / "Knowledge_subset_from_answers.txt"
    results = kgclue.main([
        "--scratch", "--vocab", str(vocab_path), "--data-dir", str(shared_data / "kgclue"),
        "--kb", str(kb_path), "--limit-train", "64", "--limit-valid", "16", "--limit-test", "16",
        "--epochs", "1", "--batch-size", "8", "--lr", "3e-3", "--max-question-len", "32",
        "--output", str(out), "--verbose", "0", "--show", "1",
    ])
    _check_learning(results)
    assert results["trie"]["triples"] == 22000 and results["trie"]["keys"] > 21000
    for m in (results["best"], results["test_public"]):
        for k in ("EM_O", "F1_O", "EM_All", "F1_All", "score"):
            assert 0.0 <= m[k] <= 100.0
    kb = {tuple(line.rstrip("\n").split("\t")) for line in kb_path.open(encoding="utf-8")}
    kb = {(s, p, " ".join(o.split())) for s, p, o in kb}
    for name, n in (("dev_predictions.json", 16), ("test_public_predictions.json", 16)):
        lines = (out / name).read_text(encoding="utf-8").splitlines()
        assert len(lines) == n
        for line in lines:
            record = json.loads(line)
            assert set(record) == {"id", "answer"}
            triple = tuple(record["answer"].split(" ||| "))
            assert triple in kb, f"{name}: {triple} is not a triple of the knowledge base"


def test_checkpoint_model_is_loaded_with_a_simplified_vocab(common, vocab_path, tmp_path):
    """--config/--checkpoint/--vocab: a Google checkpoint over the full vocab is
    loaded with bert4keras' vocabulary simplification (kept rows, in order)."""
    import argparse

    import numpy as np

    from kerasnlp_plus.checkpoints import save_google_checkpoint
    from kerasnlp_plus.models import build_transformer_model
    from kerasnlp_plus.tokenizers import load_vocab

    full = build_transformer_model(
        None, application="unilm", with_mlm=True, vocab_size=21128, hidden_size=32,
        num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
    )
    prefix = save_google_checkpoint(full, str(tmp_path / "bert_model.ckpt"))
    args = argparse.Namespace(config=str(tmp_path / "bert_config.json"), checkpoint=prefix,
                              vocab=str(vocab_path), model="bert", scratch=False)
    model, tokenizer, source = common.load_model_and_tokenizer(args, log=lambda *a: None)
    _, keep_tokens = load_vocab(str(vocab_path), simplified=True, startswith=common.SPECIAL_TOKENS)
    assert source == "checkpoint" and model.application == "unilm"
    assert model.vocab_size == len(keep_tokens) == tokenizer.vocab_size < 21128
    full_rows = full.token_embedding.get_weights()[0]
    np.testing.assert_allclose(model.token_embedding.get_weights()[0], full_rows[keep_tokens])
    ids, _ = tokenizer.encode("深度学习")
    assert tokenizer.decode(ids) == "深度学习"


# ------------------------------------------------------------- the main job's parts
def test_copy_baseline_and_token_runs(common):
    m = common.copy_baseline(["深度学习的图像分类方法研究", "某某"], ["深度学习", "无关"], 4)
    # row 1: "深度学习" vs "深度学习" -> 100; row 2: "某某" vs "无关" -> 0
    assert m["rouge-l"] == pytest.approx(50.0)
    assert common.max_token_run([[1, 2, 2, 2, 3], [4, 4]]) == 3
    assert common.max_token_run([[], [5]]) == 1


def test_gathered_training_batches_give_the_full_head_loss(common):
    """The main job trains through model.loss_positions_model() on batches from
    unilm_dataset(gather_positions=True): the same loss as the full head on the
    same pairs (the shipped demo model, real CSL pairs of different lengths)."""
    path = common.demo_model_path()
    tokenizer = common.Tokenizer(str(path / "vocab.txt"), do_lower_case=True)
    model = common.build_transformer_model(str(path), str(path), application="unilm", with_mlm=True)
    pairs = common.read_title_tsv([EXAMPLES / "data" / "csl" / "train.tsv"], limit=12)
    encoded = common.unilm_pairs(tokenizer, [a for _, a in pairs], [t for t, _ in pairs], 96, 24)
    full = common.compile_unilm(model, 1e-3)
    full_loss = full.evaluate(common.unilm_dataset(encoded, 5), verbose=0)
    view = common.compile_unilm(model, 1e-3, train_model=model.loss_positions_model())
    batches = list(common.unilm_dataset(encoded, 5, gather_positions=True))
    assert {b[0]["Input-Positions"].shape[1] % 8 for b in batches} == {0}
    # every title token is kept: the gathered weights sum to the full ones
    assert sum(float(b[2].numpy().sum()) for b in batches) == sum(sum(segs) for _, segs in encoded)
    gathered_loss = view.evaluate(common.unilm_dataset(encoded, 5, gather_positions=True), verbose=0)
    assert gathered_loss == pytest.approx(full_loss, rel=1e-5)
