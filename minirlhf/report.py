"""The pipeline's report: ``runs/<name>/report.md``, readable on its own, with PNG plots.

It holds the gold-reward-vs-KL frontier (every policy stage on the same axes: best-of-n as its
curve over n, the trained policies as points), a table per policy (gold reward, win-rate vs
SFT, KL to the reference, length, valid rate), each stage's own section (the reward model
beside its ceiling, the best-of-n table), every stage's plots, and samples for the same prompts
from every policy. The numbers come from ``summary.json`` and the stages' records; which stages
there are comes from the registry.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from minirlhf.config import minirlhf_command
from minirlhf.evaluation import POLICY_TABLE_HEADER, policy_row, seed_interval, with_interval
from minirlhf.files import read_cache
from minirlhf.lm.checkpoint import atomic_write, file_digest
from minirlhf.machine import THREAD_VARIABLES, blas_threads, cores
from minirlhf.plots import plot_points_with_intervals, plot_reward_vs_kl
from minirlhf.registry import STAGES, output_path, policy_stages
from minirlhf.world.preference_data import NO_GOLD

log = logging.getLogger("minirlhf.report")


def _frontier(root: Path, summary: dict[str, Any], records: dict[str, dict[str, Any]]) -> Path:
    """frontier.png: gold reward against KL to the SFT policy, one curve or point per policy,
    each trained policy with its 95% intervals over the evaluation prompts as error bars."""
    pol = summary["policies"]

    def point(name: str, label: str) -> dict[str, Any]:
        ci = pol[name].get("ci95", {})
        return {"kl": [pol[name]["kl_to_ref"]], "gold": [pol[name]["gold_reward"]],
                "labels": [label], "gold_ci": [ci.get("gold_reward")],
                "kl_ci": [ci.get("kl_to_ref")]}

    curves = {"SFT": point("sft", "SFT")}
    for stage in policy_stages():
        numbers = records[stage.name]["numbers"]
        curves[stage.title] = numbers.get("curve") or point(stage.name, stage.title)
    return plot_reward_vs_kl(root / "frontier.png", curves,
                             title="gold reward against KL to the SFT policy")


def write_report(root: str | Path, summary: dict[str, Any], records: dict[str, dict[str, Any]],
                 seconds: float) -> Path:
    """Write report.md (and frontier.png) under ``root``; return the report's path."""
    root = Path(root)
    pol = summary["policies"]
    frontier = _frontier(root, summary, records)
    lines = [
        f"# minirlhf run `{summary['name']}`",
        "",
        f"Preset `{summary['preset']}`, seed {summary['seed']}; this run of the pipeline took "
        f"{seconds:.0f} s (stages already done with the same config were skipped; the table at "
        "the end gives each stage's own time). The gold reward is the hidden truth the "
        "simulated raters are noisy about; no training stage ever saw it.",
        "",
        _environment_line(summary.get("environment")),
        "",
        "## The policies",
        "",
        "Each policy answers the task's evaluation prompts; its samples are judged by gold and "
        "compared, prompt by prompt, with the SFT policy's samples (win-rate; a tie counts one "
        "half). KL is to the SFT policy, in nats per response (best-of-n: the analytic "
        "log n − (n−1)/n, an upper bound). ± is the half-width of a 95% bootstrap interval over "
        "the evaluation prompts: the noise of judging each policy on these prompts, not of "
        "training it again (one seed).",
        "",
        "How to read it:",
        "",
        "- **Gold reward** (reviews): a review's clauses summed, each adjective's polarity "
        "(−2 to +2) times its adverb's weight, a repeated adjective worth half each time, −2 "
        "for each sentence after the second, −0.5 for a clash joined by \"and\"; text that does "
        "not parse or never ends scores −5. So −5 means \"not a review\", 0 a neutral one, and "
        "a short enthusiastic one reaches about +5.",
        "- **SFT's win-rate against itself**: its samples against a second, independent set of "
        "its own samples (the reference set every row meets). With endless prompts it would be "
        "50%; on these prompts it is 50% give or take the interval's noise.",
        "- **KL** is estimated from the policy's own samples (the mean log-ratio), exact only "
        "on average: SFT's is 0 (it is the reference), and a policy that barely moved may show "
        "a small negative estimate (−0.00).",
        "- **Best-of-n at n = 1** (the reward model's table below) is the SFT policy again, on "
        "the best-of-n stage's own samples: its gold differs from the SFT row's by the noise "
        "of two sets of samples.",
        "- **Two ceilings**: the preference stage's log gives the ceiling over all the pairs it "
        "labelled; the reward model's section gives it over the held-out pairs the model is "
        "scored on. Both are the agreement a perfect model could reach on labels this noisy.",
        "",
        *POLICY_TABLE_HEADER,
    ]
    names = {"sft": "SFT", **{s.name: records[s.name]["numbers"].get("label", s.title)
                              for s in policy_stages()}}
    lines += [policy_row(names[key], p) for key, p in pol.items()]
    lines += ["", f"![gold reward against KL]({frontier.name})", ""]
    lines += _every_method(root)
    for name, stage in STAGES.items():  # each stage's own section, in pipeline order
        if stage.report is not None:
            lines += stage.report(records[name]["numbers"])
    for name, stage in STAGES.items():
        numbers = records[name]["numbers"]
        plots = numbers.get("plots") or ([numbers["plot"]] if numbers.get("plot") else [])
        lines += [f"![{stage.title}]({plot})" for plot in plots]  # relative to the run folder
    lines += ["", "## Samples for the same prompts", "",
              "`|` marks where the prompt ends; `~` a response that never finished; the number "
              "is its gold reward.", ""]
    samples = summary["samples"]
    n_prompts = min(len(s) for s in samples.values())
    for i in range(min(n_prompts, 8)):
        lines += [f"**{samples['sft'][i][0]}**", ""]
        for key in pol:
            _, response, gold = samples[key][i]
            lines.append(f"- {names[key].split(' (')[0]} ({gold:+.2f}): {response}")
        lines.append("")
    warnings = [w for r in records.values() for w in r["numbers"].get("warnings", [])]
    if warnings:
        lines += ["## Warnings raised during training", ""] + [f"- {w}" for w in warnings] + [""]
    lines += ["## Stage timings", "", "| stage | seconds (this run or the one that made it) |",
              "|---|---:|"]
    lines += [f"| {s} | {r['seconds']:.0f} |" for s, r in records.items()]
    path = root / "report.md"
    text = ("\n".join(lines) + "\n").encode()
    atomic_write(path, lambda f: f.write(text))  # a kill never leaves half a report
    return path


