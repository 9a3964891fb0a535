"""Generator (cached, batched) against the uncached bert4keras decoder, constraints,
length penalty by exhaustive search, and bad input.

Tiny random models and real CSL sources from ``generation_fixtures.py``.
"""
import itertools

import keras
import numpy as np
import pytest
from generation_fixtures import END, MAXLEN, TINY, assert_generator_matches_uncached, padded, seq2seq_decoder
from generation_fixtures import abstracts, lm, sources, tokenizer, unilm  # noqa: F401  (fixtures)

from kerasnlp_plus.generation import Generator, Trie
from kerasnlp_plus.models import build_transformer_model

JIT = dict(jit_compile=False)  # XLA compiles per shape; only the main equality test uses it


# --- the bert4keras title-generation script, only its imports changed ------------------------
def test_bert4keras_autotitle_script_runs_and_matches_generator(unilm, tokenizer, abstracts):
    import numpy as np  # noqa: F811  (the script's own imports, as in bert4keras)

    from kerasnlp_plus.snippets import AutoRegressiveDecoder  # noqa: F811

    model, maxlen = unilm, 64 + MAXLEN

    class AutoTitle(AutoRegressiveDecoder):
        """seq2seq解码器"""

        @AutoRegressiveDecoder.wraps(default_rtype="probas")
        def predict(self, inputs, output_ids, states):
            token_ids, segment_ids = inputs
            token_ids = np.concatenate([token_ids, output_ids], 1)
            segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
            return self.last_token(model).predict([token_ids, segment_ids], verbose=0)

        def generate(self, text, topk=1):
            max_c_len = maxlen - self.maxlen
            token_ids, segment_ids = tokenizer.encode(text, maxlen=max_c_len)
            output_ids = self.beam_search([token_ids, segment_ids], topk=topk)  # 基于beam search
            return tokenizer.decode(output_ids)

    autotitle = AutoTitle(start_id=None, end_id=tokenizer._token_end_id, maxlen=MAXLEN)
    titles = [autotitle.generate(text, topk=2) for text in abstracts[:2]]
    ids = Generator(unilm, END, MAXLEN, **JIT).beam_search(padded([tokenizer.encode(t, maxlen=64) for t in abstracts[:2]]),
                                                    topk=2)
    assert titles == [tokenizer.decode(x) for x in ids]
    assert all(isinstance(t, str) for t in titles)


# --- equality with the uncached path ------------------------------------------------------
@pytest.mark.parametrize("application", ["unilm", "lm"])
def test_generator_beam_search_equals_uncached_decoder(application, request, sources):
    model = request.getfixturevalue(application)
    assert_generator_matches_uncached(model, sources, jit_compile=application == "unilm")  # both graph kinds


def test_cached_steps_equal_full_forward_on_padded_batch(unilm, sources):
    """Teacher-forced cached steps (2 copies per row, rows swapped every step by the
    parent gather) give the log-probabilities of each row's unpadded full pass."""
    generator = Generator(unilm, END, 6, **JIT)
    session, batch, _ = generator._start(padded(sources), 2, 1.0, "logits")
    rng = np.random.default_rng(0)
    forced = rng.integers(106, 21128, size=(batch, 5))
    n = batch * 2
    holder = np.arange(n) // 2  # which source each cache row holds
    got = [session.scores[::2]]
    for step in range(5):
        parents = np.arange(n).reshape(batch, 2)[:, ::-1].reshape(-1)  # swap the two copies
        holder = holder[parents]
        session.advance(forced[holder, step].astype("int32"), parents.astype("int32"), column=step)
        got.append(session.scores[::2])
    for b, (token_ids, segment_ids) in enumerate(sources):
        full_ids = np.array([token_ids + list(forced[b])])
        full_segs = np.array([segment_ids + [1] * 5])
        probs = unilm.predict([full_ids, full_segs], verbose=0)[0, len(token_ids) - 1:]
        for step in range(6):
            np.testing.assert_allclose(got[step][b], np.log(probs[step] + 1e-12), atol=2e-4, rtol=1e-4)


def test_linear_head_and_start_id_match_uncached(sources):
    """with_mlm='linear' (logits) and a start_id: same ids as the uncached decoder."""
    keras.utils.set_random_seed(5)
    model = build_transformer_model(None, application="unilm", with_mlm="linear", **TINY)
    bias = np.zeros(model.vocab_size, "float32")
    bias[END], bias[0] = 9.0, -30.0
    model.mlm_bias.set_weights([bias])

    decoder = seq2seq_decoder(model, maxlen=6, default_rtype="logits", start_id=101)
    expected = [[int(t) for t in decoder.beam_search([t, s], topk=2, temperature=0.7)] for t, s in sources[:3]]
    got = Generator(model, END, 6, start_id=101, **JIT).beam_search(padded(sources[:3]), topk=2, temperature=0.7)
    assert got == expected
    assert all(x[0] == 101 for x in got)


