"""One frontier: every method on the same gold-reward vs KL axes of the reviews world.

Each method trades reward for distance from the SFT policy; the question a practitioner asks is
which buys more *gold* reward per nat of KL, at this scale. Every point is a policy trained from
the pipeline run's SFT policy on its preference data (or its reward model), then judged like
every policy: gold reward, KL to SFT per response, win-rate vs SFT, valid rate, mean length,
and its wall time, with 95% bootstrap intervals over the evaluation prompts for gold, KL and
win-rate. The critic-free family (GRPO, Dr. GRPO, RLOO) runs here on the reviews world, scored
by the reward model as PPO is. Methods run at a few strengths (beta, lam, rounds), and two
fitted curves from Gao et al. (2022) summarise them: best-of-n's ``d (alpha - beta d)`` on its
analytic KL and RL's ``d (alpha - beta log d)`` on PPO's points (d = sqrt(KL)).

Every point is one stage run through the registry (``COMMANDS[stage].run`` with the point's
settings), kept in its own folder with the settings it ran with (``point.json``): run the
command again and finished points are read back instead of trained (delete a folder to redo it;
a point read from another run, ``shared_with``, is redone by deleting that run's folder too). A
point whose settings and input files are those of a finished run of the base (the pipeline's
own stage: on seed 0, PPO b=0.05 and DPO b=0.5 are the pipeline's PPO and DPO; ppo-details' and
dpo-details' runs: PPO b=0.05 and b=0.2, DPO b=0.5 and online DPO b=0.5 of every seed) is that
run, read back, never trained twice (``common.find_run``). ``--quick`` runs one strength per
method on the tiny run, with small budgets.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from minirlhf.config import ConfigError
from minirlhf.evaluation import policy_report, with_interval
from minirlhf.experiments.common import (
    POINT_FILE,
    Context,
    described,
    find_run,
    input_digests,
    run_settings,
)
from minirlhf.experiments.overoptimization import fit_gao, gao_curve
from minirlhf.files import read_cache, read_json
from minirlhf.lm.checkpoint import atomic_write, load_model
from minirlhf.machine import blas_threads
from minirlhf.registry import COMMANDS
from minirlhf.world import get_task

log = logging.getLogger("minirlhf.experiments.frontier")

NEEDS = ("sft", "preferences", "reward", "best_of_n")

# GRPO's stage defaults to the scratchpad world; these put it on the reviews world's frontier
REVIEWS = {"task": "reviews", "reward": "reward_model", "init": "<sft>",
           "reward_model": "<reward>"}
# (label, stage, settings): the points of the full frontier. Strengths bracket each method's
# default: beta for the reference-based losses, lam for ORPO, beta for SimPO, rounds for RFT.
POINTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("PPO b=0.02", "ppo", {"beta": 0.02}),
    ("PPO b=0.05", "ppo", {"beta": 0.05}),
    ("PPO b=0.2", "ppo", {"beta": 0.2}),
    ("DPO b=0.1", "dpo", {"beta": 0.1}),
    ("DPO b=0.5", "dpo", {"beta": 0.5}),
    ("DPO b=2", "dpo", {"beta": 2.0}),
    ("IPO b=0.5", "dpo", {"beta": 0.5, "loss_type": "ipo"}),
    ("cDPO b=0.5", "dpo", {"beta": 0.5, "label_smoothing": 0.1}),
    ("hinge b=0.5", "dpo", {"beta": 0.5, "loss_type": "hinge"}),
    ("online DPO b=0.5", "dpo", {"beta": 0.5, "online_rounds": 4}),
    ("online DPO, RM labels", "dpo", {"beta": 0.5, "online_rounds": 4,
                                      "labeler": "reward_model", "reward_model": "<reward>"}),
    ("KTO b=0.1", "kto", {"beta": 0.1}),
    ("KTO b=0.5", "kto", {"beta": 0.5}),
    ("KTO b=2", "kto", {"beta": 2.0}),
    ("ORPO l=0.1", "orpo", {"lam": 0.1}),
    ("ORPO l=0.5", "orpo", {"lam": 0.5}),
    ("SimPO b=2", "simpo", {"beta": 2.0}),
    ("SimPO b=10", "simpo", {"beta": 10.0}),
    ("RFT best", "rft", {"select": "best"}),
    ("RFT random", "rft", {"select": "random"}),
    # the critic-free family on the reviews world, scored by the reward model
    ("GRPO b=0.04", "grpo", {**REVIEWS}),
    ("GRPO b=0.2", "grpo", {**REVIEWS, "beta": 0.2}),
    ("Dr. GRPO b=0.04", "grpo", {**REVIEWS, "advantage": "dr_grpo", "loss_type": "dr_grpo"}),
    ("RLOO b=0.04", "grpo", {**REVIEWS, "advantage": "rloo"}),
)
QUICK_POINTS = tuple(p for p in POINTS if p[0] in (
    "PPO b=0.05", "DPO b=0.5", "KTO b=0.5", "ORPO l=0.1", "SimPO b=2", "RFT best",
    "GRPO b=0.04"))
# what the quick run shrinks, per stage (on top of the tiny preset's settings)
QUICK = {"ppo": dict(iterations=3, rollout_size=16, minibatch_size=8),
         "dpo": dict(max_pairs=256, online_pairs=128), "kto": dict(max_examples=256),
         "orpo": dict(max_pairs=256), "simpo": dict(max_pairs=256),
         "rft": dict(rounds=2, prompts_per_round=16, n=4, batch_size=8, epochs=1),
         "grpo": dict(iterations=3, prompts_per_iteration=4, num_generations=4,
                      minibatch_size=16, max_new_tokens=60, eval_samples_per_prompt=1)}
JUDGED = ("gold_reward", "sft_gold_reward", "kl_to_ref", "win_rate_vs_sft", "valid_rate",
          "mean_length", "ci95")  # a point's figures
# what the full run sets beyond a stage's defaults: GRPO judged like the reviews world's others
FULL = {"grpo": dict(max_new_tokens=80, eval_samples_per_prompt=4)}


def point_settings(ctx: Context, stage: str, settings: dict[str, Any], folder: Path
                   ) -> dict[str, Any]:
    """A point's full settings: the base run's files for the inputs the stage declares, the
    experiment's seed, the quick budgets when quick (else FULL's), and the point's own (where
    "<reward>" and "<sft>" stand for the base run's reward model and SFT policy)."""
    out = {**ctx.base_inputs(stage), **ctx.common(), "out_dir": str(folder)}
    if ctx.config.quick:
        out.update(COMMANDS[stage].presets.get("tiny", {}), **QUICK[stage])
    else:
        out.update(FULL.get(stage, {}))
    named = {"<reward>": str(ctx.reward_path), "<sft>": str(ctx.sft)}
    out.update({k: named.get(v, v) if isinstance(v, str) else v for k, v in settings.items()})
    return out


