"""The shipped demo model: where it is, that it loads the way the examples load it,
and that it learned something (its MLM beats the best unigram guess on real text)."""
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
