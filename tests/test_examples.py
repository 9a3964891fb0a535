"""What the end-to-end examples use from ``kerasnlp_plus.tasks``: metric functions
against hand-computed values, the data readers, the model sources, the input pipeline
of global batches and the best-weights callback. The examples themselves run as
scripts in ``tests/test_multiworker_examples.py`` (smoke runs, 2 replicas == 1).
KgCLUE is read from the shared data (never copied into the project); CSL comes from
examples/data/csl.
"""
import pathlib

import numpy as np
import pytest

from kerasnlp_plus.tasks import kgclue, seq2seq, titles
from kerasnlp_plus.tasks.callbacks import BestWeights

REPO = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


# ------------------------------------------------------------------ title metrics
def test_title_metrics_hand_computed():
    # Characters: ref 深 度 学 习, pred 深 度 模 型.
    # Rouge-1: 2 shared unigrams of 4 and 4 -> F 0.5; Rouge-2: bigram 深度 shared of
    # 3 and 3 -> F 1/3; Rouge-L: LCS 2 -> F 0.5. BLEU (smoothing method1, eps 0.1):
    # p1 2/4, p2 1/3, p3 0/2 -> 0.1/2, p4 0/1 -> 0.1/1, BP 1 -> (0.5*1/3*0.05*0.1)**0.25.
    m = titles.title_metrics(["深度模型"], ["深度学习"])
    assert m["rouge-1"] == pytest.approx(50.0, abs=1e-6)
    assert m["rouge-2"] == pytest.approx(100 / 3, abs=1e-6)
    assert m["rouge-l"] == pytest.approx(50.0, abs=1e-6)
    assert m["bleu"] == pytest.approx(100 * (0.5 / 3 * 0.05 * 0.1) ** 0.25, abs=1e-6)


def test_title_metrics_empty_prediction_counts_zero():
    both = titles.title_metrics(["深度学习", ""], ["深度学习", "深度学习"])
    assert both["rouge-l"] == pytest.approx(50.0)
    assert both["bleu"] == pytest.approx(50.0)
    with pytest.raises(ValueError):
        titles.title_metrics(["a"], [])


def test_read_title_tsv_names_bad_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("标题一\t摘要一\n只有一列\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.tsv:2"):
        titles.read_title_tsv([path])
    assert titles.read_title_tsv([path], limit=1) == [("标题一", "摘要一")]


def test_embedded_csl_sample_is_well_formed():
    train = titles.read_title_tsv([EXAMPLES / "data" / "csl" / "train.tsv"])
    valid = titles.read_title_tsv([EXAMPLES / "data" / "csl" / "valid.tsv"])
    assert len(train) == 2000 and len(valid) == 1000
    assert not {a for _, a in train} & {a for _, a in valid}  # no leak into validation


# ---------------------------------------------------------------- KgCLUE metric
def test_lcs_and_f1_hand_computed():
    assert kgclue.lcs_length("abcde", "ace") == 3
    assert kgclue.lcs_length("守望星光", "星光守望") == 2
    assert kgclue.f1_sim("abcde", "ace") == pytest.approx(2 * 3 / 8)
    assert kgclue.f1_sim("", "") == 0.0
    assert kgclue.f1_sim("a", "") == 0.0


def test_kgclue_metrics_hand_computed():
    preds = [("守望星光", "出品公司", "韩玉玲原创音乐"), ("龙晶", "繁体", "龍晶 X")]
    golds = [("守望星光", "出品公司", "韩玉玲原创音乐"), ("龙晶（游戏）", "繁体", "龍晶")]
    m = kgclue.kgclue_metrics(preds, golds)
    assert m["EM_S"] == 50.0 and m["EM_P"] == 100.0 and m["EM_O"] == 50.0 and m["EM_All"] == 50.0
    # Row 2, O: "龍晶 x" (normalized, 4 chars) vs "龍晶" -> 2*2/6.
    assert m["F1_O"] == pytest.approx(100 * (1 + 4 / 6) / 2)
    # Row 2, S: "龙晶" vs "龙晶（游戏）" -> 2*2/8.
    assert m["F1_S"] == pytest.approx(100 * (1 + 4 / 8) / 2)
    assert m["score"] == pytest.approx(0.5 * m["EM_O"] + 0.5 * m["F1_O"])


