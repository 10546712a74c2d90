"""Length bias: raters who like longer answers; response length and gold under PPO and DPO,
beside unbiased raters at the same label budget."""


from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from minirlhf.config import stream
from minirlhf.experiments.common import Context, bars
from minirlhf.lm.checkpoint import load_model
from minirlhf.lm.sampling import generate_text
from minirlhf.stages.reward import pair_metrics
from minirlhf.world import get_task
from minirlhf.world.preference_data import load_jsonl


# ------------------------------------------------------------------------- length bias
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
        dpo = ctx.dpo(key, pairs)
        m = ppo.metrics
        numbers["conditions"][name] = {
            "labels_prefer_longer": chosen_longer,
            "rm_gold_accuracy": pair_metrics(rm, pairs[-200:]).get("gold_accuracy"),
            "ppo": {**ppo.report.to_dict(), "length_first_iteration": m[0]["response_length"],
                    "length_last_iteration": m[-1]["response_length"]},
            "dpo": dpo.report.to_dict()}
        series[name] = [(r["iteration"], r["response_length"]) for r in m]
        series[name + " (gold)"] = [(r["iteration"], r["gold"]) for r in m]
    numbers["sft_mean_length"] = len_sft = _sft_length(ctx)
    fig = Figure(figsize=(11, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    for name in ("honest raters", "length-biased raters"):
        ax1.plot(*zip(*series[name], strict=True), label=name)
        ax2.plot(*zip(*series[name + " (gold)"], strict=True), label=name)
    ax1.set(xlabel="PPO iteration", ylabel="response length (tokens)",
            title="length drift under PPO")
    ax2.set(xlabel="PPO iteration", ylabel="gold reward of the rollouts", title="gold")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(ctx.out / "length_bias.png", dpi=100)
    c = numbers["conditions"]
    final = bars(ctx.out / "length_bias_final.png",
                 {f"{alg} / {name.split()[0]}": {"mean length (chars)": c[name][alg]["mean_length"]}
                  for alg in ("ppo", "dpo") for name in c},
                 "characters", f"final policies' mean response length (SFT {len_sft:.1f})")
    return numbers, [str(ctx.out / "length_bias.png"), final]


def _sft_length(ctx: Context) -> float:
    model, tokenizer, _ = load_model(ctx.sft)
    task = get_task("reviews")
    prompts = [p for p in task.eval_prompts for _ in range(ctx.n(4, 1))]
    outs = generate_text(model, tokenizer, prompts, ctx.n(80, 60),
                         stream(ctx.config.seed, "length-bias/sft_samples"))
    return float(np.mean([len(r) for r, _ in outs]))


