"""The compiled decoding program: device trie = host trie, no retracing across batch
sizes and lengths (``beam_search_many`` included), and the SavedModel export run
in a fresh process that does not import kerasnlp_plus.

Tiny random models and real CSL sources from ``generation_fixtures.py``.
"""
import json
import logging
import subprocess
import sys

import numpy as np
import pytest
from generation_fixtures import END, MAXLEN, padded
from generation_fixtures import abstracts, five_sources, lm, tokenizer, unilm  # noqa: F401  (fixtures)

from kerasnlp_plus.generation import Generator, Trie


@pytest.fixture(scope="module")
def sources(five_sources):
    """Five sources (64, 40, 23, 51 and 17 tokens)."""
    return five_sources


def random_trie(rng, host_outputs, n_keys=300, min_ends=1):
    """Random keys plus the unconstrained outputs and branches off them, so the
    constrained search is neither trivial nor cut short."""
    trie = Trie()
    for _ in range(n_keys):
        key = list(rng.integers(106, 21128, size=rng.integers(1, MAXLEN)))
        trie.add(key + [END] * min_ends)
    for out in host_outputs:
        trie.add(out)
        for cut in range(1, len(out)):
            trie.add(list(out[:cut]) + list(rng.integers(106, 21128, size=3)) + [END] * min_ends)
    return trie


def test_device_trie_equals_host_trie(lm, sources, min_ends=2):
    """min_ends=2 (``S [SEP] P [SEP]``); min_ends=1 is compared with the uncached
    decoder in test_generation.py."""
    rng = np.random.default_rng(min_ends)
    device = Generator(lm, END, MAXLEN, jit_compile=False)
    host = Generator(lm, END, MAXLEN, jit_compile=False, device_trie_max_keys=0)  # host loop
    trie = random_trie(rng, device.beam_search(padded(sources), topk=3), min_ends=min_ends)
    assert not host._uses_program(trie, None) and device._uses_program(trie, None)
    for topk in (3,):
        got = device.beam_search(padded(sources), topk=topk, trie=trie, min_ends=min_ends)
        assert got == host.beam_search(padded(sources), topk=topk, trie=trie, min_ends=min_ends)
        assert all(out in trie or out[-1] == END for out in got)
    # a key that needs a forced [SEP] (no continuation, no [SEP] stored)
    small = Trie.from_iterable([[1000, 2000], [1000, 2001, 3000], [4000]])
    got = device.beam_search(padded(sources), topk=2, trie=small)
    assert got == host.beam_search(padded(sources), topk=2, trie=small)
    assert all(out[-1] == END and out[:-1] in small for out in got)


def test_a_trie_id_outside_the_vocabulary_is_refused_on_both_paths(lm, sources):
    """The host loop refuses such an id when the search reaches it; the device
    automaton refuses it before decoding, naming the id and the prefix before it
    (it used to drop the edge silently)."""
    vocab = lm.vocab_size
    device = Generator(lm, END, MAXLEN, jit_compile=False)
    deep = Trie.from_iterable([[1000, 2000, 3000], [1000, 2000, vocab + 5], [4000]])
    with pytest.raises(ValueError, match=rf"trie holds token id {vocab + 5} after the prefix \[1000, 2000\], "
                                         rf"outside the vocabulary \[0, {vocab}\)"):
        device.beam_search(padded(sources[:1]), topk=2, trie=deep)
    with pytest.raises(ValueError, match=rf"trie holds token id {vocab + 5} after the prefix \[1000, 2000\]"):
        device.random_sample(padded(sources[:1]), n=1, seed=0, trie=deep)
    at_root = Trie.from_iterable([[1000, 2000], [vocab + 1]])
    with pytest.raises(ValueError, match=rf"trie holds token id {vocab + 1} after the prefix \[\]"):
        device.beam_search(padded(sources[:1]), topk=2, trie=at_root)
    host = Generator(lm, END, MAXLEN, jit_compile=False, device_trie_max_keys=0)
    with pytest.raises(ValueError, match=rf"returned token id {vocab + 1} for batch row 0 \(prefix \[\]\)"):
        host.beam_search(padded(sources[:1]), topk=2, trie=at_root)
    assert device.beam_search(padded(sources[:1]), topk=2, trie=Trie.from_iterable([[1000, 2000]]))  # a valid trie


