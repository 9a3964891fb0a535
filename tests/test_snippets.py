"""bert4keras-compatible snippets: sequence_padding and AutoRegressiveDecoder semantics,
pinned on a hand-computed toy Markov model."""
import numpy as np
import pytest

from kerasnlp_plus.snippets import AutoRegressiveDecoder, sequence_padding


def test_sequence_padding_post_pre_length_value():
    assert sequence_padding([[1, 2, 3], [4]]).tolist() == [[1, 2, 3], [4, 0, 0]]
    assert sequence_padding([[1, 2, 3], [4]], length=2).tolist() == [[1, 2], [4, 0]]
    assert sequence_padding([[1, 2, 3], [4]], mode="pre").tolist() == [[1, 2, 3], [0, 0, 4]]
    assert sequence_padding([[1, 2], [4]], length=3, value=-1).tolist() == [[1, 2, -1], [4, -1, -1]]
    with pytest.raises(ValueError, match="mode"):
        sequence_padding([[1]], mode="middle")


def test_sequence_padding_two_sequence_dims():
    out = sequence_padding([np.ones((2, 3)), np.full((1, 2), 2.0)], seq_dims=2)
    assert out.shape == (2, 2, 3)
    assert out[1].tolist() == [[2, 2, 0], [0, 0, 0]]
    vectors = sequence_padding([np.ones((2, 4)), np.ones((1, 4))])  # seq_dims=1 keeps the feature dim
    assert vectors.shape == (2, 2, 4) and vectors[1, 1].tolist() == [0, 0, 0, 0]


# Toy Markov "model" over ids 0..3 (3 = end): the next-token distribution depends only on
# the last output token (None at the start).
TABLE = {
    None: [0.0, 0.5, 0.4, 0.1],
    1: [0.0, 0.0, 0.4, 0.6],
    2: [0.0, 0.9, 0.0, 0.1],
    3: [0.0, 0.3, 0.0, 0.7],
}


class Toy(AutoRegressiveDecoder):
    calls = 0

    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, states):
        Toy.calls += 1
        assert len(inputs[0]) == len(output_ids)  # inputs repeated per beam
        return np.array([TABLE[row[-1] if len(row) else None] for row in output_ids])


def test_beam_search_drops_ended_beams_that_are_not_best():
    """topk=2. Step 1 beams: [1] .5, [2] .4. Step 2 candidates: [2,1] .36, [1,3] .30
    (ended, not best: dropped, topk -> 1), [1,2] .20. Step 3: [2,1,3] .216 ended and
    best -> returned, although [1,3] scored higher (bert4keras 0.11 behaviour)."""
    assert Toy(None, 3, maxlen=10).beam_search([[7]], topk=2).tolist() == [2, 1, 3]
    assert Toy(None, 3, maxlen=10).beam_search([[7]], topk=1).tolist() == [1, 3]


def test_beam_search_min_ends_and_maxlen():
    """min_ends=2: [1,3] (.30) is not finished; step 3 keeps [2,1,3] .216 and [1,3,3] .21
    (finished, not best: dropped); step 4 returns [2,1,3,3] (.1512)."""
    assert Toy(None, 3, maxlen=10).beam_search([[7]], topk=2, min_ends=2).tolist() == [2, 1, 3, 3]
    # maxlen=1: the best single token, ended or not.
    assert Toy(None, 3, maxlen=1).beam_search([[7]], topk=2, min_ends=2).tolist() == [1]
    # minlen=3: nothing is checked before 3 tokens; [1,3] continues as [1,3,3] (.21),
    # [2,1,3] (.216) wins at step 3.
    assert Toy(None, 3, maxlen=10, minlen=3).beam_search([[7]], topk=2).tolist() == [2, 1, 3]


def test_start_id_is_kept_in_front_and_hidden_from_constraints():
    class Start(Toy):
        @AutoRegressiveDecoder.wraps(default_rtype="probas")
        def predict(self, inputs, output_ids, states):
            return np.array([TABLE[row[-1] if row[-1] != 9 else None] for row in output_ids])

    decoder = Start(9, 3, maxlen=10)
    assert decoder.beam_search([[7]], topk=1).tolist() == [9, 1, 3]
    seen = []
    out = decoder.beam_search([[7]], topk=1, prefix_allowed_tokens=lambda b, p: seen.append(p) or [2, 3])
    assert out.tolist() == [9, 2, 3] and seen[0] == []


def test_random_sample_topk1_is_greedy_and_counts():
    decoder = Toy(None, 3, maxlen=10)
    assert [s.tolist() for s in decoder.random_sample([[7]], n=3, topk=1)] == [[1, 3]] * 3
    samples = decoder.random_sample([[7]], n=5, topp=0.95, seed=0)
    assert len(samples) == 5
    for s in samples:  # every sample follows the table's nonzero transitions
        prev = None
        for t in s.tolist():
            assert TABLE[prev][t] > 0
            prev = t
    with pytest.raises(ValueError, match="topp"):
        decoder.random_sample([[7]], n=1, topp=1.5)


def test_trie_like_constraint_and_dead_end():
    """Only [2, 2] is allowed, then nothing: the end token is forced."""
    allowed = {(): [2], (2,): [2]}
    out = Toy(None, 3, maxlen=10).beam_search(
        [[7]], topk=2, prefix_allowed_tokens=lambda b, p: allowed.get(tuple(p), [])
    )
    assert out.tolist() == [2, 2, 3]


def test_wraps_temperature_and_rtype():
    class Logits(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype="logits")
        def predict(self, inputs, output_ids, states):
            return np.array([[0.0, np.log(3.0)]])

    decoder = Logits(None, 1, maxlen=1)
    probas, states = decoder.predict([[1]], np.empty((1, 0), int), None, rtype="probas")
    np.testing.assert_allclose(probas, [[0.25, 0.75]])
    assert states is None
    probas, _ = decoder.predict([[1]], np.empty((1, 0), int), None, temperature=0.5, rtype="probas")
    np.testing.assert_allclose(probas, [[0.1, 0.9]])  # softmax([0, 2 log 3])
    logp, _ = decoder.predict([[1]], np.empty((1, 0), int), None)  # default rtype: log-probabilities
    np.testing.assert_allclose(logp, np.log([[0.25, 0.75]]), rtol=1e-6)

    class Probas(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype="probas", use_states=True)
        def predict(self, inputs, output_ids, states):
            return np.array([[0.25, 0.75]]), "state"

    probas, states = Probas(None, 1, 1).predict([[1]], np.empty((1, 0), int), None, temperature=0.5)
    np.testing.assert_allclose(probas, [[0.1, 0.9]])  # p**2 renormalized
    assert states == "state"


def test_last_token_model():
    import keras

    inputs = keras.Input((None, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    decoder = Toy(None, 3, maxlen=2)
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    np.testing.assert_allclose(decoder.last_token(model).predict(x, verbose=0), model.predict(x, verbose=0)[:, -1],
                               rtol=1e-5, atol=1e-6)
    assert decoder.last_token(model) is decoder.last_token(model)