def run_point(ctx: Context, label: str, stage: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Train one point, or read it back: from its folder when that holds this very run, or
    from another finished run of the base with the same settings (``find_run``)."""
    folder = ctx.out / label.replace(" ", "_").replace("=", "")
    full = point_settings(ctx, stage, settings, folder)
    config = COMMANDS[stage].config(**full)
    saved = folder / POINT_FILE
    threads = blas_threads()  # another count trains another model
    kept = read_cache(saved, log, "training the point again")
    if kept is not None and same_point(stage, kept, config, threads):
        if "ci95" not in kept:  # judged before intervals were kept
            kept = rejudge(kept, stage, full, folder)
            _write(saved, kept)
        return kept
    shared = find_run(ctx.base, stage, config, threads)
    if shared is not None and all(k in shared.figures for k in JUDGED):  # the very run
        row = {"label": label, "stage": stage, "settings": full, "threads": threads,
               "inputs": input_digests(stage, config),
               **{k: shared.figures[k] for k in JUDGED}, "seconds": shared.seconds,
               "shared_with": str(shared.folder)}
        _write(saved, row)
        return row
    saved.unlink(missing_ok=True)  # it would describe another run's files
    t0 = time.time()
    result = COMMANDS[stage].run(config)
    rep = result.report.to_dict()
    row = {"label": label, "settings": full, **described(stage, config, threads,
                                                         time.time() - t0),
           **{k: rep[k] for k in JUDGED}}
    if stage == "rft":  # one point per round: the rounds are strengths too
        row["rounds"] = [{k: r[k] for k in ("round", "gold", "kl", "win_rate")}
                         for r in result.rounds]
    _write(saved, row)
    return row


def points_to_train(ctx: Context) -> list[str]:
    """The labels of the points ``run`` would train (neither finished in their folder nor
    another finished run of the base), for the command's estimate; nothing is written."""
    threads, left = blas_threads(), []
    for label, stage, settings in QUICK_POINTS if ctx.config.quick else POINTS:
        folder = ctx.out / label.replace(" ", "_").replace("=", "")
        config = COMMANDS[stage].config(**point_settings(ctx, stage, settings, folder))
        try:
            kept = json.loads((folder / POINT_FILE).read_text())
        except (OSError, ValueError):
            kept = None
        if isinstance(kept, dict) and same_point(stage, kept, config, threads):
            continue
        shared = find_run(ctx.base, stage, config, threads)
        if shared is None or not all(k in shared.figures for k in JUDGED):
            left.append(label)
    return left


def same_point(stage: str, kept: dict[str, Any], config: Any, threads: int) -> bool:
    """Whether a saved point is the run ``config`` asks for: the same settings
    (``run_settings``), thread count and input files (by content; by path for a point saved
    before points kept their inputs' digests)."""
    try:
        theirs = COMMANDS[stage].config(**kept.get("settings", {}))
    except (TypeError, ConfigError):  # settings of another version of the stage
        return False
    if kept.get("threads") != threads \
            or run_settings(stage, theirs) != run_settings(stage, config):
        return False
    if "shared_with" in kept and "inputs" not in kept:
        return False  # read from a run before reads kept digests: read again (find_run)
    saved = kept.get("inputs", {})  # by content; by path for an input saved before its digest
    return all(saved[f] == digest if f in saved else
               Path(getattr(theirs, f)).resolve() == Path(getattr(config, f)).resolve()
               for f, digest in input_digests(stage, config).items())


def _write(path: Path, row: dict[str, Any]) -> None:
    """A point's JSON, written whole or not at all (a kill leaves the old file or none)."""
    data = (json.dumps(row, indent=2) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))


