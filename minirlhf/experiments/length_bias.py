"""Length bias: raters who like longer answers; response length and gold under PPO and DPO,
beside unbiased raters at the same label budget, and compared at matched KL: PPO's rollouts
binned by their KL to the SFT policy, DPO's gold interpolated along a sweep of beta."""


from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from minirlhf.experiments.common import Context, bars, gold_at_kl
from minirlhf.lm.checkpoint import load_model
from minirlhf.lm.sampling import generate_text
from minirlhf.stages.reward import pair_metrics
from minirlhf.streams import stream
from minirlhf.world import get_task
from minirlhf.world.preference_data import load_jsonl

KL_BINS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0)  # nats per response: PPO's iterations grouped by KL
DPO_BETAS = (0.25, 0.5, 1.0, 2.0)  # DPO's sweep; 0.5 is the stage's default (the main runs)


# ------------------------------------------------------------------------- length bias
def by_kl_bin(metrics: list[dict[str, Any]], edges: tuple[float, ...] = KL_BINS,
              min_iterations: int = 3) -> dict[str, dict[str, float]]:
    """PPO's iterations grouped by the KL of their rollouts: per bin [a, b) with at least
    ``min_iterations`` iterations, the mean gold and response length (tokens) of those
    rollouts. Two runs compared bin by bin are compared at matched KL, whatever iteration each
    reached it at."""
    kl = np.array([r["objective/kl"] for r in metrics])
    out = {}
    for a, b in zip(edges, edges[1:], strict=False):
        rows = [r for r, k in zip(metrics, kl, strict=True) if a <= k < b]
        if len(rows) >= min_iterations:
            out[f"{a:g}-{b:g}"] = {"iterations": len(rows),
                                   "gold": float(np.mean([r["gold"] for r in rows])),
                                   "length": float(np.mean([r["response_length"] for r in rows]))}
    return out


def run(ctx: Context) -> tuple[dict[str, Any], list[str]]:
    n_pairs = ctx.n(4000, 64)
    honest = load_jsonl(ctx.preferences)[:n_pairs]
    biased = ctx.prefs("length_biased", n_pairs, "length")
    numbers: dict[str, Any] = {"pairs": n_pairs, "conditions": {}}
    series = {}
    for name, pairs in (("honest raters", honest), ("length-biased raters", biased)):
        key = name.split()[0].replace("-", "_")
        chosen_longer = float(np.mean([len(p.chosen) > len(p.rejected) for p in pairs]))
        rm = ctx.reward(key, pairs, epochs=2)
        rm_path = str(ctx.out / f"rm_{key}" / "model.npz")
        ppo = ctx.ppo(key, rm_path, iterations=ctx.n(64, 3))
        dpo = ctx.dpo(key, pairs)  # the stage's default beta, 0.5
        sweep = {b: (dpo if b == 0.5 else ctx.dpo(f"{key}_beta{b}", pairs, beta=b)).report
                 for b in DPO_BETAS}
        m = ppo.metrics
        numbers["conditions"][name] = {
            "labels_prefer_longer": chosen_longer,
            "rm_gold_accuracy": pair_metrics(rm, pairs[-200:]).get("gold_accuracy"),
            "ppo": {**ppo.report.to_dict(), "length_first_iteration": m[0]["response_length"],
                    "length_last_iteration": m[-1]["response_length"],
                    "by_kl": by_kl_bin(m)},
            "dpo": dpo.report.to_dict(),
            "dpo_sweep": {f"beta {b}": {"kl": r.kl, "gold": r.gold, "length": r.mean_length}
                          for b, r in sweep.items()}}
        series[name] = [(r["iteration"], r["response_length"]) for r in m]
        series[name + " (gold)"] = [(r["objective/kl"], r["gold"]) for r in m]
    numbers["matched_kl"] = _matched_kl(numbers["conditions"])
    numbers["sft_mean_length"] = len_sft = _sft_length(ctx)
    fig = Figure(figsize=(11, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    for name in ("honest raters", "length-biased raters"):
        ax1.plot(*zip(*series[name], strict=True), label=name)
        line, = ax2.plot(*zip(*series[name + " (gold)"], strict=True), ".", ms=3,
                         label=f"PPO, {name} (an iteration's rollouts)")
        sweep = numbers["conditions"][name]["dpo_sweep"].values()
        ax2.plot([r["kl"] for r in sweep], [r["gold"] for r in sweep], "s-",
                 color=line.get_color(), label=f"DPO, {name} (β {', '.join(map(str, DPO_BETAS))})")
    for edge in KL_BINS[1:-1]:
        ax2.axvline(edge, color="gray", lw=0.5, ls=":")
    ax1.set(xlabel="PPO iteration", ylabel="response length (tokens)",
            title="length drift under PPO")
    ax2.set(xlabel="KL to the SFT policy (nats per response)", ylabel="gold reward",
            title="gold at matched KL (dotted: PPO's KL bins)")
    ax2.legend(fontsize=7)
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(ctx.out / "length_bias.png", dpi=100)
    c = numbers["conditions"]
    final = bars(ctx.out / "length_bias_final.png",
                 {f"{alg} / {name.split()[0]}": {"mean length (chars)": c[name][alg]["mean_length"]}
                  for alg in ("ppo", "dpo") for name in c},
                 "characters", f"final policies' mean response length (SFT {len_sft:.1f})")
    return numbers, [str(ctx.out / "length_bias.png"), final]


def _matched_kl(c: dict[str, Any]) -> dict[str, Any]:
    """Biased minus honest at matched KL. PPO: in every KL bin both runs visited, the
    rollouts' gold and length. DPO: at the KL of each honest run of the sweep, the biased
    sweep's gold interpolated there (where its KLs bracket it)."""
    honest, biased = c["honest raters"], c["length-biased raters"]
    ppo = {}
    for b, h in honest["ppo"]["by_kl"].items():
        if b in biased["ppo"]["by_kl"]:
            x = biased["ppo"]["by_kl"][b]
            ppo[f"KL {b}"] = {"gold_difference": x["gold"] - h["gold"],
                              "length_difference": x["length"] - h["length"]}
    bk = [r["kl"] for r in biased["dpo_sweep"].values()]
    dpo = {}
    for name, h in honest["dpo_sweep"].items():
        g = gold_at_kl(bk, [r["gold"] for r in biased["dpo_sweep"].values()], h["kl"])
        if g is not None:
            dpo[f"at the KL of honest {name}"] = {"kl": h["kl"], "gold_difference": g - h["gold"]}
    return {"ppo": ppo, "dpo": dpo}


def _sft_length(ctx: Context) -> float:
    model, tokenizer, _ = load_model(ctx.sft)
    task = get_task("reviews")
    prompts = [p for p in task.eval_prompts for _ in range(ctx.n(4, 1))]
    outs = generate_text(model, tokenizer, prompts, ctx.n(80, 60),
                         stream(ctx.config.seed, "length-bias/sft_samples"))
    return float(np.mean([len(r) for r, _ in outs]))


