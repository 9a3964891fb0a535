"""The KV cache: incremental decoding equals the full forward pass."""
import numpy as np
import pytest

from kerasnlp_plus import masks
from tiny_transformer import rng_tokens, run, sharpen, tiny


@pytest.mark.parametrize("application", ["lm", "unilm"])
def test_cached_incremental_equals_full_pass(application):
    """Prefill a padded batch of prompts of different lengths, then feed one token per
    row per step: every step's output equals the full forward pass on the unpadded
    sequence of that row."""
    rng = np.random.default_rng(10)
    m = tiny(application)
    prompt_lengths = [6, 3]
    new = 5
    prompts = [rng_tokens(rng, (n,)) for n in prompt_lengths]
    continuations = [rng_tokens(rng, (new,)) for _ in prompt_lengths]
    width = max(prompt_lengths)
    slots = width + new
    cache = m.init_cache(2, slots)

    # slot layout: prompt padded to `width`, then the new tokens of every row
    tokens = np.zeros((2, slots), np.int32)
    segs = np.zeros((2, slots), np.int32)
    positions = np.zeros((2, slots), np.int32)
    for b, (p, c) in enumerate(zip(prompts, continuations)):
        tokens[b, : len(p)] = p
        tokens[b, width:] = c
        positions[b, : len(p)] = np.arange(len(p))
        positions[b, width:] = len(p) + np.arange(new)
        if application == "unilm":
            segs[b, width:] = 1
    if application == "unilm":
        rank = np.cumsum(segs, axis=1)
    else:
        rank = positions
    valid = tokens != 0

    def step(start, stop, cache):
        visible = masks.visibility(rank[:, start:stop], rank, valid & (np.arange(slots) < stop))
        return m.call_with_cache(tokens[:, start:stop], segs[:, start:stop], cache, start, visible,
                                 position_ids=positions[:, start:stop])

    out, cache = step(0, width, cache)
    outputs = [np.asarray(out)[b, len(p) - 1] for b, p in enumerate(prompts)]
    steps = []
    for t in range(new):
        out, cache = step(width + t, width + t + 1, cache)
        steps.append(np.asarray(out)[:, 0])
    for b, (p, c) in enumerate(zip(prompts, continuations)):
        full_ids = np.concatenate([p, c])[None]
        full_segs = np.concatenate([np.zeros(len(p)), np.ones(new)])[None].astype(np.int32)
        if application == "lm":
            full_segs = np.zeros_like(full_segs)
        full = run(m, full_ids, full_segs)[0]
        np.testing.assert_allclose(outputs[b], full[len(p) - 1], atol=1e-5)
        for t in range(new):
            np.testing.assert_allclose(steps[t][b], full[len(p) + t], atol=1e-5)


def test_cache_rejects_plm():
    m = tiny("plm")
    with pytest.raises(ValueError, match="plm"):
        m.call_with_cache(np.ones((1, 1), np.int32), np.zeros((1, 1), np.int32), m.init_cache(1, 4), 0,
                          np.ones((1, 1, 4), bool))


@pytest.mark.parametrize("application", ["unilm", "lm"])
@pytest.mark.parametrize("family,attention_scale", [("bert", "standard"), ("bert", "log_n"), ("roformer", "standard")])
def test_prefill_at_output_positions_equals_full_pass(family, attention_scale, application):
    """``output_positions`` (a decoder's prefill: the last layer's queries at each
    row's last token only) gives the full pass's output there and the same cache."""
    rng = np.random.default_rng(11)
    m = sharpen(tiny(application, model=family, attention_scale=attention_scale))
    lengths = [7, 4, 1]
    width = max(lengths)
    tokens = np.zeros((3, width), np.int32)
    for b, n in enumerate(lengths):
        tokens[b, :n] = rng_tokens(rng, (n,))
    segs = np.zeros_like(tokens)
    if application == "unilm":  # a target part: its queries see less than the source's
        segs[0, 4:7] = segs[1, 2:4] = 1
    valid = tokens != 0
    positions = np.broadcast_to(np.arange(width, dtype=np.int32), tokens.shape)
    rank = masks.application_ranks(application, tokens, segs)
    visible = masks.visibility(rank, rank, valid)
    last = np.array(lengths, np.int32) - 1

    full, full_cache = m.call_with_cache(tokens, segs, m.init_cache(3, width), 0, visible, position_ids=positions)
    picked, cache = m.call_with_cache(tokens, segs, m.init_cache(3, width), 0, visible, position_ids=positions,
                                      output_positions=last)
    assert picked.shape[:2] == (3, 1)
    np.testing.assert_allclose(np.asarray(picked)[:, 0], np.asarray(full)[np.arange(3), last], atol=1e-5)
    np.testing.assert_allclose(np.asarray(cache), np.asarray(full_cache), atol=1e-6)
    for b, n in enumerate(lengths):  # and the uncached model on the unpadded row
        np.testing.assert_allclose(np.asarray(picked)[b, 0], run(m, tokens[b:b + 1, :n], segs[b:b + 1, :n])[0, -1],
                                   atol=1e-5)
