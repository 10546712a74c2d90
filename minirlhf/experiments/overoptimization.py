"""Reward overoptimization: gold and proxy reward against d = sqrt(KL) for best-of-n and PPO, with
Gao et al.'s (2022) functional forms fitted and their peaks; a small reward model beside the
pipeline's; an ensemble with a disagreement penalty as mitigation."""


from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from minirlhf.experiments.common import Context
from minirlhf.lm.checkpoint import load_model
from minirlhf.lm.reward_model import RewardModel
from minirlhf.lm.sampling import generate_text
from minirlhf.stages.best_of_n import analytic_kl, best_of_n_expected
from minirlhf.streams import stream
from minirlhf.world import get_task
from minirlhf.world.preference_data import load_jsonl


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
    # exercise gao-fit: set X (n, 2), the design matrix whose columns alpha and beta multiply
    ### BEGIN SOLUTION
    if form == "bon":  # gain = alpha d - beta d^2
        X = np.stack([d, -d * d], axis=1)
    else:  # gain = alpha d - beta d log d
        X = np.stack([d, -d * np.log(d)], axis=1)
    ### END SOLUTION
    (alpha, beta), *_ = np.linalg.lstsq(X, gain, rcond=None)
    # exercise gao-peak: set d_peak (float), where the fitted curve peaks (inf when it never bends)
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


def bon_curve(proxy: np.ndarray, gold: np.ndarray, ns: list[int], seed: int,
              n_boot: int = 2000) -> dict[str, Any]:
    """Best-of-n from one cache of scores, with its uncertainty over prompts.

    proxy, gold: (P, n_max). For each n, the expected gold and proxy of the proxy's favourite
    among n (``best_of_n_expected``: every subset of n) and a 95% bootstrap interval over the
    P prompts. The ``fall``: gold at the best measured n minus gold at the largest n, with a
    paired bootstrap interval (the same resampled prompts for both). Gao's best-of-n form
    fitted to the mean gains; its peak is reported only when it lies inside the measured range
    of d (``peak_in_range``), with the spread of the peak over bootstrap fits."""
    d = np.sqrt([analytic_kl(n) for n in ns])  # (len(ns),)
    both = [best_of_n_expected(proxy, gold, n) for n in ns]  # per n: (P,) gold, (P,) proxy
    per_prompt = np.stack([g for g, _ in both], 1)  # (P, len(ns))
    proxy_mean = [float(p.mean()) for _, p in both]
    rng = stream(seed, "overoptimization/bootstrap")
    idx = rng.integers(0, len(per_prompt), size=(n_boot, len(per_prompt)))  # (n_boot, P)
    boots = per_prompt[idx].mean(axis=1)  # (n_boot, len(ns)) resampled curves
    g = per_prompt.mean(axis=0)
    lo, hi = np.quantile(boots, [0.025, 0.975], axis=0)
    best = int(np.argmax(g))
    fall = boots[:, best] - boots[:, -1]
    fit = fit_gao(d, g - g[0], "bon")
    peaks = np.array([fit_gao(d, b - b[0], "bon")["d_peak"] for b in boots])  # (n_boot,)
    in_range = bool(np.isfinite(fit["d_peak"]) and fit["d_peak"] <= d[-1])
    return {"n": list(ns), "d": d.tolist(), "gold": g.tolist(), "gold_lo": lo.tolist(),
            "gold_hi": hi.tolist(), "proxy": proxy_mean, "fit": fit,
            "by_n": {str(n): {"gold": float(g[k]), "proxy": proxy_mean[k]}
                     for k, n in enumerate(ns)},
            "best_n": ns[best], "gold_best": float(g[best]), "gold_last": float(g[-1]),
            "fall": {"gold_drop": float(g[best] - g[-1]),
                     "ci95": [float(np.quantile(fall, 0.025)), float(np.quantile(fall, 0.975))]},
            "peak_in_range": in_range,
            # no interpolation between resamples: a fit that never bends has its peak at inf
            "peak": ({"d": fit["d_peak"], "ci95": np.quantile(peaks, [0.025, 0.975],
                                                            method="inverted_cdf").tolist(),
                      "share_of_resamples_in_range": float(np.mean(peaks <= d[-1]))}
                     if in_range else None)}