def _every_method(root: Path) -> list[str]:
    """The frontier experiment's table and plot, when it has run on this run folder
    (``python -m minirlhf frontier``; run the pipeline again afterwards to add them here)."""
    numbers = read_cache(root / "experiments" / "frontier" / "results.json", log,
                         "the report leaves the frontier out")
    if numbers is None:
        return []
    earlier = _earlier_point(root, numbers)
    if earlier is not None:  # the pipeline trained a stage again since (--force, --set)
        count = numbers.get("threads", blas_threads())  # its own count, where this machine
        runs = count <= cores()  # can run it: otherwise --force, with this process's count
        again = minirlhf_command(
            "frontier", "--base", root.name, "--runs-dir", str(root.parent.absolute()),
            *(["--quick"] if numbers.get("quick") else []), *([] if runs else ["--force"]),
            env={THREAD_VARIABLES[0]: str(count)} if runs else None)
        why = (f"experiments/frontier/ was made from earlier files of this folder (its point "
               f"{earlier} was trained from files this run no longer holds). {again} makes it "
               "again from this run's; then the pipeline's command once more (without --force) "
               "adds it here.")
        log.warning("%s: report.md leaves out the frontier: %s", root, why)
        return ["## Every method on one frontier", "", f"Left out: {why}", ""]
    return ["## Every method on one frontier", "",
            f"From `python -m minirlhf frontier` ({numbers.get('points_seconds', 0):.0f} s of "
            "training and evaluation over its points; each point is kept in its own folder with "
            "its settings): every method trained from this run's SFT policy, at a few "
            "strengths. One seed per point; ± is the half-width of a 95% bootstrap interval over "
            "the evaluation prompts (the noise of judging the point, not of training it again). "
            "Its SFT row is the SFT policy as every point meets it, the reference samples each "
            "is compared with: another draw of the same policy than the table above's.",
            "",
            numbers["table"], "", "![every method](experiments/frontier/frontier.png)", ""]


def _earlier_point(root: Path, numbers: dict[str, Any]) -> str | None:
    """The label of a frontier point trained from files the run no longer holds (its SFT
    policy, preference data or reward model, by content), or None when every point's inputs
    are this run's files."""
    files = [Path(output_path(stage, root)) for stage in ("sft", "preferences", "reward")]
    held = {file_digest(f) for f in files if f.is_file()}
    for point in numbers.get("points", []):
        inputs = point.get("inputs") if isinstance(point, dict) else None
        if isinstance(inputs, dict) and not set(inputs.values()) <= held:
            return str(point.get("label"))
    return None


