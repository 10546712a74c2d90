"""Chapter 9's experiment: critic-free RL on the scratchpad world, measured against the
verifier, and the pitfalls of its choices, some as small labs that run in seconds.

- ``run`` (``python -m minirlhf experiment critic-free``): GRPO, Dr. GRPO, RLOO, REINFORCE,
  REINFORCE++, ReMax and PPO with a critic at equal samples over seeds, with intervals; GRPO
  with one switch flipped (Dr. GRPO's loss aggregation, dynamic sampling); zero-spread groups
  over training.

- ``length_lab``: GRPO's per-sequence length normalisation (``loss_type="grpo"``) against Dr.
  GRPO's constant normaliser, on a two-decision tabular policy where theory predicts the effect
  exactly: the reward does not depend on length, yet under ``grpo`` wrong responses grow longer
  and right ones shorter; under ``dr_grpo`` the length has zero expected gradient.
- ``std_weights``: how much of a batch's advantage weight each difficulty gets when rewards
  are divided by the group's std (GRPO) or not (Dr. GRPO), from rollouts of a real policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from minirlhf.evaluation import bootstrap_interval, per_prompt_gold
from minirlhf.experiments.common import Context
from minirlhf.lm.checkpoint import load_model
from minirlhf.lm.sampling import generate_text
from minirlhf.objectives.group import group_advantages, zero_std_groups
from minirlhf.stages.grpo import GRPOConfig, scratchpad_route, train_grpo
from minirlhf.stages.ppo import PPOConfig, train_ppo
from minirlhf.streams import stream
from minirlhf.world import get_task
from minirlhf.world.scratchpad import accuracy_by_difficulty, difficulty


# ------------------------------------------------------------------ the length lab
def expected_length(stop_logit: float, max_len: int) -> float:
    """E[L] of the continuation when each step stops with probability sigmoid(stop_logit) and
    step ``max_len`` always stops. L in 1..max_len."""
    s = 1.0 / (1.0 + np.exp(-stop_logit))
    lengths = np.arange(1, max_len + 1)
    p = (1.0 - s) ** (lengths - 1) * np.where(lengths < max_len, s, 1.0)  # (max_len,)
    return float((p * lengths).sum())


def length_lab(loss_type: str, steps: int = 300, groups: int = 512, G: int = 8,
               lr: float = 0.5, max_len: int = 20, p_right: float = 0.5, stop: float = 0.2,
               seed: int = 0) -> dict[str, list[float]]:
    """GRPO's length normalisation, isolated. A response is one answer token (right with
    probability sigmoid(theta)) then a continuation of L tokens (1 <= L <= max_len, each step
    stopping with probability sigmoid(phi[answer]): a stop logit for wrong and one for right
    answers). The reward is 1 for a right answer, whatever the length.

    Each step samples ``groups`` groups of G responses, takes GRPO's advantage (group mean and
    std), and ascends the surrogate aggregated as ``loss_type``: ``grpo`` weighs a response's
    gradient by 1/|o| (its own token count), ``dr_grpo`` by 1/(G * (1 + max_len)), ``dapo`` by
    1/(the batch's token count). Plain gradient ascent with learning rate ``lr``.

    Returns the trajectories (steps + 1 points): ``p_right``, ``length_wrong`` and
    ``length_right`` (the exact E[L] of the current policy given each answer).
    """
    if loss_type not in ("grpo", "dr_grpo", "dapo"):
        raise ValueError(f"length_lab: loss_type must be grpo, dr_grpo or dapo, got {loss_type!r}")
    rng = stream(seed, "train")
    theta = float(np.log(p_right / (1.0 - p_right)))
    phi = np.full(2, float(np.log(stop / (1.0 - stop))))  # [wrong, right]
    out: dict[str, list[float]] = {"p_right": [], "length_wrong": [], "length_right": []}

    def log_state() -> None:
        out["p_right"].append(float(1.0 / (1.0 + np.exp(-theta))))
        out["length_wrong"].append(expected_length(phi[0], max_len))
        out["length_right"].append(expected_length(phi[1], max_len))

    log_state()
    for _ in range(steps):
        # 1. rollout: the answer, then the continuation's length, for groups * G responses
        p = 1.0 / (1.0 + np.exp(-theta))
        right = (rng.random((groups, G)) < p).astype(np.int64)  # (N, G)
        s = 1.0 / (1.0 + np.exp(-phi[right]))  # (N, G) stop probability
        L = np.minimum(rng.geometric(s), max_len)  # (N, G)
        # 2.-4. reward and GRPO's advantage
        adv = group_advantages(right.astype(np.float64), "grpo", "group")  # (N, G)
        # 5. the gradient of the aggregated surrogate: advantage * weight * grad log pi(o)
        tokens = 1 + L
        weight = {"grpo": 1.0 / tokens, "dr_grpo": np.full(L.shape, 1.0 / (1 + max_len)),
                  "dapo": np.full(L.shape, groups * G / tokens.sum())}[loss_type]
        c = adv * weight / (groups * G)  # (N, G): each response's coefficient
        g_theta = (c * (right - p)).sum()
        # d/dphi log pi(L) = -(L - 1) s + [L < max_len] (1 - s)
        g_len = -(L - 1) * s + (L < max_len) * (1.0 - s)  # (N, G)
        g_phi = np.array([(c * g_len)[right == a].sum() for a in (0, 1)])
        theta += lr * g_theta
        phi += lr * g_phi
        log_state()
    return out


# -------------------------------------------------------------- the std's weighting
def std_weights(rewards: np.ndarray, difficulty: np.ndarray) -> dict[str, dict[int, float]]:
    """The share of the batch's total advantage weight (sum of |A| over responses) that each
    difficulty gets, with GRPO's group std (``scale_rewards="group"``) and without it
    (``"none"``, Dr. GRPO), and the share of groups whose rewards are all equal.

    rewards: (N, G) one group per prompt; difficulty: (N,) each prompt's difficulty.
    Returns {"group": {d: share}, "none": {d: share}, "zero_std": {d: fraction},
    "accuracy": {d: mean reward}}.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    difficulty = np.asarray(difficulty)
    if rewards.ndim != 2 or rewards.shape[0] != difficulty.shape[0]:
        raise ValueError(f"std_weights: rewards {rewards.shape} must be (N, G) with N = "
                         f"len(difficulty) = {difficulty.shape[0]}")
    levels = sorted(set(difficulty.tolist()))
    out: dict[str, dict[int, float]] = {}
    for scale in ("group", "none"):
        w = np.abs(group_advantages(rewards, "grpo", scale)).sum(axis=1)  # (N,)
        total = max(w.sum(), 1e-12)
        out[scale] = {d: float(w[difficulty == d].sum() / total) for d in levels}
    zero = zero_std_groups(rewards)
    out["zero_std"] = {d: float(zero[difficulty == d].mean()) for d in levels}
    out["accuracy"] = {d: float(rewards[difficulty == d].mean()) for d in levels}
    return out


# -------------------------------------------------------- the experiment on the world
# The scratchpad world's base run (python -m minirlhf experiment critic-free reads it).
BASE = "scratchpad"
NEEDS = ("sft",)
ROUTE = scratchpad_route  # the commands that make its SFT policy at a path
# Equal samples: every method sees ITERATIONS * PROMPTS * G responses (PPO: one per prompt).
ITERATIONS, PROMPTS, G = 60, 16, 8
METHODS: dict[str, dict[str, Any]] = {  # name -> the grpo stage's settings ("ppo": PPO's)
    "GRPO": {},
    "Dr. GRPO": dict(advantage="dr_grpo", loss_type="dr_grpo"),
    "RLOO": dict(advantage="rloo", loss_type="bnpo"),
    "REINFORCE": dict(advantage="reinforce"),
    "REINFORCE++": dict(advantage="reinforce_pp", kl_in="reward", beta=0.01),
    "ReMax": dict(advantage="remax"),
    "PPO (critic)": dict(ppo=True),
}
PITFALLS: dict[str, dict[str, Any]] = {  # GRPO with one switch flipped
    "GRPO, dr_grpo loss": dict(loss_type="dr_grpo"),
    "GRPO, dynamic sampling": dict(dynamic_sampling=True),
}


def _grpo(ctx: Context, name: str, seed: int, settings: dict[str, Any]) -> dict[str, Any]:
    """One run of the grpo stage (or PPO with a critic) from the base run's SFT policy: its
    held-out accuracy per prompt, by difficulty, KL, time, and its metrics over training."""
    out = ctx.out / f"{name.replace(' ', '_').replace('.', '').replace(',', '')}_seed{seed}"
    if settings.get("ppo"):
        cfg = PPOConfig(task="scratchpad", reward="verifier", critic="policy", init=ctx.sft,
                        out_dir=str(out), iterations=ctx.n(ITERATIONS * PROMPTS * G // 64, 2),
                        rollout_size=ctx.n(64, 8), minibatch_size=ctx.n(16, 8),
                        ppo_epochs=1, max_new_tokens=64, table_every=0,
                        eval_samples_per_prompt=ctx.n(8, 1), seed=seed, progress=False)
        r = train_ppo(cfg)
        curve = [m["gold"] for m in r.metrics]
        lengths: list[float] = []
        zero: list[float] = []
    else:
        cfg = GRPOConfig(init=ctx.sft, out_dir=str(out), iterations=ctx.n(ITERATIONS, 2),
                         prompts_per_iteration=ctx.n(PROMPTS, 4), num_generations=ctx.n(G, 4),
                         minibatch_size=ctx.n(32, 8), eval_samples_per_prompt=ctx.n(8, 1),
                         seed=seed, progress=False, **settings)
        r = train_grpo(cfg)
        curve = [m["gold"] for m in r.metrics]
        lengths = [m.get("completions/mean_length_incorrect", 0.0) for m in r.metrics]
        zero = [m["frac_reward_zero_std"] for m in r.metrics]
    per_prompt = per_prompt_gold(r.report.samples)  # (128, K)
    prompts = [p for p, _, _ in r.report.samples]
    return {"accuracy": r.report.gold, "sft_accuracy": r.report.reference_gold,
            "by_difficulty": {str(k): v for k, v in accuracy_by_difficulty(  # JSON's keys
                prompts, [g for _, _, g in r.report.samples]).items()},
            "interval": list(bootstrap_interval(per_prompt)),
            "per_prompt": per_prompt.mean(axis=1).tolist(),
            "sft_per_prompt": per_prompt_gold(r.report.reference_samples).mean(axis=1).tolist(),
            "kl": r.report.kl, "seconds": r.seconds, "gold_curve": curve,
            "length_incorrect": lengths, "frac_reward_zero_std": zero}


def run(ctx: Context) -> tuple[dict[str, Any], list[str]]:
    """Every method at equal samples, over seeds, from the scratchpad world's SFT policy; the
    pitfalls as switches; the length lab; the std's weighting from SFT rollouts."""
    seeds = [ctx.seed_for(f"seed{k}") for k in range(ctx.n(2, 1))]
    numbers: dict[str, Any] = {"methods": {}, "pitfalls": {}, "seeds": seeds,
                               "samples_per_method": ITERATIONS * PROMPTS * G}
    for table, runs in (("methods", METHODS), ("pitfalls", PITFALLS)):
        for name, settings in runs.items():
            numbers[table][name] = [_grpo(ctx, name, s, settings) for s in seeds]
    numbers["sft_weights"] = sft_std_weights(ctx.sft, ctx.n(256, 8), ctx.n(G, 4),
                                             ctx.seed_for("weights"))
    numbers["length_lab"] = {lt: length_lab(lt, steps=ctx.n(300, 20), seed=ctx.config.seed)
                             for lt in ("grpo", "dr_grpo", "dapo")}
    return numbers, [comparison_plot(ctx.out / "comparison.png", numbers)]


def sft_std_weights(init: str, n_prompts: int, G: int, seed: int) -> dict[str, dict[int, float]]:
    """``std_weights`` on G samples of the SFT policy for each of ``n_prompts`` training
    prompts."""
    policy, tokenizer, _ = load_model(init)
    task = get_task("scratchpad")
    rng = stream(seed, "samples")
    prompts = task.sample_prompts(n_prompts, rng)
    rows = [p for p in prompts for _ in range(G)]
    texts = generate_text(policy, tokenizer, rows, 64, rng)
    rewards = np.array([task.gold(p, t, f) for p, (t, f) in zip(rows, texts, strict=True)])
    return std_weights(rewards.reshape(n_prompts, G), np.array([difficulty(p) for p in prompts]))


def comparison_plot(path: Path, numbers: dict[str, Any]) -> str:
    """Held-out accuracy (mean over seeds, with the seeds' bootstrap intervals) against KL to
    SFT, one point per method and pitfall switch."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    for table, marker in (("methods", "o"), ("pitfalls", "s")):
        for name, runs in numbers[table].items():
            acc = np.mean([r["accuracy"] for r in runs])
            kl = np.mean([r["kl"] for r in runs])
            lo = min(r["interval"][0] for r in runs)
            hi = max(r["interval"][1] for r in runs)
            ax.errorbar([kl], [acc], yerr=[[acc - lo], [hi - acc]], fmt=marker, capsize=3,
                        label=name)
    sft = np.mean([r["sft_accuracy"] for r in numbers["methods"]["GRPO"]])
    ax.axhline(sft, color="gray", ls="--", lw=1, label="SFT")
    ax.set(xlabel="KL to SFT (nats per response)", ylabel="held-out exact match",
           title="critic-free RL on the scratchpad world, equal samples")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return str(path)