def test_max_length_cuts_like_a_shorter_generator(unilm, sources):
    long = Generator(unilm, END, MAXLEN, jit_compile=False)
    short = Generator(unilm, END, 4, jit_compile=False)
    ids, lengths, _ = long._run_program(padded(sources), 3, 1, 1.0, None, max_length=4)
    assert [list(r[:n]) for r, n in zip(ids, lengths)] == short.beam_search(padded(sources), topk=3)
    assert (lengths <= 4).all() and (ids[:, 4:] == 0).all()


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_varied_batches_trace_once_and_never_warn_about_retracing(unilm, sources):
    """Many batch sizes and source lengths, with and without a trie: one trace per
    program, a handful of XLA shape classes, and no retracing warning (the
    examples decode through ``Generator.beam_search_many``, driven here as they drive it)."""
    records = _Records()
    logger = logging.getLogger("tensorflow")
    logger.addHandler(records)
    try:
        # Tracing does not depend on XLA; without it the test skips ~10 XLA compiles.
        generator = Generator(unilm, END, MAXLEN, jit_compile=False)
        trie = Trie.from_iterable([[700, 701, END], [700, 702, END], [710, END]])
        srcs = [t for t, _ in sources]
        for n in (1, 2, 3, 5):
            for cut in (9, 20, 64):
                batch = [s[:cut] for s in srcs[:n]]
                generator.beam_search_many(batch, topk=2, batch_size=3)
                generator.beam_search_many(batch, topk=2, batch_size=3, trie=trie)
        counts = {key: fn.experimental_get_tracing_count() for key, fn in generator._programs.items()}
        assert len(counts) == 2 and all(c == 1 for c in counts.values()), counts
    finally:
        logger.removeHandler(records)
    assert not [m for m in records.messages if "retracing" in m], records.messages


# The checking process imports TensorFlow only and says so.
CHECK = r"""
import json, sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
data = json.loads(sys.stdin.read())
tok, seg = tf.constant(data["token_ids"], tf.int32), tf.constant(data["segment_ids"], tf.int32)
out = loaded.signatures["serving_default"](token_ids=tok, segment_ids=seg)
short = loaded.signatures["serve_max_length"](token_ids=tok, segment_ids=seg, max_length=tf.constant(3))
assert not any(m.startswith("kerasnlp_plus") for m in sys.modules), "kerasnlp_plus was imported"
print(json.dumps({
    "ids": out["ids"].numpy().tolist(), "lengths": out["lengths"].numpy().tolist(),
    "scores": out["scores"].numpy().tolist(),
    "short": [r[:n] for r, n in zip(short["ids"].numpy().tolist(), short["lengths"].numpy().tolist())],
}))
"""


def test_export_reproduces_outputs_in_a_process_without_the_package(lm, sources, tmp_path, with_trie=True):
    generator = Generator(lm, END, MAXLEN, jit_compile=False)
    trie = random_trie(np.random.default_rng(5), generator.beam_search(padded(sources), topk=3)) if with_trie else None
    path = generator.export(tmp_path / "decoder", topk=3, trie=trie)
    token_ids, segment_ids = padded(sources)
    run = subprocess.run(
        [sys.executable, "-c", CHECK, path],
        input=json.dumps({"token_ids": token_ids.tolist(), "segment_ids": segment_ids.tolist()}),
        capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONNOUSERSITE": "1"},
        cwd=tmp_path,  # not the repository: the package cannot be imported by accident
    )
    assert run.returncode == 0, run.stderr[-3000:]
    served = json.loads(run.stdout.strip().splitlines()[-1])
    kwargs = {"trie": trie} if with_trie else {}
    expected = generator.beam_search(padded(sources), topk=3, **kwargs)
    assert [r[:n] for r, n in zip(served["ids"], served["lengths"])] == expected
    ids, lengths, scores = generator._run_program(padded(sources), 3, 1, 1.0, trie)
    # Same ids; the scores agree to float32 rounding (the saved graph is optimized
    # on its own, so a fused op may round its last bit differently).
    np.testing.assert_allclose(served["scores"], scores, rtol=1e-6)
    short = Generator(lm, END, 3, jit_compile=False).beam_search(padded(sources), topk=3, **kwargs)
    assert served["short"] == short
    with pytest.raises(FileExistsError, match="decoder"):
        generator.export(tmp_path / "decoder", topk=3)


def test_lookahead_node_scores_steer_to_the_best_covering_key(lm, sources):
    from kerasnlp_plus.generation.lookahead import coverage_scores

    srcs = [t for t, _ in sources]
    keys = [[7000, 7001, END], [7002, END]] + [[s[1], s[2], s[3], END] for s in srcs]  # key b copies source b
    trie = Trie.from_iterable(keys)
    generator = Generator(lm, END, MAXLEN, jit_compile=False)
    scores = coverage_scores(trie, srcs, weight=100.0)
    offsets, _, _ = trie.to_csr()
    assert scores.shape == (len(srcs), len(offsets) - 1)
    # the root holds the best coverage of any key: the 3 copied ids (distinct or not)
    assert all(scores[b, 0] == 100.0 * 3 for b in range(len(srcs)))
    plain = generator.beam_search(padded(sources), topk=2, trie=trie)
    steered = generator.beam_search(padded(sources), topk=2, trie=trie, node_scores=scores)
    assert steered == [[s[1], s[2], s[3], END] for s in srcs]
    assert plain != steered  # the model alone prefers other keys: the hook did the work
    # the same through beam_search_many: scores per batch from a function, or rows of an array
    by_batch = generator.beam_search_many(srcs, topk=2, batch_size=2, trie=trie,
                                          node_scores=lambda batch: coverage_scores(trie, batch, weight=100.0))
    assert by_batch == steered
    assert generator.beam_search_many(srcs, topk=2, batch_size=3, trie=trie, node_scores=scores) == steered
    assert generator.beam_search(padded(sources), topk=2, trie=trie, node_scores=0 * scores) == plain
    with pytest.raises(ValueError, match="node_scores has shape"):
        generator.beam_search(padded(sources), topk=2, trie=trie, node_scores=scores[:, :3])


