"""The GPT: against an independent NumPy reference, gradient-checked whole, causal, cached."""

import numpy as np
import pytest

from minirlhf import no_grad
from minirlhf.autograd import functional as F
from minirlhf.autograd.gradcheck import gradcheck
from minirlhf.lm.model import GPT, PRESETS, GPTConfig, KVCache

CFG = GPTConfig(vocab_size=11, block_size=12, n_layer=2, n_head=2, n_embd=8)


def _randomised(model, seed=0, std=0.4):
    """Weights far from their init, so every gradient is well above finite-difference noise."""
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        centre = 1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.0
        p.data = rng.normal(centre, std, p.shape).astype(p.dtype)
    return model


# ---------------------------------------------------------------- a reference in plain NumPy
### BEGIN TEACHER
def _ref_layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b
### END TEACHER


### BEGIN TEACHER
def _ref_gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
### END TEACHER


### BEGIN TEACHER
def _ref_forward(sd, cfg, idx):
    """GPT-2's forward written out from the state dict alone, head by head, row by row."""
    B, T = idx.shape
    C, nh = cfg.n_embd, cfg.n_head
    hs = C // nh
    x = sd["wte.weight"][idx] + sd["wpe.weight"][:T]
    for l in range(cfg.n_layer):
        p = f"h.{l}."
        h = _ref_layer_norm(x, sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
        qkv = h @ sd[p + "attn.c_attn.weight"] + sd[p + "attn.c_attn.bias"]
        q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
        y = np.zeros((B, T, C))
        for b in range(B):
            for head in range(nh):
                sl = slice(head * hs, (head + 1) * hs)
                for i in range(T):
                    scores = q[b, i, sl] @ k[b, : i + 1, sl].T / np.sqrt(hs)
                    w = np.exp(scores - scores.max())
                    w /= w.sum()
                    y[b, i, sl] = w @ v[b, : i + 1, sl]
        x = x + y @ sd[p + "attn.c_proj.weight"] + sd[p + "attn.c_proj.bias"]
        h = _ref_layer_norm(x, sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
        m = _ref_gelu(h @ sd[p + "mlp.c_fc.weight"] + sd[p + "mlp.c_fc.bias"])
        x = x + m @ sd[p + "mlp.c_proj.weight"] + sd[p + "mlp.c_proj.bias"]
    x = _ref_layer_norm(x, sd["ln_f.weight"], sd["ln_f.bias"])
    return x @ sd["wte.weight"].T
### END TEACHER


### BEGIN TEACHER
def test_forward_matches_numpy_reference():
    model = _randomised(GPT(CFG).to(np.float64))
    idx = np.random.default_rng(1).integers(0, CFG.vocab_size, (3, 9))
    with no_grad():
        ours = model(idx).data
    ref = _ref_forward(model.state_dict(), CFG, idx)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)
### END TEACHER


def test_parameter_names_follow_gpt2():
    names = set(GPT(CFG).state_dict())
    for n in ["wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.0.ln_1.bias",
              "h.0.attn.c_attn.weight", "h.0.attn.c_attn.bias", "h.0.attn.c_proj.weight",
              "h.0.ln_2.weight", "h.0.mlp.c_fc.weight", "h.0.mlp.c_proj.bias", "h.1.ln_2.bias",
              "ln_f.weight", "ln_f.bias"]:
        assert n in names
    assert "lm_head.weight" not in names  # tied to wte
    sd = GPT(CFG).state_dict()
    assert sd["h.0.attn.c_attn.weight"].shape == (8, 24)  # GPT-2's (in, out) layout


def test_whole_model_gradcheck_float64():
    model = _randomised(GPT(CFG, scalar_heads=("value",)).to(np.float64))
    rng = np.random.default_rng(2)
    idx = rng.integers(0, CFG.vocab_size, (2, 7))
    targets = np.roll(idx, -1, axis=1)

    def loss(*params):
        h = model.hidden(idx)
        return F.cross_entropy(model.lm_logits(h), targets) + 0.1 * model.scalar("value", h).sum()

    names = [n for n, _ in model.named_parameters()]
    # The attention key bias has an exactly-zero gradient (softmax ignores a shift shared by all
    # keys), so for it the check compares finite-difference noise (~1e-11 at eps 1e-5) with 0.
    # An absolute floor of 1e-10, ten times that noise, lets such elements pass; every other
    # element must meet the 1e-6 relative tolerance or sit below the same floor.
    result = gradcheck(loss, model.parameters(), eps=1e-5, tol=1e-6, atol=1e-10, names=names)
    assert result.passed, result.report()
    k_bias = model.h[0].attn.c_attn.bias
    loss().backward()
    assert np.abs(k_bias.grad[8:16]).max() < 1e-15  # the zero gradient is exact


def test_causal_changing_a_token_leaves_earlier_logits():
    model = _randomised(GPT(CFG).to(np.float64))
    idx = np.random.default_rng(3).integers(0, CFG.vocab_size, (2, 10))
    changed = idx.copy()
    changed[:, 6] = (changed[:, 6] + 1) % CFG.vocab_size
    with no_grad():
        a, b = model(idx).data, model(changed).data
    np.testing.assert_array_equal(a[:, :6], b[:, :6])
    assert np.abs(a[:, 6:] - b[:, 6:]).max() > 1e-3


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-5), (np.float64, 1e-10)])
def test_cached_logits_equal_uncached(dtype, tol):
    model = _randomised(GPT(CFG).to(dtype), std=0.2)
    idx = np.random.default_rng(4).integers(0, CFG.vocab_size, (3, 11))
    with no_grad():
        full = model(idx).data
        cache = KVCache(CFG, 3, dtype)
        parts = [model(idx[:, :4], cache).data]  # a prefill of 4, then one token at a time
        parts += [model(idx[:, t:t + 1], cache).data for t in range(4, 11)]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=0, atol=tol)
    assert full.dtype == dtype


