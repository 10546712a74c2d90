"""KTO, ORPO and SimPO: hand-computed values, float64 gradient checks, finite at extreme
log-probs, and bad arguments named."""

import numpy as np
import pytest

from minirlhf import Tensor
from minirlhf.autograd import functional as F
from minirlhf.autograd.gradcheck import gradcheck
from minirlhf.objectives.preference import kto_loss, orpo_loss, simpo_loss


def _t(x):
    return Tensor(np.asarray(x, dtype=np.float64), requires_grad=True)


### BEGIN TEACHER
def _sig(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))
### END TEACHER


def test_log1mexp_values_near_zero_and_far_below():
    x = np.array([-1e-12, -1e-6, -0.3, -0.7, -5.0, -50.0])
    got = F.log1mexp(_t(x)).data
    want = [np.log(1e-12) + np.log1p(-0.5e-12), np.log(-np.expm1(-1e-6)), np.log(1 - np.exp(-0.3)),
            np.log(1 - np.exp(-0.7)), np.log1p(-np.exp(-5.0)), -np.exp(-50.0)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    with pytest.raises(ValueError, match="needs x < 0"):
        F.log1mexp(_t([0.0]))


### BEGIN TEACHER
def test_kto_hand_values_and_clamped_reference_point():
    r = np.array([1.0, -0.5, 2.0])
    desirable = np.array([True, False, True])
    losses, rewards = kto_loss(_t(r), np.zeros(3), desirable, kl_ref=0.3, beta=0.5,
                               desirable_weight=1.0, undesirable_weight=2.0)
    want = [1 - _sig(0.5 * (1.0 - 0.3)), 2 * (1 - _sig(0.5 * (0.3 + 0.5))), 1 - _sig(0.5 * 1.7)]
    np.testing.assert_allclose(losses.data, want, rtol=1e-12)
    np.testing.assert_allclose(rewards, 0.5 * r)
    negative_kl, _ = kto_loss(_t(r), np.zeros(3), desirable, kl_ref=-4.0, beta=0.5)
    zero_kl, _ = kto_loss(_t(r), np.zeros(3), desirable, kl_ref=0.0, beta=0.5)
    np.testing.assert_array_equal(negative_kl.data, zero_kl.data)  # z0 = max(kl, 0)
### END TEACHER


### BEGIN TEACHER
def test_orpo_hand_values():
    c, r = np.array([-2.0, -0.01]), np.array([-6.0, -9.0])
    lc, lr = np.array([4, 10]), np.array([3, 3])
    losses, ratio = orpo_loss(_t(c), _t(r), lc, lr, lam=0.25)
    mc, mr = c / lc, r / lr
    odds = (mc - np.log(1 - np.exp(mc))) - (mr - np.log(1 - np.exp(mr)))
    np.testing.assert_allclose(ratio, odds, rtol=1e-12)
    np.testing.assert_allclose(losses.data, -mc - 0.25 * np.log(_sig(odds)), rtol=1e-12)
### END TEACHER


### BEGIN TEACHER
def test_simpo_hand_values():
    c, r = np.array([-2.0, -8.0]), np.array([-6.0, -3.0])
    lc, lr = np.array([4, 8]), np.array([3, 2])
    got = simpo_loss(_t(c), _t(r), lc, lr, beta=2.0, gamma=0.5).data
    np.testing.assert_allclose(got, -np.log(_sig(2.0 * (c / lc - r / lr) - 0.5)), rtol=1e-12)
### END TEACHER


@pytest.mark.parametrize("name", ["kto desirable", "kto undesirable", "orpo", "simpo"])
def test_gradients_float64(name):
    rng = np.random.default_rng(3)
    c, r = -rng.uniform(1, 8, size=4), -rng.uniform(1, 8, size=4)
    lengths = np.array([3, 5, 2, 7])
    if name.startswith("kto"):
        desirable = np.full(4, name == "kto desirable")
        fn = lambda a: kto_loss(a, r, desirable, 0.2, beta=0.7, undesirable_weight=1.5)[0]  # noqa: E731
        inputs = [_t(c)]
    elif name == "orpo":
        fn = lambda a, b: orpo_loss(a, b, lengths, lengths[::-1], lam=0.3)[0]  # noqa: E731
        inputs = [_t(c), _t(r)]
    else:
        fn = lambda a, b: simpo_loss(a, b, lengths, lengths[::-1])  # noqa: E731
        inputs = [_t(c), _t(r)]
    result = gradcheck(fn, inputs, eps=1e-6, tol=1e-7)
    assert result.passed, [(i.name, i.max_rel_error) for i in result.inputs]


def test_finite_at_extreme_log_probs():
    big = np.array([-1e4, -1e-9, -3.0])
    lengths = np.array([10, 10, 1])
    for losses in (kto_loss(_t(big), -big, np.array([True, False, True]), 0.0)[0],
                   orpo_loss(_t(big), _t(big[::-1].copy()), lengths, lengths)[0],
                   simpo_loss(_t(big), _t(big[::-1].copy()), lengths, lengths, beta=10.0)):
        assert np.all(np.isfinite(losses.data))
    a, b = _t(big), _t(big[::-1].copy())
    orpo_loss(a, b, lengths, lengths)[0].sum().backward()
    assert np.all(np.isfinite(a.grad)) and np.all(np.isfinite(b.grad))


def test_bad_arguments_are_named():
    x = _t([-1.0, -2.0])
    with pytest.raises(ValueError, match="beta must be > 0"):
        kto_loss(x, np.zeros(2), np.array([True, False]), 0.0, beta=0.0)
    with pytest.raises(ValueError, match="desirable"):
        kto_loss(x, np.zeros(2), np.array([True]), 0.0)
    with pytest.raises(ValueError, match="lengths must be"):
        orpo_loss(x, x, np.array([1, 0]), np.array([1, 1]))
    with pytest.raises(ValueError, match="lengths must be"):
        simpo_loss(x, x, np.array([1, 2, 3]), np.array([1, 1]))
