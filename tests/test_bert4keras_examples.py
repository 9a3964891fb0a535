"""bert4keras' own example scripts, ported by changing only imports, paths, sizes and
Keras 3 file names (tests/bert4keras_examples/, Apache-2.0, attributed in each file),
run to the end on the demo model and small real data from ../shared/data.

The data is written here in the layout each script reads: LCSTS news as THUCNews
``title\\ncontent`` files, CSL titles as ``title\\tcontent``, CLUECorpusSmall text as
GBK "novels", and KgCLUE questions as People's Daily NER files (the question's subject
entity tagged B-ENT/I-ENT) and as WebQA/SogouQA JSON (the answer triple's sentence as
the passage), ChnSentiCorp reviews with keyword-rule sentiment labels, LCSTS texts
paired with their own or another headline as LCQMC pairs, and a small ALBERT checkpoint
with random weights under albert_tiny_zh_google's real variable names. Each training
script must print a finite loss of the right size: a mean per-token cross entropy (not
summed over padding), a per-sentence CRF likelihood or a mean classification loss.
All of them run in CI.
"""
import io
import json
import math
import os
import pathlib
import re
import runpy
import sys
from contextlib import redirect_stdout

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent / "bert4keras_examples"
DEMO_VOCAB_SIZE = 13585


