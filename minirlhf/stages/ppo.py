"""PPO with a KL penalty: per-token KL penalties, generalised advantage estimation,
whitening, the clipped policy and value losses, the adaptive KL controller, and the stage
``train_ppo(config) -> PPOResult``.

All arrays are (B, T) over the full sequences (prompt + response + PAD), with a response mask
that is 1 on response tokens; everything outside the mask is ignored and returned as 0.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from minirlhf.autograd import functional as F
from minirlhf.autograd import ops
from minirlhf.autograd.tensor import Tensor, no_grad
from minirlhf.config import validate
from minirlhf.evaluation import PolicyReport, finish_policy_stage
from minirlhf.lm.checkpoint import load_model
from minirlhf.lm.model import GPT
from minirlhf.lm.optim import AdamW, optimizer_step
from minirlhf.lm.reward_model import RewardModel
from minirlhf.lm.sampling import generate
from minirlhf.lm.sequences import (
    eos_positions,
    logprobs_from_logits,
    masked_mean,
    masked_mean_array,
)
from minirlhf.plots import plot_reward_vs_kl
from minirlhf.world import get_task

log = logging.getLogger("minirlhf.stages.ppo")


def kl_per_token(logp: np.ndarray, ref_logp: np.ndarray, kind: str = "k1") -> np.ndarray:
    """An estimate of KL(pi || pi_ref) from the sampled token's log-probs, per token.

    k1 = log pi - log pi_ref (unbiased, can be negative on a token);
    k3 = (rho - 1) - log rho with rho = pi_ref / pi (unbiased, never negative; Schulman 2020).
    """
    if kind == "k1":
        ### BEGIN SOLUTION
        return logp - ref_logp
        ### END SOLUTION
    if kind == "k3":
        ### BEGIN SOLUTION
        log_rho = ref_logp - logp
        return np.expm1(log_rho) - log_rho
        ### END SOLUTION
    raise ValueError(f"kl_per_token: kind must be k1 or k3, got {kind!r}")


def whiten(x: np.ndarray, mask: np.ndarray, shift_mean: bool = True) -> np.ndarray:
    """Scale ``x`` to unit variance (and zero mean, unless ``shift_mean`` is False) over the
    masked entries; entries outside the mask are 0."""
    mean = masked_mean_array(x, mask)
    var = masked_mean_array((x - mean) ** 2, mask)
    out = (x - mean) / np.sqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return (out * mask).astype(x.dtype)


def gae(rewards: np.ndarray, values: np.ndarray, mask: np.ndarray, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation over each row's response tokens.

    rewards, values, mask: (B, T). The value after a row's last response token is 0 (the
    episode ends). With delta_t = r_t + gamma V_{t+1} - V_t, the advantage is
    A_t = delta_t + gamma lam A_{t+1}, computed backwards; returns = A + V.
    Returns (advantages, returns), both (B, T) and 0 outside the mask.
    """
    B, T = rewards.shape
    adv = np.zeros((B, T), dtype=np.float64)
    next_value = np.zeros(B)
    next_adv = np.zeros(B)
    ### BEGIN SOLUTION
    for t in range(T - 1, -1, -1):  # one vectorised step per position, over all rows
        m = mask[:, t] > 0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        a = delta + gamma * lam * next_adv
        adv[:, t] = np.where(m, a, 0.0)
        next_value = np.where(m, values[:, t], next_value)
        next_adv = np.where(m, a, next_adv)
    ### END SOLUTION
    adv = adv.astype(rewards.dtype)
    returns = (adv + values) * mask
    return adv, returns.astype(rewards.dtype)


def _clip(x: Tensor, lo: np.ndarray | float, hi: np.ndarray | float) -> Tensor:
    """Clamp elementwise; the gradient is zero wherever the clamp binds."""
    return ops.where(x.data < lo, lo, ops.where(x.data > hi, hi, x))


