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
from minirlhf.config import ConfigError, Stage, StageConfig, run_path, setting
from minirlhf.evaluation import PolicyReport, finish_policy_stage, metrics_table, policy_numbers
from minirlhf.lm.checkpoint import load_model
from minirlhf.lm.model import GPT
from minirlhf.lm.optim import AdamW, optimizer_step
from minirlhf.lm.reward_model import RewardModel
from minirlhf.lm.sampling import Rollout, rollout
from minirlhf.lm.sequences import (
    eos_positions,
    logprobs_from_logits,
    masked_mean,
    masked_mean_array,
)
from minirlhf.lm.tokenizer import CharTokenizer
from minirlhf.plots import plot_reward_vs_kl
from minirlhf.streams import stream
from minirlhf.world import TASK_NAMES, Task, get_task

log = logging.getLogger("minirlhf.stages.ppo")


KL_ESTIMATORS = ("k1", "k3")


def kl_per_token(logp: np.ndarray, ref_logp: np.ndarray, kind: str = "k1") -> np.ndarray:
    """An estimate of KL(pi || pi_ref) from the sampled token's log-probs, per token.

    k1 = log pi - log pi_ref (unbiased, can be negative on a token);
    k3 = (rho - 1) - log rho with rho = pi_ref / pi (unbiased, never negative; Schulman 2020).
    """
    if kind == "k1":
        # exercise: return the (B, T) array of k1
        ### BEGIN SOLUTION
        return logp - ref_logp
        ### END SOLUTION
    if kind == "k3":
        # exercise: return the (B, T) array of k3
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
    # exercise: fill adv (B, T) from the last position to the first, carrying next_value and
    #   next_adv (B,)
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
    # exercise: set ratio (B, T) and loss, the scalar Tensor
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
class PPOConfig(StageConfig):
    task: str = setting("reviews", "which world", choices=TASK_NAMES)
    init: str = setting(
        run_path("sft", "model.npz"), "the SFT policy: start point and frozen reference")
    reward: str = setting(
        "reward_model", "what scores a response: the reward model (a learned proxy) or the "
        "task's verifier (its gold reward, for a world whose answers a program checks, as the "
        "scratchpad world's)", choices=("reward_model", "verifier"))
    reward_model: str = setting(run_path("reward", "model.npz"), "the (normalized) proxy reward")
    out_dir: str = setting(run_path("ppo"), "where the checkpoint, metrics and plots go")
    iterations: int = setting(120, "rollout + update rounds", "[1, 100_000]")
    rollout_size: int = setting(64, "prompts sampled per iteration", "[1, 4096]")
    minibatch_size: int = setting(16, "sequences per gradient step", "[1, 4096]")
    ppo_epochs: int = setting(2, "passes over each rollout", "[1, 100]")
    lr: float = setting(1e-4, "learning rate of policy and value head", "(0, inf)")
    clip: float = setting(0.2, "epsilon of the clipped objective, in (0, 1)", "(0, 1)")
    value_clip: float = setting(0.2, "epsilon of the clipped value loss", "(0, inf)")
    vf_coef: float = setting(0.1, "weight of the value loss", "[0, inf)")
    critic: str = setting(
        "reward_model", "the value head on a separate copy of the reward model's trunk "
        "('reward_model'), of the SFT policy's trunk ('policy': for reward = verifier, where "
        "there is no reward model) or on the policy's own trunk ('shared'); it starts at zero "
        "either way. Chapter 5 measures the first and last: the separate critic learns far "
        "better values here.", choices=("reward_model", "policy", "shared"))
    entropy_coef: float = setting(0.0, "weight of the optional entropy bonus (0: off)", "[0, inf)")
    beta: float = setting(0.05, "KL penalty coefficient (initial value when adaptive)", "[0, inf)")
    kl_estimator: str = setting("k1", "k1 or k3, per token on the sampled token",
                                choices=KL_ESTIMATORS)
    adaptive_kl_target: float = setting(
        0.0, "> 0: adapt beta towards this KL (nats per response)", "[0, inf)")
    adaptive_kl_horizon: int = setting(10_000, "the controller's horizon, in sequences", "[1, inf)")
    gamma: float = setting(1.0, "discount", "[0, 1]")
    lam: float = setting(0.95, "GAE lambda", "[0, 1]")
    whiten_advantages: bool = setting(True, "normalise advantages over response tokens")
    missing_eos_penalty: float = setting(
        1.0, "subtracted from the score of a response with no EOS", "[0, inf)")
    temperature: float = setting(1.0, "sampling temperature (log-probs use the same)", "(0, inf)")
    max_new_tokens: int = setting(80, "response budget", "[1, 126]")
    grad_clip: float = setting(1.0, "max global gradient norm", "[0, inf)")
    eval_samples_per_prompt: int = setting(
        4, "samples per evaluation prompt at the end", "[1, inf)")
    table_every: int = setting(
        20, "log a few (prompt, response, proxy, gold, KL) rows this often", "[0, inf)")

    def check(self, upstream: dict | None = None) -> None:
        """Every setting in its range; minibatches that cut the rollout evenly."""
        super().check(upstream)
        if self.reward == "verifier" and self.critic == "reward_model":
            raise ConfigError("PPOConfig: critic = 'reward_model' needs a reward model, and "
                              "reward = 'verifier'; use critic = 'policy' or 'shared'")
        if self.rollout_size % self.minibatch_size:
            raise ConfigError(f"PPOConfig: minibatch_size = {self.minibatch_size} must divide "
                              f"rollout_size = {self.rollout_size}")


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


