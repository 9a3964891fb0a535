"""The MLM head at the loss positions only (``Transformer.loss_positions_model``):
the same outputs there, the same loss and gradients as the full head, the positions
the pipeline derives, the pipeline option, and the seq2seq-pair records that the
demo model's pretraining reads."""
import json

import numpy as np
import pytest

import keras
import tensorflow as tf

from kerasnlp_plus.models import build_transformer_model
from kerasnlp_plus.pretraining import preparation, records
from kerasnlp_plus.pretraining.pipeline import gather_loss_positions, loss_positions, make_dataset
from kerasnlp_plus.pretraining.losses import masked_lm_loss

TINY = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=64)


def seq2seq_batch(rng, batch=4, length=20, vocab=60):
    """Random UniLM rows of different source/target/padding lengths."""
    tokens = rng.integers(5, vocab, (batch, length)).astype("int32")
    segments = np.zeros_like(tokens)
    for b in range(batch):
        n = length - 3 * b  # row b has 3b padding positions
        s = 5 + b
        tokens[b, n:] = 0
        segments[b, s:n] = 1
    labels = np.concatenate([tokens[:, 1:], np.zeros((batch, 1), "int32")], axis=1)
    weights = np.concatenate([segments[:, 1:], np.zeros((batch, 1), "int32")], axis=1).astype("float32")
    return tokens, segments, labels, weights


@pytest.mark.parametrize("family,application", [("bert", "unilm"), ("bert", "encoder"), ("albert", "lm")])
def test_outputs_at_positions_equal_the_full_outputs(family, application):
    keras.utils.set_random_seed(1)
    model = build_transformer_model(None, model=family, application=application, with_mlm=True, **TINY)
    tokens, segments, labels, weights = seq2seq_batch(np.random.default_rng(0))
    full = model([tokens, segments]).numpy()
    inputs, _, _ = gather_loss_positions({"Input-Token": tokens, "Input-Segment": segments},
                                         tf.constant(labels), tf.constant(weights))
    positions = inputs["Input-Positions"].numpy()
    picked = model.loss_positions_model()({k: tf.constant(v) for k, v in inputs.items()}).numpy()
    assert picked.shape == positions.shape + (TINY["vocab_size"],)
    np.testing.assert_allclose(picked, np.take_along_axis(full, positions[..., None], axis=1), atol=1e-6)
    # the model itself is unchanged by building the view
    np.testing.assert_allclose(model([tokens, segments]).numpy(), full, atol=0)


def test_loss_positions_order_padding_and_bucketing():
    weights = np.zeros((3, 40), "float32")
    weights[0, [3, 4, 5]] = 1
    weights[1, 10:21] = 1  # 11 scored -> P = 16
    positions = loss_positions(tf.constant(weights), multiple=8).numpy()
    assert positions.shape == (3, 16)
    assert list(positions[0, :3]) == [3, 4, 5] and list(positions[1, :11]) == list(range(10, 21))
    # the padding positions are distinct unscored positions (weight 0 after the gather)
    picked = np.take_along_axis(weights, positions, axis=1)
    assert picked.sum(axis=1).tolist() == [3, 11, 0]
    assert all(len(set(row)) == len(row) for row in positions)
    # never longer than the sequence
    assert loss_positions(tf.constant(np.ones((2, 5), "float32")), multiple=8).shape == (2, 5)


def test_same_loss_and_same_gradients_as_the_full_head():
    keras.utils.set_random_seed(3)
    model = build_transformer_model(None, application="unilm", with_mlm=True, dropout_rate=0.0,
                                     attention_dropout_rate=0.0, **TINY)
    view = model.loss_positions_model()
    tokens, segments, labels, weights = seq2seq_batch(np.random.default_rng(2))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight")
    x = {"Input-Token": tf.constant(tokens), "Input-Segment": tf.constant(segments)}
    gx, gy, gw = gather_loss_positions(x, tf.constant(labels), tf.constant(weights))

    def loss_and_grads(fn):
        with tf.GradientTape() as tape:
            loss = fn()
        return float(loss), tape.gradient(loss, model.trainable_weights)

    full, full_grads = loss_and_grads(lambda: loss_fn(labels, model([tokens, segments]), sample_weight=weights))
    picked, picked_grads = loss_and_grads(lambda: loss_fn(gy, view(gx), sample_weight=gw))
    # bert4keras' loss: the mean cross-entropy over the target tokens
    probs = model([tokens, segments]).numpy()
    nll = -np.log(np.take_along_axis(probs, labels[..., None], axis=-1)[..., 0])
    assert full == pytest.approx(float((nll * weights).sum() / weights.sum()), abs=1e-5)
    assert picked == pytest.approx(full, abs=1e-5)
    for variable, a, b in zip(model.trainable_weights, full_grads, picked_grads):
        a = tf.convert_to_tensor(a).numpy()
        b = tf.convert_to_tensor(b).numpy()
        np.testing.assert_allclose(b, a, atol=1e-6, err_msg=variable.path)
    assert any(np.abs(tf.convert_to_tensor(g).numpy()).max() > 0 for g in picked_grads)


def test_model_without_mlm_head_is_refused():
    model = build_transformer_model(None, **TINY)
    with pytest.raises(ValueError, match="with_mlm"):
        model.loss_positions_model()