# --- length penalty / pool of ended beams: exhaustive check ----------------------------------
@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.5])
def test_pool_beam_search_finds_exhaustive_optimum(alpha):
    """Vocabulary of 8, maxlen 3, 64 beams (more than the 36 live prefixes): beam search
    with a pool of ended beams must return the best of all hypotheses by
    ``sum(log p) / length**alpha``, computed here from full forward passes."""
    keras.utils.set_random_seed(11)
    end = 3
    model = build_transformer_model(None, application="lm", with_mlm=True, vocab_size=8, hidden_size=16,
                                    num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                    initializer_range=1.0)
    source = [1, 2, 4, 5]
    tokens = list(range(1, 8))  # 0 is padding: excluded from the search and from the answer
    paths = np.array(list(itertools.product(tokens, repeat=3)))
    full = np.concatenate([np.tile(source, (len(paths), 1)), paths], 1)
    probs = model.predict([full, np.zeros_like(full)], verbose=0)
    logp = np.log(probs[:, len(source) - 1:len(source) + 2] + 1e-12)  # predicts x1, x2, x3
    best, best_score = None, -np.inf
    for path, lp in zip(paths, logp):
        steps = [lp[i, path[i]] for i in range(3)]
        length = next((i + 1 for i in range(3) if path[i] == end), 3)
        score = sum(steps[:length]) / length ** alpha
        if score > best_score:
            best, best_score = list(path[:length]), score
    generator = Generator(model, end, 3, length_penalty=alpha, keep_finished=True, **JIT)
    got = generator.beam_search([np.array([source])], topk=64, prefix_allowed_tokens=lambda b, prefix: tokens)
    assert got == [[int(t) for t in best]]


# --- constraints ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def title_keys(shared_data, tokenizer):
    """Keys from real CSL titles: the first 4 tokens of 30 titles, [SEP]-terminated,
    sharing prefixes where the titles do."""
    keys = []
    with open(shared_data / "csl" / "csl_title_dev.tsv", encoding="utf-8") as f:
        for _, line in zip(range(30), f):
            ids = tokenizer.encode(line.split("\t")[0])[0][1:5]
            keys.append(ids + [END])
    return keys


def test_trie_beam_search_outputs_are_trie_keys_in_both_decoders(unilm, sources, title_keys):
    trie = Trie()
    for key in title_keys:
        trie.add(key)
    got = Generator(unilm, END, MAXLEN, **JIT).beam_search(padded(sources), topk=3, trie=trie)
    assert all(ids in trie for ids in got)
    # The uncached decoder on two of the rows (it is slow): same constrained beams.
    expected = [[int(t) for t in seq2seq_decoder(unilm).beam_search([t, s], topk=3, trie=trie)]
                for t, s in sources[:2]]
    assert got[:2] == expected


def test_prefix_without_continuation_ends_instead_of_crashing(unilm, sources):
    """Keys without [SEP]: once a key is complete nothing may follow, so [SEP] is forced."""
    keys = [[1000, 2000, 3000], [1000, 2001], [4000]]
    trie = Trie()
    for key in keys:
        trie.add(key)
    for out in Generator(unilm, END, MAXLEN, **JIT).beam_search(padded(sources), topk=2, trie=trie):
        assert out[-1] == END and out[:-1] in keys
    samples = Generator(unilm, END, MAXLEN, **JIT).random_sample(padded(sources), n=3, trie=trie, seed=0)
    assert all(s[-1] == END and s[:-1] in keys for row in samples for s in row)
    out = seq2seq_decoder(unilm).beam_search(list(sources[0]), topk=2, trie=trie)
    assert out[-1] == END and list(out[:-1]) in keys


def test_subject_sep_predicate_sep_ends_after_second_sep(lm, sources):
    """KgCLUE-style keys ``S [SEP] P [SEP]`` decoded with min_ends=2."""
    keys = [[700, 701, END, 800, END], [700, 702, END, 801, 802, END], [710, END, 803, END]]
    trie = Trie()
    for key in keys:
        trie.add(key)
    generator = Generator(lm, END, MAXLEN, **JIT)
    for out in generator.beam_search(padded(sources), topk=3, trie=trie, min_ends=2):
        assert out in keys
    for row in generator.random_sample(padded(sources), n=4, trie=trie, min_ends=2, seed=1):
        assert all(s in keys for s in row)
    decoder = seq2seq_decoder(lm)
    assert [int(t) for t in decoder.beam_search(list(sources[1]), topk=3, trie=trie, min_ends=2)] in keys
    assert all([int(t) for t in s] in keys
               for s in decoder.random_sample(list(sources[1]), n=3, trie=trie, min_ends=2, seed=0))


def test_prefix_allowed_tokens_uses_the_batch_index(unilm, sources):
    """A copy constraint: row b may only use tokens of its own source (and [SEP])."""
    allowed = [sorted(set(t) - {101, 102}) + [END] for t, _ in sources]
    calls = set()

    def fn(batch_index, prefix):
        calls.add(batch_index)
        return allowed[batch_index]

    generator = Generator(unilm, END, MAXLEN, **JIT)
    for b, out in enumerate(generator.beam_search(padded(sources), topk=2, prefix_allowed_tokens=fn)):
        assert set(out) <= set(allowed[b])
    assert calls == set(range(len(sources)))
    for b, row in enumerate(generator.random_sample(padded(sources), n=2, topp=0.9, prefix_allowed_tokens=fn)):
        assert all(set(s) <= set(allowed[b]) for s in row)


