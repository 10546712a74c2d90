"""DPO's knobs, measured: beta swept (0.2, the default 0.5, 1.0); log-probabilities averaged
per token instead of summed, at the same beta and at beta rescaled by the mean response length
(the same strength); the same label budget spent online, in four rounds, also compared with
the offline sweep at the online run's KL. All on the pipeline's SFT policy and preference
pairs.

With a per-token mean, h shrinks by about the response length L (tokens, EOS included), so
beta h, the only place beta enters the loss, is about L times smaller at the same beta: the
implicit KL price is L times lower. ``beta * L`` restores the strength, which is the comparison
that says what averaging itself does. Every run of one seed uses the experiment's seed (the
stream of the pipeline's DPO at seed 0: batches and evaluation samples); ``--seeds N`` gives
each figure and each difference from the main run (beta 0.5, summed) a 95% interval over
seeds. The main run and the online run have the settings of the frontier's ``DPO b=0.5`` and
``online DPO b=0.5`` points (and at seed 0 the main run is the pipeline's DPO), so they are
those runs, trained once (``Context.stage_run``; ``runs.<name>.folder`` then names their
folders there)."""


from __future__ import annotations

from typing import Any

from minirlhf.experiments.common import Context, gold_at_kl, relative_folder
from minirlhf.lm.checkpoint import load_model
from minirlhf.stages.dpo import chosen_logp_warning
from minirlhf.world.preference_data import (
    PreferencePair,
    encode_chosen_rejected,
    load_jsonl,
    save_jsonl,
)

NEEDS = ("sft", "preferences")  # the pipeline's SFT policy and preference pairs

MAIN = "beta=0.5"  # the stage's default: summed log-probs, offline
OFFLINE_SWEEP = ("beta=0.2", MAIN, "beta=1")  # offline, summed: the curve online is matched on
ONLINE = "online, 4 rounds"
COMPARED = ("gold_reward", "kl_to_ref", "win_rate_vs_sft", "valid_rate", "mean_length")


def mean_response_tokens(pairs: list[PreferencePair], tokenizer: Any) -> float:
    """The mean number of response tokens (EOS included) over every chosen and rejected
    response of ``pairs``: what a per-token mean divides each summed log-prob by."""
    _, mask = encode_chosen_rejected(tokenizer, pairs)  # (2B, T) response positions
    return float(mask.sum(axis=1).mean())


def runs(mean_len: float) -> dict[str, dict[str, Any]]:
    """name -> the DPOConfig settings of each run."""
    return {
        "beta=0.2": dict(beta=0.2),
        MAIN: dict(beta=0.5),
        "beta=1": dict(beta=1.0),
        "mean log-probs, beta=0.5": dict(beta=0.5, mean_logps=True),
        f"mean log-probs, beta=0.5*L={0.5 * mean_len:.1f}": dict(beta=0.5 * mean_len,
                                                                   mean_logps=True),
        ONLINE: dict(beta=0.5, online_rounds=4),
    }


def run(ctx: Context) -> tuple[dict[str, Any], list[str]]:
    pairs = load_jsonl(ctx.preferences)
    n = ctx.n(len(pairs), 128)
    _, tokenizer, _ = load_model(ctx.sft)
    mean_len = mean_response_tokens(pairs[:n], tokenizer)
    # all the pairs: the base run's own file, as the pipeline's DPO and the frontier read it
    data = str(ctx.preferences) if n == len(pairs) else str(ctx.out / f"pairs_{n}.jsonl")
    if n < len(pairs):
        save_jsonl(data, pairs[:n])
    settings = dict(preferences=data, online_pairs=n, **ctx.dpo_settings(n))
    numbers: dict[str, Any] = {"pairs": n, "mean_response_tokens": mean_len, "runs": {}}
    reports = {}
    for name, change in runs(mean_len).items():
        folder = name.split(",")[0].replace(" ", "_").replace("=", "_")
        if "L=" in name:
            folder += "_rescaled"
        r = ctx.stage_run(f"dpo_{folder}", "dpo", **{**settings, **change})
        rep = dict(r.figures)
        rep["gold_gained_per_nat"] = ((rep["gold_reward"] - rep["sft_gold_reward"])
                                      / max(rep["kl_to_ref"], 1e-9))
        rep["chosen_logps_fell"] = float(bool(chosen_logp_warning(r.metrics)))  # the stage's test
        reports[name] = rep
        numbers["runs"][name] = {**rep, "beta": change["beta"], "folder": relative_folder(r, ctx)}
    for name, rep in reports.items():
        if name != MAIN:
            numbers["runs"][name].update({f"{k}_minus_main": rep[k] - reports[MAIN][k]
                                          for k in COMPARED})
    numbers["online_at_matched_kl"] = online_at_matched_kl(reports)
    return numbers, [_plot(ctx, reports)]


def online_at_matched_kl(reports: dict[str, dict]) -> dict[str, Any]:
    """Online DPO against offline DPO at the same KL: the offline beta sweep's gold
    interpolated at the online run's KL (``gold_at_kl``), where the sweep's KLs bracket it.
    ``reports``: run name -> its figures (``PolicyReport.to_dict``)."""
    online = reports[ONLINE]
    sweep = [reports[name] for name in OFFLINE_SWEEP]
    offline = gold_at_kl([r["kl_to_ref"] for r in sweep], [r["gold_reward"] for r in sweep],
                         online["kl_to_ref"])
    out: dict[str, Any] = {"kl": online["kl_to_ref"], "in_range": offline is not None}
    if offline is not None:
        out.update(offline_gold=offline, gold_difference=online["gold_reward"] - offline)
    return out


def _plot(ctx: Context, reports: dict[str, dict]) -> str:
    """Every run on gold-vs-KL axes, the SFT policy's gold as a line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for name, rep in reports.items():
        ax.scatter(rep["kl_to_ref"], rep["gold_reward"], s=40, label=name)
    ax.axhline(next(iter(reports.values()))["sft_gold_reward"], color="gray", ls=":",
               label="SFT")
    ax.set(xscale="symlog", xlabel="KL to the SFT policy (nats per response)",
           ylabel="gold reward", title="DPO's knobs")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = ctx.out / "dpo_details.png"
    fig.savefig(path, dpi=100)
    return str(path)