# ------------------------------------------------------------- one iteration, step by step
@dataclass
class Actors:
    """The models one PPO run holds: the policy being trained, the frozen reference, the critic
    (None: the value head sits on the policy's own trunk), the reward model (None: the task's
    verifier scores), the task, and the optimizer over the policy's (and the critic's)
    parameters."""

    policy: GPT
    reference: GPT
    critic: GPT | None
    reward_model: RewardModel | None
    tokenizer: CharTokenizer
    optimizer: AdamW
    params: list[Tensor]
    task: Task | None = None


@dataclass
class Scored:
    """A rollout's sequences scored without gradient, before any update. All (B, T) but
    ``scores`` (B,) and ``exact_kl`` (a float)."""

    scores: np.ndarray  # the reward (model or verifier) of each response, minus the EOS penalty
    logp: np.ndarray  # log pi_old of each response token
    ref_logp: np.ndarray  # log pi_ref of each response token
    values: np.ndarray  # the critic's value at each response token (0 elsewhere)
    exact_kl: float  # the exact KL(pi || pi_ref) over the vocabulary, nats per response


def make_actors(config: PPOConfig) -> Actors:
    """Policy and reference from the SFT checkpoint, the reward model (unless the verifier
    scores), and the critic as ``config.critic`` asks; an AdamW over what trains."""
    policy, tokenizer, _ = load_model(config.init)
    reference, _, _ = load_model(config.init)
    rm = RewardModel.load(config.reward_model) if config.reward == "reward_model" else None
    if config.critic == "shared":  # one trunk, two heads: cheap, but the losses compete
        policy.add_scalar_head("value")
        critic = None
        named = list(policy.named_parameters())
    else:  # a second trunk that already knows what the reward model scores
        critic, _, _ = load_model(config.reward_model if config.critic == "reward_model"
                                  else config.init)
        critic.add_scalar_head("value")
        named = list(policy.named_parameters("policy.")) + \
            list(critic.named_parameters("critic."))
    return Actors(policy, reference, critic, rm, tokenizer, AdamW(named, lr=config.lr),
                  [p for _, p in named], get_task(config.task))


def minibatch_indices(config: PPOConfig) -> list[np.ndarray]:
    """The rollout's rows cut into consecutive minibatches."""
    return [np.arange(i, i + config.minibatch_size)
            for i in range(0, config.rollout_size, config.minibatch_size)]


