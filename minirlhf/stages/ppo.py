"""PPO with a KL penalty (Ziegler et al. 2019; Ouyang et al. 2022), the stage
``train_ppo(config) -> PPOResult``. One iteration, step by step:

1. rollout: a response to each of ``rollout_size`` prompts from the current policy;
2. score: the reward model's score of each response (or the verifier's), and, without gradient,
   the old policy's and the reference's log-probs and the critic's values;
3. rewards: minus beta times the per-token KL to the reference on every token, plus the score on
   the last one;
4. advantages: GAE on the critic's values, whitened over the response tokens;
5. update: ``ppo_epochs`` passes of clipped policy and value steps over minibatches;
6. metrics, under TRL's PPO names.

GRPO (``stages/grpo.py``) has the same steps and names; steps 3 to 5 differ in what they hold.
The objectives (KL estimators, GAE, whitening, the clipped losses, the KL controller) live in
``objectives/ppo.py``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from minirlhf.autograd.tensor import Tensor, no_grad
from minirlhf.config import ConfigError, Stage, run_path, setting
from minirlhf.evaluation import PolicyReport, finish_policy_stage, metrics_table, policy_numbers
from minirlhf.lm.checkpoint import held_writes, load_model
from minirlhf.lm.model import GPT
from minirlhf.lm.optim import AdamW, optimizer_step
from minirlhf.lm.reward_model import RewardModel
from minirlhf.lm.sampling import Rollout, rollout
from minirlhf.lm.sequences import logprobs_from_logits
from minirlhf.objectives.ppo import (
    AdaptiveKLController,
    clipped_policy_loss,
    clipped_value_loss,
    exact_kl,
    gae,
    kl_penalized_rewards,
    mean_entropy,
    whiten,
)
from minirlhf.plots import plot_reward_vs_kl
from minirlhf.streams import stream
from minirlhf.training import Actors, PolicySettings, RolloutBatch
from minirlhf.world import TASK_NAMES, get_task

log = logging.getLogger("minirlhf.stages.ppo")


@dataclass
class PPOConfig(PolicySettings):
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
    clip: float = setting(0.2, "epsilon of the clipped objective, in (0, 1)", "(0, 1)")
    value_clip: float = setting(0.2, "epsilon of the clipped value loss", "(0, inf)")
    vf_coef: float = setting(0.1, "weight of the value loss", "[0, inf)")
    critic: str = setting(
        "reward_model", "the value head on a separate copy of the reward model's trunk "
        "('reward_model'), of the SFT policy's trunk ('policy': for reward = verifier, where "
        "there is no reward model) or on the policy's own trunk ('shared'); it starts at zero "
        "either way. Chapter 5 compares the first and last.",
        choices=("reward_model", "policy", "shared"))
    entropy_coef: float = setting(0.0, "weight of the optional entropy bonus (0: off)", "[0, inf)")
    beta: float = setting(0.05, "KL penalty coefficient (initial value when adaptive)", "[0, inf)")
    kl_estimator: str = setting("k1", "the per-token KL estimate in the reward: k1 or k3",
                                choices=("k1", "k3"))
    adaptive_kl_target: float = setting(
        0.0, "> 0: adapt beta towards this KL (nats per response)", "[0, inf)")
    adaptive_kl_horizon: int = setting(10_000, "the controller's horizon, in sequences", "[1, inf)")
    gamma: float = setting(1.0, "discount", "[0, 1]")
    lam: float = setting(0.95, "GAE lambda", "[0, 1]")
    lr: float = setting(1e-4, "learning rate of the policy and the value head (constant)",
                        "(0, inf)")
    whiten_advantages: bool = setting(True, "normalise advantages over response tokens")
    missing_eos_penalty: float = setting(
        1.0, "subtracted from the score of a response with no EOS", "[0, inf)")
    temperature: float = setting(1.0, "sampling temperature (log-probs use the same)", "(0, inf)")
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


def _policy_values(actors: Actors, tokens: np.ndarray, mask: np.ndarray, temperature: float
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """The policy's per-token log-probs, the critic's values (on its own trunk, or on the
    policy's) and the policy's logits, for the rows ``tokens``."""
    lp, v, logits = _forward(actors.policy, tokens, mask, temperature,
                             value=actors.critic is None)
    if actors.critic is not None:
        v = _values(actors.critic, tokens)
    return lp, v, logits


# ------------------------------------------------------------- one iteration, step by step
@dataclass
class Batch(RolloutBatch):
    """One iteration's rollout (``prompts``, ``roll``, ``tokens``, ``mask``) and what each step
    adds to it. Arrays (B, T) unless said."""

    scores: np.ndarray  # (B,) step 2: the reward of each response, minus the EOS penalty
    logp: np.ndarray  # step 2: log pi_old of each response token
    ref_logp: np.ndarray  # step 2: log pi_ref of each response token
    values: np.ndarray  # step 2: the critic's value at each response token (0 elsewhere)
    exact_kl: float  # step 2: the exact KL(pi || pi_ref) over the vocabulary, per response
    rewards: np.ndarray | None = None  # step 3: -beta KL per token, the score on the last
    kl: np.ndarray | None = None  # step 3: the per-token KL estimate
    advantages: np.ndarray | None = None  # step 4
    returns: np.ndarray | None = None  # step 4: the critic's targets


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


def score(actors: Actors, prompts: list[str], roll: Rollout, config: PPOConfig) -> Batch:
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
        for mb in minibatch_indices(config):
            lp, v, logits = _policy_values(actors, tokens[mb], mask[mb], config.temperature)
            logp[mb], values[mb] = lp.data, v.data * mask[mb]
            rlp, _, ref_logits = _forward(actors.reference, tokens[mb], mask[mb],
                                          config.temperature, value=False)
            ref_logp[mb] = rlp.data
            exact += exact_kl(logits.data, ref_logits.data, mask[mb], config.temperature) \
                * len(mb) / config.rollout_size
    return Batch(prompts, roll, scores, logp, ref_logp, values, exact)


def rewards(batch: Batch, beta: float, config: PPOConfig) -> tuple[np.ndarray, np.ndarray]:
    """Step 3: the per-token RLHF reward, -beta KL_t on every response token plus the score on
    the last one, and the per-token KL estimate (``config.kl_estimator``). Both (B, T). beta is
    the controller's current value when it adapts."""
    return kl_penalized_rewards(batch.scores, batch.logp, batch.ref_logp, batch.mask, beta,
                                config.kl_estimator)


def advantages(batch: Batch, config: PPOConfig) -> tuple[np.ndarray, np.ndarray]:
    """Step 4: GAE with the critic's values, then (optionally) whitened over response tokens.
    Returns (advantages, returns), both (B, T). A critic-free method replaces this step."""
    adv, returns = gae(batch.rewards, batch.values, batch.mask, config.gamma, config.lam)
    if config.whiten_advantages:
        adv = whiten(adv, batch.mask)
    return adv, returns


def update(actors: Actors, batch: Batch, config: PPOConfig, rng: np.random.Generator,
           it: int) -> dict[str, float]:
    """Step 5: ``ppo_epochs`` passes over the minibatches in a random order, each a clipped
    policy step and a clipped value step (plus the optional entropy bonus). Returns the mean of
    each loss and statistic over the steps, the optimizer's step count and learning rate."""
    tokens, mask = batch.tokens, batch.mask
    stats: dict[str, list[float]] = {k: [] for k in ("pg", "vf", "clipfrac", "vclipfrac",
                                                     "approxkl", "ratio", "grad_norm")}
    minibatches = minibatch_indices(config)
    for _ in range(config.ppo_epochs):
        for b in rng.permutation(len(minibatches)):
            mb = minibatches[b]
            lp, v, logits = _policy_values(actors, tokens[mb], mask[mb], config.temperature)
            pg, ps = clipped_policy_loss(lp, batch.logp[mb], batch.advantages[mb], mask[mb],
                                         config.clip)
            vf, vs = clipped_value_loss(v, batch.values[mb], batch.returns[mb], mask[mb],
                                        config.value_clip)
            loss = pg + vf * config.vf_coef
            if config.entropy_coef:  # a bonus for keeping the distributions spread
                loss = loss - mean_entropy(logits, mask[mb], config.temperature) \
                    * config.entropy_coef
            optimizer_step(actors.optimizer, loss, actors.params, config.grad_clip,
                           f"ppo: iteration {it}")
            for k, val in (("pg", pg.item()), ("vf", vf.item()), ("clipfrac", ps["clipfrac"]),
                           ("vclipfrac", vs["clipfrac"]), ("approxkl", ps["approxkl"]),
                           ("ratio", ps["ratio"]),
                           ("grad_norm", actors.optimizer.grad_norm)):
                stats[k].append(val)
    return {**{k: float(np.mean(v)) for k, v in stats.items()},
            "step": actors.optimizer.t, "learning_rate": actors.optimizer.lr}


def metrics(it: int, batch: Batch, stats: dict[str, float], actors: Actors, beta: float
            ) -> dict[str, float | None]:
    """Step 6: one row of metrics.jsonl, with the names of TRL's PPO trainer (experimental in
    TRL, removed after 1.12) where it has one, and meaning its quantities: ``objective/kl`` and
    ``objective/entropy`` are per response (summed over its tokens, averaged over the batch);
    ``entropy`` is per token (TRL's GRPO name). ``gold`` is the rollout's gold reward, measured
    for the log only: training never sees it; ``valid_rate`` the share of well-formed finished
    responses and ``gold_valid`` their mean gold (None when there are none), which leaves out
    the invalid text's constant floor."""
    task, roll, mask, kl = actors.task, batch.roll, batch.mask, batch.kl
    answers = list(zip(batch.prompts, roll.texts, roll.finished, strict=True))
    golds = [task.gold(p, t, f) for p, t, f in answers]
    valid = [task.valid(p, t, f) for p, t, f in answers]
    seq_kl = float(kl.sum(axis=1).mean())
    neg_logp = -(batch.logp * mask)  # sampled-token estimate of the entropy, per token
    var_ret = float(np.var(batch.returns[mask > 0]))
    explained = 1.0 - float(np.var((batch.returns - batch.values)[mask > 0])) / max(var_ret,
                                                                                    1e-8)
    return {"iteration": it, "step": stats["step"], "learning_rate": stats["learning_rate"],
            "grad_norm": stats["grad_norm"], "objective/kl": seq_kl,
            "objective/entropy": float(neg_logp.sum(axis=1).mean()),
            "entropy": float(neg_logp.sum() / max(mask.sum(), 1.0)),
            "objective/non_score_reward": float((-beta * kl).sum(axis=1).mean()),
            "objective/rlhf_reward": float(batch.scores.mean() - beta * seq_kl),
            "objective/scores": float(batch.scores.mean()),
            "policy/approxkl_avg": stats["approxkl"], "policy/clipfrac_avg": stats["clipfrac"],
            "loss/policy_avg": stats["pg"], "loss/value_avg": stats["vf"],
            "val/clipfrac_avg": stats["vclipfrac"], "val/ratio": stats["ratio"],
            "val/explained_variance": explained, "gold": float(np.mean(golds)),
            "objective/exact_kl": batch.exact_kl,
            "response_length": float(mask.sum(axis=1).mean()),
            "eos_rate": float(roll.generation.finished.mean()), "beta": beta,
            "valid_rate": float(np.mean(valid)),
            "gold_valid": float(np.mean([g for g, v in zip(golds, valid, strict=True) if v]))
            if any(valid) else None}


@held_writes()
def train_ppo(config: PPOConfig) -> PPOResult:
    """RLHF with PPO: sample, score with the reward model minus a per-token KL penalty to the
    SFT reference, estimate advantages with GAE, and take clipped policy and value steps."""
    STAGE.begin(config)
    t0 = time.time()
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
        prompts = actors.task.sample_prompts(config.rollout_size, rng)
        roll = rollout(actors.policy, actors.tokenizer, prompts, config.max_new_tokens, rng,
                       config.temperature)
        # 2. score: reward model, old policy, reference and critic, without gradient
        batch = score(actors, prompts, roll, config)
        # 3. rewards: a KL penalty on every token, the score on the last one
        batch.rewards, batch.kl = rewards(batch, beta, config)
        # 4. advantages: GAE on the critic's values, whitened
        batch.advantages, batch.returns = advantages(batch, config)
        # 5. update: clipped policy and value steps over ppo_epochs passes
        stats = update(actors, batch, config, rng, it)
        # 6. metrics (gold is measured for the log; training never sees it)
        result.metrics.append(metrics(it, batch, stats, actors, beta))
        _watch(result, batch, config, actors, warned)
        if kl_ctl is not None:
            beta = kl_ctl.update(result.metrics[-1]["objective/kl"], config.rollout_size)
    finish(result, actors, config)
    result.seconds = time.time() - t0
    return result


def finish(result: PPOResult, actors: Actors, config: PPOConfig) -> None:
    """After the last iteration: save and evaluate the policy against the reference, and plot
    gold and proxy reward against KL over the iterations."""
    result.checkpoint, result.report = finish_policy_stage(
        "ppo", config.out_dir, config, actors.policy, actors.reference, actors.tokenizer,
        actors.task, result.metrics, config.seed, config.eval_samples_per_prompt,
        config.max_new_tokens)
    m = result.metrics
    result.plot = str(plot_reward_vs_kl(
        Path(config.out_dir) / "reward_vs_kl.png",
        {"PPO": {"kl": [r["objective/kl"] for r in m], "gold": [r["gold"] for r in m],
                 "proxy": [r["objective/scores"] for r in m]}},
        title="PPO over training: gold and proxy reward against KL"))


def _watch(result: PPOResult, batch: Batch, config: PPOConfig, actors: Actors,
           warned: set[str]) -> None:
    """After each iteration: the health warnings (each kind once), and a few rows of samples
    every ``table_every`` iterations."""
    row = result.metrics[-1]
    _health(row, result.metrics[0], warned, result.warnings)
    if config.table_every and row["iteration"] % config.table_every == 0:
        _log_table(row["iteration"], batch, actors)


def _log_table(it: int, batch: Batch, actors: Actors) -> None:
    """A few (proxy, gold, KL, prompt|response) rows, so the log shows what training does."""
    per_seq_kl = batch.kl.sum(axis=1)
    texts = batch.roll.marked()
    roll = batch.roll
    lines = [f"iteration {it}: {'proxy':>6} {'gold':>6} {'KL':>6}  prompt|response"]
    for b in range(min(3, len(batch.prompts))):
        gold = actors.task.gold(batch.prompts[b], roll.texts[b], roll.finished[b])
        lines.append(f"{'':>13}{batch.scores[b]:>6.2f} {gold:>6.2f} {per_seq_kl[b]:>6.2f}"
                     f"  {batch.prompts[b]}|{texts[b]}")
    log.info("\n".join(lines))


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
    unused=lambda c: ("reward_model",) if c.reward == "verifier" else (),
    presets={"tiny": dict(iterations=10, rollout_size=32, minibatch_size=16, ppo_epochs=1,
                          max_new_tokens=60, eval_samples_per_prompt=1, table_every=0)},
    work=lambda c, _: c.iterations * c.rollout_size * c.max_new_tokens * (1 + c.ppo_epochs),
    seconds={"tiny": 1.6, "default": 165.7},  # on the reference 2-core laptop
)
