"""The critic-free pieces: group advantages, the clipped surrogate per token, loss aggregation,
the KL estimators, and the KL lab (which estimator, placed where, converges to what)."""

import numpy as np
import pytest

from minirlhf.autograd import functional as F
from minirlhf.autograd.gradcheck import gradcheck
from minirlhf.autograd.tensor import Tensor
from minirlhf.objectives.group import (
    aggregate,
    clipped_token_losses,
    group_advantages,
    reinforce_pp_advantages,
    zero_std_groups,
)
from minirlhf.objectives.ppo import kl_estimate

R = np.array([[1.0, 0.0, 0.0, 1.0],   # a mixed group
              [1.0, 1.0, 1.0, 1.0],   # all right: no signal
              [0.0, 0.0, 0.0, 1.0]])  # one right of four


# ------------------------------------------------------------------------ advantages
def test_grpo_advantage_by_hand():
    adv = group_advantages(R, "grpo")
    s = np.std([1, 0, 0, 1], ddof=1)  # 0.577: the unbiased std, as torch.std
    assert adv[0] == pytest.approx(np.array([0.5, -0.5, -0.5, 0.5]) / (s + 1e-4))
    assert np.all(adv[1] == 0.0)  # a zero-std group carries no signal
    s2 = np.std([0, 0, 0, 1], ddof=1)  # 0.5
    assert adv[2] == pytest.approx(np.array([-0.25, -0.25, -0.25, 0.75]) / (s2 + 1e-4))


def test_scaling_options():
    centred = R - R.mean(axis=1, keepdims=True)
    assert group_advantages(R, "grpo", "none") == pytest.approx(centred)
    assert group_advantages(R, "dr_grpo") == pytest.approx(centred)
    assert group_advantages(R, "grpo", "batch") == pytest.approx(
        centred / (R.std(ddof=1) + 1e-4))
    with pytest.raises(ValueError, match="scale_rewards must be one of"):
        group_advantages(R, "grpo", "prompt")


def test_std_scaling_upweights_nearly_solved_groups():
    """Dividing by the group's std gives the lone success of a nearly-failed group (1 of 4) a
    larger advantage than a success in a balanced group; without it, the reverse."""
    grpo, dr = group_advantages(R, "grpo"), group_advantages(R, "dr_grpo")
    assert grpo[2, 3] > grpo[0, 0] and dr[2, 3] > dr[0, 0]
    assert grpo[2, 3] / grpo[0, 0] == pytest.approx((0.75 / 0.5) * (np.std([1, 0, 0, 1], ddof=1)
                                                    + 1e-4) / (0.5 + 1e-4))


def test_rloo_is_leave_one_out():
    adv = group_advantages(R, "rloo")
    for i in range(3):
        for j in range(4):
            others = np.delete(R[i], j).mean()
            assert adv[i, j] == pytest.approx(R[i, j] - others)
    assert adv == pytest.approx(4 / 3 * group_advantages(R, "dr_grpo"))


def test_reinforce_and_remax_baselines():
    assert group_advantages(R, "reinforce") == pytest.approx(R - R.mean())
    greedy = np.array([1.0, 1.0, 0.0])
    assert group_advantages(R, "remax", baseline=greedy) == pytest.approx(R - greedy[:, None])
    with pytest.raises(ValueError, match="remax needs baseline of shape"):
        group_advantages(R, "remax")


def test_zero_std_groups():
    assert zero_std_groups(R).tolist() == [False, True, False]


def test_reinforce_pp_returns_and_whitening():
    scores = np.array([1.0, 0.0])
    kl = np.array([[0.0, 0.1, 0.2, 0.0], [0.0, 0.3, 0.0, 0.0]])
    mask = np.array([[0, 1, 1, 0], [0, 1, 1, 1]], float)
    adv = reinforce_pp_advantages(scores, kl, mask, beta=0.5)
    # returns before whitening: row 0: t1 = 1 - 0.05 - 0.1, t2 = 1 - 0.1; row 1: t1 = -0.15,
    # t2 = 0, t3 = 0
    ret = np.array([0.85, 0.9, -0.15, 0.0, 0.0])
    expected = (ret - ret.mean()) / ret.std()
    assert adv[mask > 0] == pytest.approx(expected, abs=1e-6)
    assert np.all(adv[mask == 0] == 0.0)


# -------------------------------------------------------------------- per-token losses
def test_first_pass_ratio_is_one_and_loss_is_minus_advantage():
    rng = np.random.default_rng(0)
    old = rng.normal(-1.0, 0.3, size=(4, 6))
    adv = rng.normal(size=(4, 1))
    mask = np.ones((4, 6))
    losses, stats = clipped_token_losses(Tensor(old.copy()), old, adv, mask)
    assert losses.data == pytest.approx(-np.broadcast_to(adv, (4, 6)))
    assert stats["clip_ratio/region_mean"] == 0.0


