"""Bad input is refused, never silently used (issue 12, items 1 and 3).

1. Position and segment ids beyond their tables: the package's ValueError when called
   eagerly, its message in TensorFlow's InvalidArgumentError in a graph that XLA does
   not compile, and NaN outputs under XLA (where TensorFlow compiles ``Assert`` away and
   clamps gathers; checked here so that a TF change would show). The Generator and the
   examples refuse before running anything, with ``jit_compile`` True and False; and
   ``Transformer.fit``/``evaluate``/``predict`` (and the ``*_on_batch`` methods) check
   numpy data, tf.data datasets and generators on the host, so that every Keras entry
   point raises under XLA too (token ids against the vocabulary as well).
3. Decoder arguments of both decoders (Generator and bert4keras' AutoRegressiveDecoder).

Tiny random models (vocabulary 40, hidden 16, 1 layer).
"""
import pathlib
import re
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasnlp_plus.generation import Generator
from kerasnlp_plus.generation.validation import InputRangeCheck, allowed_token_ids, check_sequence_length
from kerasnlp_plus.layers import PositionEmbedding
from kerasnlp_plus.models import build_transformer_model
from kerasnlp_plus.snippets import AutoRegressiveDecoder

VOCAB, TABLE, END = 40, 12, 3
TINY = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=TABLE)
# TF's graph error escapes the quotes around the layer name
POSITION_MESSAGE = r"position ids must lie in \[0, 12\) for layer \\?'Embedding-Position\\?'.*hierarchical_position=True"
SEGMENT_MESSAGE = r"segment ids must lie in \[0, 2\) for layer \\?'Embedding-Segment\\?' \(type_vocab_size=2\)"


def tiny(application="unilm", seed=1, **overrides):
    keras.utils.set_random_seed(seed)
    model = build_transformer_model(None, application=application, with_mlm=True, **{**TINY, **overrides})
    bias = np.zeros(VOCAB, "float32")
    bias[0] = -30.0  # never generate padding
    model.mlm_bias.set_weights([bias])
    return model


@pytest.fixture(scope="module")
def unilm():
    return tiny()


def _ids(length, batch=2, dtype="int32"):
    return np.random.default_rng(0).integers(5, VOCAB, (batch, length)).astype(dtype)


def _dynamic(model, jit_compile):
    """The model under tf.function with unknown batch and length, so the length check
    cannot happen at trace time and the in-graph check is what is tested."""
    spec = [tf.TensorSpec((None, None), tf.float32)] * 2
    return tf.function(lambda t, s: model([t, s]), input_signature=spec, jit_compile=jit_compile)


# ---------------------------------------------------------------- 1. positions and segments
def test_eager_call_raises_the_package_message_for_positions_and_segments(unilm):
    with pytest.raises(ValueError, match=r"input length 13 exceeds the 12 positions.*hierarchical_position=True"):
        unilm([_ids(13), np.zeros((2, 13), "int32")])
    with pytest.raises(ValueError, match=SEGMENT_MESSAGE + r", got segment ids from 0 to 2"):
        segments = np.zeros((2, 6), "float32")  # float inputs (bert4keras feeds float32) are cast, then checked
        segments[1, 4] = 2
        unilm([_ids(6, dtype="float32"), segments])
    with pytest.raises(ValueError, match=SEGMENT_MESSAGE + r", got segment ids from -1 to 0"):
        unilm([_ids(6), -np.eye(2, 6, dtype="int32")])


def test_graph_without_xla_raises_the_package_message(unilm):
    run = _dynamic(unilm, jit_compile=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match=POSITION_MESSAGE):
        run(_ids(13, dtype="float32"), np.zeros((2, 13), "float32"))
    with pytest.raises(tf.errors.InvalidArgumentError, match=SEGMENT_MESSAGE):
        run(_ids(6, dtype="float32"), np.full((2, 6), 2, "float32"))
    out = run(_ids(12, dtype="float32"), np.ones((2, 12), "float32")).numpy()
    assert np.isfinite(out).all()


