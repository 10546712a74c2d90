"""Best-of-n: the simplest use of a reward model. Sample n responses, keep the RM's favourite.

No training at all, and a known distance from the policy it samples: the best-of-n policy's KL
to the base policy is at most log n - (n - 1)/n nats (Stiennon et al., 2020; exact when no two
samples tie), the analytic KL used on every plot here.

Proxy (RM) reward keeps rising with n by construction; gold may rise more slowly and, once the
RM's mistakes are what picks the winner, bend down: Goodhart's law in its mildest form.

To estimate the best-of-n rewards for several n from one set of samples, each prompt's
``n_max`` samples are split into ``n_max / n`` disjoint groups of n, and the winners' rewards
are averaged over groups and prompts (``best_of_n_table``); ``best_of_n_expected`` averages
over every subset of n instead, which uses each sample at every n.

Entry point: ``run_best_of_n(config) -> BestOfNResult``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minirlhf.config import ConfigError, Stage, StageConfig, run_path, setting
from minirlhf.evaluation import PolicyReport, policy_numbers, report_from_samples, write_summary
from minirlhf.lm.checkpoint import held_writes, load_model
from minirlhf.lm.reward_model import RewardModel
from minirlhf.lm.sampling import generate_text
from minirlhf.plots import plot_reward_vs_kl
from minirlhf.streams import stream
from minirlhf.world import TASK_NAMES, get_task

log = logging.getLogger("minirlhf.stages.best_of_n")


def analytic_kl(n: int) -> float:
    """log n - (n - 1)/n, in nats: an upper bound on KL(best-of-n || base), reached when no two
    samples tie (Beirami et al. 2024), and the figure the literature plots best-of-n at."""
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


def best_of_n_expected(proxy: np.ndarray, gold: np.ndarray, n: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt, the expected (gold, proxy) of the RM's favourite among n samples drawn
    without replacement from the cached n_max: an average over all C(n_max, n) subsets at once,
    so every sample counts at every n (disjoint groups leave one group per prompt at n = n_max).

    proxy, gold: (P, n_max). Returns two (P,) arrays. Sort a prompt's samples by proxy,
    ascending; the sample of rank i (1-based) wins exactly the subsets whose other n - 1
    members rank below it, C(i - 1, n - 1) of the C(n_max, n), so its weight is their ratio
    (zero for i < n). Ties in the proxy are broken by position, as ``argmax`` does in
    ``best_of_n_table``. The weights are computed in log space (C(256, 128) overflows float64).
    """
    proxy, gold = np.asarray(proxy, np.float64), np.asarray(gold, np.float64)
    if proxy.shape != gold.shape or proxy.ndim != 2:
        raise ValueError(f"best-of-n: proxy and gold must be (P, n_max) of one shape, got "
                         f"{proxy.shape} and {gold.shape}")
    n_max = proxy.shape[1]
    if not 1 <= n <= n_max:
        raise ValueError(f"best-of-n: n must be in [1, {n_max}] (the samples per prompt), got {n}")
    rank = np.arange(1, n_max + 1)  # (n_max,) 1-based ranks, ascending proxy
    lg = np.vectorize(math.lgamma)

    def log_comb(a: np.ndarray, b: int) -> np.ndarray:
        return lg(a + 1) - math.lgamma(b + 1) - lg(a - b + 1)

    w = np.zeros(n_max)
    ok = rank >= n
    w[ok] = np.exp(log_comb(rank[ok] - 1, n - 1) - log_comb(np.array(n_max), n))
    # ascending proxy; among ties the earlier sample ranks higher, so it wins, as with argmax
    order = np.lexsort((-np.arange(n_max)[None, :].repeat(len(proxy), 0), proxy), axis=-1)
    # order: (P, n_max) sample indices
    g = np.take_along_axis(gold, order, -1)  # (P, n_max) gold in ascending proxy order
    p = np.take_along_axis(proxy, order, -1)
    return g @ w, p @ w