def test_subject_split():
    assert kgclue.subject_split("龙晶（游戏）") == ("龙晶", "游戏")
    assert kgclue.subject_split("无罪无我") == ("无罪无我", "")
    assert kgclue.subject_split("守望星光（韩玉玲、刘东考演唱歌曲）") == ("守望星光", "韩玉玲、刘东考演唱歌曲")


def test_kb_reader_names_bad_line(tmp_path):
    path = tmp_path / "kb.txt"
    path.write_text("龙晶（游戏）\t繁体\t龍晶\n坏行\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"kb\.txt:2"):
        list(kgclue.iter_kb(path))
    stats = {}
    assert list(kgclue.iter_kb(path, skip_bad=True, stats=stats)) == [("龙晶（游戏）", "繁体", "龍晶")]
    assert stats["bad_lines"] == 1


# ------------------------------------------------------------------ model sources
def test_checkpoint_model_is_loaded_with_a_simplified_vocab(vocab_path, tmp_path):
    """--config/--checkpoint/--vocab: a Google checkpoint over the full vocab is
    loaded with bert4keras' vocabulary simplification (kept rows, in order)."""
    from kerasnlp_plus.checkpoints import save_google_checkpoint
    from kerasnlp_plus.models import build_transformer_model
    from kerasnlp_plus.tokenizers import load_vocab

    full = build_transformer_model(
        None, application="unilm", with_mlm=True, vocab_size=21128, hidden_size=32,
        num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
    )
    prefix = save_google_checkpoint(full, str(tmp_path / "bert_model.ckpt"))
    model, tokenizer, source = seq2seq.load_model_and_tokenizer(
        str(tmp_path / "bert_config.json"), prefix, str(vocab_path), "bert", log=lambda *a: None)
    _, keep_tokens = load_vocab(str(vocab_path), simplified=True, startswith=seq2seq.SPECIAL_TOKENS)
    assert source == "checkpoint" and model.application == "unilm"
    assert model.vocab_size == len(keep_tokens) == tokenizer.vocab_size < 21128
    full_rows = full.token_embedding.get_weights()[0]
    np.testing.assert_allclose(model.token_embedding.get_weights()[0], full_rows[keep_tokens])
    ids, _ = tokenizer.encode("深度学习")
    assert tokenizer.decode(ids) == "深度学习"
    with pytest.raises(ValueError, match="--vocab is required"):
        seq2seq.load_model_and_tokenizer(str(tmp_path / "bert_config.json"), prefix, None)


# ------------------------------------------------------------- the main job's parts
def test_copy_baseline_and_token_runs():
    m = titles.copy_baseline(["深度学习的图像分类方法研究", "某某"], ["深度学习", "无关"], 4)
    # row 1: "深度学习" vs "深度学习" -> 100; row 2: "某某" vs "无关" -> 0
    assert m["rouge-l"] == pytest.approx(50.0)
    assert titles.max_token_run([[1, 2, 2, 2, 3], [4, 4]]) == 3
    assert titles.max_token_run([[], [5]]) == 1


def _demo_model_and_pairs(n):
    from kerasnlp_plus.models import build_transformer_model
    from kerasnlp_plus.pretraining import demo_model_path
    from kerasnlp_plus.tokenizers import Tokenizer

    path = pathlib.Path(demo_model_path())
    tokenizer = Tokenizer(str(path / "vocab.txt"), do_lower_case=True)
    model = build_transformer_model(str(path), str(path), application="unilm", with_mlm=True)
    pairs = titles.read_title_tsv([EXAMPLES / "data" / "csl" / "train.tsv"], limit=n)
    return model, seq2seq.encode_pairs(tokenizer, [a for _, a in pairs], [t for t, _ in pairs], 96, 24)


def test_gathered_training_batches_give_the_full_head_loss():
    """The main job trains through model.loss_positions_model() on batches from
    unilm_dataset(gather_positions=True): the same loss as the full head on the
    same pairs (the shipped demo model, real CSL pairs of different lengths)."""
    model, encoded = _demo_model_and_pairs(12)
    full = seq2seq.compile_unilm(model, 1e-3)
    full_loss = full.evaluate(seq2seq.unilm_dataset(encoded, 5), verbose=0)
    view = seq2seq.compile_unilm(model, 1e-3, train_model=model.loss_positions_model())
    batches = list(seq2seq.unilm_dataset(encoded, 5, gather_positions=True))
    assert {b[0]["Input-Positions"].shape[1] % 8 for b in batches} == {0}
    # every title token is kept: the gathered scored positions are the title tokens
    assert sum(int((b[2].numpy() > 0).sum()) for b in batches) == sum(sum(segs) for _, segs in encoded)
    gathered_loss = view.evaluate(seq2seq.unilm_dataset(encoded, 5, gather_positions=True), verbose=0)
    assert gathered_loss == pytest.approx(full_loss, rel=1e-5)
    # the loss is the token mean of each batch, as bert4keras' sum(loss * mask) / sum(mask)
    first = seq2seq.unilm_dataset(encoded, 5).take(1)
    x, y, w = next(iter(first))
    probs = np.asarray(model(x, training=False))
    nll = -np.log(np.take_along_axis(probs, y.numpy()[..., None], axis=-1)[..., 0])
    expected = nll[w.numpy() > 0].mean()
    # (1e-4: Keras clips probabilities to [1e-7, 1 - 1e-7]; any other reduction, e.g. over
    # all positions, would be off by the share of padding and source tokens, > 2x here)
    assert full.evaluate(first, verbose=0) == pytest.approx(expected, rel=1e-4)


def test_unilm_batches_are_global_and_replica_independent():
    """Every element is a global batch of exactly batch_size rows (filler rows carry
    no weight), padded to its longest row, with labels by the pretraining records'
    rule and weights normalized over the whole batch; each pass scores every example
    once, in an order set by (seed, pass) alone."""
    from kerasnlp_plus.pretraining.records import next_token_labels

    encoded = [([2, 5 + i, 6, 3, 7 + i, 3], [0, 0, 0, 0, 1, 1]) for i in range(7)] + [([2, 9, 3, 8, 3], [0, 0, 0, 1, 1])]
    ds = seq2seq.unilm_dataset(encoded, 3, shuffle=True, seed=4, repeat=True)
    assert seq2seq.num_batches(encoded, 3) == 3
    batches = list(ds.take(6))  # two passes
    seen = []
    for x, y, w in batches:
        tokens, segments, w = x["Input-Token"].numpy(), x["Input-Segment"].numpy(), w.numpy()
        assert tokens.shape == (3, 6) and w.shape == (3, 6)
        np.testing.assert_array_equal(y.numpy(), next_token_labels(tokens, segments).numpy())
        np.testing.assert_allclose(w.sum(), w.size, rtol=1e-6)  # normalized over the global batch
        assert ((w > 0) <= (y.numpy() > 0)).all()  # only target tokens are scored
        seen += [tuple(t[t > 0]) for t, row in zip(tokens, w) if row.any()]
    passes = [sorted(seen[: len(encoded)]), sorted(seen[len(encoded):])]
    assert passes[0] == passes[1] == sorted(tuple(ids) for ids, _ in encoded)  # filler rows score nothing
    assert seen[: len(encoded)] != seen[len(encoded):]  # a new order each pass
    again = [b[0]["Input-Token"].numpy() for b in seq2seq.unilm_dataset(encoded, 3, shuffle=True, seed=4,
                                                                         repeat=True).take(6)]
    for a, b in zip(again, batches):
        np.testing.assert_array_equal(a, b[0]["Input-Token"].numpy())
    with pytest.raises(ValueError, match="example 1 has 2 token ids and 1 segment ids"):
        seq2seq.unilm_dataset([([2, 3], [0, 0]), ([2, 3], [0])], 2)


def test_best_weights_saves_on_improvement_only_and_atomically(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    saved = []
    best = BestWeights(tmp_path / "best.weights.h5", "score", model=model,
                       on_improve=lambda epoch, logs: saved.append((epoch, logs["score"])))
    for epoch, score in enumerate([1.0, 3.0, 2.0]):
        model.layers[0].kernel.assign(np.full((2, 1), score, "float32"))
        best.on_epoch_end(epoch, {"score": score})
    assert saved == [(0, 1.0), (1, 3.0)] and (best.best, best.best_epoch) == (3.0, 2)
    model.load_weights(tmp_path / "best.weights.h5")
    np.testing.assert_array_equal(model.layers[0].kernel.numpy(), np.full((2, 1), 3.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.weights.h5"]
    with pytest.raises(KeyError, match="'rouge-l' is not in the epoch logs"):
        BestWeights(tmp_path / "x.weights.h5", "rouge-l", model=model).on_epoch_end(0, {"loss": 1.0})