def test_under_xla_overflow_is_nan_never_a_reused_row(unilm):
    """XLA compiles Assert to nothing and clamps gathers, so the graph cannot raise: an
    out-of-range position or segment must make the outputs NaN, never the last row."""
    run = _dynamic(unilm, jit_compile=True)
    ok = run(_ids(12, dtype="float32"), np.zeros((2, 12), "float32")).numpy()
    assert np.isfinite(ok).all()
    long = run(_ids(14, dtype="float32"), np.zeros((2, 14), "float32")).numpy()
    # unilm with segment 0 is bidirectional: every position attends to positions 12, 13
    assert np.isnan(long).all()
    seg = np.zeros((2, 12), "float32")  # the shape already compiled above
    seg[0, 5] = 5
    bad_segment = run(_ids(12, dtype="float32"), seg).numpy()
    assert np.isnan(bad_segment[0]).all() and np.isfinite(bad_segment[1]).all()


def test_xla_really_ignores_assert_and_clamps_gathers():
    """The reason for the NaN rows, checked so that a TensorFlow that starts raising
    under XLA is noticed (tf2xla/kernels/assert_op.cc logs "Ignoring Assert operator")."""
    table = tf.constant([[0.0], [1.0], [2.0]])

    def lookup(ids):
        check = tf.debugging.Assert(tf.reduce_all(ids < 3), ["out of range"])
        with tf.control_dependencies([check]):
            return tf.gather(table, tf.identity(ids))

    with pytest.raises(tf.errors.InvalidArgumentError, match="out of range"):
        tf.function(lookup)(tf.constant([5]))
    assert tf.function(lookup, jit_compile=True)(tf.constant([5])).numpy().tolist() == [[2.0]]


def test_custom_position_ids_beyond_the_table():
    model = tiny(application="encoder", custom_position_ids=True)
    tokens = _ids(4)
    positions = np.array([[0, 1, 2, 3], [0, 1, 2, 12]], "int32")
    with pytest.raises(ValueError, match=r"position ids must lie in \[0, 12\).*got position ids from 0 to 12"):
        model([tokens, np.zeros_like(tokens), positions])
    spec = [tf.TensorSpec((None, None), tf.int32)] * 3
    for jit in (False, True):
        run = tf.function(lambda a, b, c: model([a, b, c]), input_signature=spec, jit_compile=jit)
        if jit:
            out = run(tokens, np.zeros_like(tokens), positions).numpy()
            assert np.isnan(out[1]).all() and np.isfinite(out[0]).all()
        else:
            with pytest.raises(tf.errors.InvalidArgumentError, match=POSITION_MESSAGE):
                run(tokens, np.zeros_like(tokens), positions)


def test_hierarchical_positions_extend_to_n_squared_and_no_further():
    layer = PositionEmbedding(4, 2, hierarchical=True, name="pos")
    assert layer(position_ids=np.array([[0, 15]])).shape == (1, 2, 2)
    with pytest.raises(ValueError, match=r"\[0, 16\).*from 0 to 16; .*already reaches its limit of 4 \*\* 2"):
        layer(position_ids=np.array([[0, 16]]))
    out = tf.function(lambda p: layer(position_ids=p), jit_compile=True)(tf.constant([[15, 16]])).numpy()
    assert np.isfinite(out[0, 0]).all() and np.isnan(out[0, 1]).all()


TOKEN_MESSAGE = r"token ids must lie in \[0, 40\) for layer \\?'Embedding-Token\\?' \(vocab_size=40\)"