def test_clip_higher_and_the_clip_metrics():
    old = np.zeros((1, 4))
    logp = Tensor(np.log(np.array([[0.7, 1.25, 1.35, 1.1]])), requires_grad=True)
    adv = np.array([[-1.0, 1.0, 1.0, 1.0]])
    mask = np.ones((1, 4))
    losses, stats = clipped_token_losses(logp, old, adv, mask, epsilon=0.2, epsilon_high=0.28)
    # token 0: ratio 0.7 < 0.8 with A < 0: clipped low; token 2: 1.35 > 1.28 with A > 0: high;
    # token 1: 1.25 would be clipped by a symmetric 0.2, but not with clip-higher at 0.28
    assert stats["clip_ratio/low_mean"] == 0.25 and stats["clip_ratio/high_mean"] == 0.25
    assert stats["clip_ratio/region_mean"] == 0.5
    assert losses.data == pytest.approx(np.array([[0.8, -1.25, -1.28, -1.1]]))
    losses.sum().backward()
    grad = logp.grad
    assert grad[0, 0] == 0.0 and grad[0, 2] == 0.0  # clipped: no gradient
    assert grad[0, 1] == pytest.approx(-1.25) and grad[0, 3] == pytest.approx(-1.1)


def test_clipped_losses_gradcheck_float64():
    rng = np.random.default_rng(3)
    old = rng.normal(-1, 0.1, size=(3, 5))
    adv = rng.normal(size=(3, 1))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], float)
    lp = Tensor(old + rng.uniform(-0.1, 0.1, size=(3, 5)), requires_grad=True)  # inside the clip
    r = gradcheck(lambda x: clipped_token_losses(x, old, adv, mask, 0.2, 0.28)[0], [lp])
    assert r.passed, r.report()


PADDED_MASK = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], float)  # a short and a long response
PADDED_LOSS = np.array([[1.0, 3.0, 9.0, 9.0], [1.0, 1.0, 1.0, 1.0]])  # 9s are padding


@pytest.mark.parametrize("loss_type, expected", [
    ("grpo", (2.0 + 1.0) / 2),  # mean per sequence (2 and 1), then over sequences
    ("dr_grpo", (4.0 + 4.0) / (2 * 8)),  # sum / (B * max_completion_length = 8)
    ("dapo", (4.0 + 4.0) / 6),  # sum / number of response tokens
])
def test_aggregate_on_a_right_padded_batch(loss_type, expected):
    out = aggregate(Tensor(PADDED_LOSS), PADDED_MASK, loss_type, max_completion_length=8)
    assert out.item() == pytest.approx(expected)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_aggregate_gradcheck_and_token_weights(loss_type):
    x = Tensor(PADDED_LOSS.copy(), requires_grad=True)
    r = gradcheck(lambda t: aggregate(t, PADDED_MASK, loss_type, 8), [x])
    assert r.passed, r.report()
    aggregate(x, PADDED_MASK, loss_type, 8).backward()
    short, long_ = x.grad[0, 0], x.grad[1, 0]
    if loss_type == "grpo":  # a token of the short response weighs twice one of the long
        assert short == pytest.approx(2 * long_)
    else:  # every token weighs the same
        assert short == pytest.approx(long_)
    assert np.all(x.grad[PADDED_MASK == 0] == 0.0)  # padding gets no gradient


# ----------------------------------------------------------------------- KL estimators
@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_kl_estimators_gradcheck_float64(kind):
    rng = np.random.default_rng(1)
    ref = rng.normal(-2.0, 0.5, size=(2, 4))
    lp = Tensor(ref + rng.normal(0, 0.3, size=(2, 4)), requires_grad=True)
    r = gradcheck(lambda x: kl_estimate(x, ref, kind), [lp])
    assert r.passed, r.report()


def test_sampled_kl_estimates_against_the_exact_kl():
    """Over many samples from pi, k1 and k3 average to the exact KL(pi || pi_ref) (both are
    unbiased); k2 does not (it is biased), but is close when pi and pi_ref are close."""
    rng = np.random.default_rng(0)
    pi = np.array([0.5, 0.3, 0.15, 0.05])
    ref = np.array([0.4, 0.3, 0.2, 0.1])
    exact = float(np.sum(pi * np.log(pi / ref)))
    a = rng.choice(4, size=400_000, p=pi)
    lp, lr = np.log(pi[a]), np.log(ref[a])
    est = {k: kl_estimate(Tensor(lp), lr, k).data.mean() for k in ("k1", "k2", "k3")}
    assert est["k1"] == pytest.approx(exact, abs=2e-3)
    assert est["k3"] == pytest.approx(exact, abs=2e-3)
    assert est["k2"] != pytest.approx(exact, abs=2e-3)
    assert est["k2"] == pytest.approx(exact, rel=0.25)


# ---------------------------------------------------------------------------- KL lab
REWARD = np.array([1.0, 0.5, 0.0, -0.5, 0.2])
PI_REF = np.array([0.1, 0.2, 0.4, 0.2, 0.1])
BETA = 0.5