@dataclass
class BestOfNConfig(StageConfig):
    task: str = setting("reviews", "which world", choices=TASK_NAMES)
    policy: str = setting(run_path("sft", "model.npz"), "the policy to sample from")
    reward_model: str = setting(run_path("reward", "model.npz"), "the proxy that picks the winner")
    ns: str = setting("1,2,4,8,16,32", "the n to report (each must divide the largest)")
    samples_per_prompt: int = setting(32, "n_max", "[1, 4096]")
    prompts_per_eval: int = setting(2, "passes over the task's evaluation prompts", "[1, 1000]")
    max_new_tokens: int = setting(80, "response budget", "[1, 126]")
    out_dir: str = setting(run_path("best_of_n"), "where the plot goes")

    def check(self, upstream: dict | None = None) -> None:
        """Every setting in its range; every n a divisor of samples_per_prompt."""
        super().check(upstream)
        try:
            ns = [int(x) for x in self.ns.split(",")]
        except ValueError:
            raise ConfigError(f"BestOfNConfig: ns = {self.ns!r} must be integers separated by "
                              "commas, e.g. 1,2,4,8") from None
        bad = [n for n in ns if n < 1 or self.samples_per_prompt % n]
        if bad:
            raise ConfigError(f"BestOfNConfig: ns = {self.ns!r}: each n must be >= 1 and divide "
                              f"samples_per_prompt = {self.samples_per_prompt} ({bad[0]} does "
                              "not)")


@dataclass
class BestOfNResult:
    config: BestOfNConfig
    table: dict[int, dict[str, float]] = field(default_factory=dict)  # n -> gold, proxy, kl
    examples: list[tuple[str, str, float, float]] = field(default_factory=list)
    report: PolicyReport | None = None  # the best-of-(largest n) policy judged like PPO and DPO
    plot: str = ""
    seconds: float = 0.0


@held_writes()
def run_best_of_n(config: BestOfNConfig) -> BestOfNResult:
    """Sample, score with the RM and with gold, and tabulate best-of-n for each n."""
    STAGE.begin(config)
    t0 = time.time()
    task = get_task(config.task)
    ns = [int(x) for x in config.ns.split(",")]
    model, tokenizer, _ = load_model(config.policy)
    rm = RewardModel.load(config.reward_model)
    rng = stream(config.seed, "samples")
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
        "policy": {"n": max(ns), **rep.to_dict()}})
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


# ------------------------------------------------------------------ the stage's record
def record(r: BestOfNResult, config: BestOfNConfig) -> dict:
    """What the pipeline keeps of a run: the table, and the best-of-(largest n) policy judged
    like every policy (one sample per evaluation prompt kept)."""
    n = max(r.table)
    ns = sorted(r.table)
    per_prompt = config.prompts_per_eval * (config.samples_per_prompt // n)
    return {"n": n, "table": {str(k): v for k, v in r.table.items()}, "plot": r.plot,
            "label": f"best-of-n (n={n})",
            "curve": {"kl": [r.table[k]["kl"] for k in ns],
                      "gold": [r.table[k]["gold"] for k in ns], "labels": [f"n={k}" for k in ns]},
            **policy_numbers(r.report, per_prompt)}


def report(n: dict) -> list[str]:
    """Its table in report.md."""
    lines = ["| n | KL (nats) | gold | proxy (RM) |", "|---:|---:|---:|---:|"]
    for k in sorted(n["table"], key=int):
        row = n["table"][k]
        lines.append(f"| {k} | {row['kl']:.3f} | {row['gold']:.3f} | {row['proxy']:.3f} |")
    return lines + [""]


def show(r: BestOfNResult, config: BestOfNConfig) -> str:
    """What ``python -m minirlhf best-of-n`` prints."""
    lines = [f"{'n':>4} {'KL (nats)':>10} {'gold':>8} {'proxy':>8}"]
    for n, row in r.table.items():
        lines.append(f"{n:>4} {row['kl']:>10.3f} {row['gold']:>8.3f} {row['proxy']:>8.3f}")
    lines.append("\nthe RM's favourite among the largest n, for a few prompts:")
    for prompt, resp, proxy, gold in r.examples:
        lines.append(f"    proxy {proxy:6.2f}  gold {gold:6.2f}  {prompt}|{resp}")
    lines.append(f"\n{r.seconds:.0f} s; plot: {r.plot}")
    return "\n".join(lines)


STAGE = Stage(
    name="best_of_n", title="best-of-n", help="best-of-n sampling with the reward model",
    config=BestOfNConfig, run=run_best_of_n, record=record, show=show, report=report,
    summary=lambda n: {"best_of_n_table": n["table"], "policies": {"best_of_n": {"n": n["n"]}}},
    inputs={"policy": "sft", "reward_model": "reward"}, output="summary.json", policy=True,
    presets={"tiny": dict(ns="1,2,4,8", samples_per_prompt=8, prompts_per_eval=1,
                          max_new_tokens=60)},
    work=lambda c, _: c.samples_per_prompt * c.prompts_per_eval * c.max_new_tokens,
    seconds={"tiny": 0.6, "default": 10.0},  # on the reference 2-core laptop
)