def _bad_batches():
    """(name, tokens, segments, message) of batches with one kind of out-of-range id;
    each is float32 like bert4keras' inputs."""
    tokens = _ids(6, dtype="float32")
    segments = np.zeros_like(tokens)
    bad_segments = segments.copy()
    bad_segments[1, 3] = 2
    bad_tokens = tokens.copy()
    bad_tokens[0, 2] = VOCAB
    return [
        ("position", _ids(14, dtype="float32"), np.zeros((2, 14), "float32"), POSITION_MESSAGE),
        ("segment", tokens, bad_segments, SEGMENT_MESSAGE),
        ("token", bad_tokens, segments, TOKEN_MESSAGE),
    ]


def _feed(kind, tokens, segments, entry):
    """``entry``'s (fit/evaluate/predict) data of good batches then ``tokens,
    segments`` as numpy arrays, a tf.data.Dataset of unknown length (so that no
    trace-time check applies) or a Python generator."""
    good = _ids(6, dtype="float32")
    # Keras reads the first 2 batches of a generator or PyDataset ahead (to infer their
    # shapes): the bad one comes third, so that the check runs inside the epoch too
    batches = [(good, np.zeros_like(good))] * 2 + [(tokens, segments)]
    element = (lambda t, s: ((t, s),)) if entry == "predict" else (lambda t, s: ((t, s), t))
    if kind == "numpy":
        x = [tokens, segments]
        return dict(x=x, batch_size=2) if entry == "predict" else dict(x=x, y=tokens, batch_size=2)
    if kind == "generator":
        return dict(x=(element(t, s) for t, s in batches), **({} if entry == "evaluate" else {"steps": 3}))
    if kind == "pydataset":
        return dict(x=_Batches([element(t, s) for t, s in batches]))
    spec = (tf.TensorSpec((None, None), tf.float32),) * 2
    signature = (spec,) if entry == "predict" else (spec, tf.TensorSpec((None, None), tf.float32))
    return dict(x=tf.data.Dataset.from_generator(lambda: (element(t, s) for t, s in batches),
                                                 output_signature=signature))


class _Batches(keras.utils.PyDataset):
    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return self.batches[index]


@pytest.fixture(scope="module", params=[False, True], ids=["graph", "xla"])
def compiled_lm(request):
    model = tiny(application="lm")
    model.compile(loss="sparse_categorical_crossentropy", jit_compile=request.param)
    return model


@pytest.mark.parametrize("kind", ["numpy", "dataset", "generator", "pydataset"])
def test_keras_entry_points_raise_for_out_of_range_ids(compiled_lm, kind):
    """fit, evaluate and predict, with and without XLA, raise the package's message for a
    position beyond the table, a segment id >= type_vocab_size and a token id >= the
    vocabulary. Under XLA the layers' checks are compiled away (the model would return
    NaN or clamp), so this is the host-side check of Transformer.fit/evaluate/predict."""
    for name, tokens, segments, message in _bad_batches():
        for entry in ("fit", "evaluate", "predict"):
            feed = _feed(kind, tokens, segments, entry)
            if entry == "fit" and "steps" in feed:
                feed["steps_per_epoch"] = feed.pop("steps")
            if entry == "evaluate":
                feed.pop("steps", None)
            with pytest.raises((ValueError, tf.errors.OpError), match=message):
                getattr(compiled_lm, entry)(**feed, verbose=0)


def test_fit_checks_validation_data_and_the_on_batch_methods(compiled_lm):
    good = _ids(6, dtype="float32")
    for name, tokens, segments, message in _bad_batches():
        with pytest.raises(ValueError, match=message):
            compiled_lm.fit([good, np.zeros_like(good)], good, validation_data=([tokens, segments], tokens), verbose=0)
        with pytest.raises(ValueError, match=message):  # passed by position (batch_size .. validation_split first)
            compiled_lm.fit([good, np.zeros_like(good)], good, 2, 1, 0, None, 0.0, ([tokens, segments], tokens))
        with pytest.raises(ValueError, match=message):
            compiled_lm.train_on_batch([tokens, segments], tokens)
        with pytest.raises(ValueError, match=message):
            compiled_lm.test_on_batch([tokens, segments], tokens)
        with pytest.raises(ValueError, match=message):
            compiled_lm.predict_on_batch({"Input-Token": tokens, "Input-Segment": segments})