# --- many sources in length-sorted batches ---------------------------------------------------
def test_beam_search_many_restores_order_and_equals_one_by_one(unilm, sources):
    """Batches of 3 over 4 sources of lengths 64, 40, 23, 51: sorted, the batches are
    (23, 40, 51) and (64), so the results must be put back in input order."""
    generator = Generator(unilm, END, MAXLEN, **JIT)
    seen = []

    def progress(batches):
        seen.extend(batches)
        return batches

    got = generator.beam_search_many(sources, topk=2, batch_size=3, progress=progress)
    assert seen == [[2, 1, 3], [0]]
    assert got == [generator.beam_search([[t], [s]], topk=2)[0] for t, s in sources]
    # plain id lists (segment 0, the same here) give the same outputs
    assert generator.beam_search_many([t for t, _ in sources], topk=2, batch_size=3) == got


def test_beam_search_many_maps_prefix_allowed_tokens_to_source_indices(unilm, sources):
    """A copy constraint indexed by source: row b of a batch is source indices[b]."""
    allowed = [sorted(set(t) - {101, 102}) + [END] for t, _ in sources]
    generator = Generator(unilm, END, MAXLEN, **JIT)
    got = generator.beam_search_many(sources, topk=2, batch_size=2,
                                     prefix_allowed_tokens=lambda i, prefix: allowed[i])
    for i, out in enumerate(got):
        assert set(out) <= set(allowed[i])
    alone = [generator.beam_search([[t], [s]], topk=2, prefix_allowed_tokens=lambda b, prefix, i=i: allowed[i])[0]
             for i, (t, s) in enumerate(sources)]
    assert got == alone
    with pytest.raises(ValueError, match=r"batch_size must be an int >= 1, got 0"):
        generator.beam_search_many(sources, batch_size=0)
    with pytest.raises(ValueError, match=r"sources\[1\] has 40 token ids but 3 segment ids"):
        generator.beam_search_many([sources[0], (sources[1][0], [0, 0, 0])])
    with pytest.raises(ValueError, match=r"sources\[1\] must be a non-empty list of token ids"):
        generator.beam_search_many([sources[0][0], []])


# --- sampling ------------------------------------------------------------------------------
def test_random_sample_shapes_seed_and_topk1_is_greedy(unilm, sources):
    generator = Generator(unilm, END, MAXLEN, **JIT)
    samples = generator.random_sample(padded(sources), n=3, topk=50, seed=7)
    assert len(samples) == len(sources) and all(len(row) == 3 for row in samples)
    assert all(1 <= len(s) <= MAXLEN for row in samples for s in row)
    assert samples == generator.random_sample(padded(sources), n=3, topk=50, seed=7)
    greedy = generator.greedy(padded(sources))
    assert generator.random_sample(padded(sources), n=2, topk=1, seed=0) == [[g, g] for g in greedy]


def test_no_repeat_ngram_size(lm, sources):
    out = Generator(lm, END, MAXLEN, no_repeat_ngram_size=2, **JIT).beam_search(padded(sources), topk=2)
    for ids in out:
        bigrams = list(zip(ids, ids[1:]))
        assert len(bigrams) == len(set(bigrams))


# --- bad input -----------------------------------------------------------------------------
def test_bad_arguments_raise_value_errors(unilm, sources):
    with pytest.raises(ValueError, match=r"end_id=21128 .*vocabulary"):
        Generator(unilm, 21128, MAXLEN)
    with pytest.raises(ValueError, match=r"end_id must be an int >= 0, got -1"):
        Generator(unilm, -1, MAXLEN)
    generator = Generator(unilm, END, MAXLEN, **JIT)
    with pytest.raises(ValueError, match=r"topk must be an int >= 1, got 0"):
        generator.beam_search(padded(sources), topk=0)
    with pytest.raises(ValueError, match=r"n must be an int >= 1, got 0"):
        generator.random_sample(padded(sources), n=0)
    with pytest.raises(ValueError, match=r"topk must be an int >= 1, got 0"):
        seq2seq_decoder(unilm).beam_search(list(sources[0]), topk=0)
    empty = padded(sources[:2])
    empty[0][1] = 0
    with pytest.raises(ValueError, match=r"token_ids row 1 is an empty source"):
        generator.beam_search(empty, topk=1)
    with pytest.raises(ValueError, match=r"token_ids is an empty batch"):
        generator.beam_search([np.zeros((0, 5), "int32")], topk=1)


def test_models_that_cannot_generate_are_rejected():
    small = dict(TINY, vocab_size=50)
    # application='unilm' implies with_mlm=True (bert4keras), so a UniLM model can always generate
    assert build_transformer_model(None, application="unilm", **small).with_mlm is True
    with pytest.raises(ValueError, match=r"application='encoder'"):
        Generator(build_transformer_model(None, application="encoder", with_mlm=True, **small), 3, 5)