def rejudge(kept: dict[str, Any], stage: str, full: dict[str, Any], folder: Path
            ) -> dict[str, Any]:
    """A point saved before points kept their intervals: its saved policy judged again with its
    own evaluation settings and seed (the same samples, so the same figures on the machine that
    trained it), now with ``ci95``. Figures that came out different (another machine or thread
    count) replace the saved ones, and ``rejudged`` says so."""
    cfg = COMMANDS[stage].config(**full)
    policy, tokenizer, _ = load_model(str(folder / "model.npz"))
    reference, _, _ = load_model(cfg.init)
    rep = policy_report(policy, reference, tokenizer, get_task(cfg.task), cfg.seed,
                        cfg.eval_samples_per_prompt, cfg.max_new_tokens).to_dict()
    same = all(rep[k] == kept[k] for k in ("gold_reward", "kl_to_ref", "win_rate_vs_sft"))
    return {**kept, **{k: rep[k] for k in JUDGED},
            "rejudged": "the same figures" if same else "figures changed on re-judging"}


def best_of_n_curve(ctx: Context) -> dict[str, list[float]]:
    """Best-of-n from the base run (its gold against the analytic KL, n = 1 .. n_max)."""
    summary = read_json(ctx.base / "best_of_n" / "summary.json")
    ns = sorted(summary["table"], key=int)
    return {"n": [int(n) for n in ns], "kl": [summary["table"][n]["kl"] for n in ns],
            "gold": [summary["table"][n]["gold"] for n in ns]}