def _kgclue_rows(shared_data, n):
    rows = []
    with open(shared_data / "kgclue" / "train.json", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            subject, predicate, obj = [x.strip() for x in d["answer"].split("|||")]
            mention = re.sub(r"（.*?）|\(.*?\)", "", subject)
            question = d["question"]
            if mention and mention in question and not re.search(r"\s", question) and not re.search(r"\s", obj):
                rows.append((question, mention, subject, predicate, obj))
            if len(rows) == n:
                break
    return rows


@pytest.fixture(scope="module")
def example_data(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("b4k_data")
    # THUCNews layout (one news item per file: title, newline, content) from LCSTS train.
    news = root / "THUCNews" / "lcsts"
    news.mkdir(parents=True)
    with open(shared_data / "lcsts" / "train.tsv", encoding="utf-8") as f:
        for i, line in zip(range(8), f):
            title, content = line.rstrip("\n").split("\t")[:2]
            (news / f"{i}.txt").write_text(f"{title}\n{content}", encoding="utf-8")
    # CSL titles: title<TAB>content (the dev split; the test split is held out).
    (root / "csl").mkdir()
    with open(shared_data / "csl" / "csl_title_dev.tsv", encoding="utf-8") as f:
        lines = [next(f) for _ in range(12)]
    (root / "csl" / "train.tsv").write_text("".join(lines[:8]), encoding="utf-8")
    (root / "csl" / "val.tsv").write_text("".join(lines[8:10]), encoding="utf-8")
    (root / "csl" / "test.tsv").write_text("".join(lines[10:12]), encoding="utf-8")
    # A "novel" in GBK, as task_language_model.py reads.
    novel = root / "jinyong" / "corpus"
    novel.mkdir(parents=True)
    with open(shared_data / "corpus" / "CLUECorpusSmall_sampled.txt", encoding="utf-8") as f:
        text = "".join(next(f).strip() for _ in range(60))
    novel.joinpath("a.txt").write_bytes(text.encode("gbk", errors="ignore"))
    # NER in the People's Daily layout: "char tag" lines, blank line between sentences.
    rows = _kgclue_rows(shared_data, 24)
    (root / "ner").mkdir()
    sentences = []
    for question, mention, *_ in rows:
        start = question.index(mention)
        tags = ["O"] * len(question)
        tags[start] = "B-ENT"
        for k in range(start + 1, start + len(mention)):
            tags[k] = "I-ENT"
        sentences.append("\n".join(f"{c} {t}" for c, t in zip(question, tags)))
    for name, part in (("train", sentences[:8]), ("dev", sentences[8:12]), ("test", sentences[12:16])):
        (root / "ner" / f"example.{name}").write_text("\n\n".join(part), encoding="utf-8")
    # WebQA / SogouQA layout.
    (root / "qa").mkdir()
    records = [
        {"id": i, "question": question,
         "passages": [{"passage": f"{subject}的{predicate}是{obj}。", "answer": obj}]}
        for i, (question, _, subject, predicate, obj) in enumerate(rows)
    ]
    (root / "qa" / "WebQA.json").write_text(json.dumps(records[:12], ensure_ascii=False), encoding="utf-8")
    (root / "qa" / "SogouQA.json").write_text(json.dumps(records[12:], ensure_ascii=False), encoding="utf-8")
    _write_sentiment_data(shared_data, root / "datasets" / "sentiment")
    _write_similarity_data(shared_data, root / "datasets" / "lcqmc")
    _write_albert_checkpoint(shared_data, root / "albert_small_zh_google")
    _write_demo_model_with_pooler(root / "demo_model_with_pooler")
    return root


def _write_demo_model_with_pooler(folder):
    """The demo model plus a pooler with random weights (it was pretrained without
    NSP, so it has none; bert4keras, like kerasnlp_plus, refuses a ``with_pool`` build
    from a checkpoint that lacks one)."""
    import shutil

    import safetensors.numpy

    demo = EXAMPLES.parents[1] / "kerasnlp_plus" / "assets" / "demo_model"
    folder.mkdir()
    for name in ("config.json", "vocab.txt"):
        shutil.copy(demo / name, folder / name)
    weights = safetensors.numpy.load_file(str(demo / "model.safetensors"))
    hidden = weights["bert.embeddings.word_embeddings.weight"].shape[1]
    rng = np.random.default_rng(0)
    weights["bert.pooler.dense.weight"] = (0.02 * rng.standard_normal((hidden, hidden))).astype("float32")
    weights["bert.pooler.dense.bias"] = np.zeros(hidden, "float32")
    safetensors.numpy.save_file(weights, str(folder / "model.safetensors"))


# Keyword rule for weak sentiment labels on the (unlabelled) staged ChnSentiCorp reviews.
POSITIVE_PHRASES = ("不错", "满意", "喜欢", "推荐", "很好", "值得")
NEGATIVE_PHRASES = ("失望", "糟糕", "不满", "太差", "很差", "后悔")


def _write_sentiment_data(shared_data, folder):
    """``text<TAB>label`` from real reviews: 1 with a positive phrase and no negative
    one, 0 the reverse, the rest left out; balanced, 16 / 4 / 4 rows."""
    folder.mkdir(parents=True)
    by_label = {0: [], 1: []}
    with open(shared_data / "corpus" / "chnsenticorp.txt", encoding="utf-8") as f:
        for line in f:
            text = re.sub(r"\s+", "", line)[:100]
            positive = any(p in text for p in POSITIVE_PHRASES)
            negative = any(p in text for p in NEGATIVE_PHRASES)
            if text and positive != negative and len(by_label[int(positive)]) < 12:
                by_label[int(positive)].append(text)
            if min(len(v) for v in by_label.values()) == 12:
                break
    rows = [f"{text}\t{label}" for pair in zip(by_label[0], by_label[1]) for text, label in zip(pair, (0, 1))]
    for name, part in (("train", rows[:16]), ("valid", rows[16:20]), ("test", rows[20:24])):
        (folder / f"sentiment.{name}.data").write_text("\n".join(part) + "\n", encoding="utf-8")


def _write_similarity_data(shared_data, folder):
    """LCQMC layout ``text1<TAB>text2<TAB>label`` from LCSTS: a text with its own
    headline is 1, with the next text's headline 0; 16 / 4 / 4 rows."""
    folder.mkdir(parents=True)
    with open(shared_data / "lcsts" / "train.tsv", encoding="utf-8") as f:
        pairs = [line.rstrip("\n").split("\t")[:2] for _, line in zip(range(24), f)]
    rows = []
    for i, (title, content) in enumerate(pairs):
        other_title = pairs[(i + 1) % len(pairs)][0]
        rows.append(f"{content}\t{title if i % 2 == 0 else other_title}\t{1 if i % 2 == 0 else 0}")
    for name, part in (("train", rows[:16]), ("valid", rows[16:20]), ("test", rows[20:24])):
        (folder / f"lcqmc.{name}.data").write_text("\n".join(part) + "\n", encoding="utf-8")


def _write_albert_checkpoint(shared_data, folder):
    """A Google-layout ALBERT checkpoint with random weights under the real variable
    names of albert_tiny_zh_google (hidden 312 -> 48 to stay small), its config and
    the real Google Chinese vocab it uses."""
    import shutil

    from reference import read_manifest, scale_manifest, write_google_checkpoint

    meta = shared_data / "ckpt_meta" / "albert_tiny_zh_google"
    manifest = [v for v in read_manifest(meta / "variables.tsv") if "/adam_" not in v[0]]
    write_google_checkpoint(scale_manifest(manifest, {312: 48, 1248: 96, 512: 64}), str(folder / "albert_model.ckpt"),
                            std=0.02)
    config = json.loads((meta / "albert_config_tiny_g.json").read_text(encoding="utf-8"))
    config.update(hidden_size=48, intermediate_size=96, num_attention_heads=4, max_position_embeddings=64,
                  num_hidden_layers=4)
    (folder / "albert_config.json").write_text(json.dumps(config), encoding="utf-8")
    shutil.copy(shared_data / "vocab" / "vocab.txt", folder / "vocab.txt")


def run_example(name, data_dir, workdir, monkeypatch):
    """Run a ported script as ``__main__`` in ``workdir``; returns (globals, stdout)."""
    import keras

    keras.backend.clear_session()
    monkeypatch.setenv("KERASNLP_PLUS_B4K_DATA", str(data_dir))
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    sys.modules.pop("_b4k_paths", None)
    # Python, NumPy and TensorFlow seeds: the weights are initialized the same on every
    # run (with NumPy's alone, a tiny LCQMC run once scored 0 on its 4 validation rows,
    # so the script never saved best_model.weights.h5 and the test failed by chance).
    keras.utils.set_random_seed(0)
    out = io.StringIO()
    from kerasnlp_plus.layers import transformer

    gelu = transformer.ACTIVATIONS["gelu"]  # scripts call set_gelu('tanh'): not for the tests after them
    try:
        with redirect_stdout(out):
            namespace = runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    finally:
        transformer.ACTIVATIONS["gelu"] = gelu
    return namespace, out.getvalue()


def final_loss(namespace):
    history = namespace["model"].history.history
    loss = history["loss"][-1]
    assert math.isfinite(loss), history
    return loss


def check_token_loss(namespace, vocab_size):
    """A mean per-token cross entropy: positive and below 1.5 x log(vocab) (a loss
    summed over tokens or padding is tens to thousands of times larger)."""
    loss = final_loss(namespace)
    assert 0.05 < loss < 1.5 * math.log(vocab_size), loss
    return loss


def test_extract_features(example_data, tmp_path, monkeypatch):
    ns, out = run_example("basic_extract_features.py", example_data, tmp_path, monkeypatch)
    features = ns["model"].predict([ns["token_ids"], ns["segment_ids"]], verbose=0)
    assert features.shape == (1, 6, 128) and np.isfinite(features).all()
    assert (tmp_path / "test.keras").is_file()  # saved and reloaded as .keras
    assert out.count("reloading and predicting") == 1


def test_masked_language_model(example_data, tmp_path, monkeypatch):
    ns, out = run_example("basic_masked_language_model.py", example_data, tmp_path, monkeypatch)
    probas = ns["probas"]
    assert probas.shape == (6 + 4, DEMO_VOCAB_SIZE) or probas.shape[-1] == DEMO_VOCAB_SIZE
    np.testing.assert_allclose(probas.sum(-1), 1.0, rtol=1e-4)
    assert out.strip()  # printed the two predicted characters


def test_gibbs_sampling(example_data, tmp_path, monkeypatch):
    ns, out = run_example("basic_gibbs_sampling_via_mlm.py", example_data, tmp_path, monkeypatch)
    assert len(ns["sentences"]) == 20
    assert len(out.strip().split("\n")) >= 11


def test_language_model(example_data, tmp_path, monkeypatch):
    ns, out = run_example("task_language_model.py", example_data, tmp_path, monkeypatch)
    loss = check_token_loss(ns, ns["tokenizer"].vocab_size)
    assert (tmp_path / "best_model.weights.h5").is_file()
    assert "结果" in out
    # The loss is masked by the output mask: recompute it from the model's predictions.
    batch = next(iter(ns["data_generator"](ns["data"][:4], 4)))[0]
    probas = ns["model"].predict(batch, verbose=0)
    ids = batch[0][:, 1:].astype(int)
    mask = (batch[0][:, 1:] > 0).astype(float)
    picked = np.take_along_axis(probas[:, :-1], ids[..., None], axis=-1)[..., 0]
    expected = -(np.log(np.maximum(picked, 1e-7)) * mask).sum() / mask.sum()
    measured = ns["model"].evaluate(batch, verbose=0)
    np.testing.assert_allclose(measured, expected, rtol=1e-3)
    assert loss > 0


def test_seq2seq_autotitle(example_data, tmp_path, monkeypatch):
    ns, out = run_example("task_seq2seq_autotitle.py", example_data, tmp_path, monkeypatch)
    check_token_loss(ns, ns["tokenizer"].vocab_size)
    assert out.count("生成标题") == 2


def test_seq2seq_autotitle_csl(example_data, tmp_path, monkeypatch):
    ns, out = run_example("task_seq2seq_autotitle_csl.py", example_data, tmp_path, monkeypatch)
    check_token_loss(ns, ns["tokenizer"].vocab_size)
    assert "valid_data" in out and "rouge-l" in out


def test_seq2seq_autotitle_multigpu(example_data, tmp_path, monkeypatch):
    ns, out = run_example("task_seq2seq_autotitle_multigpu.py", example_data, tmp_path, monkeypatch)
    check_token_loss(ns, ns["tokenizer"].vocab_size)
    assert out.count("生成标题") == 2


def test_ner_crf(example_data, tmp_path, monkeypatch):
    ns, out = run_example("task_sequence_labeling_ner_crf.py", example_data, tmp_path, monkeypatch)
    loss = final_loss(ns)
    num_labels = len(ns["categories"]) * 2 + 1
    # -log p(path) of a sentence of ~15 characters: positive, at most ~length * log(labels)
    # for an untrained CRF (plus emission scale), far below a sum over a batch.
    assert 0 < loss < 64 * math.log(num_labels) * 4, loss
    assert "valid:" in out and "test:" in out
    entities = ns["NER"].recognize(ns["valid_data"][0][0])
    assert isinstance(entities, list)


def test_question_answer_generation(example_data, tmp_path, monkeypatch):
    ns, out = run_example("task_question_answer_generation_by_seq2seq.py", example_data, tmp_path, monkeypatch)
    check_token_loss(ns, ns["tokenizer"].vocab_size)
    question, answer = ns["qag"].generate(ns["valid_data"][0][0])
    assert isinstance(question, str) and isinstance(answer, str)


def test_reading_comprehension(example_data, tmp_path, monkeypatch):
    ns, out = run_example("task_reading_comprehension_by_seq2seq.py", example_data, tmp_path, monkeypatch)
    check_token_loss(ns, ns["tokenizer"].vocab_size)
    d = ns["valid_data"][0]
    answer = ns["reader"].answer(d["question"], [p["passage"] for p in d["passages"]])  # as its predict_to_file
    assert isinstance(answer, str)


def check_classifier_loss(namespace, num_classes):
    """A mean cross entropy over ``num_classes``: positive and below 1.5 x log(classes)
    for a barely trained head (a loss summed over the batch of 4 would be ~4x larger)."""
    loss = final_loss(namespace)
    assert 0.05 < loss < 1.5 * math.log(num_classes), loss
    assert 0.0 <= namespace["model"].history.history["accuracy"][-1] <= 1.0
    return loss


def test_sentiment_albert(example_data, tmp_path, monkeypatch):
    ns, out = run_example("task_sentiment_albert.py", example_data, tmp_path, monkeypatch)
    check_classifier_loss(ns, ns["num_classes"])
    assert ns["bert"].model.family == "albert"
    assert len(ns["train_data"]) == 16 and {label for _, label in ns["train_data"]} == {0, 1}
    assert (tmp_path / "best_model.weights.h5").is_file()
    assert "val_acc" in out and "final test acc" in out


def test_sentence_similarity(example_data, tmp_path, monkeypatch):
    ns, out = run_example("task_sentence_similarity_lcqmc.py", example_data, tmp_path, monkeypatch)
    check_classifier_loss(ns, 2)
    assert tuple(ns["bert"].model.output.shape) == (None, 128)  # with_pool alone -> the pooled vector
    assert [label for *_, label in ns["train_data"]].count(1) == 8
    assert (tmp_path / "best_model.weights.h5").is_file()
    assert "val_acc" in out and "final test acc" in out
