"""Fused functions equal the same math composed from primitive ops, in value and gradient;
they keep float32; and they stay finite and correct at logits of +-1e4."""

import numpy as np
import pytest

from minirlhf import Tensor, ops
from minirlhf.autograd import functional as F
from minirlhf.autograd import runtime
from minirlhf.autograd.gradcheck import op_cases

RNG = np.random.default_rng(0)


# --- the same functions, composed from primitives only (the "slow but obvious" versions)
def softmax_ref(x, axis=-1):
    e = (x - Tensor(x.data.max(axis=axis, keepdims=True))).exp()
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax_ref(x, axis=-1):
    m = Tensor(x.data.max(axis=axis, keepdims=True))
    return x - m - (x - m).exp().sum(axis=axis, keepdims=True).log()


def cross_entropy_ref(logits, targets, mask):
    V = logits.shape[-1]
    one_hot = Tensor((targets[..., None] == np.arange(V)).astype(logits.dtype))
    per = -(log_softmax_ref(logits) * one_hot).sum(axis=-1)
    w = Tensor(mask.astype(logits.dtype))
    return (per * w).sum() / w.sum()


def layer_norm_ref(x, w, b, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(axis=-1, keepdims=True)
    return xc / (var + eps).sqrt() * w + b


def logsigmoid_ref(x):
    return x.sigmoid().log()


def gelu_ref(x):
    c = float(np.sqrt(2 / np.pi))
    return 0.5 * x * (1.0 + (c * (x + 0.044715 * x**3)).tanh())


def linear_ref(x, w, b):
    return x @ w + b


### BEGIN TEACHER
def attention_ref(qkv, n_head):
    """Causal self-attention from primitive ops: split q, k, v, heads as a batch axis, scaled
    scores, the future masked to -inf, softmax, the weighted sum of values, heads side by side."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // n_head
    heads = qkv.reshape(B, T, 3, n_head, hs).transpose(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
    q, k, v = heads[0], heads[1], heads[2]
    att = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / np.sqrt(hs))  # (B, nh, T, T)
    future = np.triu(np.ones((T, T), bool), k=1)
    att = att.masked_fill(np.broadcast_to(future, att.shape), -np.inf)
    y = softmax_ref(att) @ v  # (B, nh, T, hs)
    return y.transpose(0, 2, 1, 3).reshape(B, T, C)
### END TEACHER


def _pair(shape):
    d = RNG.standard_normal(shape)
    return Tensor(d.copy(), requires_grad=True), Tensor(d.copy(), requires_grad=True)


def _compare(fused, ref, *shapes, extra=()):
    xs = [_pair(s) for s in shapes]
    out_f = fused(*[p[0] for p in xs], *extra)
    out_r = ref(*[p[1] for p in xs], *extra)
    np.testing.assert_allclose(out_f.data, out_r.data, rtol=1e-10, atol=1e-12)
    g = RNG.standard_normal(out_f.shape)
    out_f.backward(g)
    out_r.backward(g)
    for a, b in xs:
        np.testing.assert_allclose(a.grad, b.grad, rtol=1e-9, atol=1e-12)


def test_softmax_matches_composition():
    _compare(F.softmax, softmax_ref, (3, 4, 7))
    _compare(lambda x: F.softmax(x, axis=0), lambda x: softmax_ref(x, axis=0), (5, 3))


def test_log_softmax_matches_composition():
    _compare(F.log_softmax, log_softmax_ref, (3, 4, 7))


def test_cross_entropy_matches_composition():
    targets = RNG.integers(0, 6, size=(3, 5))
    mask = RNG.integers(0, 2, size=(3, 5))
    mask[0, 0] = 1
    _compare(lambda x: F.cross_entropy(x, targets, mask=mask),
             lambda x: cross_entropy_ref(x, targets, mask), (3, 5, 6))


def test_cross_entropy_ignore_index_equals_mask():
    logits = Tensor(RNG.standard_normal((2, 4, 5)))
    targets = np.array([[1, -100, 2, 3], [-100, -100, 0, 4]])
    a = F.cross_entropy(logits, targets, ignore_index=-100)
    b = F.cross_entropy(logits, np.where(targets < 0, 0, targets), mask=targets >= 0)
    assert a.item() == pytest.approx(b.item(), rel=1e-12)


def test_cross_entropy_errors_name_the_problem():
    logits = Tensor(np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match=r"targets \(2, 4\) must match logits \(2, 3, 5\)"):
        F.cross_entropy(logits, np.zeros((2, 4), int))
    with pytest.raises(IndexError, match=r"\[0, 5\)"):
        F.cross_entropy(logits, np.full((2, 3), 7))


def test_layer_norm_matches_composition():
    _compare(F.layer_norm, layer_norm_ref, (2, 3, 8), (8,), (8,))


def test_logsigmoid_matches_composition():
    _compare(F.logsigmoid, logsigmoid_ref, (4, 5))


def test_gelu_matches_composition():
    _compare(F.gelu, gelu_ref, (4, 5))


def test_linear_matches_composition():
    """The fused linear (product, bias added in place, one backward) equals x @ W + b."""
    _compare(F.linear, linear_ref, (2, 3, 4), (4, 5), (5,))


### BEGIN TEACHER
def test_causal_self_attention_matches_composition():
    """The fused attention (one op, its backward written by hand) equals the same attention
    composed from primitive ops, in value and in the gradient of the packed q, k, v."""
    _compare(lambda qkv: F.causal_self_attention(qkv, 3), lambda qkv: attention_ref(qkv, 3),
             (2, 5, 18))
### END TEACHER


### BEGIN TEACHER
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_ops_match_composition_split_over_threads(threads, monkeypatch):
    """The same comparisons with every op split over the engine's threads, however small."""
    before = runtime.threads()
    monkeypatch.setattr(runtime, "MIN_PARALLEL_ELEMENTS", 0)
    if runtime.set_threads(threads) != threads:
        pytest.skip("the BLAS's thread count cannot be set here (not OpenBLAS)")
    try:
        _compare(lambda qkv: F.causal_self_attention(qkv, 2), lambda qkv: attention_ref(qkv, 2),
                 (3, 7, 12))
        _compare(F.linear, linear_ref, (3, 7, 4), (4, 6), (6,))
        _compare(F.layer_norm, layer_norm_ref, (3, 7, 8), (8,), (8,))
        _compare(F.gelu, gelu_ref, (3, 7, 5))
    finally:
        runtime.set_threads(before)
### END TEACHER


# --- stability at extreme logits
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stable_at_1e4(dtype):
    x = Tensor(np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype), requires_grad=True)
    ls = F.log_softmax(x)
    assert np.all(np.isfinite(ls.data))
    np.testing.assert_allclose(ls.data[0], [0.0, -2e4, -1e4])
    np.testing.assert_allclose(ls.data[1], np.full(3, -np.log(3.0)), rtol=1e-6)
    ls.sum().backward()
    assert np.all(np.isfinite(x.grad))

    x.grad = None
    ce = F.cross_entropy(x, np.array([1, 2]))  # the first row's target is 2e4 nats away
    assert np.isfinite(ce.item())
    assert ce.item() == pytest.approx((2e4 + np.log(3.0)) / 2, rel=1e-6)
    ce.backward()
    assert np.all(np.isfinite(x.grad))

    z = Tensor(np.array([1e4, -1e4, 0.0], dtype), requires_grad=True)
    lsg = F.logsigmoid(z)
    np.testing.assert_allclose(lsg.data, [0.0, -1e4, -np.log(2.0)], rtol=1e-6)
    lsg.sum().backward()
    np.testing.assert_allclose(z.grad, [0.0, 1.0, 0.5])

    sm = F.softmax(Tensor(np.array([1e4, 0.0], dtype)))
    np.testing.assert_allclose(sm.data, [1.0, 0.0])
    s = ops.sigmoid(Tensor(np.array([1e4, -1e4], dtype)))
    np.testing.assert_allclose(s.data, [1.0, 0.0])


