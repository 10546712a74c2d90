"""PPO's pieces: GAE by hand, clipping's zero gradients, value clipping, whitening, KL, and
gradient checks of both losses."""

import numpy as np
import pytest

from minirlhf import Tensor
from minirlhf.autograd.gradcheck import gradcheck
from minirlhf.objectives.ppo import (
    AdaptiveKLController,
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_estimate,
    whiten,
)


def kl_per_token(logp, ref_logp, kind):
    """The estimate as an array (PPO puts it in the reward, without gradient)."""
    return kl_estimate(logp, ref_logp, kind).data


def test_gae_hand_worked():
    # prompt of 2 tokens (mask 0), response of 3 tokens, then PAD
    mask = np.array([[0, 0, 1, 1, 1, 0]], float)
    rewards = np.array([[9.0, 9.0, 0.0, 0.0, 1.0, 9.0]])  # outside the mask: ignored
    values = np.array([[9.0, 9.0, 0.5, 0.6, 0.7, 9.0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # deltas: 1 + 0 - 0.7 = 0.3;  0 + 0.7 - 0.6 = 0.1;  0 + 0.6 - 0.5 = 0.1
    # A = 0.3;  0.1 + 0.95 * 0.3 = 0.385;  0.1 + 0.95 * 0.385 = 0.46575
    np.testing.assert_allclose(adv, [[0, 0, 0.46575, 0.385, 0.3, 0]], atol=1e-12)
    np.testing.assert_allclose(ret, [[0, 0, 0.96575, 0.985, 1.0, 0]], atol=1e-12)


def test_gae_discount_and_rows_are_independent():
    mask = np.array([[1, 1, 0], [1, 1, 1]], float)
    rewards = np.array([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0]])
    values = np.zeros((2, 3))
    adv, _ = gae(rewards, values, mask, gamma=0.9, lam=1.0)  # lam = 1: discounted returns
    np.testing.assert_allclose(adv, [[1.8, 2.0, 0.0], [1.0, 0.0, 0.0]], atol=1e-12)


def test_whitening():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(4, 6))
    mask = (rng.random((4, 6)) < 0.7).astype(float)
    w = whiten(x, mask)
    sel = mask > 0
    assert abs(w[sel].mean()) < 1e-9 and abs(w[sel].std() - 1) < 1e-6
    assert np.all(w[~sel] == 0)


def test_ratio_is_exactly_one_and_k1_exactly_zero_before_the_first_update():
    rng = np.random.default_rng(1)
    lp = rng.normal(-2, 1, size=(3, 5)).astype(np.float32)
    mask = np.ones((3, 5), np.float32)
    _, stats = clipped_policy_loss(Tensor(lp, requires_grad=True), lp.copy(),
                                   rng.normal(size=(3, 5)).astype(np.float32), mask)
    assert stats["ratio"] == 1.0 and stats["clipfrac"] == 0.0 and stats["approxkl"] == 0.0
    assert np.all(kl_per_token(lp, lp.copy(), "k1") == 0.0)
    assert np.all(kl_per_token(lp, lp.copy(), "k3") == 0.0)


def test_k3_is_nonnegative_and_both_estimators_are_unbiased():
    rng = np.random.default_rng(2)
    p = np.array([0.5, 0.3, 0.2])
    q = np.array([0.2, 0.5, 0.3])
    exact = float((p * np.log(p / q)).sum())
    tok = rng.choice(3, size=200_000, p=p)
    k1 = kl_per_token(np.log(p[tok]), np.log(q[tok]), "k1")
    k3 = kl_per_token(np.log(p[tok]), np.log(q[tok]), "k3")
    assert k3.min() >= 0 and k1.min() < 0
    assert abs(k1.mean() - exact) < 0.01 and abs(k3.mean() - exact) < 0.01


def test_clipped_objective_gradient_is_zero_exactly_where_clipping_binds():
    old = np.zeros((1, 6))
    # ratios exp(logp): 1.5 (above 1.2), 0.5 (below 0.8), 1.1 (inside), each with A > 0 and A < 0
    logp = Tensor(np.log(np.array([[1.5, 1.5, 0.5, 0.5, 1.1, 1.1]])), requires_grad=True)
    adv = np.array([[1.0, -1.0, 1.0, -1.0, 1.0, -1.0]])
    loss, stats = clipped_policy_loss(logp, old, adv, np.ones((1, 6)), clip=0.2)
    loss.backward()
    binds = np.array([True, False, False, True, False, False])  # A>0 above; A<0 below
    assert np.all(logp.grad[0, binds] == 0.0)
    assert np.all(logp.grad[0, ~binds] != 0.0)
    assert stats["clipfrac"] == pytest.approx(2 / 6)


def test_value_clipping():
    old = np.array([[0.0, 0.0]])
    returns = np.array([[1.0, 1.0]])
    v = Tensor(np.array([[0.5, 0.1]]), requires_grad=True)
    loss, stats = clipped_value_loss(v, old, returns, np.ones((1, 2)), clip=0.2)
    # first: moved 0.5 > 0.2 towards the return, so the clipped error (1 - 0.2)^2 is larger:
    # its gradient is zero; second: inside the band, plain squared error
    assert loss.item() == pytest.approx(0.5 * ((1 - 0.2) ** 2 + (1 - 0.1) ** 2) / 2)
    loss.backward()
    assert v.grad[0, 0] == 0.0 and v.grad[0, 1] == pytest.approx(-(1 - 0.1) / 2)
    assert stats["clipfrac"] == 0.5


def test_losses_gradcheck_float64():
    rng = np.random.default_rng(3)
    old = rng.normal(-1, 0.1, size=(2, 5))
    adv = rng.normal(size=(2, 5))
    mask = np.array([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1]], float)
    lp = Tensor(old + rng.uniform(-0.1, 0.1, size=(2, 5)), requires_grad=True)  # inside the clip
    r = gradcheck(lambda x: clipped_policy_loss(x, old, adv, mask)[0], [lp])
    assert r.passed, r.report()
    v_old, ret = rng.normal(size=(2, 5)), rng.normal(size=(2, 5))
    v = Tensor(v_old + rng.uniform(-0.15, 0.15, size=(2, 5)), requires_grad=True)
    r = gradcheck(lambda x: clipped_value_loss(x, v_old, ret, mask)[0], [v])
    assert r.passed, r.report()


