"""Rankings or pairs? The same labelling effort spent either way, measured against gold.

InstructGPT asked its labelers to rank K = 4 to 9 responses at once rather than compare two:
one ranking of K implies K(K-1)/2 comparisons for the reading of K responses. Here the raters
are the default preset (``minirlhf.world.raters``); a ranking is Plackett-Luce drawn from the
same noisy utilities as their pairwise labels, so the only difference is the format.

Equal effort is counted as responses read: a budget of R responses buys R/2 pairs or R/K
rankings of K, sampled from the SFT policy on fresh prompts. Three reward models per seed, each
with the reward stage at the same settings and the same number of sequences per step and of
steps (pairs in batches of 32, rankings of 4 in batches of 16):

1. pairs, Bradley-Terry;
2. rankings, Plackett-Luce's likelihood (``plackett_luce_loss``);
3. rankings, InstructGPT's mean over the implied pairs (``all_pairs_loss``).

Each is judged on the same held-out pairs (a fresh label from the same raters, with their
choice probabilities and gold): accuracy against gold, expected accuracy against a fresh rater
label (beside its ceiling), and the correlation of its scores with gold on fresh SFT samples.
Every seed draws new data and trains anew; figures are means over seeds with 95% intervals
(Student's t), and each comparison is the paired difference per seed with its interval.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from minirlhf.evaluation import seed_interval
from minirlhf.experiments.common import Context
from minirlhf.lm.checkpoint import load_model
from minirlhf.lm.sampling import generate_text
from minirlhf.stages.reward import pair_metrics
from minirlhf.streams import stream
from minirlhf.world import get_task
from minirlhf.world.raters import ceiling

NEEDS = ("sft",)
RANKING_SIZE = 4
# arm -> (data, ranking loss); the pairs arm uses Bradley-Terry
ARMS = {"pairs, Bradley-Terry": ("pairs", "plackett_luce"),
        "rankings, Plackett-Luce": ("rankings", "plackett_luce"),
        "rankings, all pairs": ("rankings", "all_pairs")}
METRICS = ("gold_accuracy", "expected_accuracy", "gold_correlation")


def _fresh_samples(ctx: Context, n: int) -> tuple[list[str], list[str], list[bool], np.ndarray]:
    """``n`` SFT samples on fresh prompts and their gold, for the RM-gold correlation."""
    rng = stream(ctx.seed_for("fresh"), "samples")
    task = get_task("reviews")
    model, tokenizer, _ = load_model(ctx.sft)
    prompts = task.sample_prompts(n, rng)
    outs = generate_text(model, tokenizer, prompts, ctx.n(80, 60), rng)
    gold = np.array([task.gold(p, r, f) for p, (r, f) in zip(prompts, outs, strict=True)])
    return prompts, [r for r, _ in outs], [f for _, f in outs], gold


def _interval(values: list[float]) -> dict[str, Any]:
    """Mean and 95% interval over seeds (the values themselves kept); one seed: no interval."""
    if len(values) < 2:
        return {"mean": float(values[0]), "ci95": None, "per_seed": values}
    m, lo, hi = seed_interval(np.array(values))
    return {"mean": m, "ci95": [lo, hi], "per_seed": values}


def run(ctx: Context) -> tuple[dict[str, Any], list[str]]:
    K = RANKING_SIZE
    budget = ctx.n(2400, 96)  # responses read by the raters, per arm and seed
    seeds = ctx.n(4, 1)
    test = ctx.prefs("test", ctx.n(1000, 64))  # the held-out pairs every RM is judged on
    prompts, responses, finished, gold = _fresh_samples(ctx, ctx.n(512, 64))
    per_arm: dict[str, dict[str, list[float]]] = {a: {m: [] for m in METRICS} for a in ARMS}
    for s in range(seeds):
        data = {"pairs": ctx.prefs(f"pairs_seed{s}", budget // 2),
                "rankings": ctx.prefs(f"rankings_seed{s}", budget // K, ranking_size=K)}
        for arm, (kind, loss) in ARMS.items():
            key = f"{kind}_{loss}_seed{s}" if kind == "rankings" else f"pairs_seed{s}"
            rm = ctx.reward(key, data[kind], epochs=ctx.n(3, 1), ranking_loss=loss,
                            batch_size=32 if kind == "pairs" else 32 * 2 // K)
            m = pair_metrics(rm, test)
            scores = rm.score(prompts, responses, finished)
            m["gold_correlation"] = float(np.corrcoef(scores, gold)[0, 1])
            for name in METRICS:
                per_arm[arm][name].append(m[name])
    best = ceiling([p.p_chosen for p in test])
    numbers: dict[str, Any] = {
        "ranking_size": K, "responses_read": budget, "pairs": budget // 2,
        "rankings": budget // K, "seeds": seeds, "test_pairs": len(test),
        "fresh_samples": len(prompts), "ceiling": best,
        "arms": {a: {m: _interval(v) for m, v in ms.items()} for a, ms in per_arm.items()},
        "differences": {},
    }
    base = "pairs, Bradley-Terry"
    for a, b in (("rankings, Plackett-Luce", base), ("rankings, all pairs", base),
                 ("rankings, Plackett-Luce", "rankings, all pairs")):
        numbers["differences"][f"{a} - {b}"] = {
            m: _interval([x - y for x, y in zip(per_arm[a][m], per_arm[b][m], strict=True)])
            for m in METRICS}
    numbers["table"] = table(numbers)
    return numbers, [_plot(ctx, numbers)]


def _fmt(v: dict[str, Any], scale: float = 1.0, spec: str = ".1f") -> str:
    """mean +- half-width (or the mean alone for one seed)."""
    if v["ci95"] is None:
        return f"{scale * v['mean']:{spec}}"
    half = scale * (v["ci95"][1] - v["ci95"][0]) / 2
    return f"{scale * v['mean']:{spec}} ± {half:{spec}}"


def verdict(v: dict[str, Any]) -> str:
    """What a paired difference's interval supports."""
    if v["ci95"] is None:
        return "one seed: no interval"
    lo, hi = v["ci95"]
    if lo > 0:
        return "higher"
    if hi < 0:
        return "lower"
    return "not measurable at this scale"