def valid_gold_fit(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Gao's RL form fitted to PPO's per-iteration rollouts on the valid text only.

    Invalid text scores a constant floor (-5), a cliff that no smooth curve describes; the
    mean gold of the valid responses (``gold_valid``) is the curve's quantity, and the share
    of valid responses is reported beside it. Iterations with no valid response are left out.
    The peak is reported only inside the measured range of d."""
    kl = np.array([max(r["objective/kl"], 0.0) for r in metrics])
    d = np.sqrt(kl)
    gv = np.array([np.nan if r.get("gold_valid") is None else r["gold_valid"] for r in metrics])
    keep = np.isfinite(gv)
    fit = fit_gao(d[keep], gv[keep] - gv[0], "rl") if keep.sum() > 2 and keep[0] else {}
    in_range = bool(fit and np.isfinite(fit["d_peak"]) and fit["d_peak"] <= d[keep].max())
    return {"d": d.tolist(), "gold_valid": [None if not k else float(v)
                                            for k, v in zip(keep, gv, strict=True)],
            "valid_rate": [r["valid_rate"] for r in metrics], "fit": fit,
            "fitted_iterations": int(keep.sum()), "peak_in_range": in_range}


def trajectory_peak(values: list[float | None], window: int = 5) -> dict[str, Any]:
    """A noisy per-iteration curve summarised without picking its luckiest point: the means
    over ``window`` consecutive iterations (iterations without a value left out of their
    window), their largest (``peak``, and ``peak_iteration``, where that window starts,
    counted from 0 as metrics.jsonl counts iterations), the
    last window's mean (``last``) and ``fall`` = peak - last. The maximum of single
    iterations would rise with their noise; a window's mean is what a seed interval can
    compare. None where a window holds no value."""
    x = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if len(x) < window:
        raise ValueError(f"trajectory_peak: need at least window={window} iterations, got "
                         f"{len(x)}")
    means = []
    for i in range(len(x) - window + 1):
        w = x[i:i + window]
        means.append(float(np.mean(w[np.isfinite(w)])) if np.isfinite(w).any() else np.nan)
    m = np.array(means)
    if not np.isfinite(m).any():
        return {"window": window, "peak": None, "peak_iteration": None, "last": None,
                "fall": None}
    k = int(np.nanargmax(m))
    last = None if np.isnan(m[-1]) else float(m[-1])
    return {"window": window, "peak": float(m[k]), "peak_iteration": k, "last": last,
            "fall": None if last is None else float(m[k] - last)}


def run(ctx: Context) -> tuple[dict[str, Any], list[str]]:
    task = get_task("reviews")
    all_pairs = load_jsonl(ctx.preferences)
    few = all_pairs[: ctx.n(1000, 64)]
    small_rms = [ctx.reward(f"few_{k}", few, epochs=3) for k in range(3)]
    large_rm = RewardModel.load(ctx.reward_path)
    sft, tokenizer, _ = load_model(ctx.sft)
    # one cache: n_max samples for each evaluation prompt, every one scored once by every proxy
    n_max = ctx.n(256, 8)
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
    ns = [n for n in (1, 2, 4, 8, 16, 32, 64, 128, 256) if n <= n_max]
    numbers: dict[str, Any] = {"best_of_n": {}, "ppo": {}, "prompts": len(task.eval_prompts),
                               "samples_per_prompt": n_max}
    fig = Figure(figsize=(12, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for name, proxy in proxies.items():
        curve = numbers["best_of_n"][name] = bon_curve(proxy, gold, ns, ctx.config.seed)
        d, g = np.array(curve["d"]), np.array(curve["gold"])
        line, = ax1.plot(d, g, "o", label=name, ms=4)
        ax1.fill_between(d, curve["gold_lo"], curve["gold_hi"], color=line.get_color(),
                         alpha=0.15)
        dd = np.linspace(0, d.max(), 50)
        fit = curve["fit"]
        ax1.plot(dd, g[0] + gao_curve("bon", fit["alpha"], fit["beta"])(dd), "-",
                 color=line.get_color(), lw=1)
        if name.startswith("RM on"):
            ax1.plot(d, curve["proxy"], "s--", color=line.get_color(), alpha=0.4, ms=3)
    ax1.set(xlabel="d = sqrt(KL) (best-of-n, analytic KL)", ylabel="reward",
            title="best-of-n: gold (o, 95% band over prompts; d(α − β_G d) fitted); proxy (dashed)")
    ax1.legend(fontsize=7)
    # PPO with little KL penalty against the small RM: every iteration is a checkpoint
    small_path = str(ctx.out / "rm_few_0" / "model.npz")
    iterations = ctx.n(80, 3)
    window = min(5, iterations)  # iterations averaged in trajectory_peak
    for beta in (0.0, 0.01):
        run = ctx.ppo(f"beta_{beta}", small_path, beta=beta, iterations=iterations)
        kl = np.array([max(r["objective/kl"], 0.0) for r in run.metrics])
        g = np.array([r["gold"] for r in run.metrics])
        p = np.array([r["objective/scores"] for r in run.metrics])
        d = np.sqrt(kl)
        valid = valid_gold_fit(run.metrics)
        numbers["ppo"][f"beta {beta}"] = {"d": d.tolist(), "gold": g.tolist(),
                                          "proxy": p.tolist(), "valid_text": valid,
                                          "gold_peak": float(g.max()),
                                          "d_at_gold_peak": float(d[int(np.argmax(g))]),
                                          "gold_smoothed": trajectory_peak(g.tolist(), window),
                                          "gold_valid_smoothed": trajectory_peak(
                                              valid["gold_valid"], window),
                                          "proxy_smoothed": trajectory_peak(p.tolist(), window),
                                          "valid_rate_last": float(np.mean(
                                              valid["valid_rate"][-window:])),
                                          "final": run.report.to_dict()}
        line, = ax2.plot(d, g, ".", ms=3, label=f"PPO, KL coef {beta}: gold (all text)")
        gv = np.array([np.nan if v is None else v for v in valid["gold_valid"]])
        ax2.plot(d, gv, "o", ms=3, mfc="none", color=line.get_color(),
                 label=f"PPO, KL coef {beta}: gold of the valid text")
        ax2.plot(d, p, "x", ms=3, color=line.get_color(), alpha=0.5,
                 label=f"PPO, KL coef {beta}: proxy")
        fit = valid["fit"]
        if fit and np.isfinite(fit["alpha"]):
            dd = np.linspace(1e-3, d[np.isfinite(gv)].max(), 80)
            ax2.plot(dd, gv[0] + gao_curve("rl", fit["alpha"], fit["beta"])(dd), "-",
                     color=line.get_color(), lw=1)
    ax2.set(xlabel="d = sqrt(KL) (PPO, per iteration)", ylabel="reward",
            title=f"PPO against the RM on {len(few)} pairs; d(α − β_G log d) fitted to the "
                  "valid text's gold")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(ctx.out / "overoptimization.png", dpi=100)
    return numbers, [str(ctx.out / "overoptimization.png")]
