"""The pipeline's report: ``runs/<name>/report.md``, readable on its own, with PNG plots.

It holds the gold-reward-vs-KL frontier (best-of-n, PPO and DPO on the same axes), a table per
policy (gold reward, win-rate vs SFT, KL to the reference, length, valid rate), the reward
model's accuracy beside its ceiling, and samples for the same prompts from every policy. The
numbers come from ``summary.json``, which the pipeline writes first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from minirlhf.plots import plot_reward_vs_kl

POLICY_NAMES = {"sft": "SFT", "best_of_n": "best-of-n", "ppo": "PPO", "dpo": "DPO"}


def _num(x: float | None, spec: str) -> str:
    """A number formatted, or "n/a" when it could not be measured (e.g. no gold differences)."""
    return "n/a" if x is None else format(x, spec)


def write_report(root: str | Path, summary: dict[str, Any], records: dict[str, dict[str, Any]],
                 seconds: float) -> Path:
    """Write report.md (and frontier.png) under ``root``; return the report's path."""
    root = Path(root)
    pol = summary["policies"]
    table = summary["best_of_n_table"]
    ns = sorted(table, key=int)
    curves = {"best-of-n": {"kl": [table[n]["kl"] for n in ns],
                            "gold": [table[n]["gold"] for n in ns],
                            "labels": [f"n={n}" for n in ns]}}
    for key in ("sft", "ppo", "dpo"):
        curves[POLICY_NAMES[key]] = {"kl": [pol[key]["kl_to_ref"]],
                                     "gold": [pol[key]["gold_reward"]],
                                     "labels": [POLICY_NAMES[key]]}
    frontier = plot_reward_vs_kl(root / "frontier.png", curves,
                                 title="gold reward against KL to the SFT policy")
    n_bon = pol["best_of_n"]["n"]
    lines = [
        f"# minirlhf run `{summary['name']}`",
        "",
        f"Preset `{summary['preset']}`, seed {summary['seed']}; this run of the pipeline took "
        f"{seconds:.0f} s (stages already done with the same config were skipped; the table at "
        "the end gives each stage's own time). The gold reward is the hidden truth the "
        "simulated raters are noisy about; no training stage ever saw it.",
        "",
        "## The policies",
        "",
        "Each policy answers the task's evaluation prompts; its samples are judged by gold and "
        "compared, prompt by prompt, with the SFT policy's samples (win-rate; a tie counts one "
        "half). KL is to the SFT policy, in nats per response (best-of-n: the analytic "
        "log n − (n−1)/n).",
        "",
        "| policy | gold reward | win-rate vs SFT | KL to SFT | mean length | valid |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, p in pol.items():
        name = POLICY_NAMES[key] + (f" (n={n_bon})" if key == "best_of_n" else "")
        lines.append(f"| {name} | {p['gold_reward']:.3f} | {p['win_rate_vs_sft']:.1%} | "
                     f"{p['kl_to_ref']:.2f} | {p['mean_length']:.1f} | {p['valid_rate']:.1%} |")
    lines += ["", f"![gold reward against KL]({frontier.name})", ""]

    rm = summary["reward_model"]
    lines += [
        "## The reward model",
        "",
        f"Trained on {rm['train_pairs']} labelled pairs. Held-out accuracy against the raters' "
        f"labels: **{_num(rm['accuracy'], '.1%')}**, beside the ceiling "
        f"**{_num(rm['ceiling'], '.1%')}** (the "
        "best any model can do on labels this noisy); expected accuracy against a fresh label "
        f"{_num(rm.get('expected_accuracy'), '.1%')} (the same without the noise of one label "
        "per pair). Against gold preferences: "
        f"{_num(rm['gold_accuracy'], '.1%')}. Correlation with gold on fresh SFT samples: "
        f"{_num(rm['gold_correlation'], '.3f')}; calibration error (ECE) "
        f"{_num(rm['ece'], '.3f')}.",
        "",
        "| n | KL (nats) | gold | proxy (RM) |",
        "|---:|---:|---:|---:|",
    ]
    for n in ns:
        row = table[n]
        lines.append(f"| {n} | {row['kl']:.3f} | {row['gold']:.3f} | {row['proxy']:.3f} |")
    lines.append("")
    for key, title in (("reward", "reward model"), ("best_of_n", "best-of-n"),
                       ("ppo", "PPO"), ("dpo", "DPO"), ("pretrain", "pretraining"),
                       ("sft", "SFT")):
        numbers = records[key]["numbers"]
        plots = numbers.get("plots") or ([numbers["plot"]] if numbers.get("plot") else [])
        for plot in plots:
            lines.append(f"![{title}]({plot})")  # stored relative to the run folder
    lines += ["", "## Samples for the same prompts", "",
              "`|` marks where the prompt ends; `~` a response that never finished; the number "
              "is its gold reward.", ""]
    samples = summary["samples"]
    n_prompts = min(len(s) for s in samples.values())
    for i in range(min(n_prompts, 8)):
        lines.append(f"**{samples['sft'][i][0]}**")
        lines.append("")
        for key in ("sft", "best_of_n", "ppo", "dpo"):
            _, response, gold = samples[key][i]
            lines.append(f"- {POLICY_NAMES[key]} ({gold:+.2f}): {response}")
        lines.append("")
    warnings = [w for key in ("ppo", "dpo") for w in records[key]["numbers"].get("warnings", [])]
    if warnings:
        lines += ["## Warnings raised during training", ""] + [f"- {w}" for w in warnings] + [""]
    lines += ["## Stage timings", "", "| stage | seconds (this run or the one that made it) |",
              "|---|---:|"]
    lines += [f"| {s} | {r['seconds']:.0f} |" for s, r in records.items()]
    path = root / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
