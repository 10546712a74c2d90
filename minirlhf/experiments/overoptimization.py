"""Reward overoptimization: gold and proxy reward against d = sqrt(KL) for best-of-n and PPO, with
Gao et al.'s (2022) functional forms fitted and their peaks; a small reward model beside the
pipeline's; an ensemble with a disagreement penalty as mitigation."""


from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from minirlhf.config import stream
from minirlhf.experiments.common import Context
from minirlhf.lm.checkpoint import load_model
from minirlhf.lm.reward_model import RewardModel
from minirlhf.lm.sampling import generate_text
from minirlhf.stages.best_of_n import analytic_kl, best_of_n_table
from minirlhf.world import get_task
from minirlhf.world.preference_data import load_jsonl

FLOOR = -4.9  # a mean gold at or below this: (nearly) every response invalid (gold -5)


# -------------------------------------------------------------------- overoptimization
def fit_gao(d: np.ndarray, gain: np.ndarray, form: str) -> dict[str, float]:
    """Least-squares fit of Gao et al.'s forms to gold gain R(d) - R(0), d = sqrt(KL):
    best-of-n ``d (alpha - beta d)``, RL ``d (alpha - beta log d)``. Both are linear in
    (alpha, beta). Returns alpha, beta, the peak's d and gain (inf if the fit never bends)."""
    if form not in ("bon", "rl"):
        raise ValueError(f"fit_gao: form must be bon or rl, got {form!r}")
    d, gain = np.asarray(d, dtype=np.float64), np.asarray(gain, dtype=np.float64)
    keep = d > 0
    d, gain = d[keep], gain[keep]
    # exercise: set X (n, 2), the design matrix whose columns alpha and beta multiply
    ### BEGIN SOLUTION
    if form == "bon":  # gain = alpha d - beta d^2
        X = np.stack([d, -d * d], axis=1)
    else:  # gain = alpha d - beta d log d
        X = np.stack([d, -d * np.log(d)], axis=1)
    ### END SOLUTION
    (alpha, beta), *_ = np.linalg.lstsq(X, gain, rcond=None)
    # exercise: set d_peak (float), where the fitted curve peaks (inf when it never bends)
    ### BEGIN SOLUTION
    if beta <= 0:
        d_peak = float("inf")
    elif form == "bon":
        d_peak = alpha / (2 * beta)
    else:
        d_peak = float(np.exp(alpha / beta - 1.0))
    ### END SOLUTION
    curve = gao_curve(form, alpha, beta)
    return {"alpha": float(alpha), "beta": float(beta), "d_peak": float(d_peak),
            "gain_at_peak": float(curve(d_peak)) if np.isfinite(d_peak) else float("inf"),
            "rmse": float(np.sqrt(np.mean((X @ np.array([alpha, beta]) - gain) ** 2)))}


def gao_curve(form: str, alpha: float, beta: float) -> Callable[[np.ndarray], np.ndarray]:
    if form == "bon":
        return lambda d: d * (alpha - beta * d)
    return lambda d: d * (alpha - beta * np.log(np.maximum(d, 1e-12)))


