"""Best-of-n: the simplest use of a reward model. Sample n responses, keep the RM's favourite.

No training at all, and a known distance from the policy it samples: the best-of-n policy's KL
to the base policy is at most log n - (n - 1)/n nats (Stiennon et al., 2020; exact when no two
samples tie), the analytic KL used on every plot here.

Proxy (RM) reward keeps rising with n by construction; gold may rise more slowly and, once the
RM's mistakes are what picks the winner, bend down: Goodhart's law in its mildest form.

To estimate the best-of-n rewards for several n from one set of samples, each prompt's
``n_max`` samples are split into ``n_max / n`` disjoint groups of n, and the winners' rewards
are averaged over groups and prompts.

Entry point: ``run_best_of_n(config) -> BestOfNResult``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minirlhf.config import validate
from minirlhf.evaluation import PolicyReport, report_from_samples, write_summary
from minirlhf.lm.checkpoint import load_model
from minirlhf.lm.reward_model import RewardModel
from minirlhf.lm.sampling import generate_text
from minirlhf.plots import plot_reward_vs_kl
from minirlhf.world import get_task

log = logging.getLogger("minirlhf.stages.best_of_n")


def analytic_kl(n: int) -> float:
    """KL(best-of-n || base) = log n - (n - 1)/n, in nats."""
    return float(np.log(n) - (n - 1) / n)


def best_of_n_table(proxy: np.ndarray, gold: np.ndarray, ns: list[int]
                    ) -> dict[int, tuple[float, float]]:
    """Mean (gold, proxy) of the RM's favourite among n, for each n.

    proxy, gold: (P, n_max) rewards of n_max samples for each of P prompts. Each n must divide
    n_max; each prompt's samples form n_max / n disjoint groups of n.
    """
    P, n_max = proxy.shape
    out = {}
    for n in ns:
        if n_max % n:
            raise ValueError(f"best-of-n: n={n} does not divide the {n_max} samples per prompt")
        groups = n_max // n
        p = proxy.reshape(P, groups, n)
        g = gold.reshape(P, groups, n)
        pick = np.argmax(p, axis=-1)[..., None]  # the RM's favourite in each group
        out[n] = (float(np.take_along_axis(g, pick, -1).mean()),
                  float(np.take_along_axis(p, pick, -1).mean()))
    return out


@dataclass
class BestOfNConfig:
    task: str = "reviews"  # which world
    policy: str = "runs/default/sft/model.npz"  # the policy to sample from
    reward_model: str = "runs/default/reward/model.npz"  # the proxy that picks the winner
    ns: str = "1,2,4,8,16,32"  # the n to report (each must divide the largest)
    samples_per_prompt: int = 32  # n_max
    prompts_per_eval: int = 2  # passes over the task's evaluation prompts
    max_new_tokens: int = 80  # response budget
    out_dir: str = "runs/default/best_of_n"  # where the plot goes
    seed: int = 0  # seeds the samples
    progress: bool = True  # unused (sampling is batched); kept for a uniform CLI


@dataclass
class BestOfNResult:
    config: BestOfNConfig
    table: dict[int, dict[str, float]] = field(default_factory=dict)  # n -> gold, proxy, kl
    examples: list[tuple[str, str, float, float]] = field(default_factory=list)
    report: PolicyReport | None = None  # the best-of-(largest n) policy judged like PPO and DPO
    plot: str = ""
    seconds: float = 0.0


def run_best_of_n(config: BestOfNConfig) -> BestOfNResult:
    """Sample, score with the RM and with gold, and tabulate best-of-n for each n."""
    validate(config)
    t0 = time.time()
    task = get_task(config.task)
    ns = [int(x) for x in config.ns.split(",")]
    if max(ns) > config.samples_per_prompt:
        raise ValueError(f"ns goes up to {max(ns)} but samples_per_prompt is "
                         f"{config.samples_per_prompt}")
    for path in (config.policy, config.reward_model):
        if not Path(path).exists():
            raise FileNotFoundError(f"{path} does not exist (make it with: python -m minirlhf "
                                    f"{'sft' if path == config.policy else 'reward'})")
    model, tokenizer, _ = load_model(config.policy)
    rm = RewardModel.load(config.reward_model)
    rng = np.random.default_rng(config.seed)
    base = list(task.eval_prompts) * config.prompts_per_eval
    prompts = [p for p in base for _ in range(config.samples_per_prompt)]
    outs = generate_text(model, tokenizer, prompts, config.max_new_tokens, rng)
    responses = [r for r, _ in outs]
    finished = [f for _, f in outs]
    proxy = rm.score(prompts, responses, finished).reshape(len(base), -1)
    gold = np.array([task.gold(p, r, f) for p, r, f in zip(prompts, responses, finished,
                                                           strict=True)]).reshape(len(base), -1)
    result = BestOfNResult(config=config)
    for n, (g, p) in best_of_n_table(proxy, gold, ns).items():
        result.table[n] = {"gold": g, "proxy": p, "kl": analytic_kl(n)}
    top = np.argmax(proxy, axis=1)
    for i in range(0, len(base), max(1, len(base) // 8)):
        j = i * config.samples_per_prompt + int(top[i])
        result.examples.append((prompts[j], responses[j], float(proxy[i, top[i]]),
                                float(gold[i, top[i]])))
    kl = [result.table[n]["kl"] for n in ns]
    result.plot = str(plot_reward_vs_kl(
        Path(config.out_dir) / "best_of_n.png",
        {"best-of-n": {"kl": kl, "gold": [result.table[n]["gold"] for n in ns],
                       "proxy": [result.table[n]["proxy"] for n in ns],
                       "labels": [f"n={n}" for n in ns]}},
        title="best-of-n: gold and proxy reward against KL"))
    result.report = _policy_report(prompts, responses, finished, proxy, max(ns), model,
                                   tokenizer, task, config)
    rep = result.report
    write_summary(config.out_dir, {
        "table": {str(n): row for n, row in result.table.items()},
        "policy": {"n": max(ns), "gold": rep.gold, "sft_gold": rep.reference_gold,
                   "win_rate_vs_sft": rep.win_rate, "kl_to_ref": rep.kl,
                   "valid_rate": rep.valid_rate, "mean_length": rep.mean_length}})
    result.seconds = time.time() - t0
    return result


def _policy_report(prompts: list[str], responses: list[str], finished: list[bool],
                   proxy: np.ndarray, n: int, model, tokenizer, task, config: BestOfNConfig
                   ) -> PolicyReport:
    """The best-of-n policy as a policy: each group of n samples gives one response (the RM's
    favourite), judged against the SFT policy's samples like every trained policy, at the
    analytic KL. proxy: (P, n_max) with row i's samples at prompts[i * n_max:(i + 1) * n_max]."""
    P, n_max = proxy.shape
    picks = []
    for i in range(P):
        for k in range(n_max // n):
            j = i * n_max + k * n + int(np.argmax(proxy[i, k * n:(k + 1) * n]))
            picks.append(j)
    order = {p: q for q, p in enumerate(task.eval_prompts)}
    picks.sort(key=lambda j: order[prompts[j]])  # each prompt's picks in a row, as reports do
    return report_from_samples([prompts[j] for j in picks], [responses[j] for j in picks],
                               [finished[j] for j in picks], analytic_kl(n), model, tokenizer,
                               task, config.seed, config.max_new_tokens)
