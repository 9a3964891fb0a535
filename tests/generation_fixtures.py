"""Fixtures and helpers shared by the decoding tests (test_generation*.py).

Tiny random models (hidden 32, 2 layers) over the real 21,128-token vocabulary; the
MLM bias of [SEP] is raised so that some beams end and others run to ``maxlen``.
Sources are real CSL abstracts truncated to different lengths. A test module takes
the fixtures by importing them (``from generation_fixtures import sources, tokenizer, ...``)
with the fixtures they depend on.
"""
import keras
import numpy as np
import pytest

from kerasnlp_plus.generation import Generator
from kerasnlp_plus.models import build_transformer_model
from kerasnlp_plus.snippets import AutoRegressiveDecoder, sequence_padding

END = 102  # [SEP] in the real vocabulary
MAXLEN = 10
TINY = dict(vocab_size=21128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, initializer_range=0.5)
SOURCE_LENGTHS = (64, 40, 23, 51, 17)  # tokens kept of the first five abstracts


def tiny_model(application, end_bias, seed=3, **overrides):
    keras.utils.set_random_seed(seed)
    model = build_transformer_model(None, application=application, with_mlm=True, **{**TINY, **overrides})
    bias = np.zeros(model.vocab_size, "float32")
    bias[END] = end_bias
    bias[0] = -30.0  # never generate padding: the uncached path would read it as padding
    model.mlm_bias.set_weights([bias])
    return model


def padded(sources):
    return [sequence_padding([t for t, _ in sources]), sequence_padding([s for _, s in sources])]


@pytest.fixture(scope="module")
def tokenizer(vocab_path):
    from kerasnlp_plus.tokenizers import Tokenizer

    return Tokenizer(str(vocab_path), do_lower_case=True)


@pytest.fixture(scope="module")
def abstracts(shared_data):
    with open(shared_data / "csl" / "csl_title_dev.tsv", encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t")[1] for _, line in zip(range(len(SOURCE_LENGTHS)), f)]


def encode(tokenizer, abstracts, n):
    return [tokenizer.encode(text, maxlen=m) for text, m in zip(abstracts[:n], SOURCE_LENGTHS)]


# Fixtures depend only on fixtures a test module imports with them (or conftest's).
@pytest.fixture(scope="module")
def sources(tokenizer, abstracts):
    """Four real abstracts truncated to different lengths (64, 40, 23, 51 tokens)."""
    return encode(tokenizer, abstracts, 4)


@pytest.fixture(scope="module")
def five_sources(tokenizer, abstracts):
    """The four of ``sources`` and one of 17 tokens."""
    return encode(tokenizer, abstracts, 5)


@pytest.fixture(scope="module")
def unilm():
    return tiny_model("unilm", end_bias=9.0)


@pytest.fixture(scope="module")
def lm():
    return tiny_model("lm", end_bias=8.0)


def seq2seq_decoder(model, maxlen=MAXLEN, default_rtype="probas", **kwargs):
    """The uncached reference: bert4keras' AutoTitle predict (unilm) or its LM one."""
    segment = 1 if model.application == "unilm" else 0

    class Decoder(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype=default_rtype)
        def predict(self, inputs, output_ids, states):
            token_ids, segment_ids = inputs
            token_ids = np.concatenate([token_ids, output_ids], 1)
            segment_ids = np.concatenate([segment_ids, np.full_like(output_ids, segment)], 1)
            return self.last_token(model).predict([token_ids, segment_ids], verbose=0)

    return Decoder(**{"start_id": None, "end_id": END, "maxlen": maxlen, **kwargs})


def assert_generator_matches_uncached(model, sources, jit_compile):
    """The cached Generator returns exactly the uncached bert4keras decoder's beams
    (beam 1 and 3), over beams that ended and beams cut at ``MAXLEN``."""
    decoder = seq2seq_decoder(model)
    generator = Generator(model, END, MAXLEN, jit_compile=jit_compile)
    ended = unended = 0
    for topk in (1, 3):
        expected = [[int(t) for t in decoder.beam_search([t, s], topk=topk)] for t, s in sources]
        got = generator.beam_search(padded(sources), topk=topk)
        assert got == expected, (model.application, topk)
        ended += sum(x[-1] == END for x in got)
        unended += sum(x[-1] != END and len(x) == MAXLEN for x in got)
    # The comparison covered beams that ended and beams cut at maxlen.
    assert ended > 0 and unended > 0