def test_adaptive_kl_controller():
    c = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    assert c.update(12.0, 1000) == pytest.approx(0.1 * 1.02)  # error clipped at +0.2
    assert c.update(6.0, 1000) == pytest.approx(0.1 * 1.02)  # on target: unchanged
    assert c.update(3.0, 1000) < 0.1 * 1.02
    with pytest.raises(ValueError):
        AdaptiveKLController(0.0, 6.0, 100)
    with pytest.raises(ValueError, match="clip must be in"):
        clipped_policy_loss(Tensor(np.zeros((1, 1)), requires_grad=True), np.zeros((1, 1)),
                            np.zeros((1, 1)), np.ones((1, 1)), clip=1.5)


def test_one_token_bandit_converges_to_the_kl_regularised_optimum():
    """PPO with a per-token k1 KL penalty on a one-step bandit reaches pi* = pi_ref exp(r/beta)/Z
    (total variation < 0.05)."""
    from minirlhf.autograd import functional as F
    from minirlhf.lm.nn import Parameter
    from minirlhf.lm.optim import AdamW

    K, beta = 4, 0.5
    rng = np.random.default_rng(0)
    r = np.array([1.0, 0.0, 0.5, -1.0])
    ref_logp = np.log(np.array([0.1, 0.4, 0.3, 0.2]))
    target = np.exp(ref_logp + r / beta)
    target /= target.sum()
    theta = Parameter(ref_logp.copy())  # start at the reference
    opt = AdamW([("theta", theta)], lr=0.02)
    for _ in range(300):
        logp_all = F.log_softmax_array(theta.data, axis=0)
        a = rng.choice(K, size=2048, p=np.exp(logp_all))
        old = logp_all[a][None, :]  # (1, N): one "token" per sample
        reward = (r[a] - beta * kl_per_token(logp_all[a], ref_logp[a], "k1"))[None, :]
        adv = reward - reward.mean()  # a constant baseline
        mask = np.ones_like(adv)
        for _ in range(2):  # two PPO epochs on the batch
            logp = F.log_softmax(theta)[a].reshape(1, -1)
            loss, _ = clipped_policy_loss(logp, old, adv, mask, clip=0.2)
            opt.zero_grad()
            loss.backward()
            opt.step()
    pi = np.exp(F.log_softmax_array(theta.data, axis=0))
    assert 0.5 * np.abs(pi - target).sum() < 0.05, (pi, target)