def run(ctx: Context) -> tuple[dict[str, Any], list[str]]:
    task = get_task("reviews")
    all_pairs = load_jsonl(ctx.preferences)
    few = all_pairs[: ctx.n(1000, 64)]
    small_rms = [ctx.reward(f"few_{k}", few, epochs=3) for k in range(3)]
    large_rm = RewardModel.load(ctx.reward_path)
    sft, tokenizer, _ = load_model(ctx.sft)
    n_max = ctx.n(64, 8)
    rng = stream(ctx.config.seed, "overoptimization/sft_samples")
    prompts = [p for p in task.eval_prompts for _ in range(n_max)]
    outs = generate_text(sft, tokenizer, prompts, ctx.n(80, 60), rng)
    responses, finished = [r for r, _ in outs], [f for _, f in outs]
    gold = np.array([task.gold(p, r, f) for p, r, f in zip(prompts, responses, finished,
                                                           strict=True)]).reshape(-1, n_max)

    def scores(rm):
        return rm.score(prompts, responses, finished).reshape(-1, n_max)

    small = [scores(rm) for rm in small_rms]
    ens = np.stack(small)  # (3, P, n_max)
    proxies = {f"RM on {len(few)} pairs": small[0],
               f"RM on {len(all_pairs) * 9 // 10} pairs (the pipeline's)": scores(large_rm),
               f"ensemble of 3 on {len(few)} pairs, mean - std": ens.mean(0) - ens.std(0),
               f"ensemble of 3 on {len(few)} pairs, worst case": ens.min(0)}
    ns = [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= n_max]
    numbers: dict[str, Any] = {"best_of_n": {}, "ppo": {}}
    fig = Figure(figsize=(12, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for name, proxy in proxies.items():
        table = best_of_n_table(proxy, gold, ns)
        d = np.sqrt([analytic_kl(n) for n in ns])
        g = np.array([table[n][0] for n in ns])
        fit = fit_gao(d, g - g[0], "bon")
        numbers["best_of_n"][name] = {"n": ns, "d": d.tolist(), "gold": g.tolist(),
                                      "proxy": [table[n][1] for n in ns], "fit": fit}
        line, = ax1.plot(d, g, "o", label=name)
        dd = np.linspace(0, d.max(), 50)
        ax1.plot(dd, g[0] + gao_curve("bon", fit["alpha"], fit["beta"])(dd), "-",
                 color=line.get_color(), lw=1)
        if name.startswith("RM on"):
            ax1.plot(d, [table[n][1] for n in ns], "s--", color=line.get_color(), alpha=0.4,
                     ms=3)
    ax1.set(xlabel="d = sqrt(KL) (best-of-n, analytic KL)", ylabel="reward",
            title="best-of-n: gold (o, with fitted d(α − βd)); proxy (dashed)")
    ax1.legend(fontsize=7)
    # PPO with little KL penalty against the small RM: every iteration is a checkpoint
    small_path = str(ctx.out / "rm_few_0" / "model.npz")
    for beta in (0.0, 0.01):
        run = ctx.ppo(f"beta_{beta}", small_path, beta=beta, iterations=ctx.n(80, 3))
        kl = np.array([max(r["objective/kl"], 0.0) for r in run.metrics])
        g = np.array([r["gold"] for r in run.metrics])
        p = np.array([r["objective/scores"] for r in run.metrics])
        d = np.sqrt(kl)
        # the gold reward floors at -5 once the text stops being valid: a cliff, not the smooth
        # decline the functional form describes, so the fit uses the iterations before it
        graded = np.arange(len(g)) < (np.argmax(g <= FLOOR) if (g <= FLOOR).any() else len(g))
        fit = fit_gao(d[graded], g[graded] - g[0], "rl") if graded.sum() > 2 else {}
        if fit:
            fit["fitted_iterations"] = int(graded.sum())
        numbers["ppo"][f"beta {beta}"] = {"d": d.tolist(), "gold": g.tolist(),
                                          "proxy": p.tolist(), "fit": fit,
                                          "gold_peak": float(g.max()),
                                          "d_at_gold_peak": float(d[int(np.argmax(g))]),
                                          "final": run.report.to_dict()}
        line, = ax2.plot(d, g, ".", ms=3, label=f"PPO β={beta}: gold")
        ax2.plot(d, p, "x", ms=3, color=line.get_color(), alpha=0.5,
                 label=f"PPO β={beta}: proxy")
        if fit and np.isfinite(fit["alpha"]):
            dd = np.linspace(1e-3, d[graded].max(), 80)
            ax2.plot(dd, g[0] + gao_curve("rl", fit["alpha"], fit["beta"])(dd), "-",
                     color=line.get_color(), lw=1)
    ax2.set(xlabel="d = sqrt(KL) (PPO, per iteration)", ylabel="reward",
            title=f"PPO against the RM on {len(few)} pairs; d(α − β log d) fitted before the "
                  "gold floor")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(ctx.out / "overoptimization.png", dpi=100)
    return numbers, [str(ctx.out / "overoptimization.png")]