def table(n: dict[str, Any]) -> str:
    lines = [f"equal effort: {n['responses_read']} responses read = {n['pairs']} pairs or "
             f"{n['rankings']} rankings of {n['ranking_size']}; {n['seeds']} seeds; judged on "
             f"{n['test_pairs']} held-out pairs (ceiling {n['ceiling']:.1%}) and "
             f"{n['fresh_samples']} fresh samples",
             f"{'':26}{'gold accuracy %':>18}{'expected acc. %':>18}{'gold r':>16}"]
    for arm, v in n["arms"].items():
        lines.append(f"{arm:26}{_fmt(v['gold_accuracy'], 100):>18}"
                     f"{_fmt(v['expected_accuracy'], 100):>18}"
                     f"{_fmt(v['gold_correlation'], 1, '.3f'):>16}")
    lines.append("paired differences (per seed, mean ± 95% half-width):")
    for name, v in n["differences"].items():
        lines.append(f"  {name}: gold accuracy {_fmt(v['gold_accuracy'], 100)} points "
                     f"({verdict(v['gold_accuracy'])}), gold r "
                     f"{_fmt(v['gold_correlation'], 1, '.3f')} "
                     f"({verdict(v['gold_correlation'])})")
    return "\n".join(lines)


def _plot(ctx: Context, n: dict[str, Any]) -> str:
    fig = Figure(figsize=(7, 3.6))
    axes = fig.subplots(1, 2)
    arms = list(n["arms"])
    for ax, metric, label in ((axes[0], "gold_accuracy", "accuracy vs gold, held-out pairs"),
                              (axes[1], "gold_correlation", "RM-gold r, fresh samples")):
        means = [n["arms"][a][metric]["mean"] for a in arms]
        cis = [n["arms"][a][metric]["ci95"] for a in arms]
        err = None if cis[0] is None else np.array(
            [[m - c[0] for m, c in zip(means, cis, strict=True)],
             [c[1] - m for m, c in zip(means, cis, strict=True)]])
        ax.bar(range(len(arms)), means, yerr=err, capsize=4,
               color=["tab:gray", "tab:blue", "tab:cyan"])
        ax.set_xticks(range(len(arms)), [a.replace(", ", "\n") for a in arms], fontsize=8)
        top = max(c[1] for c in cis) if cis[0] is not None else max(means)
        ax.set_ylim(min(means) - 0.1, top + 0.02)
        ax.set_title(label, fontsize=9)
    fig.suptitle(f"{n['responses_read']} responses read: pairs or rankings of "
                 f"{n['ranking_size']} ({n['seeds']} seeds, 95% intervals)", fontsize=9)
    fig.tight_layout()
    path = ctx.out / "rankings.png"
    fig.savefig(path, dpi=100)
    return str(path)