def _random_reward_model(pretrained, folder, seed: int) -> str:
    """A reward model on the pretrained trunk with a random head, saved; returns its path."""
    from minirlhf.lm.checkpoint import load_model
    from minirlhf.lm.reward_model import RewardModel

    model, tok, _ = load_model(pretrained)
    rm = RewardModel(model, tok)
    rm.model.reward_head.weight.data = np.random.default_rng(seed).normal(
        size=rm.model.reward_head.weight.shape).astype(np.float32)
    rm.save(folder / "rm.npz")
    return str(folder / "rm.npz")


@pytest.mark.parametrize("critic", ["shared", "reward_model"])
def test_ppo_stage_runs_with_trl_metric_names(tiny_pretrained, tmp_path, critic):
    from minirlhf.stages.ppo import PPOConfig, train_ppo

    cfg = dict(init=tiny_pretrained, reward_model=_random_reward_model(tiny_pretrained,
                                                                       tmp_path, 0), iterations=2,
               rollout_size=8, minibatch_size=8, ppo_epochs=1, max_new_tokens=30,
               eval_samples_per_prompt=1, progress=False, critic=critic)
    a = train_ppo(PPOConfig(out_dir=str(tmp_path / "a"), **cfg))
    b = train_ppo(PPOConfig(out_dir=str(tmp_path / "b"), **cfg))
    assert a.metrics == b.metrics  # reproducible from the seed
    first = a.metrics[0]
    for key in ["objective/kl", "objective/entropy", "objective/non_score_reward",
                "objective/rlhf_reward", "objective/scores", "policy/approxkl_avg",
                "policy/clipfrac_avg", "loss/policy_avg", "loss/value_avg", "val/clipfrac_avg",
                "val/ratio", "val/explained_variance", "gold", "response_length", "eos_rate",
                "valid_rate", "gold_valid"]:
        assert key in first, key
    # TRL's quantities: objective/entropy per response, entropy per token; step from 1
    assert first["objective/entropy"] == pytest.approx(first["entropy"] * first["response_length"])
    assert [r["step"] for r in a.metrics] == list(range(1, len(a.metrics) + 1))
    assert first["learning_rate"] == cfg.get("lr", PPOConfig().lr) and first["grad_norm"] > 0
    # one minibatch, one epoch: the only update starts from the sampling policy itself
    assert first["val/ratio"] == 1.0 and first["objective/kl"] == 0.0
    assert first["objective/exact_kl"] == 0.0  # the whole-vocabulary KL is exactly 0 too
    assert (tmp_path / "a" / "metrics.jsonl").exists()
    assert (tmp_path / "a" / "summary.json").exists()
    # the zero-initialised value head predicts 0 before its first step, whichever trunk
    assert first["val/explained_variance"] <= 0.0 + 1e-6