def run(ctx: Context) -> tuple[dict[str, Any], list[str]]:
    points = QUICK_POINTS if ctx.config.quick else POINTS
    rows = [run_point(ctx, *p) for p in points]
    bon = best_of_n_curve(ctx)
    sft_gold = rows[0]["sft_gold_reward"]
    fits = {}
    d_bon = np.sqrt(np.asarray(bon["kl"]))
    fits["best-of-n"] = fit_gao(d_bon, np.asarray(bon["gold"]) - bon["gold"][0], "bon")
    ppo = [r for r in rows if r["stage"] == "ppo"]
    if len(ppo) >= 2:
        fits["PPO"] = fit_gao(np.sqrt([r["kl_to_ref"] for r in ppo]),
                              np.array([r["gold_reward"] for r in ppo]) - sft_gold, "rl")
    plot = _plot(ctx.out / "frontier.png", rows, bon, fits, sft_gold)
    return {"points": rows, "best_of_n": bon, "fits": fits, "sft_gold": sft_gold,
            "table": table(rows, sft_gold),
            # what training and judging every point took, whenever each ran ("seconds" is
            # this call's, which reads finished points back)
            "points_seconds": round(sum(r["seconds"] for r in rows), 1)}, [plot]


def table(rows: list[dict[str, Any]], sft_gold: float) -> str:
    """The frontier as a Markdown table, one row per point (± the half-width of a 95%
    bootstrap interval over the evaluation prompts, where measured)."""
    lines = ["| method | gold | KL (nats) | win-rate vs SFT | valid | length | time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|",
             f"| SFT | {sft_gold:.3f} | 0.00 | 50.0% | | | |"]
    for r in rows:
        ci = r.get("ci95", {})
        lines.append(f"| {r['label']} | {with_interval(r['gold_reward'], ci.get('gold_reward'))} "
                     f"| {with_interval(r['kl_to_ref'], ci.get('kl_to_ref'), '.2f')} | "
                     f"{with_interval(r['win_rate_vs_sft'], ci.get('win_rate_vs_sft'), '.1%')} "
                     f"| {r['valid_rate']:.1%} | {r['mean_length']:.1f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def _plot(path: Path, rows: list[dict[str, Any]], bon: dict[str, list[float]],
          fits: dict[str, dict[str, float]], sft_gold: float) -> str:
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    ax.plot(bon["kl"], bon["gold"], "k.-", label="best-of-n (analytic KL)")
    top = max([r["kl_to_ref"] for r in rows] + bon["kl"])
    d = np.linspace(1e-3, np.sqrt(top), 200)
    for name, style in (("best-of-n", "k:"), ("PPO", "C0:")):
        if name in fits:
            f = fits[name]
            curve = gao_curve("bon" if name == "best-of-n" else "rl", f["alpha"], f["beta"])
            base = bon["gold"][0] if name == "best-of-n" else sft_gold
            ax.plot(d * d, base + curve(d), style, lw=1, label=f"{name}: Gao fit")
    markers = {"ppo": "o", "dpo": "s", "kto": "^", "orpo": "v", "simpo": "D", "rft": "P",
               "grpo": "X"}
    for k, r in enumerate(rows):
        ax.scatter([r["kl_to_ref"]], [r["gold_reward"]], marker=markers[r["stage"]],
                   color=f"C{k % 10}", label=r["label"], zorder=3)
        ci = r.get("ci95", {})
        if "gold_reward" in ci and "kl_to_ref" in ci:  # 95% intervals over evaluation prompts
            (g0, g1), (k0, k1) = ci["gold_reward"], ci["kl_to_ref"]
            ax.errorbar([r["kl_to_ref"]], [r["gold_reward"]], fmt="none", ecolor=f"C{k % 10}",
                        yerr=[[r["gold_reward"] - g0], [g1 - r["gold_reward"]]],
                        xerr=[[r["kl_to_ref"] - k0], [k1 - r["kl_to_ref"]]], lw=0.8, zorder=2)
        for rd in r.get("rounds", [])[:-1]:  # RFT's earlier rounds, smaller
            ax.scatter([rd["kl"]], [rd["gold"]], marker="P", color=f"C{k % 10}", s=15)
    ax.axhline(sft_gold, color="gray", lw=0.8, ls="--", label="SFT")
    ax.set(xlabel="KL to the SFT policy (nats per response)", ylabel="gold reward",
           title="One frontier: gold reward against KL, every method")
    ax.legend(fontsize=6, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return str(path)