def score_rollout(actors: Actors, prompts: list[str], roll: Rollout,
                  minibatches: list[np.ndarray], config: PPOConfig) -> Scored:
    """Step 2: the reward model's scores (or the verifier's), and the old policy's log-probs,
    the reference's log-probs and the critic's values, all without gradient. The minibatches
    have the shapes of the updates, so the first update's ratio is exactly 1."""
    g = roll.generation
    tokens, mask = g.tokens, g.response_mask
    if actors.reward_model is not None:
        scores = actors.reward_model.score(prompts, roll.texts, roll.finished)
    else:
        scores = np.array([actors.task.gold(p, t, f) for p, t, f in zip(
            prompts, roll.texts, roll.finished, strict=True)])
    scores = scores.astype(np.float32)
    scores -= config.missing_eos_penalty * (~g.finished)
    logp, values, ref_logp = (np.zeros_like(mask) for _ in range(3))
    exact = 0.0
    with no_grad():
        for mb in minibatches:
            lp, v, logits = _forward(actors.policy, tokens[mb], mask[mb], config.temperature,
                                     value=actors.critic is None)
            if actors.critic is not None:
                v = _values(actors.critic, tokens[mb])
            logp[mb], values[mb] = lp.data, v.data * mask[mb]
            rlp, _, ref_logits = _forward(actors.reference, tokens[mb], mask[mb],
                                          config.temperature, value=False)
            ref_logp[mb] = rlp.data
            exact += exact_kl(logits.data, ref_logits.data, mask[mb], config.temperature) \
                * len(mb) / config.rollout_size
    return Scored(scores, logp, ref_logp, values, exact)