def test_separate_critic_starts_from_the_reward_model_and_leaves_the_policy_trunk(
        tiny_pretrained, tmp_path):
    """With critic="reward_model" the value loss reaches only the critic's weights: one
    iteration with vf_coef 0 and one with vf_coef 1 give the same policy (the values that feed
    GAE are all 0 at the start either way); with the shared critic they differ."""
    from minirlhf.lm.checkpoint import load_model
    from minirlhf.stages.ppo import PPOConfig, train_ppo

    cfg = dict(init=tiny_pretrained, reward_model=_random_reward_model(tiny_pretrained,
                                                                       tmp_path, 1), iterations=1,
               rollout_size=8, minibatch_size=4, ppo_epochs=2, max_new_tokens=30,
               eval_samples_per_prompt=1, progress=False, grad_clip=0.0)
    weights = {}
    for critic in ("reward_model", "shared"):
        for vf in (0.0, 1.0):
            out = tmp_path / f"{critic}-{vf}"
            train_ppo(PPOConfig(out_dir=str(out), critic=critic, vf_coef=vf, **cfg))
            policy, _, _ = load_model(out / "model.npz")
            weights[critic, vf] = policy.wte.weight.data.copy()
    assert np.array_equal(weights["reward_model", 0.0], weights["reward_model", 1.0])
    assert not np.array_equal(weights["shared", 0.0], weights["shared", 1.0])


def test_unknown_critic_is_rejected():
    from minirlhf.stages.ppo import PPOConfig, train_ppo

    with pytest.raises(ValueError, match="critic"):
        train_ppo(PPOConfig(critic="separate"))


def test_full_ppo_loss_gradcheck_on_a_tiny_model():
    """The policy + value loss, through a whole tiny GPT, against finite differences (float64).
    Old log-probs and values come from slightly different weights, so ratios sit near 1 but
    inside the clip range (the clip's kinks are avoided; there the derivative jumps)."""
    from minirlhf.lm.model import GPT, GPTConfig
    from minirlhf.objectives.ppo import mean_entropy
    from minirlhf.stages.ppo import _forward

    rng = np.random.default_rng(4)
    model = GPT(GPTConfig(vocab_size=11, block_size=10, n_layer=1, n_head=2, n_embd=8),
                scalar_heads=("value",)).to(np.float64)
    for name, p in model.named_parameters():
        centre = 1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.0
        p.data = rng.normal(centre, 0.3, p.shape)
    tokens = rng.integers(3, 11, size=(2, 8))
    mask = np.zeros((2, 8))
    mask[:, 3:] = 1.0
    lp_now, v_now, _ = _forward(model, tokens, mask, 1.0)
    old_logp = (lp_now.data + rng.uniform(-0.05, 0.05, size=(2, 8))) * mask
    old_values = v_now.data + rng.uniform(-0.05, 0.05, size=(2, 8))
    adv = rng.normal(size=(2, 8)) * mask
    returns = rng.normal(size=(2, 8)) * mask

    def loss(*params):
        lp, v, logits = _forward(model, tokens, mask, 1.0)
        pg, _ = clipped_policy_loss(lp, old_logp, adv, mask, clip=0.2)
        vf, _ = clipped_value_loss(v, old_values, returns, mask, clip=0.2)
        return pg + vf * 0.5 - mean_entropy(logits, mask, 1.0) * 0.01  # with the entropy bonus

    names = [n for n, _ in model.named_parameters()]
    # the attention key bias has an exactly-zero gradient (see test_model), hence atol
    r = gradcheck(loss, model.parameters(), eps=1e-5, tol=1e-6, atol=1e-10, names=names)
    assert r.passed, r.report()


def test_exact_kl_over_the_vocabulary():
    from minirlhf.objectives.ppo import exact_kl

    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(1, 2, 4)), rng.normal(size=(1, 2, 4))
    mask = np.array([[0.0, 1.0, 1.0]])  # both positions predict response tokens
    p = np.exp(a) / np.exp(a).sum(-1, keepdims=True)
    q = np.exp(b) / np.exp(b).sum(-1, keepdims=True)
    by_hand = float((p * np.log(p / q)).sum())
    assert exact_kl(a, b, mask) == pytest.approx(by_hand, rel=1e-10)
    assert exact_kl(a, a, mask) == 0.0