def _environment_line(env: dict[str, Any] | None) -> str:
    """Where the numbers were made, and what reproduces them."""
    if not env:
        return "Machine: not recorded."
    simd = env.get("simd", "vector extensions not recorded")
    return (f"Machine: Python {env['python']}, NumPy {env['numpy']}, BLAS {env['blas']} with "
            f"{env['blas_threads']} thread(s), CPU {env['cpu']} ({simd}). The same machine, "
            "thread count and seed reproduce every number bit for bit. Anywhere else training "
            "takes another path after the first rounding difference, as another seed would: "
            "what carries over is what holds across seeds (`python -m minirlhf claims`), not "
            "this run's figures.")


def write_seeds_report(root: str | Path, summary: dict[str, Any], seed_dirs: list[str],
                       seconds: float) -> Path:
    """report.md of a multi-seed run (``pipeline --seeds N``): each figure as its mean over
    seeds ± the half-width of its 95% interval, the policies on the gold-vs-KL axes with their
    intervals, each comparison of two policies paired by seed, and a link to every seed's own
    report. Returns the report's path."""
    root = Path(root)
    pol, n = summary["policies"], len(summary["seeds"])
    names = {"sft": "SFT", **{s.name: s.title for s in policy_stages()}}
    lines = [f"# minirlhf run `{summary['name']}`, {n} seeds", "",
             f"Preset `{summary['preset']}`, seeds {', '.join(map(str, summary['seeds']))}: the "
             f"whole pipeline once per seed ({seconds:.0f} s for this command; seeds already "
             "done were skipped). Every figure is the mean over seeds ± the half-width of its "
             f"95% interval (Student's t, {n - 1} degrees of freedom): how much a figure moves "
             "when everything (pretraining, data, training, evaluation) is drawn again.", "",
             _environment_line(summary.get("environment")), "",
             "| policy | gold reward | win-rate vs SFT | KL to SFT | mean length | valid |",
             "|---|---:|---:|---:|---:|---:|"]
    for key, p in pol.items():
        cells = [with_interval(p[k], p["ci95"][k], spec) for k, spec in (
            ("gold_reward", ".3f"), ("win_rate_vs_sft", ".1%"), ("kl_to_ref", ".2f"),
            ("mean_length", ".1f"), ("valid_rate", ".1%"))]
        lines.append(f"| {names.get(key, key)} | " + " | ".join(cells) + " |")
    points = {names.get(k, k): {"kl": (p["kl_to_ref"], *p["ci95"]["kl_to_ref"]),
                                "gold": (p["gold_reward"], *p["ci95"]["gold_reward"])}
              for k, p in pol.items()}
    plot = plot_points_with_intervals(root / "frontier.png", points,
                                      f"gold reward against KL, {n} seeds (95% intervals)")
    lines += ["", f"![gold reward against KL]({plot.name})", "",
              "## Comparisons, paired by seed", "",
              "Two policies of one seed share its SFT policy and data, so each comparison is "
              "the per-seed difference, with its interval; a difference whose interval holds 0 "
              "is not measurable at this scale.", "",
              "| comparison | gold difference | win-rate difference | verdict |",
              "|---|---:|---:|---|"]
    trained = [k for k in pol if k != "sft"]
    for i, a in enumerate(trained):
        for b in trained[i + 1:]:
            row = []
            for key, spec in (("gold_reward", ".3f"), ("win_rate_vs_sft", ".1%")):
                d = [x - y for x, y in zip(pol[a]["per_seed"][key], pol[b]["per_seed"][key],
                                           strict=True)]
                m, lo, hi = seed_interval(d)
                row.append((m, lo, hi, spec))
            m, lo, hi, _ = row[0]
            verdict = (f"{names[a]} higher" if lo > 0 else f"{names[b]} higher" if hi < 0
                       else "not measurable at this scale")
            lines.append(f"| {names[a]} − {names[b]} | "
                         + " | ".join(with_interval(m, [lo, hi], spec) for m, lo, hi, spec in row)
                         + f" | gold: {verdict} |")
    rm = summary.get("reward_model")
    if rm:
        ci = rm["ci95"]
        bare = all(k in rm and rm[k] is None for k in ("ceiling", "expected_accuracy",
                                                       "gold_accuracy"))
        lines += ["", "## The reward model", "",
                  "| held-out accuracy | ceiling | accuracy vs gold | r with gold |",
                  "|---:|---:|---:|---:|",
                  "| " + " | ".join(
                      with_interval(rm[k], ci[k], spec) if k in ci
                      else NO_GOLD if bare and k != "gold_correlation" else "n/a"
                      for k, spec in (("accuracy", ".1%"), ("ceiling", ".1%"),
                                      ("gold_accuracy", ".1%"), ("gold_correlation", ".3f")))
                  + " |"]
    lines += ["", "## Each seed's own run", ""]
    lines += [f"- [{d}]({d}/report.md)" for d in seed_dirs]
    path = root / "report.md"
    text = ("\n".join(lines) + "\n").encode()
    atomic_write(path, lambda f: f.write(text))
    return path