def _train(placement: str, steps: int = 3000, lr: float = 0.5) -> np.ndarray:
    """Gradient ascent on a 5-armed bandit with the *exact* on-policy expected gradient: the
    loss is sum_a pi(a) (sampling weight, no gradient) times the per-sample loss of arm a."""
    theta = Tensor(np.zeros(5), requires_grad=True)
    log_ref = np.log(PI_REF)
    for _ in range(steps):
        theta.grad = None
        logp = F.log_softmax(theta, axis=-1)
        w = np.exp(logp.data)  # the sampling distribution, a constant
        if placement == "k1 in the reward":  # REINFORCE on r - beta * k1
            shaped = REWARD - BETA * (logp.data - log_ref)
            loss = -(logp * (w * shaped)).sum()
        else:  # REINFORCE on r, plus beta * KL estimate in the loss
            kind = placement.split()[0]
            kl = kl_estimate(logp.reshape((1, 5)), log_ref.reshape((1, 5)), kind)
            loss = -(logp * (w * REWARD)).sum() + (kl.reshape((5,)) * w).sum() * BETA
        loss.backward()
        theta.data -= lr * theta.grad
    return np.exp(F.log_softmax(theta, axis=-1).data)


def _pi_star() -> np.ndarray:
    """argmax E[r] - beta KL(pi || pi_ref): pi_ref exp(r / beta), normalised."""
    p = PI_REF * np.exp(REWARD / BETA)
    return p / p.sum()


def _reverse_optimum() -> np.ndarray:
    """argmax E[r] - beta KL(pi_ref || pi), independently: stationarity gives
    pi(a) = beta pi_ref(a) / (lam - r(a)) with lam > max r chosen so that pi sums to 1."""
    lo, hi = REWARD.max() + 1e-12, REWARD.max() + 100.0
    for _ in range(200):  # bisection: the sum falls as lam grows
        lam = (lo + hi) / 2
        total = np.sum(BETA * PI_REF / (lam - REWARD))
        lo, hi = (lam, hi) if total > 1 else (lo, lam)
    p = BETA * PI_REF / (lam - REWARD)
    return p / p.sum()


def _tv(p, q):
    return 0.5 * float(np.abs(p - q).sum())


@pytest.mark.parametrize("placement", ["k1 in the reward", "k2 in the loss"])
def test_forward_kl_placements_converge_to_pi_star(placement):
    assert _tv(_train(placement), _pi_star()) < 0.02


def test_k3_in_the_loss_converges_to_the_reverse_kl_optimum_not_pi_star():
    pi = _train("k3 in the loss")
    rev = _reverse_optimum()
    assert _tv(pi, rev) < 0.02
    assert _tv(rev, _pi_star()) > 0.05  # and the two optima are far apart here
    assert _tv(pi, _pi_star()) > 0.05


def test_k1_in_the_loss_restrains_nothing():
    """Its expected gradient is E[grad log pi] = 0: the policy heads for the best arm as if
    beta were 0."""
    theta = Tensor(np.array([0.3, -0.2, 0.5, 0.0, -0.4]), requires_grad=True)
    logp = F.log_softmax(theta, axis=-1)
    w = np.exp(logp.data)
    kl = kl_estimate(logp.reshape((1, 5)), np.log(PI_REF).reshape((1, 5)), "k1")
    (kl.reshape((5,)) * w).sum().backward()
    assert np.abs(theta.grad).max() < 1e-12
    pi = _train("k1 in the loss", steps=3000)
    assert pi[0] > 0.95  # the best arm, nearly always: no KL restraint at all


def test_sampled_kl_estimates_match_the_exact_kl_over_the_vocabulary():
    """Two small GPTs with different weights; 4,000 sampled responses of 6 tokens. Summed over a
    response, k1 and k3 average to the exact KL summed over the vocabulary at every position
    (within 4 standard errors). (k2's bias is shown on a categorical above.)"""
    from minirlhf.autograd.tensor import no_grad
    from minirlhf.lm.model import GPT, GPTConfig
    from minirlhf.lm.sampling import generate
    from minirlhf.lm.sequences import token_logprobs
    from minirlhf.objectives.ppo import exact_kl

    cfg = dict(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=16)
    pi, ref = GPT(GPTConfig(**cfg, seed=1)), GPT(GPTConfig(**cfg, seed=2))
    for p in pi.parameters():  # sharper than the reference, so the KL is well above 0
        p.data = (p.data * 3.0).astype(p.data.dtype)
    g = generate(pi, [[1, 4]] * 4000, 6, rng=np.random.default_rng(0), use_cache=False)
    tokens, mask = g.tokens, g.response_mask
    with no_grad():
        exact = exact_kl(pi(tokens[:, :-1]).data.astype(np.float64),
                         ref(tokens[:, :-1]).data.astype(np.float64), mask)
        lp = token_logprobs(pi, tokens, mask).data.astype(np.float64)
        ref_lp = token_logprobs(ref, tokens, mask).data.astype(np.float64)
    assert exact > 0.3
    for kind in ("k1", "k3"):
        per_response = (kl_estimate(Tensor(lp), ref_lp, kind).data * mask).sum(axis=1)
        se = per_response.std(ddof=1) / np.sqrt(len(per_response))
        assert abs(per_response.mean() - exact) < 4 * se, (kind, per_response.mean(), exact, se)