# --- float32 stays float32 through every op (NumPy 2's promotion rules make this easy to break)
CASES = op_cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.name}-{c.shapes}" for c in CASES])
def test_float32_stays_float32(case):
    xs = case.make_inputs(seed=0, dtype=np.float32)
    out = case.fn(*xs)
    assert out.dtype == np.float32, f"{case.name} forward gave {out.dtype}"
    out.backward(np.ones(out.shape, np.float32))
    for x in xs:
        assert x.grad.dtype == np.float32, f"{case.name} backward gave {x.grad.dtype}"


def test_numpy_float64_scalars_do_not_upcast():
    # NumPy 2 promotes float32_array / np.sqrt(2.0) to float64; a Tensor must not.
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    assert np.ones(3, np.float32).__truediv__(np.sqrt(2.0)).dtype == np.float64  # the trap
    for y in (x / np.sqrt(2.0), x * np.float64(3.0), np.sqrt(2.0) * x, x + np.pi, x**0.5):
        assert y.dtype == np.float32
    x64 = Tensor(np.ones(3), requires_grad=True)
    assert (x64 / np.sqrt(2.0)).dtype == np.float64


@pytest.mark.parametrize("threads", [1, 2])
def test_attention_in_blocks_equals_attention_whole_to_the_last_bit(threads, monkeypatch):
    """Working through the scores in cache-sized blocks (whole sequences, or groups of heads
    of one sequence) gives the unblocked attention's output and gradient bit for bit."""
    before = runtime.threads()
    if runtime.set_threads(threads) != threads:
        pytest.skip("the BLAS's thread count cannot be set here (not OpenBLAS)")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 9, 36)).astype(np.float32)  # B 5, T 9, 4 heads of 3
    g = rng.standard_normal((5, 9, 12)).astype(np.float32)
    seq = 4 * 9 * 9 * 4  # bytes of one sequence's scores
    results, layouts = [], []
    try:
        for unblocked, block in ((1 << 60, seq), (0, seq), (0, 2 * seq), (0, seq // 2),
                                 (0, seq // 4)):
            monkeypatch.setattr(runtime, "ATTENTION_UNBLOCKED_BYTES", unblocked)
            monkeypatch.setattr(runtime, "ATTENTION_BLOCK_BYTES", block)
            qkv = Tensor(x.copy(), requires_grad=True)
            out = F.causal_self_attention(qkv, 4)
            out.backward(g)
            results.append((out.data, qkv.grad))
            layouts.append(list(runtime.score_blocks(0, 5, 4, seq)))
    finally:
        runtime.set_threads(before)
    assert len({str(layout) for layout in layouts}) == 5  # five different ways through
    assert layouts[0] == [(0, 5, 0, 4)] and len(layouts[-1]) == 20
    for out, grad in results[1:]:
        np.testing.assert_array_equal(out, results[0][0])
        np.testing.assert_array_equal(grad, results[0][1])


def test_score_blocks_cover_every_row_and_head_once(monkeypatch):
    monkeypatch.setattr(runtime, "ATTENTION_UNBLOCKED_BYTES", 0)
    monkeypatch.setattr(runtime, "ATTENTION_BLOCK_BYTES", 100)
    for lo, hi, n_head, seq_bytes in ((0, 7, 4, 30), (3, 9, 4, 100), (0, 2, 8, 400),
                                      (1, 4, 3, 1000)):
        seen = np.zeros((hi, n_head), int)
        for b0, b1, h0, h1 in runtime.score_blocks(lo, hi, n_head, seq_bytes):
            seen[b0:b1, h0:h1] += 1
        assert (seen[lo:] == 1).all() and (seen[:lo] == 0).all()
    assert list(runtime.score_blocks(0, 7, 4, 30)) == [(0, 3, 0, 4), (3, 6, 0, 4), (6, 7, 0, 4)]
    assert list(runtime.score_blocks(0, 1, 8, 400)) == [(0, 1, 0, 2), (0, 1, 2, 4),
                                                        (0, 1, 4, 6), (0, 1, 6, 8)]