def test_host_check_reads_custom_position_ids_and_skips_rotary_models():
    model = tiny(application="encoder", custom_position_ids=True)
    model.compile(jit_compile=True)
    tokens = _ids(4, dtype="float32")
    positions = np.array([[0, 1, 2, 3], [0, 1, 2, 12]], "float32")
    with pytest.raises(ValueError, match=POSITION_MESSAGE.replace(".*", r".*got position ids from 0 to 12.*")):
        model.predict([tokens, np.zeros_like(tokens), positions], verbose=0)
    InputRangeCheck(model).check([_ids(20), np.zeros((2, 20)), positions[:1]])  # the length does not matter
    rotary = tiny(application="encoder", model="roformer")
    InputRangeCheck(rotary).check([_ids(20), np.zeros((2, 20))])  # no position table to overflow
    with pytest.raises(ValueError, match=TOKEN_MESSAGE):
        InputRangeCheck(rotary).check({"Input-Token": np.full((1, 3), VOCAB), "Input-Segment": np.zeros((1, 3))})


@pytest.mark.parametrize("jit_compile", [False, True])
def test_checked_entry_points_train_and_predict_as_before(jit_compile):
    """In-range data: Transformer.fit/predict (checked) give exactly what Keras' own
    fit/predict (called past the override) give: training on numpy, predicting on numpy
    and on a tf.data.Dataset (the checked ``map``)."""
    tokens = np.random.default_rng(3).integers(1, VOCAB, (4, 12)).astype("float32")
    segments = (np.arange(12) >= 6).astype("float32")[None].repeat(4, 0)
    results = []
    for fit, predict in ((lambda m, **k: m.fit(**k), lambda m, x: m.predict(x, verbose=0)),
                         (lambda m, **k: keras.Model.fit(m, **k), lambda m, x: keras.Model.predict(m, x, verbose=0))):
        model = tiny(application="lm", seed=5)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=jit_compile)
        keras.utils.set_random_seed(7)
        history = fit(model, x=[tokens, segments], y=tokens, batch_size=2, epochs=1, shuffle=False, verbose=0)
        results.append((history.history["loss"], [w.numpy() for w in model.weights],
                        predict(model, [tokens, segments]),
                        predict(model, tf.data.Dataset.from_tensor_slices(((tokens, segments),)).batch(2))))
    (loss, weights, out, out_ds), (loss_ref, weights_ref, out_ref, out_ds_ref) = results
    assert np.isfinite(loss).all() and loss == loss_ref
    for w, w_ref in zip(weights, weights_ref):
        np.testing.assert_array_equal(w, w_ref)
    np.testing.assert_array_equal(out, out_ref)
    np.testing.assert_array_equal(out_ds, out_ds_ref)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("jit_compile", [False, True])
def test_generator_checks_source_plus_maxlen_against_the_table(unilm, jit_compile):
    source = np.array([[2] + [7] * 8 + [3]], "int32")  # 10 tokens
    # length_bucket=1: no padding beyond the table (that case has its own test below)
    ok = Generator(unilm, end_id=END, maxlen=2, jit_compile=jit_compile, length_bucket=1)  # 10 + 2 = 12
    assert len(ok.beam_search([source, np.zeros_like(source)], topk=2)[0]) <= 2
    gen = Generator(unilm, end_id=END, maxlen=3, jit_compile=jit_compile)
    match = r"longest source \(10 tokens, row 0\) \+ maxlen \(3\) = 13 exceeds the 12 positions"
    with pytest.raises(ValueError, match=match + r".*hierarchical_position=True"):
        gen.beam_search([source, np.zeros_like(source)], topk=2)
    with pytest.raises(ValueError, match=match):
        gen.random_sample([source, np.zeros_like(source)], n=2, seed=1)
    started = Generator(unilm, end_id=END, maxlen=2, start_id=4, jit_compile=jit_compile)
    with pytest.raises(ValueError, match=r"\(10 tokens, row 0\) \+ start_id \+ maxlen \(2\) = 13"):
        started.greedy([source, np.zeros_like(source)])
    with pytest.raises(ValueError, match=r"segment_ids row 1 holds ids from 0 to 2.*type_vocab_size=2"):
        ok.beam_search([np.ones((2, 4), "int32"), np.array([[0, 0, 1, 1], [0, 0, 2, 2]])], topk=1)