# --- compiled sampling -------------------------------------------------------------------
def host_distribution(probas, topk, topp):
    """The host sampler's own distribution over the vocabulary for each row:
    ``sample_from`` run with a ``choice`` that records the probabilities it is given
    and picks candidate ``j``, for every ``j`` (which id candidate ``j`` is)."""
    from kerasnlp_plus.generation.selection import sample_from

    out = np.zeros_like(probas, dtype=np.float64)
    for r in range(len(probas)):
        seen = {}

        def pick(j):
            def choice(size, p):
                seen["p"] = p
                return j
            return sample_from(probas[r:r + 1], topk, topp, choice)[0]

        pick(0)
        for j in np.flatnonzero(seen["p"]):  # the candidates of non-zero probability
            out[r, pick(j)] += seen["p"][j]
    return out


@pytest.mark.parametrize("topk,topp", [(None, None), (3, None), (None, 0.7), (5, 0.6), (40, None), (1, 0.5)])
def test_compiled_filter_equals_the_host_samplers_distribution(topk, topp):
    import tensorflow as tf

    from kerasnlp_plus.generation.program import filter_probas

    rng = np.random.default_rng(11)
    probas = rng.dirichlet(np.full(12, 0.7), size=5).astype("float32")  # distinct values: no ties
    expected = host_distribution(probas, topk, topp)
    ids, probs = filter_probas(tf.constant(probas), topk, topp)
    got = probs.numpy() if ids is None else np.zeros_like(expected)
    if ids is not None:
        np.put_along_axis(got, ids.numpy(), probs.numpy(), axis=1)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    if topk is not None:
        assert ((expected > 0).sum(axis=1) <= topk).all()
    if topp is not None and topk is None:
        assert ((expected > 0).sum(axis=1) < 12).all()  # the nucleus left some ids out


def test_compiled_sampling_is_seeded_and_samples_the_filtered_distribution(unilm, sources):
    generator = Generator(unilm, END, MAXLEN, jit_compile=False)
    inputs = padded(sources)
    first = generator.random_sample(inputs, n=3, topk=50, seed=7)
    assert first == generator.random_sample(inputs, n=3, topk=50, seed=7)
    assert first != generator.random_sample(inputs, n=3, topk=50, seed=8)
    assert all(key[0] == "sample" for key in generator._programs)  # the compiled sampler ran
    # The first token's distribution: many one-token samples of one source against
    # the host sampler's distribution over the model's probabilities.
    one_token = Generator(unilm, END, 1, jit_compile=False)
    source = [inputs[0][:1], inputs[1][:1]]
    session, _, _ = one_token._start(source, 1, 1.0, "probas")
    probas = session.scores.astype("float64")
    n = 3000
    for topk, topp, dof_critical in ((5, None, 18.47), (None, 0.3, None)):
        expected = host_distribution(probas.astype("float32"), topk, topp)[0]
        support = np.flatnonzero(expected)
        samples = [s[0] for s in one_token.random_sample(source, n=n, topk=topk, topp=topp, seed=3)[0]]
        counts = np.bincount(samples, minlength=len(expected))
        assert set(np.flatnonzero(counts)) <= set(support)  # top-k / top-p restrict the support
        big = support[expected[support] * n >= 5]  # chi-square over the ids with enough mass
        chi2 = (((counts[big] - n * expected[big]) ** 2) / (n * expected[big])).sum()
        # 18.47: the 0.999 quantile of chi-square with 4 degrees of freedom (top 5 ids);
        # otherwise the usual 0.999 approximation df + 3.1 * sqrt(2 df) + 2.
        dof = len(big) - 1
        critical = dof_critical or dof + 3.1 * np.sqrt(2 * dof) + 2
        assert dof >= 1 and chi2 < critical, (topk, topp, chi2, dof)


@pytest.mark.parametrize("n,width", [(21128, 256), (1000, 64), (50, 64), (130, 8)])
def test_blockwise_top_k_equals_tensorflows(n, width):
    """The beam step's top-k (best blocks first) returns tf.math.top_k's values and
    ids, ties (to the lower id) and -inf rows (a trie's mask) included."""
    import tensorflow as tf

    from kerasnlp_plus.generation.program import _top_k

    rng = np.random.default_rng(n)
    for trial in range(40):
        x = rng.integers(0, 4, size=(6, n)).astype(np.float64 if trial % 2 else np.float32)
        x[rng.random(x.shape) < (0.0, 0.5, 0.99)[trial % 3]] = -np.inf  # many ties, few allowed ids
        if trial % 5 == 0:
            x[1] = -np.inf  # nothing allowed
        for k in (1, 3, 5):
            expected = tf.math.top_k(x, k=k, sorted=True)
            values, ids = _top_k(tf.constant(x), k, width=width)
            np.testing.assert_array_equal(ids.numpy(), expected.indices.numpy())
            np.testing.assert_array_equal(values.numpy(), expected.values.numpy())
