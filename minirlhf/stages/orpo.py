"""ORPO: SFT and preference learning in one loss, without a reference model (Hong et al., 2024).

With p(y|x) = exp(mean over y's tokens of log pi) (a per-token geometric mean, so long and short
responses are comparable), the odds of a response are p / (1 - p), and

    L_ORPO = -(1/|y_w|) log pi(y_w|x)  -  lam log sigmoid( log odds(y_w) - log odds(y_l) )

The first term is the SFT loss on the chosen response; the second pushes its odds above the
rejected one's. No reference model enters the loss and nothing ties the policy to where it
started: the stage still loads the SFT policy, only to *measure* the KL it drifts, for the
frontier. TRL's ORPOTrainer calls ``lam`` beta, and logs per-token mean log-probs as
``logps/chosen``; so do we here.

One iteration, step by step: 1. a length-bucketed batch of pairs; 2. summed log-probs and
lengths of the chosen and rejected responses; 3. the loss (``orpo_loss``); 4. a step; 5. metrics.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from minirlhf.config import Stage, StageConfig, check_fits, run_path, setting, stream
from minirlhf.evaluation import PolicyReport, finish_policy_stage, policy_numbers
from minirlhf.lm.checkpoint import load_model
from minirlhf.lm.direct_alignment import orpo_loss
from minirlhf.lm.optim import AdamW, cosine_lr, optimizer_step
from minirlhf.lm.sequences import sequence_logps
from minirlhf.plots import plot_series
from minirlhf.world import TASK_NAMES, get_task
from minirlhf.world.preference_data import (
    encode_chosen_rejected,
    length_buckets,
    load_jsonl,
    require_pairs,
)

log = logging.getLogger("minirlhf.stages.orpo")


@dataclass
class ORPOConfig(StageConfig):
    task: str = setting("reviews", "which world", choices=TASK_NAMES)
    preferences: str = setting(
        run_path("preferences", "preferences.jsonl"), "labelled pairs (JSON Lines)")
    init: str = setting(run_path("sft", "model.npz"),
                        "the start point (and the reference the KL is measured against; the "
                        "loss uses none)")
    out_dir: str = setting(run_path("orpo"), "where the checkpoint, metrics and plots go")
    lam: float = setting(0.1, "weight of the odds-ratio term beside the SFT term (TRL's beta, "
                         "the paper's lambda)", "(0, inf)")
    max_pairs: int = setting(0, "use at most this many pairs (0: all)", "[0, 10_000_000]")
    epochs: int = setting(1, "passes over the pairs", "[1, 1000]")
    batch_size: int = setting(32, "pairs per step", "[1, 4096]")
    lr: float = setting(1e-4, "peak learning rate", "(0, inf)")
    warmup_steps: int = setting(20, "linear warmup", "[0, 1_000_000]")
    grad_clip: float = setting(1.0, "max global gradient norm", "[0, inf)")
    eval_samples_per_prompt: int = setting(4, "samples per evaluation prompt", "[1, 1000]")
    max_new_tokens: int = setting(80, "response budget when sampling", "[1, 126]")


@dataclass
class ORPOResult:
    config: ORPOConfig
    checkpoint: str
    report: PolicyReport | None = None  # gold, win-rate vs SFT, KL
    metrics: list[dict[str, float]] = field(default_factory=list)  # one dict per step
    plots: list[str] = field(default_factory=list)
    seconds: float = 0.0


def train_orpo(config: ORPOConfig) -> ORPOResult:
    """ORPO from the SFT policy on the preference pairs: the chosen response's NLL plus lam
    times the odds-ratio loss. No reference model in the loss."""
    STAGE.begin(config)
    t0 = time.time()
    rng = stream(config.seed, "train")
    policy, tokenizer, _ = load_model(config.init)
    reference, _, _ = load_model(config.init)  # for the evaluation's KL only
    pairs = require_pairs(load_jsonl(config.preferences, tokenizer, policy.config.block_size),
                          config.preferences, "ORPO")
    if config.max_pairs:
        pairs = [pairs[i] for i in rng.permutation(len(pairs))[: config.max_pairs]]
    check_fits(config, "batch_size", len(pairs), f"the {len(pairs)} pairs")
    opt = AdamW(policy.named_parameters(), lr=config.lr)
    # 1. batches of pairs of similar lengths (none dropped)
    batches = length_buckets(pairs, config.batch_size, rng)
    total = len(batches) * config.epochs
    result = ORPOResult(config=config, checkpoint="")
    bar = tqdm(total=total, desc="orpo", disable=not config.progress)
    for _ in range(config.epochs):
        for b in rng.permutation(len(batches)):
            step = len(result.metrics)
            chunk = [pairs[i] for i in batches[b]]
            B = len(chunk)
            # 2. summed log-probs and lengths, chosen in the first half, rejected in the second
            tokens, mask = encode_chosen_rejected(tokenizer, chunk)  # (2B, T)
            lp = sequence_logps(policy, tokens, mask)  # (2B,)
            lengths = mask.sum(axis=1)  # (2B,)
            # 3. the loss
            losses, log_odds = orpo_loss(lp[:B], lp[B:], lengths[:B], lengths[B:], config.lam)
            loss = losses.mean()
            # 4. a step
            opt.lr = cosine_lr(step, total, config.lr, config.warmup_steps, config.lr * 0.1)
            optimizer_step(opt, loss, policy.parameters(), config.grad_clip, f"orpo: step {step}")
            # 5. metrics, TRL's ORPO names (log-probs as per-token means, as TRL logs them)
            mean_c, mean_r = lp.data[:B] / lengths[:B], lp.data[B:] / lengths[B:]
            result.metrics.append({
                "step": step + 1, "loss": loss.item(), "grad_norm": opt.grad_norm,
                "learning_rate": opt.lr, "nll_loss": float(-mean_c.mean()),
                "log_odds_ratio": float(log_odds.mean()),
                "rewards/chosen": float(config.lam * mean_c.mean()),
                "rewards/rejected": float(config.lam * mean_r.mean()),
                "rewards/accuracies": float(np.mean(mean_c > mean_r)),
                "rewards/margins": float(config.lam * (mean_c - mean_r).mean()),
                "logps/chosen": float(mean_c.mean()), "logps/rejected": float(mean_r.mean())})
            bar.update(1)
    bar.close()
    out = Path(config.out_dir)
    result.checkpoint, result.report = finish_policy_stage(
        "orpo", out, config, policy, reference, tokenizer, get_task(config.task), result.metrics,
        config.seed, config.eval_samples_per_prompt, config.max_new_tokens)
    steps = [m["step"] for m in result.metrics]
    result.plots = [str(plot_series(
        out / "metrics.png", {k: list(zip(steps, [m[k] for m in result.metrics], strict=True))
                              for k in ("nll_loss", "log_odds_ratio", "logps/chosen",
                                        "logps/rejected")},
        title=f"ORPO (lam {config.lam})", ylabel="value"))]
    result.seconds = time.time() - t0
    return result


def record(r: ORPOResult, config: ORPOConfig) -> dict:
    """What a run keeps (its record's numbers)."""
    return {**policy_numbers(r.report, config.eval_samples_per_prompt), "plots": r.plots}


def show(r: ORPOResult, config: ORPOConfig) -> str:
    """What ``python -m minirlhf orpo`` prints after training."""
    last = r.metrics[-1]
    return ("last step: " + ", ".join(f"{k} {v:.3f}" for k, v in last.items() if k != "step")
            + "\n" + r.report.describe("ORPO", config.eval_samples_per_prompt)
            + f"\n{r.seconds:.0f} s; checkpoint: {r.checkpoint}; plot: {', '.join(r.plots)}")


STAGE = Stage(
    name="orpo", title="ORPO", help="ORPO: SFT plus an odds-ratio preference loss, no reference",
    config=ORPOConfig, run=train_orpo, record=record, show=show, policy=True,
    inputs={"preferences": "preferences", "init": "sft"},
    presets={"tiny": dict(max_pairs=512, eval_samples_per_prompt=1, max_new_tokens=60)},
)