def test_generator_bucket_padding_stays_inside_the_table(unilm):
    """A source that fits (11 + 1 = 12 positions) is not padded by the length bucket
    beyond the table (padded positions are embedded too): the result equals the
    unbucketed one, with and without XLA."""
    source = np.array([[2] + list(range(5, 14)) + [3]], "int32")  # 11 tokens
    inputs = [source, np.zeros_like(source)]
    expected = Generator(unilm, end_id=END, maxlen=1, length_bucket=1, jit_compile=False).greedy(inputs)
    for jit in (False, True):
        got = Generator(unilm, end_id=END, maxlen=1, length_bucket=16, jit_compile=jit).greedy(inputs)
        assert got == expected


def test_check_sequence_length_skips_models_without_a_table(unilm):
    check_sequence_length(unilm, TABLE)
    with pytest.raises(ValueError, match="sequence length 13 exceeds the 12 positions"):
        check_sequence_length(unilm, TABLE + 1)

    class Rotary:  # e.g. a roformer: positions are rotary, there is no table to overflow
        position_embedding = None

    check_sequence_length(Rotary(), 10 ** 6)


def test_autotitle_example_refuses_a_source_longer_than_the_table(tmp_path):
    import os
    import subprocess

    repo = pathlib.Path(__file__).resolve().parents[1]
    args = ["--max-source-len", "600", "--scratch", "--limit-train", "4", "--limit-valid", "2",
            "--output", str(tmp_path / "out"), "--verbose", "0"]
    env = dict(os.environ, PYTHONPATH=str(repo), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    proc = subprocess.run([sys.executable, str(repo / "examples" / "seq2seq_autotitle.py"), *args],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=300)
    assert proc.returncode != 0
    assert re.search(r"ValueError: --max-source-len \+ --max-target-len = 632 exceeds the 512 positions "
                     r"of layer 'Embedding-Position'.*hierarchical_position=True", proc.stdout), proc.stdout[-2000:]
    assert not (tmp_path / "out" / "results.json").exists()


# ---------------------------------------------------------------- 3. decoder arguments
class FixedDecoder(AutoRegressiveDecoder):
    """bert4keras' decoder over fixed next-token probabilities (no model needed):
    token 5 is most likely, then END."""

    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, states):
        probas = np.full((len(output_ids), VOCAB), 0.01)
        probas[:, 5], probas[:, END] = 0.5, 0.3
        return probas / probas.sum(axis=1, keepdims=True)


def _lists(result):
    """A decoder's result (one id array, or a list of them) as lists of ints."""
    rows = result if isinstance(result, list) else [result]
    return [[int(t) for t in row] for row in rows]


