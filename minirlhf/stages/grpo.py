"""Critic-free RL: GRPO and its family (Dr. GRPO, DAPO's choices, RLOO, REINFORCE, REINFORCE++,
ReMax), on a reward a program verifies (the scratchpad world) or on the reward model.

PPO learns a critic to tell a good token from a bad one. These methods learn none: they sample
``num_generations`` responses to each prompt and use the *group* as the baseline. An iteration:

1. rollout: G responses to each of N prompts (B = N G sequences, a group's in consecutive rows);
2. score: the reward of each response (the verifier, or the reward model), and the log-probs of
   the old policy and of the frozen reference, without gradient;
3. rewards: the KL penalty in the reward (k1, as PPO) when ``kl_in`` is ``reward``;
4. advantages: one per response from its group (``advantage``: grpo, dr_grpo, rloo,
   reinforce, remax) or per token (reinforce_pp), see ``objectives.group``;
5. update: the clipped surrogate per token, plus beta times a KL estimate per token when
   ``kl_in`` is ``loss``, aggregated by ``loss_type``, for ``num_iterations`` passes;
6. metrics, under TRL's GRPO names.

The steps and their names are PPO's (``stages/ppo.py``); steps 3 to 5 differ in what they
hold: no critic, so the advantage comes from the group, and the loss is aggregated by
``loss_type``.

The loss value is logged as ``loss`` but is not a measure of progress: on an iteration's first
minibatch the ratio is 1 (later ones move it little) and the surrogate is minus the mean
advantage, which is about 0 by construction (group-centred advantages sum to zero), whether the
policy is getting better or not. Watch ``reward`` and the gold accuracy instead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from minirlhf.autograd.tensor import no_grad
from minirlhf.config import (
    ConfigError,
    Stage,
    missing_input,
    output_hint,
    run_path,
    setting,
)
from minirlhf.evaluation import (
    PolicyReport,
    bootstrap_interval,
    finish_policy_stage,
    metrics_table,
    paired_bootstrap_interval,
    per_prompt_gold,
    policy_numbers,
)
from minirlhf.lm.checkpoint import held_writes, load_model
from minirlhf.lm.optim import AdamW, optimizer_step
from minirlhf.lm.reward_model import RewardModel
from minirlhf.lm.sampling import Rollout, generate, rollout
from minirlhf.lm.sequences import token_logprobs
from minirlhf.objectives.group import (
    LOSS_TYPES,
    SCALE_REWARDS,
    aggregate,
    clipped_sequence_losses,
    clipped_token_losses,
    group_advantages,
    reinforce_pp_advantages,
    sequence_mean,
    zero_std_groups,
)
from minirlhf.objectives.ppo import KL_ESTIMATORS, kl_estimate
from minirlhf.plots import plot_reward_vs_kl
from minirlhf.streams import stream
from minirlhf.training import Actors, PolicySettings, RolloutBatch
from minirlhf.world import TASK_NAMES, get_task
from minirlhf.world.scratchpad import scratchpad_route

log = logging.getLogger("minirlhf.stages.grpo")

ADVANTAGE_KINDS = ("grpo", "dr_grpo", "rloo", "reinforce", "reinforce_pp", "remax")
SCRATCHPAD_ROUTE = scratchpad_route("runs/scratchpad/sft/model.npz", absolute=False)


@dataclass
class GRPOConfig(PolicySettings):
    task: str = setting("scratchpad", "which world", choices=TASK_NAMES)
    init: str = setting(
        "runs/scratchpad/sft/model.npz", "the SFT policy of the task's world: start point and "
        "frozen reference (see SCRATCHPAD_ROUTE for the scratchpad world's)")
    reward: str = setting(
        "verifier", "what scores a response: the task's verifier (its gold reward: for a "
        "world whose answers a program checks, that check; in the reviews world, the hidden "
        "gold itself, an oracle's upper bound) or the reward model",
        choices=("verifier", "reward_model"))
    reward_model: str = setting(
        run_path("reward", "model.npz"), "the (normalized) reward model, when reward = "
        "reward_model")
    out_dir: str = setting("runs/scratchpad/grpo", "where the checkpoint, metrics and plots go")
    iterations: int = setting(60, "rollout + update rounds", "[1, 100_000]")
    prompts_per_iteration: int = setting(16, "N, prompts sampled per iteration", "[1, 4096]")
    num_generations: int = setting(8, "G, responses per prompt (TRL's num_generations)",
                                   "[1, 256]")
    advantage: str = setting(
        "grpo", "the baseline: grpo (group mean, scaled), dr_grpo (group mean), rloo "
        "(leave-one-out mean), reinforce (batch mean), reinforce_pp (KL in the reward, "
        "whitened over the batch), remax (the greedy response's reward)",
        choices=ADVANTAGE_KINDS)
    scale_rewards: str = setting(
        "group", "grpo: divide by the group's std, the batch's, or none", choices=SCALE_REWARDS)
    loss_type: str = setting(
        "grpo", "grpo (mean per sequence, then over sequences), dr_grpo (sum / (B * "
        "max_new_tokens)), dapo (sum / the batch's response tokens per optimizer step, as "
        "TRL), bnpo (sum / the minibatch's response tokens), rloo (one clipped ratio per "
        "response, RLOOTrainer's; the KL in the reward)",
        choices=LOSS_TYPES)
    epsilon: float = setting(0.2, "lower clip of the ratio: 1 - epsilon", "(0, 1)")
    epsilon_high: float = setting(0.2, "upper clip of the ratio: 1 + epsilon_high (DAPO's "
                                  "clip-higher: 0.28)", "(0, 10]")
    num_iterations: int = setting(1, "passes over each batch (TRL's num_iterations); the ratio "
                                  "is exactly 1 on the first minibatch step", "[1, 100]")
    minibatch_size: int = setting(32, "sequences per gradient step", "[1, 4096]")
    beta: float = setting(0.04, "KL coefficient (0: no KL term)", "[0, inf)")
    kl_in: str = setting("loss", "where the KL goes: the loss (an estimator with gradient, as "
                         "GRPO) or the reward (k1 per token, as PPO)", choices=("loss", "reward"))
    kl_estimator: str = setting("k3", "the estimator when kl_in = loss: k1 (no restraint at "
                                "all on-policy), k2 (the gradient of KL(pi||ref)), k3 (of "
                                "KL(ref||pi), GRPO's)", choices=KL_ESTIMATORS)
    mask_truncated_completions: bool = setting(
        False, "leave responses without EOS out of the loss")
    dynamic_sampling: bool = setting(
        False, "drop groups whose rewards are all equal (DAPO), keeping the others")
    temperature: float = setting(1.0, "sampling temperature (log-probs use the same)",
                                 "(0, inf)")
    lr: float = setting(1e-4, "learning rate (constant)", "(0, inf)")
    max_new_tokens: int = setting(64, "response budget (TRL's max_completion_length)",
                                  "[1, 126]")
    eval_samples_per_prompt: int = 8

    def check(self, upstream: dict | None = None) -> None:
        """Every setting in its range; groups big enough for their baseline; minibatches that
        cut the batch evenly."""
        super().check(upstream)
        if self.advantage in ("grpo", "dr_grpo", "rloo") and self.num_generations < 2:
            raise ConfigError(f"GRPOConfig: advantage = {self.advantage!r} needs "
                              f"num_generations >= 2 (a group), got {self.num_generations}")
        batch = self.prompts_per_iteration * self.num_generations
        if batch % self.minibatch_size:
            raise ConfigError(f"GRPOConfig: minibatch_size = {self.minibatch_size} must divide "
                              f"prompts_per_iteration * num_generations = {batch}")
        if self.loss_type == "rloo" and self.advantage == "reinforce_pp":
            raise ConfigError("GRPOConfig: loss_type = 'rloo' needs one advantage per response; "
                              "advantage = 'reinforce_pp' gives one per token")
        if self.loss_type == "rloo" and self.kl_in == "loss" and self.beta:
            raise ConfigError("GRPOConfig: loss_type = 'rloo' takes the KL in the reward, as "
                              "RLOOTrainer does: set kl_in=reward (or beta=0)")


@dataclass
class GRPOResult:
    config: GRPOConfig
    checkpoint: str
    report: PolicyReport | None = None
    metrics: list[dict[str, float]] = field(default_factory=list)  # one dict per iteration
    accuracy: dict[int, float] = field(default_factory=dict)  # scratchpad: by difficulty
    sft_accuracy: dict[int, float] = field(default_factory=dict)
    interval: tuple[float, float] = (0.0, 0.0)  # 95% bootstrap over prompts of the gold mean
    sft_interval: tuple[float, float] = (0.0, 0.0)  # the same for the SFT reference
    error_ratio: tuple[float, float, float] = (0.0, 0.0, 0.0)  # verifier: the policy's error
    # rate / SFT's, and its 95% paired bootstrap interval over prompts (low, high)
    plot: str = ""
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)  # for the log and the record


# ------------------------------------------------------------- one iteration, step by step
@dataclass
class Batch(RolloutBatch):
    """One iteration's rollout of N groups of G responses (``prompts``, each repeated G times in
    consecutive rows, ``roll``, ``tokens``, ``mask``) and what each step adds to it. Arrays
    (B, T) unless said."""

    scores: np.ndarray  # (N, G) step 2: the verifier's (or reward model's) score of each
    logp: np.ndarray  # step 2: log pi_old of each response token
    ref_logp: np.ndarray  # step 2: log pi_ref of each response token
    greedy: np.ndarray  # (N,) step 2: ReMax's baseline, the greedy response's score (else empty)
    rewards: np.ndarray | None = None  # (N, G) step 3: the scores, with the KL when in reward
    kl: np.ndarray | None = None  # step 3: the per-token k1 KL to the reference
    advantages: np.ndarray | None = None  # step 4: per token


def make_actors(config: GRPOConfig) -> Actors:
    """Policy and reference from the SFT checkpoint (of the task's world: ``STAGE.begin``
    checks), the reward model when it scores, no critic; an AdamW over the policy."""
    policy, tokenizer, _ = load_model(config.init)
    reference, _, _ = load_model(config.init)
    rm = RewardModel.load(config.reward_model) if config.reward == "reward_model" else None
    return Actors(policy, reference, None, rm, tokenizer,
                  AdamW(policy.named_parameters(), lr=config.lr), policy.parameters(),
                  get_task(config.task))


def score(actors: Actors, prompts: list[str], roll: Rollout, config: GRPOConfig,
          rng: np.random.Generator) -> Batch:
    """Step 2: the reward of each response (the verifier or the reward model, with no EOS
    scoring as the verifier's 0 or the reward model's score of the cut text), and the old
    policy's and the reference's log-probs, without gradient, in the update's minibatch shapes
    (so that the ratio is exactly 1 on the iteration's first minibatch)."""
    N, G = config.prompts_per_iteration, config.num_generations
    task, rm = actors.task, actors.reward_model
    tokens, mask = roll.generation.tokens, roll.generation.response_mask
    if rm is None:
        r = [task.gold(p, t, f) for p, t, f in zip(prompts, roll.texts, roll.finished,
                                                   strict=True)]
    else:
        r = list(rm.score(prompts, roll.texts, roll.finished))
    scores = np.asarray(r, dtype=np.float64).reshape(N, G)
    logp, ref_logp = np.zeros_like(mask), np.zeros_like(mask)
    with no_grad():
        for mb in minibatch_indices(config):
            logp[mb] = token_logprobs(actors.policy, tokens[mb], mask[mb],
                                      config.temperature).data
            ref_logp[mb] = token_logprobs(actors.reference, tokens[mb], mask[mb],
                                          config.temperature).data
    greedy = np.zeros(0)
    if config.advantage == "remax":  # one greedy response per prompt, scored the same way
        firsts = prompts[::G]
        ids = [actors.tokenizer.encode(p, bos=True) for p in firsts]
        g = generate(actors.policy, ids, config.max_new_tokens, top_k=1, rng=rng)
        texts = [actors.tokenizer.decode(x) for x in g.responses()]
        fin = [bool(f) for f in g.finished]
        greedy = np.asarray([task.gold(p, t, f) for p, t, f in zip(firsts, texts, fin,
                                                                   strict=True)]
                            if rm is None else rm.score(firsts, texts, fin), dtype=np.float64)
    return Batch(prompts, roll, scores, logp, ref_logp, greedy)


def rewards(batch: Batch, config: GRPOConfig) -> tuple[np.ndarray, np.ndarray]:
    """Step 3: the per-token k1 KL to the reference (B, T) (for the log, and for the reward
    when ``kl_in`` is ``reward``), and each response's reward (N, G): its score, less beta times
    its summed KL when ``kl_in`` is ``reward`` (REINFORCE++ puts that KL on each token in
    step 4 instead)."""
    kl = kl_estimate(batch.logp, batch.ref_logp, "k1").data * batch.mask  # k1 per token
    r = batch.scores
    if config.kl_in == "reward" and config.beta and config.advantage != "reinforce_pp":
        r = r - config.beta * kl.sum(axis=1).reshape(r.shape)  # the sequence KL off each score
    return r, kl


def advantages(batch: Batch, config: GRPOConfig) -> np.ndarray:
    """Step 4: the advantage of every response token (B, T). The group is the baseline: one
    advantage per response, on each of its tokens (REINFORCE++: per token, the KL in the
    reward, whitened over the batch). Only this step and the update's aggregation differ from
    PPO."""
    mask = batch.mask
    if config.advantage == "reinforce_pp":
        beta = config.beta if config.kl_in == "reward" else 0.0
        adv = reinforce_pp_advantages(batch.rewards.reshape(-1), batch.kl, mask, beta)
        return adv.astype(mask.dtype)
    adv = group_advantages(batch.rewards, config.advantage, config.scale_rewards,
                           baseline=batch.greedy if config.advantage == "remax" else None)
    return (adv.reshape(-1, 1) * mask).astype(mask.dtype)


def update(actors: Actors, batch: Batch, config: GRPOConfig, rng: np.random.Generator,
           it: int) -> dict[str, float]:
    """Step 5: ``num_iterations`` passes over the minibatches in a random order, each a step on
    the aggregated clipped surrogate (plus beta times the KL estimate when ``kl_in`` is
    ``loss``). Rows left out (dynamic sampling, truncated completions) carry a zero mask."""
    tokens, mask = batch.tokens, batch.mask * _kept(batch, config)[:, None]
    adv, optimizer = batch.advantages, actors.optimizer
    stats: dict[str, list[float]] = {}
    minibatches = minibatch_indices(config)
    # dapo's divisor: the response tokens the loss sees per optimizer step, over the whole batch
    # (TRL: num_items_in_batch * gradient_accumulation_steps / steps_per_generation)
    dapo_tokens = float(mask.sum()) / len(minibatches)
    for _ in range(config.num_iterations):
        for b in rng.permutation(len(minibatches)):
            mb = minibatches[b]
            if not mask[mb].any():
                continue
            logp = token_logprobs(actors.policy, tokens[mb], mask[mb], config.temperature)
            if config.loss_type == "rloo":  # one clipped ratio per sequence (the KL: in reward)
                losses, s = clipped_sequence_losses(logp, batch.logp[mb], adv[mb], mask[mb],
                                                    config.epsilon, config.epsilon_high)
                loss = sequence_mean(losses, mask[mb])
            else:
                losses, s = clipped_token_losses(logp, batch.logp[mb], adv[mb], mask[mb],
                                                 config.epsilon, config.epsilon_high)
                if config.kl_in == "loss" and config.beta:
                    losses = losses + kl_estimate(logp, batch.ref_logp[mb],
                                                  config.kl_estimator) * config.beta
                loss = aggregate(losses, mask[mb], config.loss_type, config.max_new_tokens,
                                 dapo_tokens)
            optimizer_step(optimizer, loss, actors.params, config.grad_clip,
                           f"grpo: iteration {it}")
            for k, v in {**s, "loss": loss.item(), "grad_norm": optimizer.grad_norm}.items():
                stats.setdefault(k, []).append(v)
    return {**{k: float(np.mean(v)) for k, v in stats.items()},
            "step": optimizer.t, "learning_rate": optimizer.lr}


def metrics(it: int, batch: Batch, stats: dict[str, float], actors: Actors,
            config: GRPOConfig) -> dict[str, float]:
    """Step 6: one row of metrics.jsonl under TRL's GRPO names meaning TRL's quantities (``kl``
    and ``entropy`` per token, ``step`` the optimizer steps taken), plus ``kl_sequence`` (the KL
    per response, the frontier's axis), the gold reward (the verifier's accuracy on the
    scratchpad world) and the accuracy by difficulty."""
    g, task, kl = batch.roll.generation, actors.task, batch.kl
    mask = g.response_mask
    lengths = mask.sum(axis=1)
    golds = [task.gold(p, t, f) for p, t, f in zip(batch.prompts, batch.roll.texts,
                                                   batch.roll.finished, strict=True)]
    row = {"iteration": it, "reward": float(batch.scores.mean()),
           "reward_std": float(batch.scores.std(axis=1, ddof=1).mean())
           if batch.scores.shape[1] > 1 else 0.0,
           "frac_reward_zero_std": float(zero_std_groups(batch.scores).mean()),
           "completions/mean_length": float(lengths.mean()),
           "completions/clipped_ratio": float(1.0 - g.finished.mean()),
           "kl": float(kl.sum() / max(mask.sum(), 1.0)),
           "kl_sequence": float(kl.sum(axis=1).mean()),
           "entropy": float(-(batch.logp * mask).sum() / max(mask.sum(), 1.0)),
           "gold": float(np.mean(golds)), **stats}
    if config.task == "scratchpad":
        from minirlhf.world.scratchpad import accuracy_by_difficulty, uses_scratchpad

        wrong = np.asarray(golds) == 0
        row["completions/mean_length_incorrect"] = float(lengths[wrong].mean()) \
            if wrong.any() else 0.0
        row["completions/scratchpad_share"] = float(np.mean(
            [uses_scratchpad(t) for t in batch.roll.texts]))
        for k, v in accuracy_by_difficulty(batch.prompts, golds).items():
            row[f"accuracy/{k}_terms"] = v
    return row


def minibatch_indices(config: GRPOConfig) -> list[np.ndarray]:
    """The batch's rows cut into consecutive minibatches (a group may span two)."""
    B = config.prompts_per_iteration * config.num_generations
    return [np.arange(i, i + config.minibatch_size) for i in range(0, B, config.minibatch_size)]


def _kept(batch: Batch, config: GRPOConfig) -> np.ndarray:
    """(B,) 1.0 for the rows the loss sees: not in a dropped zero-spread group (dynamic
    sampling), not truncated (when masked)."""
    keep = np.ones(len(batch.prompts), dtype=batch.roll.generation.response_mask.dtype)
    if config.dynamic_sampling:
        keep *= np.repeat(~zero_std_groups(batch.scores), config.num_generations)
    if config.mask_truncated_completions:
        keep *= batch.roll.generation.finished
    return keep


# -------------------------------------------------------------------------- the stage
@held_writes()
def train_grpo(config: GRPOConfig) -> GRPOResult:
    """Critic-free RL from the SFT policy, with it as the frozen reference: groups of samples
    per prompt, a group baseline, a clipped surrogate, a KL term in the loss or the reward."""
    config.check()  # the settings first, then the start point, then the rest (begin)
    if not Path(config.init).exists():
        raise missing_input("SFT policy", config.init, scratchpad_route(config.init)
                            if config.task == "scratchpad"
                            else output_hint("sft", config.init, task=config.task))
    STAGE.begin(config)
    t0 = time.time()
    actors = make_actors(config)
    rng = stream(config.seed, "train")
    result = GRPOResult(config=config, checkpoint="")
    G = config.num_generations
    for it in tqdm(range(config.iterations), desc="grpo", disable=not config.progress):
        # 1. rollout: G responses to each of N prompts
        prompts = [p for p in actors.task.sample_prompts(config.prompts_per_iteration, rng)
                   for _ in range(G)]
        roll = rollout(actors.policy, actors.tokenizer, prompts, config.max_new_tokens, rng,
                       config.temperature)
        # 2. score: rewards, old and reference log-probs (and ReMax's greedy baseline)
        batch = score(actors, prompts, roll, config, rng)
        # 3. rewards: the KL to the reference per token; with kl_in = reward, off each score
        batch.rewards, batch.kl = rewards(batch, config)
        # 4. advantages: the group is the baseline
        batch.advantages = advantages(batch, config)
        # 5. update: the clipped surrogate (+ KL), aggregated by loss_type
        stats = update(actors, batch, config, rng, it)
        # 6. metrics
        result.metrics.append(metrics(it, batch, stats, actors, config))
    if actors.optimizer.t == 0:  # a finding (the policy is the SFT one), not an input error
        result.warnings.append(
            f"not one step in {config.iterations} iterations: the loss left out every response "
            f"(dynamic_sampling = {config.dynamic_sampling}: groups whose rewards are all "
            f"equal; mask_truncated_completions = {config.mask_truncated_completions}: "
            "responses without EOS); the policy is the SFT policy")
        log.warning(result.warnings[-1])
    finish(result, actors, config)
    result.seconds = time.time() - t0
    return result


def finish(result: GRPOResult, actors: Actors, config: GRPOConfig) -> None:
    """After the last iteration: save and evaluate the policy against the reference; on the
    scratchpad world, exact match by difficulty; intervals over prompts of the gold means and
    (with the verifier) of the error rate's ratio to SFT's; the reward-vs-KL plot."""
    result.checkpoint, result.report = finish_policy_stage(
        "grpo", config.out_dir, config, actors.policy, actors.reference, actors.tokenizer,
        actors.task, result.metrics, config.seed, config.eval_samples_per_prompt,
        config.max_new_tokens)
    rep = result.report
    if config.task == "scratchpad":
        result.accuracy, result.sft_accuracy = accuracies(rep, config)
    if len(rep.samples) >= 2 * config.eval_samples_per_prompt:
        mine, ref = per_prompt_gold(rep.samples), per_prompt_gold(rep.reference_samples)
        result.interval, result.sft_interval = bootstrap_interval(mine), bootstrap_interval(ref)
        if config.reward == "verifier" and rep.reference_gold < 1.0:
            ratio = (1.0 - rep.gold) / (1.0 - rep.reference_gold)
            result.error_ratio = (ratio, *paired_bootstrap_interval(
                1.0 - mine, 1.0 - ref, lambda a, b: a / np.maximum(b, 1e-12)))
    m = result.metrics
    result.plot = str(plot_reward_vs_kl(
        Path(config.out_dir) / "reward_vs_kl.png",
        {"GRPO": {"kl": [r["kl_sequence"] for r in m], "gold": [r["gold"] for r in m],
                  "proxy": [r["reward"] for r in m]}},
        title=f"{config.advantage} over training: gold and reward against KL"))


def accuracies(rep: PolicyReport, config: GRPOConfig) -> tuple[dict[int, float],
                                                               dict[int, float]]:
    """Exact-match accuracy by number of terms on the held-out prompts, of the policy (from its
    evaluation samples) and of the SFT reference (from the reference's)."""
    from minirlhf.world.scratchpad import accuracy_by_difficulty

    policy = accuracy_by_difficulty([p for p, _, _ in rep.samples],
                                    [g for _, _, g in rep.samples])  # gold = the verifier
    ref = accuracy_by_difficulty([p for p, _, _ in rep.reference_samples],
                                 [g for _, _, g in rep.reference_samples])
    return policy, ref


# ------------------------------------------------------------------ the stage's record
def record(r: GRPOResult, config: GRPOConfig) -> dict:
    """What the pipeline keeps of a run (its record's numbers)."""
    return {**policy_numbers(r.report, config.eval_samples_per_prompt), "plot": r.plot,
            "accuracy": r.accuracy, "sft_accuracy": r.sft_accuracy,
            "gold_interval": list(r.interval), "sft_gold_interval": list(r.sft_interval),
            "error_ratio": list(r.error_ratio), "warnings": r.warnings}


def show(r: GRPOResult, config: GRPOConfig) -> str:
    """What ``python -m minirlhf grpo`` prints after training."""
    lines = [metrics_table(r.metrics, [
        ("iter", "iteration", ">5d"), ("reward", "reward", ">8.3f"),
        ("zero-std", "frac_reward_zero_std", ">10.2f"), ("KL", "kl_sequence", ">8.2f"),
        ("length", "completions/mean_length", ">8.1f"),
        ("clip", "clip_ratio/region_mean", ">7.3f")])]
    if r.accuracy:
        lines.append("exact-match accuracy on held-out prompts, by number of terms:")
        for k in sorted(r.accuracy):
            lines.append(f"  {k} terms: SFT {r.sft_accuracy.get(k, float('nan')):6.1%} -> "
                         f"{r.accuracy[k]:6.1%}")
        (a, b), (c, d) = r.sft_interval, r.interval
        lines.append(f"  all:     SFT {r.report.reference_gold:6.1%} [{a:.1%}, {b:.1%}] -> "
                     f"{r.report.gold:6.1%} [{c:.1%}, {d:.1%}] (95% bootstrap over prompts)")
        e, lo, hi = r.error_ratio
        lines.append(f"  error rate x {e:.2f} [{lo:.2f}, {hi:.2f}] of SFT's (paired bootstrap)")
    lines += [r.report.describe(config.advantage, config.eval_samples_per_prompt),
              f"{r.seconds:.0f} s; checkpoint: {r.checkpoint}; plot: {r.plot}"]
    return "\n".join(lines)


STAGE = Stage(
    name="grpo", title="GRPO", help="critic-free RL: GRPO, Dr. GRPO, RLOO, REINFORCE++, ReMax",
    config=GRPOConfig, run=train_grpo, record=record, show=show, policy=True,
    files=("init", "reward_model"),
    unused=lambda c: ("reward_model",) if c.reward == "verifier" else (),
)
