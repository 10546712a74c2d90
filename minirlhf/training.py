"""What the training stages share: their common settings, declared once; the one offline training
loop (reward model, SFT, DPO, KTO, ORPO, SimPO, RFT's fine-tuning); the models and the batch an
RL run holds (PPO, GRPO); and the end every offline policy stage has.

The offline loop, one step at a time (``Trainer.step``):

  1. the stage's loss on a batch of example indices: (scalar Tensor, metrics to log);
  2. the learning rate of this step (linear warmup, then cosine decay to a tenth; or constant);
  3. a guarded AdamW step (backward, gradient clipping, update);
  4. one metrics row: ``step`` (from 1, as TRL counts), ``loss``, ``grad_norm``,
     ``learning_rate`` and the loss's own metrics.

``Trainer.epochs`` runs passes over the data in the order a batch order gives: length buckets in
a random order (``shuffled``), a fresh permutation cut into batches (``shuffled_chunks``), or a
fixed list (``in_order``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from minirlhf.autograd.tensor import Tensor
from minirlhf.config import StageConfig, check_fits, run_path, setting
from minirlhf.evaluation import PolicyReport, finish_policy_stage, policy_numbers
from minirlhf.lm.checkpoint import load_model
from minirlhf.lm.model import GPT
from minirlhf.lm.optim import AdamW, cosine_lr, optimizer_step
from minirlhf.lm.reward_model import RewardModel
from minirlhf.lm.sampling import Rollout
from minirlhf.lm.sequences import sequence_logps
from minirlhf.lm.tokenizer import CharTokenizer
from minirlhf.plots import plot_series
from minirlhf.streams import stream
from minirlhf.world import TASK_NAMES, Task, get_task
from minirlhf.world.preference_data import (
    PreferencePair,
    encode_chosen_rejected,
    length_buckets,
    load_jsonl,
    require_pairs,
)


# ----------------------------------------------------------------------------- settings
@dataclass
class TrainSettings(StageConfig):
    """The settings every training stage shares, declared once. A stage's config derives from
    this class (or from ``PolicySettings`` / ``OfflineSettings``) and changes a default by
    declaring the field again with a plain value, ``lr: float = 1e-3``: the help text and the
    allowed range are inherited (``StageConfig.__init_subclass__``)."""

    lr: float = setting(1e-4, "learning rate (the peak, under a warmup-and-decay schedule)",
                        "(0, inf)")
    grad_clip: float = setting(1.0, "max global gradient norm", "[0, inf)")


@dataclass
class PolicySettings(TrainSettings):
    """A stage that trains a policy samples from it and evaluates it at the end."""

    max_new_tokens: int = setting(80, "response budget when sampling", "[1, 126]")
    eval_samples_per_prompt: int = setting(4, "samples per evaluation prompt", "[1, 1000]")


@dataclass
class OfflineSettings(TrainSettings):
    """Passes over a fixed set of labelled examples, in batches, on a warmup-then-cosine
    learning rate."""

    epochs: int = setting(1, "passes over the data", "[1, 1000]")
    batch_size: int = setting(32, "examples per step (pairs for a pairwise loss)", "[1, 4096]")
    warmup_steps: int = setting(20, "linear warmup of the learning rate, in steps",
                                "[0, 1_000_000]")


@dataclass
class PreferenceInputs(StageConfig):
    """What a stage that learns from the preference stage's file reads: the world, the file and
    the SFT policy it starts from (its frozen reference, where the method has one)."""

    task: str = setting("reviews", "which world", choices=TASK_NAMES)
    preferences: str = setting(run_path("preferences", "preferences.jsonl"),
                               "labelled pairs (JSON Lines)")
    init: str = setting(run_path("sft", "model.npz"),
                        "the SFT policy: the start point, and the frozen reference (of the "
                        "loss where the method has one; of the measured KL always)")


# ------------------------------------------------------------------------ the offline loop
# A batch's loss: example indices -> (scalar Tensor, metrics to log).
BatchLoss = Callable[[np.ndarray], tuple[Tensor, dict[str, float]]]
# One epoch's batches, in the order they are trained on, drawn with the run's generator.
BatchOrder = Callable[[np.random.Generator], list[np.ndarray]]


def shuffled(batches: list[np.ndarray]) -> BatchOrder:
    """Fixed batches (length buckets, say) in a fresh random order every epoch."""
    return lambda rng: [batches[b] for b in rng.permutation(len(batches))]


def shuffled_chunks(n: int, batch_size: int) -> BatchOrder:
    """A fresh permutation of ``n`` examples every epoch, cut into consecutive batches."""
    def order(rng: np.random.Generator) -> list[np.ndarray]:
        perm = rng.permutation(n)
        return [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    return order


def in_order(batches: list[np.ndarray]) -> BatchOrder:
    """Batches drawn beforehand, trained on as they are."""
    return lambda rng: batches


class Trainer:
    """The offline training loop (see the module docstring): an AdamW optimizer over a model's
    parameters, a learning-rate schedule over ``total`` steps, one progress bar, and the metrics
    rows of every step taken so far (``metrics``), across as many calls of ``epochs`` as the
    stage makes (rounds of online DPO or RFT). A cosine schedule reads ``config.warmup_steps``.
    ``bar = False``: no bar of its own (the stage shows its rounds instead)."""

    def __init__(self, name: str, model: GPT, config: TrainSettings, total: int | None = None,
                 optimizer: AdamW | None = None, schedule: str = "cosine", bar: bool = True):
        if schedule not in ("cosine", "constant"):
            raise ValueError(f"Trainer: schedule must be cosine or constant, got {schedule!r}")
        if schedule == "cosine" and total is None:
            raise ValueError("Trainer: a cosine schedule needs the total number of steps")
        self.name, self.config, self.total, self.schedule = name, config, total, schedule
        self.model = model
        self.optimizer = optimizer if optimizer is not None else AdamW(
            model.named_parameters(), lr=config.lr)
        self.metrics: list[dict[str, float]] = []
        self.bar = tqdm(total=total, desc=name, disable=not (config.progress and bar))

    def learning_rate(self, step: int) -> float:
        """Step 2: warmup then cosine decay to a tenth of ``lr``, or ``lr`` throughout."""
        c = self.config
        if self.schedule == "constant":
            return c.lr
        return cosine_lr(step, self.total, c.lr, c.warmup_steps, c.lr * 0.1)

    def step(self, idx: np.ndarray, loss: BatchLoss) -> None:
        """Steps 1-4 on the examples ``idx``."""
        step = len(self.metrics)
        value, logged = loss(idx)  # 1.
        self.optimizer.lr = self.learning_rate(step)  # 2.
        optimizer_step(self.optimizer, value, self.model.parameters(), self.config.grad_clip,
                       f"{self.name}: step {step}")  # 3.
        self.metrics.append({"step": step + 1, "loss": value.item(),  # 4.
                             "grad_norm": self.optimizer.grad_norm,
                             "learning_rate": self.optimizer.lr, **logged})
        self.bar.update(1)

    def epochs(self, order: BatchOrder, loss: BatchLoss, rng: np.random.Generator,
               passes: int | None = None) -> None:
        """``passes`` (default ``config.epochs``) passes, each over the batches ``order``
        draws."""
        for _ in range(self.config.epochs if passes is None else passes):
            for idx in order(rng):
                self.step(idx, loss)

    def close(self) -> list[dict[str, float]]:
        """End the progress bar; returns the metrics rows."""
        self.bar.close()
        return self.metrics


def pair_logps(policy: GPT, tokenizer: CharTokenizer, pairs: list[PreferencePair],
               mean: bool = False) -> tuple[Tensor, np.ndarray]:
    """A batch of B pairs: the chosen responses' log-probs (rows :B), then the rejected ones'
    (rows B:), summed over their tokens (or their per-token means), and the responses' lengths
    in tokens, EOS included. -> (2B,) Tensor, (2B,)"""
    tokens, mask = encode_chosen_rejected(tokenizer, pairs)  # (2B, T)
    return sequence_logps(policy, tokens, mask, mean), mask.sum(axis=1)


# (the batch's summed log-probs (2B,), the chosen ones first, lengths (2B,), B) ->
# (the batch's loss, metrics to log)
PairLoss = Callable[[Tensor, np.ndarray, int], tuple[Tensor, dict[str, float]]]


def train_on_pairs(config: Any, name: str, title: str, loss: PairLoss
                   ) -> tuple[GPT, GPT, CharTokenizer, list[dict[str, float]]]:
    """A reference-free pairwise loss (ORPO, SimPO) trained on the preference file: the SFT
    policy (``config.init``, also the reference the evaluation measures the KL against), at most
    ``max_pairs`` pairs, ``epochs`` passes over length buckets in a random order. Returns the
    policy, the reference, the tokenizer and the metrics rows."""
    rng = stream(config.seed, "train")
    policy, tokenizer, _ = load_model(config.init)
    reference, _, _ = load_model(config.init)  # for the evaluation's KL only
    pairs = require_pairs(load_jsonl(config.preferences, tokenizer, policy.config.block_size),
                          config.preferences, title)
    source = f"{config.preferences} ({len(pairs)} rows"
    if config.max_pairs:
        pairs = [pairs[i] for i in rng.permutation(len(pairs))[: config.max_pairs]]
        source += f", max_pairs = {config.max_pairs}"
    check_fits(config, "batch_size", len(pairs), f"the {len(pairs)} pairs of {source})")
    batches = length_buckets(pairs, config.batch_size, rng)

    def on_batch(idx: np.ndarray) -> tuple[Tensor, dict[str, float]]:
        lp, lengths = pair_logps(policy, tokenizer, [pairs[i] for i in idx])  # (2B,) each
        return loss(lp, lengths, len(idx))

    trainer = Trainer(name, policy, config, len(batches) * config.epochs)
    trainer.epochs(shuffled(batches), on_batch, rng)
    return policy, reference, tokenizer, trainer.close()


# ----------------------------------------------------------------------- RL models
@dataclass
class RolloutBatch:
    """A rollout and the prompts it answered (one per row); an RL stage's batch derives from it
    and adds what each step of its iteration computes."""

    prompts: list[str]  # (B,)
    roll: Rollout

    @property
    def tokens(self) -> np.ndarray:  # (B, T)
        return self.roll.generation.tokens

    @property
    def mask(self) -> np.ndarray:  # (B, T), 1 on response tokens
        return self.roll.generation.response_mask


@dataclass
class Actors:
    """The models an RL run holds (PPO, GRPO): the policy being trained, the frozen reference,
    the critic (None: no critic, or its value head sits on the policy's own trunk), the reward
    model (None: the task's verifier scores), the tokenizer, the task, and the optimizer over
    ``params``, what trains."""

    policy: GPT
    reference: GPT
    critic: GPT | None
    reward_model: RewardModel | None
    tokenizer: CharTokenizer
    optimizer: AdamW
    params: list[Tensor]
    task: Task


# ------------------------------------------------------------------- the end of a stage
def finish_offline(name: str, title: str, config: Any, policy: GPT, reference: GPT,
                   tokenizer: CharTokenizer, metrics: list[dict[str, float]],
                   plot_keys: tuple[str, ...]) -> tuple[str, PolicyReport, list[str]]:
    """The end of an offline policy stage: its metrics, checkpoint and evaluation against the
    reference (``finish_policy_stage``), and ``metrics.png`` of ``plot_keys`` over the steps
    (a key missing from a row is skipped there). Returns (checkpoint, report, plots)."""
    out = Path(config.out_dir)
    checkpoint, report = finish_policy_stage(
        name, out, config, policy, reference, tokenizer, get_task(config.task), metrics,
        config.seed, config.eval_samples_per_prompt, config.max_new_tokens)
    plots = [str(plot_series(
        out / "metrics.png", {k: [(m["step"], m[k]) for m in metrics if k in m]
                              for k in plot_keys}, title=title, ylabel="value"))]
    return checkpoint, report, plots


def offline_record(r: Any, config: Any) -> dict:
    """What an offline policy stage's run keeps (its record's numbers)."""
    return {**policy_numbers(r.report, config.eval_samples_per_prompt), "plots": r.plots}


def offline_show(r: Any, config: Any, title: str) -> str:
    """What an offline policy stage's command prints after training."""
    last = r.metrics[-1]
    return ("last step: " + ", ".join(f"{k} {v:.3f}" for k, v in last.items() if k != "step")
            + "\n" + r.report.describe(title, config.eval_samples_per_prompt)
            + f"\n{r.seconds:.0f} s; checkpoint: {r.checkpoint}; plot: {', '.join(r.plots)}")
