"""Generation with a KV cache, and the one log-prob function."""

import numpy as np
import pytest

from minirlhf import no_grad
from minirlhf.lm.model import GPT, GPTConfig
from minirlhf.lm.sampling import generate, sample_from_logits
from minirlhf.lm.sequences import token_logprobs
from minirlhf.lm.tokenizer import BOS, EOS, PAD

CFG = GPTConfig(vocab_size=11, block_size=32, n_layer=2, n_head=2, n_embd=16)


def _model(dtype=np.float32, seed=0):
    model = GPT(CFG).to(dtype)
    rng = np.random.default_rng(seed)
    for _, p in model.named_parameters():
        p.data = (p.data + rng.normal(0, 0.3, p.shape)).astype(dtype)
    # Point ln_f's bias along EOS's embedding, so that EOS is likely enough at every step for
    # rows to finish at different times.
    u = rng.normal(0, 1, CFG.n_embd)
    model.ln_f.bias.data = (0.45 * u).astype(dtype)
    model.wte.weight.data[EOS] = (0.45 * u).astype(dtype)
    return model


PROMPTS = [[BOS, 5, 6], [BOS, 7], [BOS, 3, 4, 5, 6]]


def test_generation_layout():
    g = generate(_model(), PROMPTS, max_new_tokens=12, rng=np.random.default_rng(0))
    B, T = g.tokens.shape
    assert (B, T) == (3, 5 + 12)  # the longest prompt + the budget
    for b, prompt in enumerate(PROMPTS):
        row, m = g.tokens[b], g.response_mask[b]
        np.testing.assert_array_equal(row[: len(prompt)], prompt)  # prompt kept
        assert m[: len(prompt)].sum() == 0  # prompt is not response
        resp = np.flatnonzero(m)
        assert resp[0] == len(prompt) and np.all(np.diff(resp) == 1)  # contiguous response
        assert len(resp) <= 12
        after = row[resp[-1] + 1:]
        assert np.all(after == PAD)  # right padding only
        if g.finished[b]:
            assert row[resp[-1]] == EOS and EOS not in row[resp[:-1]]
        else:
            assert len(resp) == 12
        assert np.all(g.logprobs[b][m == 0] == 0) and np.all(g.logprobs[b][m > 0] < 0)
    assert g.finished.any()


def test_cached_and_uncached_generation_agree():
    model = _model(np.float64)
    a = generate(model, PROMPTS, 12, rng=np.random.default_rng(1), use_cache=True)
    b = generate(model, PROMPTS, 12, rng=np.random.default_rng(1), use_cache=False)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-10)


def test_generation_is_reproducible_from_seed():
    model = _model()
    a = generate(model, PROMPTS, 10, rng=np.random.default_rng(7))
    b = generate(model, PROMPTS, 10, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a.tokens, b.tokens)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_equal_sampler_logprobs(temperature):
    model = _model(np.float64)
    g = generate(model, PROMPTS, 12, temperature=temperature, rng=np.random.default_rng(2))
    lp = token_logprobs(model, g.tokens, g.response_mask, temperature=temperature)
    assert lp.shape == g.tokens.shape
    np.testing.assert_allclose(lp.data, g.logprobs, atol=1e-10)


def test_right_padding_does_not_change_logprobs():
    model = _model(np.float64)
    g = generate(model, PROMPTS, 8, rng=np.random.default_rng(3))
    padded = np.concatenate([g.tokens, np.full((3, 5), PAD)], axis=1)
    mask = np.concatenate([g.response_mask, np.zeros((3, 5), np.float32)], axis=1)
    with no_grad():
        a = token_logprobs(model, g.tokens, g.response_mask).data.sum(1)
        b = token_logprobs(model, padded, mask).data.sum(1)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_token_logprobs_gradient_reaches_the_model():
    model = _model(np.float64)
    g = generate(model, PROMPTS, 6, rng=np.random.default_rng(4))
    token_logprobs(model, g.tokens, g.response_mask).sum().backward()
    assert np.abs(model.wte.weight.grad).sum() > 0


def test_token_logprobs_errors():
    model = _model()
    with pytest.raises(ValueError, match="first token cannot be a response token"):
        token_logprobs(model, np.ones((1, 3), int), np.ones((1, 3)))
    with pytest.raises(ValueError, match="exceeds the model's block_size"):
        generate(model, PROMPTS, 40)


def test_sampler_matches_distribution_and_top_k():
    logits = np.log(np.array([[0.5, 0.3, 0.2]] * 20000, np.float32))
    tok, lp = sample_from_logits(logits, 1.0, None, np.random.default_rng(0))
    freq = np.bincount(tok, minlength=3) / len(tok)
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.2], atol=0.015)
    np.testing.assert_allclose(lp, np.log([0.5, 0.3, 0.2])[tok], rtol=1e-5)
    tok, _ = sample_from_logits(logits, 1.0, 2, np.random.default_rng(0))
    assert set(np.unique(tok)) == {0, 1}
    tok, _ = sample_from_logits(logits, 0.05, None, np.random.default_rng(0))
    assert (tok == 0).mean() > 0.99  # low temperature is nearly greedy
