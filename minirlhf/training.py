"""What the offline pairwise stages share: passes over labelled pairs, a loss on each batch's
summed log-probs and lengths, an AdamW step; then the end every policy stage has (evaluation,
checkpoint, a metrics plot) and what their commands keep and print. (ORPO and SimPO use it;
each supplies only its loss and its metrics, so each stage file reads as its idea.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from minirlhf.autograd.tensor import Tensor
from minirlhf.evaluation import PolicyReport, finish_policy_stage, policy_numbers
from minirlhf.lm.model import GPT
from minirlhf.lm.optim import AdamW, cosine_lr, optimizer_step
from minirlhf.lm.sequences import sequence_logps
from minirlhf.lm.tokenizer import CharTokenizer
from minirlhf.plots import plot_series
from minirlhf.world import get_task
from minirlhf.world.preference_data import (
    PreferencePair,
    encode_chosen_rejected,
    length_buckets,
)

# (summed log-probs (2B,) Tensor, lengths (2B,), B) -> (the batch's loss, metrics to log):
# the chosen responses are rows :B, the rejected ones B:
PairwiseLoss = Callable[[Tensor, np.ndarray, int], tuple[Tensor, dict[str, float]]]


def pairwise_training(policy: GPT, tokenizer: CharTokenizer, pairs: list[PreferencePair],
                      config: Any, rng: np.random.Generator, loss: PairwiseLoss, name: str
                      ) -> list[dict[str, float]]:
    """``config.epochs`` passes over ``pairs``, in batches of ``config.batch_size`` pairs of
    similar lengths taken in a random order, each step:

      1. the batch's chosen responses, then its rejected ones, after their prompts (2B, T);
      2. their summed log-probs and lengths in tokens (EOS included), (2B,) each;
      3. ``loss(logps, lengths, B)``: the batch's loss and its metrics;
      4. an AdamW step (``config.lr`` after a linear warmup of ``config.warmup_steps``, cosine
         decay to a tenth; gradients clipped to ``config.grad_clip``).

    Returns one metrics row per step: ``step`` (from 1), ``loss``, ``grad_norm``,
    ``learning_rate`` and the loss's own metrics."""
    opt = AdamW(policy.named_parameters(), lr=config.lr)
    batches = length_buckets(pairs, config.batch_size, rng)
    total = len(batches) * config.epochs
    metrics: list[dict[str, float]] = []
    bar = tqdm(total=total, desc=name, disable=not config.progress)
    for _ in range(config.epochs):
        for b in rng.permutation(len(batches)):
            step = len(metrics)
            chunk = [pairs[i] for i in batches[b]]
            tokens, mask = encode_chosen_rejected(tokenizer, chunk)  # 1. (2B, T)
            logps = sequence_logps(policy, tokens, mask)  # 2. (2B,)
            lengths = mask.sum(axis=1)  # (2B,)
            value, logged = loss(logps, lengths, len(chunk))  # 3.
            opt.lr = cosine_lr(step, total, config.lr, config.warmup_steps, config.lr * 0.1)
            optimizer_step(opt, value, policy.parameters(), config.grad_clip,  # 4.
                           f"{name}: step {step}")
            metrics.append({"step": step + 1, "loss": value.item(), "grad_norm": opt.grad_norm,
                            "learning_rate": opt.lr, **logged})
            bar.update(1)
    bar.close()
    return metrics


def finish_pairwise(name: str, title: str, config: Any, policy: GPT, reference: GPT,
                    tokenizer: CharTokenizer, metrics: list[dict[str, float]],
                    plot_keys: tuple[str, ...]) -> tuple[str, PolicyReport, list[str]]:
    """The end of a pairwise stage: its metrics, checkpoint and evaluation against the reference
    (``finish_policy_stage``), and ``metrics.png`` of ``plot_keys`` over the steps.
    Returns (checkpoint, report, plots)."""
    out = Path(config.out_dir)
    checkpoint, report = finish_policy_stage(
        name, out, config, policy, reference, tokenizer, get_task(config.task), metrics,
        config.seed, config.eval_samples_per_prompt, config.max_new_tokens)
    steps = [m["step"] for m in metrics]
    plots = [str(plot_series(
        out / "metrics.png", {k: list(zip(steps, [m[k] for m in metrics], strict=True))
                              for k in plot_keys}, title=title, ylabel="value"))]
    return checkpoint, report, plots


def pairwise_record(r: Any, config: Any) -> dict:
    """What a pairwise stage's run keeps (its record's numbers)."""
    return {**policy_numbers(r.report, config.eval_samples_per_prompt), "plots": r.plots}


def pairwise_show(r: Any, config: Any, title: str) -> str:
    """What a pairwise stage's command prints after training."""
    last = r.metrics[-1]
    return ("last step: " + ", ".join(f"{k} {v:.3f}" for k, v in last.items() if k != "step")
            + "\n" + r.report.describe(title, config.eval_samples_per_prompt)
            + f"\n{r.seconds:.0f} s; checkpoint: {r.checkpoint}; plot: {', '.join(r.plots)}")
