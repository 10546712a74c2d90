"""PPO's knobs, measured: the KL coefficient beta swept (0, the default 0.05, 0.2) and four
implementation details switched off one at a time (advantage whitening, value clipping, the
missing-EOS penalty, the critic on the reward model's trunk), on the pipeline's SFT policy and
reward model.

Every run of one seed starts from the experiment's seed (the stream of the pipeline's PPO at
seed 0), so each pair of runs sees the same first rollout and differs only by the switch:
differences are paired within a seed, and ``--seeds N`` turns each into a mean with a 95%
interval over seeds. The sweep runs ``iterations`` (the stage's default, 120) and is judged by
the stage's final evaluation: its beta = 0.05 and 0.2 runs have the settings of the frontier's
PPO points (and at seed 0 beta = 0.05 is the pipeline's PPO), so they are those runs, trained
once (``Context.stage_run``; ``results.json``'s ``runs`` then names their folders there). The
ablations run ``ablation_iterations`` (60) and are compared with the baseline's own first 60
iterations (the learning rate is constant, so a 60-iteration baseline would be the same run),
on the rollouts of their last ``tail`` iterations (640 responses at tail = 10)."""


from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from minirlhf.experiments.common import Context, relative_folder

NEEDS = ("sft", "reward")  # the pipeline's SFT policy and reward model

BETAS = (0.0, 0.05, 0.2)  # 0.05 is the stage's default, the baseline of the ablations
ABLATIONS: dict[str, dict[str, Any]] = {  # name -> the PPOConfig settings it changes
    "whitening off": dict(whiten_advantages=False),
    "value clipping off": dict(value_clip=1e6),
    "missing-EOS penalty off": dict(missing_eos_penalty=0.0),
    "critic on the policy's trunk": dict(critic="shared"),
}
TAIL_KEYS = {  # what the ablation table reports: name -> metrics key of a PPO iteration
    "gold": "gold", "proxy": "objective/scores", "kl": "objective/kl", "eos_rate": "eos_rate",
    "response_length": "response_length", "explained_variance": "val/explained_variance",
}


def tail_means(metrics: list[dict[str, float]], tail: int) -> dict[str, float]:
    """The mean of each ``TAIL_KEYS`` figure over the last ``tail`` iterations of ``metrics``
    (one dict per PPO iteration, as ``train_ppo`` records them)."""
    if not 1 <= tail <= len(metrics):
        raise ValueError(f"tail_means: tail must be in [1, {len(metrics)}], got {tail}")
    return {name: float(np.mean([m[key] for m in metrics[-tail:]]))
            for name, key in TAIL_KEYS.items()}


def run(ctx: Context) -> tuple[dict[str, Any], list[str]]:
    iterations, ablation_iterations, tail = ctx.n(120, 4), ctx.n(60, 2), ctx.n(10, 1)
    numbers: dict[str, Any] = {"iterations": iterations, "ablation_iterations":
                               ablation_iterations, "tail": tail, "beta_sweep": {},
                               "ablations": {}, "runs": {}}  # runs: name -> its folder
    curves = {}
    ppo = ctx.ppo_settings()
    for beta in BETAS:
        name = f"beta={beta:g}"
        r = ctx.stage_run(f"ppo_beta_{beta:g}", "ppo", **{**ppo, "beta": beta,
                                                          "iterations": iterations})
        m = r.metrics
        numbers["beta_sweep"][name] = {
            **r.figures, "proxy_first": m[0]["objective/scores"],
            "proxy_last": m[-1]["objective/scores"], "kl_last": m[-1]["objective/kl"]}
        numbers["runs"][name] = relative_folder(r, ctx)  # from the experiment's folder
        curves[name] = m
        if beta == 0.05:
            baseline = m[:ablation_iterations]
    base_tail = tail_means(baseline, tail)
    numbers["ablations"]["baseline"] = base_tail
    for name, change in ABLATIONS.items():
        r = ctx.stage_run("ppo_" + name.split()[0].replace("'", ""), "ppo",
                          **{**ppo, "iterations": ablation_iterations,
                             "eval_samples_per_prompt": 1, **change})
        t = tail_means(r.metrics, tail)
        numbers["ablations"][name] = {**t, **{f"{k}_minus_baseline": t[k] - base_tail[k]
                                             for k in TAIL_KEYS}}
        numbers["runs"][name] = relative_folder(r, ctx)
        curves[name] = r.metrics
    return numbers, [_plot(ctx, curves, baseline)]


def _plot(ctx: Context, curves: dict[str, list[dict]], baseline: list[dict]) -> str:
    """Left: gold against KL over training for each beta; right: the rollouts' gold per
    iteration for the baseline's first iterations and each ablation."""
    fig = Figure(figsize=(11, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    for name in (f"beta={b:g}" for b in BETAS):
        m = curves[name]
        ax1.plot([r["objective/kl"] for r in m], [r["gold"] for r in m], ".-", ms=2, lw=0.8,
                 label=name)
    ax1.set(xscale="symlog", xlabel="KL to the reference (nats, k1 of the rollouts)",
            ylabel="gold reward of the rollouts", title="the KL coefficient")
    ax1.legend(fontsize=8)
    ax2.plot([r["gold"] for r in baseline], lw=1, label="baseline (beta=0.05)")
    for name in ABLATIONS:
        ax2.plot([r["gold"] for r in curves[name]], lw=1, label=name)
    ax2.set(xlabel="PPO iteration", ylabel="gold reward of the rollouts",
            title="one detail switched off at a time")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    path = ctx.out / "ppo_details.png"
    fig.savefig(path, dpi=100)
    return str(path)