def test_training_view_checks_ids_on_the_host_under_xla():
    """Under XLA the embeddings' own checks are compiled away; the training view, like
    the model, checks token and segment ids on the host before the compiled step."""
    keras.utils.set_random_seed(1)
    model = build_transformer_model(None, application="unilm", with_mlm=True, **TINY)
    view = model.loss_positions_model()
    view.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=True)
    tokens, segments, labels, _ = seq2seq_batch(np.random.default_rng(0))
    positions = np.tile(np.arange(3, 8, dtype="int32"), (len(tokens), 1))
    targets = np.take_along_axis(labels, positions, axis=1)
    view.fit([tokens, segments, positions], targets, verbose=0)  # in range: trains
    bad_tokens, bad_segments = tokens.copy(), segments.copy()
    bad_tokens[0, 2] = TINY["vocab_size"]
    bad_segments[1, 3] = 2
    for x in ([bad_tokens, segments, positions], [tokens, bad_segments, positions]):
        with pytest.raises(ValueError, match="Embedding-(Token|Segment)|vocab|segment"):
            view.fit(x, targets, verbose=0)
        with pytest.raises(ValueError, match="Embedding-(Token|Segment)|vocab|segment"):
            view.train_on_batch(x, targets)


@pytest.fixture(scope="module")
def pair_data(tmp_path_factory, vocab_path):
    folder = tmp_path_factory.mktemp("pairs")
    path = folder / "pairs.tsv"
    path.write_text("深度学习的应用\t本文研究了深度学习在图像识别中的应用。\n"
                    "只有一列\n"
                    "短标题\t" + "很长的正文" * 40 + "\n", encoding="utf-8")
    bad = []
    meta = preparation.prepare([str(path)], str(folder / "out"), str(vocab_path), task="unilm",
                               doc_format="pairs", simplified_vocab=True, seq_len=64, progress=False,
                               on_bad_line=bad.append)
    return folder / "out", meta, bad


def test_pairs_become_unilm_records(pair_data):
    from kerasnlp_plus.tokenizers import Tokenizer

    out, meta, bad = pair_data
    assert [str(b) for b in bad] == [f"{bad[0].path}:2: skipped: expected target<TAB>source, got 1 field(s)"]
    assert meta["counts"]["train"]["examples"] == 2 and meta["doc_format"] == "pairs"
    tokenizer = Tokenizer(str(out / "vocab.txt"), do_lower_case=True)
    spec = records.parse_spec(meta)
    rows = [{k: v.numpy() for k, v in tf.io.parse_single_example(r, spec).items()}
            for r in tf.data.TFRecordDataset([str(out / meta["counts"]["train"]["files"][0])])]
    first, second = rows
    src, _ = tokenizer.encode("本文研究了深度学习在图像识别中的应用。")
    tgt, _ = tokenizer.encode("深度学习的应用")
    n = len(src) + len(tgt) - 1
    assert list(first["token_ids"][:n]) == src + tgt[1:] and not first["token_ids"][n:].any()
    assert list(first["segment_ids"][:n]) == [0] * len(src) + [1] * (len(tgt) - 1)
    # the long source is cut so that the whole target still fits
    assert second["token_ids"][-1] != 0 and second["segment_ids"].sum() == len(tokenizer.encode("短标题")[0]) - 1


def test_pipeline_gathers_and_keeps_the_normalized_loss(pair_data):
    out, meta, _ = pair_data
    keras.utils.set_random_seed(4)
    model = build_transformer_model(None, application="unilm", with_mlm="linear", dropout_rate=0.0,
                                     attention_dropout_rate=0.0, vocab_size=meta["vocab_size"],
                                     hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=64)
    kw = dict(shuffle_buffer=0, repeat=False, drop_remainder=False, meta=meta)
    full = next(iter(make_dataset(str(out), 2, **kw)))
    gathered = next(iter(make_dataset(str(out), 2, gather_positions=True, **kw)))
    assert "Input-Positions" in gathered[0]
    # the loss pretraining compiles with: the padding mask of the full output is not applied
    loss = masked_lm_loss()
    a = float(loss(full[1], model(full[0]), sample_weight=full[2]))
    b = float(loss(gathered[1], model.loss_positions_model()(gathered[0]), sample_weight=gathered[2]))
    assert b == pytest.approx(a, abs=1e-5)
    assert json.loads(json.dumps(meta))["task"] == "unilm"


def test_run_pretraining_with_gathered_positions(pair_data, tmp_path):
    """The whole pretraining run (fit, backups, export, summary) through the gathered
    view, with MLM batches of another length mixed in, exporting the full model."""
    from kerasnlp_plus.pretraining.training import run_pretraining

    out, meta, _ = pair_data
    # a second folder read in alternate batches (--mix-data): MLM records of the same vocab
    mix = tmp_path / "mlm"
    text = tmp_path / "docs.txt"
    text.write_text("本文研究了深度学习在图像识别中的应用。\n很长的正文很长的正文。\n", encoding="utf-8")
    preparation.prepare([str(text)], str(mix), meta["vocab_source"], task="mlm", dynamic_masking=True,
                        simplified_vocab=True, seq_len=32, progress=False)
    strategy = tf.distribute.get_strategy()
    net, summary = run_pretraining(
        str(out), str(tmp_path / "run"), strategy, steps=2, batch_size=2, checkpoint_every=1,
        size=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                  max_position_embeddings=64),
        dropout_rate=0.0, learning_rate=1e-3, warmup_steps=1, shuffle_buffer=0, verbose=0,
        gather_positions=True, mix_data_dir=str(mix),
    )
    assert summary["steps"] == 2 and len(summary["history"]["loss"]) == 2
    assert (tmp_path / "run" / "export" / "model.keras").is_file()
    assert net.with_mlm == "linear" and net.output.shape[-1] == meta["vocab_size"]