@pytest.mark.parametrize("handoff", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decode_equals_the_cached_forward_to_the_last_bit(dtype, threads, handoff, monkeypatch):
    """GPT.decode, generation's one-token step on arrays, gives the logits of the forward pass
    (the autograd ops) at every position, bit for bit, with the ops split over threads or not
    (every op split here, however small), its row stretches handed to the threads or run here,
    and leaves the cache as the forward would."""
    from minirlhf.autograd import runtime
    from minirlhf.lm import model as model_module

    monkeypatch.setattr(runtime, "MIN_PARALLEL_ELEMENTS", 0)
    monkeypatch.setattr(model_module, "DECODE_HANDOFF_MIN", 0 if handoff else 1 << 62)
    before = runtime.threads()
    if runtime.set_threads(threads) != threads:
        pytest.skip("the BLAS's thread count cannot be set here (not OpenBLAS)")
    try:
        model = _randomised(GPT(CFG).to(dtype), std=0.2)
        idx = np.random.default_rng(4).integers(0, CFG.vocab_size, (3, 11))
        with no_grad():
            cache, twin = KVCache(CFG, 3, dtype), KVCache(CFG, 3, dtype)
            model(idx[:, :4], cache)  # a prefill of 4, then one token at a time
            model(idx[:, :4], twin)
            for t in range(4, 11):
                got = model.decode(idx[:, t], cache)
                want = model(idx[:, t:t + 1], twin).data[:, 0]
                np.testing.assert_array_equal(got, want, err_msg=f"position {t}")
    finally:
        runtime.set_threads(before)
    assert got.dtype == dtype and cache.pos == twin.pos == 11
    for layer in range(CFG.n_layer):
        np.testing.assert_array_equal(cache.k[layer], twin.k[layer])
        np.testing.assert_array_equal(cache.v[layer], twin.v[layer])
    with pytest.raises(ValueError, match="2 tokens for a cache of 3 rows"):
        model.decode(idx[:2, 0], cache)


@pytest.mark.parametrize("rows", [64, 128])
def test_decode_at_default_thresholds_equals_the_forward(rows):
    """At the thresholds the command line runs with and the default model's width, where
    128 rows hand their stretches to the threads and 64 rows do not: still the forward's
    logits to the last bit."""
    from minirlhf.autograd import runtime
    from minirlhf.lm import model as model_module

    work = 4 * rows * 96 * 96  # the attention stretch's multiply-adds at this width
    assert (work >= model_module.DECODE_HANDOFF_MIN) == (rows == 128)  # the two paths, as said
    assert rows * 96 * 96 >= runtime.MIN_PARALLEL_ELEMENTS  # every projection splits
    before = runtime.threads()
    if runtime.set_threads(2) != 2:
        pytest.skip("the BLAS's thread count cannot be set here (not OpenBLAS)")
    try:
        cfg = GPTConfig(vocab_size=49, block_size=16, n_layer=2, n_head=4, n_embd=96)
        model = _randomised(GPT(cfg), std=0.1)
        idx = np.random.default_rng(5).integers(0, cfg.vocab_size, (rows, 7))
        with no_grad():
            cache, twin = KVCache(cfg, rows), KVCache(cfg, rows)
            model(idx[:, :3], cache)
            model(idx[:, :3], twin)
            for t in range(3, 7):
                np.testing.assert_array_equal(model.decode(idx[:, t], cache),
                                              model(idx[:, t:t + 1], twin).data[:, 0])
    finally:
        runtime.set_threads(before)


def test_overfits_one_batch():
    from minirlhf.lm.optim import AdamW

    model = GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=32))
    rng = np.random.default_rng(5)
    x = rng.integers(0, 11, (4, 16))
    y = rng.integers(0, 11, (4, 16))
    opt = AdamW(model.named_parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        loss = F.cross_entropy(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 2.0 and loss.item() < 0.05, (first, loss.item())


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="n_head=3 must divide n_embd=8"):
        GPTConfig(n_head=3, n_embd=8)
    with pytest.raises(ValueError, match="GPTConfig.n_layer must be a positive integer"):
        GPTConfig(n_layer=0)
    model = GPT(CFG)
    with pytest.raises(ValueError, match="longer than block_size 12"):
        model(np.zeros((1, 13), int))
    with pytest.raises(KeyError, match="no scalar head 'reward'"):
        model.scalar("reward", model.hidden(np.zeros((1, 2), int)))


def test_presets_build():
    for name, sizes in PRESETS.items():
        model = GPT(GPTConfig(vocab_size=49, **sizes))
        assert model.num_parameters() > 0, name


def test_scalar_head_starts_at_zero_and_float32():
    model = GPT(CFG, scalar_heads=("value",))
    h = model.hidden(np.zeros((2, 5), int))
    v = model.scalar("value", h)
    assert v.shape == (2, 5) and v.dtype == np.float32
    np.testing.assert_array_equal(v.data, 0.0)
    assert model(np.zeros((2, 5), int)).dtype == np.float32