@pytest.mark.parametrize("method", ["beam_search", "random_sample"])
def test_autoregressive_decoder_arguments(method):
    def run(decoder, **kwargs):
        if method == "beam_search":
            return decoder.beam_search([[2, 7, 3]], topk=kwargs.pop("topk", 2), **kwargs)
        return decoder.random_sample([[2, 7, 3]], 2, seed=0, **kwargs)

    with pytest.raises(ValueError, match=r"end_id=40 is outside the vocabulary of size 40"):
        run(FixedDecoder(start_id=None, end_id=VOCAB, maxlen=4))
    with pytest.raises(ValueError, match=r"end_id must be an int >= 0, got -1"):
        run(FixedDecoder(start_id=None, end_id=-1, maxlen=4))
    with pytest.raises(ValueError, match=r"start_id must be an int >= 0, got -2"):
        run(FixedDecoder(start_id=-2, end_id=END, maxlen=4))
    for maxlen in (0, -2):
        with pytest.raises(ValueError, match=rf"maxlen must be an int >= 1, got {maxlen} \(the most decoding steps"):
            run(FixedDecoder(start_id=None, end_id=END, maxlen=maxlen))
    decoder = FixedDecoder(start_id=None, end_id=END, maxlen=4)
    # topk above the vocabulary keeps every candidate (numpy's "kth out of bounds" before)
    assert _lists(run(decoder, topk=VOCAB + 1)) == _lists(run(decoder, topk=VOCAB))
    unconstrained = run(decoder)
    # prefix_allowed_tokens returning None means "all allowed", as documented
    assert _lists(run(decoder, prefix_allowed_tokens=lambda b, p: None)) == _lists(unconstrained)
    with pytest.raises(ValueError, match=r"returned token id 45 for batch row 0 \(prefix \[\]\), outside the "
                                         r"vocabulary \[0, 40\)"):
        run(decoder, prefix_allowed_tokens=lambda b, p: [5, 45])


def test_generator_arguments(unilm):
    # host-side checks, made before anything is compiled: jit_compile does not matter
    gen = Generator(unilm, end_id=END, maxlen=2, jit_compile=False, length_bucket=1)
    source = [np.array([[2, 7, 8, 3], [2, 9, 3, 0]]), np.zeros((2, 4), "int32")]
    # topk above the vocabulary keeps every candidate (numpy's "kth out of bounds" before)
    assert gen.beam_search(source, topk=VOCAB + 3) == gen.beam_search(source, topk=VOCAB)
    assert gen.random_sample(source, n=2, topk=VOCAB + 1, seed=0) == gen.random_sample(source, n=2, topk=VOCAB, seed=0)
    with pytest.raises(ValueError, match=r"token_ids row 1 is empty \(no token\)"):
        gen.beam_search([[[2, 7, 3], []]], topk=1)
    with pytest.raises(ValueError, match=r"token_ids row 0 must hold int ids, got dtype float64"):
        gen.beam_search([[[2.5, 7.0]], [[0, 0]]], topk=1)
    unconstrained = gen.beam_search(source, topk=2)
    assert gen.beam_search(source, topk=2, prefix_allowed_tokens=lambda b, p: None) == unconstrained
    assert len(gen.random_sample(source, n=2, seed=0, prefix_allowed_tokens=lambda b, p: None)) == 2
    with pytest.raises(ValueError, match=r"returned token id 40 for batch row 1 \(prefix \[\]\)"):
        gen.beam_search(source, topk=2, prefix_allowed_tokens=lambda b, p: [5, 6] if b == 0 else [5, VOCAB])
    with pytest.raises(ValueError, match=r"returned token id -3 for batch row 0"):
        gen.random_sample(source, n=1, seed=0, prefix_allowed_tokens=lambda b, p: [-3])
    gen.maxlen = 0  # changed after construction: checked at the call
    with pytest.raises(ValueError, match=r"maxlen must be an int >= 1, got 0"):
        gen.beam_search(source, topk=1)


def test_allowed_token_ids_contract():
    assert allowed_token_ids(None, 10, 0, []) is None
    assert allowed_token_ids([], 10, 0, []).size == 0
    assert allowed_token_ids(np.array([1.0, 2.0]), 10, 0, []).tolist() == [1, 2]
    with pytest.raises(ValueError, match=r"returned 'abc' for batch row 3 \(prefix \[1, 2\]\)"):
        allowed_token_ids("abc", 10, 3, [1, 2])
    for bad in ([1.5], [True], [[1], [2, 3]]):
        with pytest.raises(ValueError, match=r"expected a list of token ids or None"):
            allowed_token_ids(bad, 10, 0, [])