def kl_penalized_rewards(scores: np.ndarray, logp: np.ndarray, ref_logp: np.ndarray,
                         mask: np.ndarray, beta: float, estimator: str = "k1"
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Step 3: the per-token RLHF reward, r_t = -beta KL_t, plus the score on each response's
    last token. scores: (B,); the others (B, T). Returns (rewards, per-token KL), both (B, T)
    and 0 outside the mask."""
    kl = kl_per_token(logp, ref_logp, estimator) * mask  # (B, T)
    rewards = -beta * kl
    last = eos_positions(mask)
    rewards[np.arange(len(last)), last] += scores  # the score lands on the final token
    return rewards, kl


def advantages(rewards: np.ndarray, values: np.ndarray, mask: np.ndarray, config: PPOConfig
               ) -> tuple[np.ndarray, np.ndarray]:
    """Step 4: GAE with the critic's values, then (optionally) whitened over response tokens.
    All (B, T). A critic-free method replaces this step (and only this one)."""
    adv, returns = gae(rewards, values, mask, config.gamma, config.lam)
    if config.whiten_advantages:
        adv = whiten(adv, mask)
    return adv, returns


def ppo_update(actors: Actors, tokens: np.ndarray, mask: np.ndarray, old: Scored,
               adv: np.ndarray, returns: np.ndarray, minibatches: list[np.ndarray],
               config: PPOConfig, rng: np.random.Generator, it: int) -> dict[str, float]:
    """Step 5: ``ppo_epochs`` passes over the minibatches in a random order, each a clipped
    policy step and a clipped value step (plus the optional entropy bonus). Returns the mean of
    each loss and statistic over the steps, the optimizer's step count and learning rate."""
    stats: dict[str, list[float]] = {k: [] for k in ("pg", "vf", "clipfrac", "vclipfrac",
                                                     "approxkl", "ratio", "grad_norm")}
    for _ in range(config.ppo_epochs):
        for b in rng.permutation(len(minibatches)):
            mb = minibatches[b]
            lp, v, logits = _forward(actors.policy, tokens[mb], mask[mb], config.temperature,
                                     value=actors.critic is None)
            if actors.critic is not None:
                v = _values(actors.critic, tokens[mb])
            pg, ps = clipped_policy_loss(lp, old.logp[mb], adv[mb], mask[mb], config.clip)
            vf, vs = clipped_value_loss(v, old.values[mb], returns[mb], mask[mb],
                                        config.value_clip)
            loss = pg + vf * config.vf_coef
            if config.entropy_coef:  # a bonus for keeping the distributions spread
                loss = loss - _entropy(logits, mask[mb], config.temperature) * config.entropy_coef
            optimizer_step(actors.optimizer, loss, actors.params, config.grad_clip,
                           f"ppo: iteration {it}")
            for k, val in (("pg", pg.item()), ("vf", vf.item()), ("clipfrac", ps["clipfrac"]),
                           ("vclipfrac", vs["clipfrac"]), ("approxkl", ps["approxkl"]),
                           ("ratio", ps["ratio"]),
                           ("grad_norm", actors.optimizer.grad_norm)):
                stats[k].append(val)
    return {**{k: float(np.mean(v)) for k, v in stats.items()},
            "step": actors.optimizer.t, "learning_rate": actors.optimizer.lr}


def iteration_metrics(it: int, mask: np.ndarray, finished: np.ndarray, old: Scored,
                      kl: np.ndarray, returns: np.ndarray, stats: dict[str, float],
                      golds: list[float], beta: float, valid: list[bool] | None = None
                      ) -> dict[str, float | None]:
    """Step 6: one row of metrics.jsonl, with the names of TRL's PPO trainer (experimental in
    TRL, removed after 1.12) where it has one, and meaning its quantities: ``objective/kl`` and
    ``objective/entropy`` are per response (summed over its tokens, averaged over the batch);
    ``entropy`` is per token (TRL's GRPO name). ``golds`` is the rollout's gold reward,
    measured for the log only: training never sees it. ``valid`` (when given): which responses
    are well-formed and finished; then ``valid_rate`` and ``gold_valid``, the mean gold of the
    valid ones (None when there are none), which leaves out the invalid text's constant floor."""
    seq_kl = float(kl.sum(axis=1).mean())
    neg_logp = -(old.logp * mask)  # sampled-token estimate of the entropy, per token
    entropy = float(neg_logp.sum() / max(mask.sum(), 1.0))
    var_ret = float(np.var(returns[mask > 0]))
    explained = 1.0 - float(np.var((returns - old.values)[mask > 0])) / max(var_ret, 1e-8)
    return {"iteration": it, "step": stats["step"], "learning_rate": stats["learning_rate"],
            "grad_norm": stats["grad_norm"], "objective/kl": seq_kl,
            "objective/entropy": float(neg_logp.sum(axis=1).mean()), "entropy": entropy,
            "objective/non_score_reward": float((-beta * kl).sum(axis=1).mean()),
            "objective/rlhf_reward": float(old.scores.mean() - beta * seq_kl),
            "objective/scores": float(old.scores.mean()),
            "policy/approxkl_avg": stats["approxkl"], "policy/clipfrac_avg": stats["clipfrac"],
            "loss/policy_avg": stats["pg"], "loss/value_avg": stats["vf"],
            "val/clipfrac_avg": stats["vclipfrac"], "val/ratio": stats["ratio"],
            "val/explained_variance": explained, "gold": float(np.mean(golds)),
            "objective/exact_kl": old.exact_kl,
            "response_length": float(mask.sum(axis=1).mean()),
            "eos_rate": float(finished.mean()), "beta": beta,
            **({} if valid is None else {
                "valid_rate": float(np.mean(valid)),
                "gold_valid": float(np.mean([g for g, v in zip(golds, valid, strict=True) if v]))
                if any(valid) else None})}


def _log_table(it: int, prompts: list[str], roll: Rollout, old: Scored, kl: np.ndarray,
               golds: list[float]) -> None:
    """A few (proxy, gold, KL, prompt|response) rows, so the log shows what training does."""
    per_seq_kl = kl.sum(axis=1)
    texts = roll.marked()
    lines = [f"iteration {it}: {'proxy':>6} {'gold':>6} {'KL':>6}  prompt|response"]
    for b in range(min(3, len(prompts))):
        lines.append(f"{'':>13}{old.scores[b]:>6.2f} {golds[b]:>6.2f} {per_seq_kl[b]:>6.2f}"
                     f"  {prompts[b]}|{texts[b]}")
    log.info("\n".join(lines))


def train_ppo(config: PPOConfig) -> PPOResult:
    """RLHF with PPO: sample, score with the reward model minus a per-token KL penalty to the
    SFT reference, estimate advantages with GAE, and take clipped policy and value steps."""
    STAGE.begin(config, unused=("reward_model",) if config.reward == "verifier" else ())
    t0 = time.time()
    task = get_task(config.task)
    actors = make_actors(config)
    kl_ctl = (AdaptiveKLController(config.beta, config.adaptive_kl_target,
                                   config.adaptive_kl_horizon)
              if config.adaptive_kl_target > 0 else None)
    beta = config.beta
    rng = stream(config.seed, "train")
    result = PPOResult(config=config, checkpoint="")
    warned: set[str] = set()
    for it in tqdm(range(config.iterations), desc="ppo", disable=not config.progress):
        # 1. rollout: a response to each of rollout_size prompts from the current policy
        prompts = task.sample_prompts(config.rollout_size, rng)
        roll = rollout(actors.policy, actors.tokenizer, prompts, config.max_new_tokens, rng,
                       config.temperature)
        tokens, mask = roll.generation.tokens, roll.generation.response_mask
        minibatches = minibatch_indices(config)
        # 2. score: reward model, old policy, reference and critic, without gradient
        old = score_rollout(actors, prompts, roll, minibatches, config)
        # 3. rewards: a KL penalty on every token, the score on the last one
        rewards, kl = kl_penalized_rewards(old.scores, old.logp, old.ref_logp, mask, beta,
                                           config.kl_estimator)
        # 4. advantages: GAE on the critic's values, whitened
        adv, returns = advantages(rewards, old.values, mask, config)
        # 5. update: clipped policy and value steps over ppo_epochs passes
        stats = ppo_update(actors, tokens, mask, old, adv, returns, minibatches, config, rng, it)
        # 6. metrics (gold is measured for the log; training never sees it)
        golds = [task.gold(p, t, f) for p, t, f in zip(prompts, roll.texts, roll.finished,
                                                       strict=True)]
        valid = [task.valid(p, t, f) for p, t, f in zip(prompts, roll.texts, roll.finished,
                                                        strict=True)]
        row = iteration_metrics(it, mask, roll.generation.finished, old, kl, returns, stats,
                                golds, beta, valid)
        result.metrics.append(row)
        _health(row, result.metrics[0], warned, result.warnings)
        if config.table_every and it % config.table_every == 0:
            _log_table(it, prompts, roll, old, kl, golds)
        if kl_ctl is not None:
            beta = kl_ctl.update(row["objective/kl"], config.rollout_size)

    result.checkpoint, result.report = finish_policy_stage(
        "ppo", config.out_dir, config, actors.policy, actors.reference, actors.tokenizer, task,
        result.metrics, config.seed, config.eval_samples_per_prompt, config.max_new_tokens)
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
        "entropy": (row["entropy"] < 0.1 * first["entropy"],
                    f"ppo: entropy collapsed to {row['entropy']:.3f} nats per token at iteration "
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


# ------------------------------------------------------------------ the stage's record
def record(r: PPOResult, config: PPOConfig) -> dict:
    """What the pipeline keeps of a run (its record's numbers)."""
    return {**policy_numbers(r.report, config.eval_samples_per_prompt), "plot": r.plot,
            "warnings": r.warnings}


def show(r: PPOResult, config: PPOConfig) -> str:
    """What ``python -m minirlhf ppo`` prints after training."""
    lines = [metrics_table(r.metrics, [
        ("iter", "iteration", ">5d"), ("KL", "objective/kl", ">8.2f"),
        ("score", "objective/scores", ">8.2f"), ("gold", "gold", ">8.2f"),
        ("length", "response_length", ">8.1f"), ("clipfrac", "policy/clipfrac_avg", ">10.3f")])]
    lines += [r.report.describe("PPO", config.eval_samples_per_prompt),
              f"{r.seconds:.0f} s; checkpoint: {r.checkpoint}; plot: {r.plot}"]
    return "\n".join(lines)


STAGE = Stage(
    name="ppo", title="PPO", help="PPO against the reward model with a KL penalty",
    config=PPOConfig, run=train_ppo, record=record, show=show, policy=True,
    inputs={"init": "sft", "reward_model": "reward"},
    presets={"tiny": dict(iterations=10, rollout_size=32, minibatch_size=16, ppo_epochs=1,
                          max_new_tokens=60, eval_samples_per_prompt=1, table_every=0)},
    work=lambda c, _: c.iterations * c.rollout_size * c.max_new_tokens * (1 + c.ppo_epochs),
    seconds={"tiny": 1.6, "default": 165.7},  # default measured 2026-12-01
)