# ------------------------------------------------------------ the iteration's named steps
def test_kl_penalized_rewards_put_the_score_on_the_last_response_token():
    from minirlhf.objectives.ppo import kl_penalized_rewards

    # row 0: prompt (2 tokens), response of 3, PAD; row 1: prompt (1), response of 2, PAD x 3
    mask = np.array([[0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0]], np.float32)
    logp = np.full((2, 6), -1.0, np.float32)
    ref = np.full((2, 6), -1.5, np.float32)  # k1 = 0.5 on every token
    rewards, kl = kl_penalized_rewards(np.array([2.0, -1.0], np.float32), logp, ref, mask,
                                       beta=0.1)
    np.testing.assert_allclose(kl, 0.5 * mask)
    expected = -0.05 * mask
    expected[0, 4] += 2.0  # the score lands on each row's last response token
    expected[1, 2] += -1.0
    np.testing.assert_allclose(rewards, expected, atol=1e-7)


def test_advantages_are_gae_then_whitening():
    from types import SimpleNamespace

    from minirlhf.stages.ppo import PPOConfig, advantages

    rng = np.random.default_rng(3)
    rewards, values = rng.normal(size=(2, 2, 5))
    mask = np.array([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]], float)
    cfg = PPOConfig(gamma=0.9, lam=0.8)
    batch = SimpleNamespace(rewards=rewards, values=values, mask=mask)  # what step 4 reads
    adv, ret = advantages(batch, cfg)
    raw, raw_ret = gae(rewards, values, mask, 0.9, 0.8)
    np.testing.assert_allclose(adv, whiten(raw, mask))
    np.testing.assert_allclose(ret, raw_ret)
    from dataclasses import replace

    adv_plain, _ = advantages(batch, replace(cfg, whiten_advantages=False))
    np.testing.assert_allclose(adv_plain, raw)


def test_minibatches_cut_the_rollout_in_order_and_a_bad_cut_is_refused():
    from minirlhf.config import ConfigError
    from minirlhf.stages.ppo import PPOConfig, minibatch_indices

    mbs = minibatch_indices(PPOConfig(rollout_size=8, minibatch_size=4))
    assert [m.tolist() for m in mbs] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(ConfigError, match="minibatch_size = 3 must divide rollout_size = 8"):
        PPOConfig(rollout_size=8, minibatch_size=3).check()


def test_metrics_gold_of_valid_text_leaves_the_floor_out():
    from types import SimpleNamespace

    from minirlhf.stages.ppo import Batch, metrics

    B, T = 4, 3
    golds, valid = [2.0, -5.0, 1.0, -5.0], [True, False, True, False]
    texts = [f"response {i}" for i in range(B)]
    task = SimpleNamespace(gold=lambda p, t, f: golds[texts.index(t)],
                           valid=lambda p, t, f: valid[texts.index(t)])
    gen = SimpleNamespace(tokens=np.zeros((B, T), int), response_mask=np.ones((B, T)),
                          finished=np.ones(B, bool))
    roll = SimpleNamespace(generation=gen, texts=texts, finished=[True] * B)
    batch = Batch(["p"] * B, roll, scores=np.zeros(B), logp=np.full((B, T), -1.0),
                  ref_logp=np.full((B, T), -1.0), values=np.zeros((B, T)), exact_kl=0.0,
                  kl=np.zeros((B, T)), returns=np.zeros((B, T)))
    stats = {k: 0.0 for k in ("pg", "vf", "clipfrac", "vclipfrac", "approxkl", "ratio",
                              "grad_norm", "learning_rate")} | {"step": 1}
    row = metrics(1, batch, stats, SimpleNamespace(task=task), 0.05)
    assert row["gold"] == pytest.approx(-1.75)  # the floor included
    assert row["gold_valid"] == pytest.approx(1.5) and row["valid_rate"] == 0.5
    valid[:] = [False] * B
    assert metrics(1, batch, stats, SimpleNamespace(task=task), 0.05)["gold_valid"] is None
