"""The shipped demo model: where it is, that it loads the way the examples load it,
and that it learned something (its MLM beats the best unigram guess on real text, and
so does its UniLM next-token prediction of titles it never saw)."""
import os

import numpy as np

from kerasnlp_plus.pretraining import demo_model_path


def test_demo_model_files():
    path = demo_model_path()
    for name in ("config.json", "model.safetensors", "vocab.txt", "MODEL_CARD.md"):
        assert os.path.isfile(os.path.join(path, name)), name
    size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    assert size < 8 * 2**20


def test_demo_model_beats_unigram_on_whole_word_masks(shared_data):
    """Whole-word masks as in its training (package masker, jieba words) on real
    reviews: top-1 accuracy must beat always guessing the most frequent masked token
    of the same sample. (The reviews were part of its training text: this pins that
    the shipped weights load and work, MODEL_CARD.md reports held-out figures.)"""
    from kerasnlp_plus.models import build_transformer_model
    from kerasnlp_plus.pretraining import document_units, mask_whole_words_np, pack_documents
    from kerasnlp_plus.tokenizers import Tokenizer

    path = demo_model_path()
    model = build_transformer_model(path, path, application="unilm", with_mlm=True)
    tokenizer = Tokenizer(os.path.join(path, "vocab.txt"), do_lower_case=True)
    assert model.output.shape[-1] == tokenizer.vocab_size
    lines = (shared_data / "corpus" / "chnsenticorp.txt").read_text(encoding="utf-8").splitlines()[:40]
    packed = pack_documents(document_units(tokenizer, lines), 128, tokenizer.cls_id, tokenizer.sep_id)
    rng = np.random.default_rng(0)
    rows, gold = [], []
    for tokens, words in packed:
        masked, labels = mask_whole_words_np(tokens, words, rng, tokenizer.mask_id, tokenizer.vocab_size, 5)
        rows.append(np.pad(masked, (0, 128 - len(masked))))
        gold.append(np.pad(labels, (0, 128 - len(labels))))
    tokens, gold = np.array(rows), np.array(gold)
    # 'unilm' with all-zero segments is bidirectional: an MLM.
    probs = model.predict([tokens, np.zeros_like(tokens)], verbose=0)
    np.testing.assert_allclose(probs.sum(-1)[tokens > 0], 1.0, atol=1e-3)
    scored = gold > 0
    accuracy = (probs.argmax(-1)[scored] == gold[scored]).mean()
    unigram = np.bincount(gold[scored]).max() / scored.sum()
    assert scored.sum() > 200
    assert accuracy > unigram + 0.04, (accuracy, unigram)


def test_demo_model_writes_titles_teacher_forced():
    """Its UniLM seq2seq pretraining: on 40 CSL pairs held out of its pretraining (the
    selection split, lines 901-940 of examples/data/csl/train.tsv), the next title token
    is predicted well above the best unigram guess of the same sample."""
    import pathlib

    from kerasnlp_plus.models import build_transformer_model
    from kerasnlp_plus.tokenizers import Tokenizer

    path = demo_model_path()
    model = build_transformer_model(path, path, application="unilm", with_mlm=True)
    tokenizer = Tokenizer(os.path.join(path, "vocab.txt"), do_lower_case=True)
    train = pathlib.Path(__file__).resolve().parents[1] / "examples" / "data" / "csl" / "train.tsv"
    pairs = [line.rstrip("\n").split("\t") for line in train.read_text(encoding="utf-8").splitlines()[900:940]]
    rows, segs = [], []
    for title, abstract in pairs:
        src, _ = tokenizer.encode(abstract, maxlen=128)
        tgt, _ = tokenizer.encode(title, maxlen=32)
        rows.append(src + tgt[1:])
        segs.append([0] * len(src) + [1] * (len(tgt) - 1))
    width = max(map(len, rows))
    tokens = np.array([r + [0] * (width - len(r)) for r in rows])
    segments = np.array([s + [0] * (width - len(s)) for s in segs])
    probs = model.predict([tokens, segments], verbose=0)
    scored = segments[:, 1:] == 1  # position t predicts token t+1 of the title
    gold = tokens[:, 1:][scored]
    accuracy = (probs[:, :-1].argmax(-1)[scored] == gold).mean()
    unigram = np.bincount(gold).max() / len(gold)
    assert len(gold) > 500
    assert accuracy > unigram + 0.05, (accuracy, unigram)