def _maximum(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise max; the gradient goes to the larger side."""
    return ops.where(a.data >= b.data, a, b)


def clipped_policy_loss(logp: Tensor, old_logp: np.ndarray, advantages: np.ndarray,
                        mask: np.ndarray, clip: float = 0.2) -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped surrogate, as a loss to minimise. All (B, T).

    ratio = exp(log pi - log pi_old);  loss = mean over response tokens of
    max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps)). Where the clipped term is the larger, its
    gradient is exactly zero: no incentive to move the ratio further outside [1 - eps, 1 + eps].
    Also returns the share of tokens where clipping binds and the approximate KL
    0.5 mean (log pi - log pi_old)^2.
    """
    if not 0.0 < clip < 1.0:
        raise ValueError(f"clipped_policy_loss: clip must be in (0, 1), got {clip}")
    ### BEGIN SOLUTION
    ratio = ops.exp(logp - old_logp)
    unclipped = ratio * -advantages
    clipped = _clip(ratio, 1.0 - clip, 1.0 + clip) * -advantages
    loss = masked_mean(_maximum(unclipped, clipped), mask)
    ### END SOLUTION
    stats = {
        "clipfrac": masked_mean_array((clipped.data > unclipped.data).astype(float), mask),
        "approxkl": 0.5 * masked_mean_array((logp.data - old_logp) ** 2, mask),
        "ratio": masked_mean_array(ratio.data, mask),
    }
    return loss, stats


def clipped_value_loss(values: Tensor, old_values: np.ndarray, returns: np.ndarray,
                       mask: np.ndarray, clip: float = 0.2) -> tuple[Tensor, dict[str, float]]:
    """0.5 mean over response tokens of max((V - R)^2, (clip(V, V_old +- eps) - R)^2): the value
    head may not move more than eps from its old prediction to reduce its error."""
    v_clipped = _clip(values, old_values - clip, old_values + clip)
    a = (values - returns) * (values - returns)
    b = (v_clipped - returns) * (v_clipped - returns)
    loss = masked_mean(_maximum(a, b), mask) * 0.5
    return loss, {"clipfrac": masked_mean_array((b.data > a.data).astype(float), mask)}


class AdaptiveKLController:
    """Ziegler et al. (2019): adjust beta so that the measured KL tracks a target.

    error = clip(KL / target - 1, -0.2, 0.2);  beta <- beta (1 + error n_steps / horizon)
    """

    def __init__(self, init_beta: float, target: float, horizon: int):
        if init_beta <= 0 or target <= 0 or horizon <= 0:
            raise ValueError("AdaptiveKLController: init_beta, target and horizon must be > 0")
        self.beta, self.target, self.horizon = init_beta, target, horizon

    def update(self, kl: float, n_steps: int) -> float:
        error = float(np.clip(kl / self.target - 1.0, -0.2, 0.2))
        self.beta *= 1.0 + error * n_steps / self.horizon
        return self.beta


# ------------------------------------------------------------------------------- stage
@dataclass
class PPOConfig:
    task: str = "reviews"  # which world
    init: str = "runs/default/sft/model.npz"  # the SFT policy: start point and frozen reference
    reward_model: str = "runs/default/reward/model.npz"  # the (normalized) proxy reward
    out_dir: str = "runs/default/ppo"  # where the checkpoint, metrics and plots go
    iterations: int = 120  # rollout + update rounds
    rollout_size: int = 64  # prompts sampled per iteration
    minibatch_size: int = 16  # sequences per gradient step
    ppo_epochs: int = 2  # passes over each rollout
    lr: float = 1e-4  # learning rate of policy and value head
    clip: float = 0.2  # epsilon of the clipped objective, in (0, 1)
    value_clip: float = 0.2  # epsilon of the clipped value loss
    vf_coef: float = 0.1  # weight of the value loss
    critic: str = "reward_model"  # the value head on a separate copy of the reward model's
    # trunk ("reward_model"), or on the policy's own trunk ("shared"); it starts at zero either
    # way. Chapter 5 measures both: the separate critic learns far better values here.
    entropy_coef: float = 0.0  # weight of the optional entropy bonus (0: off)
    beta: float = 0.05  # KL penalty coefficient (initial value when adaptive)
    kl_estimator: str = "k1"  # k1 or k3, per token on the sampled token
    adaptive_kl_target: float = 0.0  # > 0: adapt beta towards this KL (nats per response)
    adaptive_kl_horizon: int = 10_000  # the controller's horizon, in sequences
    gamma: float = 1.0  # discount
    lam: float = 0.95  # GAE lambda
    whiten_advantages: bool = True  # normalise advantages over response tokens
    missing_eos_penalty: float = 1.0  # subtracted from the score of a response with no EOS
    temperature: float = 1.0  # sampling temperature (log-probs use the same)
    max_new_tokens: int = 80  # response budget
    grad_clip: float = 1.0  # max global gradient norm
    eval_samples_per_prompt: int = 4  # samples per evaluation prompt at the end
    table_every: int = 20  # log a few (prompt, response, proxy, gold, KL) rows this often
    seed: int = 0  # seeds prompts, samples and minibatches
    progress: bool = True  # show a tqdm bar


@dataclass
class PPOResult:
    config: PPOConfig
    checkpoint: str
    report: PolicyReport | None = None
    metrics: list[dict[str, float]] = field(default_factory=list)  # one dict per iteration
    warnings: list[str] = field(default_factory=list)
    plot: str = ""  # gold and proxy against KL over the iterations
    seconds: float = 0.0


def _values(critic: GPT, tokens: np.ndarray) -> Tensor:
    """A separate critic's value at every position. tokens: (B, T) int -> (B, T)"""
    return critic.scalar("value", critic.hidden(tokens))


def _forward(model: GPT, tokens: np.ndarray, mask: np.ndarray, temperature: float,
             value: bool = True) -> tuple[Tensor, Tensor | None, Tensor]:
    """Per-token log-probs (B, T), values (B, T) if asked, and the logits (B, T-1, V) from one
    pass through the trunk. Policy and reference both go through here, so identical weights
    give identical numbers (a KL of exactly 0)."""
    h = model.hidden(tokens)  # (B, T, C)
    logits = model.lm_logits(h[:, :-1])  # (B, T-1, V)
    logp = logprobs_from_logits(logits, tokens, mask, temperature)  # (B, T)
    return logp, (model.scalar("value", h) if value else None), logits


def _entropy(logits: Tensor, mask: np.ndarray, temperature: float) -> Tensor:
    """Mean entropy of the next-token distributions that produced response tokens. -> scalar"""
    logp = F.log_softmax(logits * (1.0 / temperature), axis=-1)  # (B, T-1, V)
    per_token = -(ops.exp(logp) * logp).sum(axis=-1)  # (B, T-1)
    return masked_mean(per_token, mask[:, 1:])


def exact_kl(logits: np.ndarray, ref_logits: np.ndarray, mask: np.ndarray,
             temperature: float = 1.0) -> float:
    """The exact KL(pi || pi_ref) summed over the whole vocabulary at every response position,
    in nats per response (a diagnostic: cheap at our vocabulary size)."""
    lp = F.log_softmax_array(logits / temperature, axis=-1)  # (B, T-1, V)
    lq = F.log_softmax_array(ref_logits / temperature, axis=-1)
    per_token = (np.exp(lp) * (lp - lq)).sum(axis=-1)  # (B, T-1)
    return float((per_token * mask[:, 1:]).sum(axis=1).mean())


def train_ppo(config: PPOConfig) -> PPOResult:
    """RLHF with PPO: sample, score with the reward model minus a per-token KL penalty to the
    SFT reference, estimate advantages with GAE, and take clipped policy and value steps."""
    validate(config)
    t0 = time.time()
    if config.kl_estimator not in ("k1", "k3"):
        raise ValueError(f"kl_estimator must be k1 or k3, got {config.kl_estimator!r}")
    if not 0.0 < config.clip < 1.0:
        raise ValueError(f"clip must be in (0, 1), got {config.clip}")
    if config.beta < 0:
        raise ValueError(f"beta must be >= 0, got {config.beta}")
    if config.critic not in ("shared", "reward_model"):
        raise ValueError(f"critic must be 'shared' or 'reward_model', got {config.critic!r}")
    if config.rollout_size % config.minibatch_size:
        raise ValueError(f"minibatch_size {config.minibatch_size} must divide rollout_size "
                         f"{config.rollout_size}")
    for path, how in ((config.init, "sft"), (config.reward_model, "reward")):
        if not Path(path).exists():
            raise FileNotFoundError(f"{path} does not exist (make it with: python -m minirlhf "
                                    f"{how})")
    task = get_task(config.task)
    policy, tokenizer, _ = load_model(config.init)
    reference, _, _ = load_model(config.init)
    rm = RewardModel.load(config.reward_model)
    if config.critic == "shared":  # one trunk, two heads: cheap, but the losses compete
        policy.add_scalar_head("value")
        critic = None
        named = list(policy.named_parameters())
    else:  # a second trunk that already knows what the reward model scores
        critic, _, _ = load_model(config.reward_model)
        critic.add_scalar_head("value")
        named = list(policy.named_parameters("policy.")) + \
            list(critic.named_parameters("critic."))
    opt = AdamW(named, lr=config.lr)
    params = [p for _, p in named]
    kl_ctl = (AdaptiveKLController(config.beta, config.adaptive_kl_target,
                                   config.adaptive_kl_horizon)
              if config.adaptive_kl_target > 0 else None)
    beta = config.beta
    rng = np.random.default_rng(config.seed)
    result = PPOResult(config=config, checkpoint="")
    warned: set[str] = set()
    for it in tqdm(range(config.iterations), desc="ppo", disable=not config.progress):
        prompts = task.sample_prompts(config.rollout_size, rng)
        ids = [tokenizer.encode(p, bos=True) for p in prompts]
        g = generate(policy, ids, config.max_new_tokens, temperature=config.temperature, rng=rng)
        tokens, mask = g.tokens, g.response_mask
        texts = [tokenizer.decode(r) for r in g.responses()]
        scores = rm.score(prompts, texts, list(g.finished)).astype(np.float32)
        scores -= config.missing_eos_penalty * (~g.finished)
        minibatches = [np.arange(i, i + config.minibatch_size)
                       for i in range(0, config.rollout_size, config.minibatch_size)]
        old_logp = np.zeros_like(mask)
        old_values = np.zeros_like(mask)
        ref_logp = np.zeros_like(mask)
        exact = 0.0
        with no_grad():  # the same minibatch shapes as the updates, so the first ratio is 1
            for mb in minibatches:
                lp, v, logits = _forward(policy, tokens[mb], mask[mb], config.temperature,
                                         value=critic is None)
                if critic is not None:
                    v = _values(critic, tokens[mb])
                old_logp[mb], old_values[mb] = lp.data, v.data * mask[mb]
                rlp, _, ref_logits = _forward(reference, tokens[mb], mask[mb],
                                              config.temperature, value=False)
                ref_logp[mb] = rlp.data
                exact += exact_kl(logits.data, ref_logits.data, mask[mb], config.temperature) \
                    * len(mb) / config.rollout_size
        kl = kl_per_token(old_logp, ref_logp, config.kl_estimator) * mask  # (B, T)
        last = eos_positions(mask)
        rewards = -beta * kl
        rewards[np.arange(len(last)), last] += scores  # the score lands on the final token
        adv, returns = gae(rewards, old_values, mask, config.gamma, config.lam)
        if config.whiten_advantages:
            adv = whiten(adv, mask)
        stats: dict[str, list[float]] = {k: [] for k in ("pg", "vf", "clipfrac", "vclipfrac",
                                                         "approxkl", "ratio")}
        for _ in range(config.ppo_epochs):
            for b in rng.permutation(len(minibatches)):
                mb = minibatches[b]
                lp, v, logits = _forward(policy, tokens[mb], mask[mb], config.temperature,
                                         value=critic is None)
                if critic is not None:
                    v = _values(critic, tokens[mb])
                pg, ps = clipped_policy_loss(lp, old_logp[mb], adv[mb], mask[mb], config.clip)
                vf, vs = clipped_value_loss(v, old_values[mb], returns[mb], mask[mb],
                                            config.value_clip)
                loss = pg + vf * config.vf_coef
                if config.entropy_coef:  # a bonus for keeping the distributions spread
                    loss = loss - _entropy(logits, mask[mb], config.temperature) \
                        * config.entropy_coef
                optimizer_step(opt, loss, params, config.grad_clip, f"ppo: iteration {it}")
                for k, val in (("pg", pg.item()), ("vf", vf.item()), ("clipfrac",
                               ps["clipfrac"]), ("vclipfrac", vs["clipfrac"]),
                               ("approxkl", ps["approxkl"]), ("ratio", ps["ratio"])):
                    stats[k].append(val)
        seq_kl = float(kl.sum(axis=1).mean())
        entropy = float(-(old_logp * mask).sum() / max(mask.sum(), 1.0))  # sampled-token est.
        var_ret = float(np.var(returns[mask > 0]))
        explained = 1.0 - float(np.var((returns - old_values)[mask > 0])) / max(var_ret, 1e-8)
        golds = [task.gold(p, t, f) for p, t, f in zip(prompts, texts, g.finished, strict=True)]
        row = {"iteration": it, "objective/kl": seq_kl, "objective/entropy": entropy,
               "objective/non_score_reward": float((-beta * kl).sum(axis=1).mean()),
               "objective/rlhf_reward": float(scores.mean() - beta * seq_kl),
               "objective/scores": float(scores.mean()),
               "policy/approxkl_avg": float(np.mean(stats["approxkl"])),
               "policy/clipfrac_avg": float(np.mean(stats["clipfrac"])),
               "loss/policy_avg": float(np.mean(stats["pg"])),
               "loss/value_avg": float(np.mean(stats["vf"])),
               "val/clipfrac_avg": float(np.mean(stats["vclipfrac"])),
               "val/ratio": float(np.mean(stats["ratio"])),
               "val/explained_variance": explained, "gold": float(np.mean(golds)),
               "objective/exact_kl": exact,
               "response_length": float(mask.sum(axis=1).mean()),
               "eos_rate": float(g.finished.mean()), "beta": beta}
        result.metrics.append(row)
        _health(row, result.metrics[0], warned, result.warnings)
        if config.table_every and it % config.table_every == 0:  # a few samples as we go
            per_seq_kl = kl.sum(axis=1)
            lines = [f"iteration {it}: {'proxy':>6} {'gold':>6} {'KL':>6}  prompt|response"]
            for b in range(min(3, len(prompts))):
                lines.append(f"{'':>13}{scores[b]:>6.2f} {golds[b]:>6.2f} {per_seq_kl[b]:>6.2f}"
                             f"  {prompts[b]}|{texts[b]}{'' if g.finished[b] else '~'}")
            log.info("\n".join(lines))
        if kl_ctl is not None:
            beta = kl_ctl.update(seq_kl, config.rollout_size)

    result.checkpoint, result.report = finish_policy_stage(
        "ppo", config.out_dir, config, policy, reference, tokenizer, task, result.metrics,
        config.seed, config.eval_samples_per_prompt, config.max_new_tokens)
    m = result.metrics
    result.plot = str(plot_reward_vs_kl(
        Path(config.out_dir) / "reward_vs_kl.png",
        {"PPO": {"kl": [r["objective/kl"] for r in m], "gold": [r["gold"] for r in m],
                 "proxy": [r["objective/scores"] for r in m]}},
        title="PPO over training: gold and proxy reward against KL"))
    result.seconds = time.time() - t0
    return result


def _health(row: dict[str, float], first: dict[str, float], warned: set[str],
            out: list[str]) -> None:
    """Print each kind of warning once: negative KL estimate, ratio above 10, entropy collapse,
    length drift."""
    checks = {
        "kl": (row["objective/kl"] < 0, f"ppo: the batch's KL estimate is negative "
               f"({row['objective/kl']:.3f}) at iteration {row['iteration']}"),
        "ratio": (row["val/ratio"] > 10, f"ppo: mean ratio {row['val/ratio']:.1f} > 10 at "
                  f"iteration {row['iteration']}"),
        "entropy": (row["objective/entropy"] < 0.1 * first["objective/entropy"],
                    f"ppo: entropy collapsed to {row['objective/entropy']:.3f} at iteration "
                    f"{row['iteration']}"),
        "length": (abs(row["response_length"] - first["response_length"])
                   > 0.5 * first["response_length"],
                   f"ppo: response length drifted from {first['response_length']:.1f} to "
                   f"{row['response_length']:.1f} tokens at iteration {row['iteration']}"),
    }
    for key, (bad, message) in checks.items():
        if bad and key not in warned:
            warned.add(key)
            out.append(message)
            log.warning(message)
