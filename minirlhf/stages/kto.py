"""KTO: alignment from thumbs-up and thumbs-down on single responses (Ethayarajh et al., 2024).

Pairs are expensive to collect; a thumbs-up or -down on one response is what most products
already log. KTO learns from such unpaired labels. With r = log pi(y|x) - log pi_ref(y|x) (the
implicit reward of DPO) and a reference point z0 = max(KL(pi || pi_ref), 0) estimated on the
batch and detached,

    desirable y:    w_d (1 - sigmoid(beta (r - z0)))
    undesirable y:  w_u (1 - sigmoid(beta (z0 - r)))

a desirable response is pushed above the reference point, an undesirable one below it (the
prospect-theory value function of Kahneman and Tversky, hence the name). z0 is estimated as
the paper does, from *mismatched* pairs: each prompt of the batch with the next example's
completion, where the policy has no reason to differ from the reference except by drifting.

Data: the preference file's pairs split into a thumbs-up for each chosen response and a
thumbs-down for each rejected one (as the KTO paper does), an unpaired file used as it is, or
``thumbs = n``: n fresh samples of the SFT policy, each given a thumbs-up or -down by the
raters (``Rater.p_thumbs_up``: the response against a neutral one, with the raters' noise).

One iteration, step by step: 1. a length-bucketed batch of labelled responses; 2. the reference
point z0 from mismatched pairs; 3. the policy's log-probs (the reference's are computed once);
4. the loss (``kto_loss``); 5. a step; 6. metrics under TRL's KTO names.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from minirlhf.autograd.tensor import Tensor, no_grad
from minirlhf.config import Stage, check_fits, run_path, setting
from minirlhf.evaluation import PolicyReport, policy_numbers
from minirlhf.lm.checkpoint import held_writes, load_model
from minirlhf.lm.model import GPT
from minirlhf.lm.sampling import generate_text
from minirlhf.lm.sequences import encode_pairs, sequence_logps
from minirlhf.lm.tokenizer import CharTokenizer
from minirlhf.objectives.preference import kto_loss
from minirlhf.streams import stream
from minirlhf.training import (
    BatchLoss,
    OfflineSettings,
    PolicySettings,
    PreferenceInputs,
    Trainer,
    finish_offline,
    offline_show,
    shuffled,
)
from minirlhf.world import get_task
from minirlhf.world.preference_data import (
    PreferencePair,
    UnpairedExample,
    label_thumbs,
    load_jsonl,
    pairs_to_unpaired,
    unpaired_buckets,
)
from minirlhf.world.raters import PRESETS as RATER_PRESETS
from minirlhf.world.raters import get_panel

log = logging.getLogger("minirlhf.stages.kto")


@dataclass
class KTOConfig(PreferenceInputs, OfflineSettings, PolicySettings):
    preferences: str = setting(
        run_path("preferences", "preferences.jsonl"),
        "pairs (split into a thumbs-up and a thumbs-down each) or unpaired labels (JSON Lines)")
    out_dir: str = setting(run_path("kto"), "where the checkpoint, metrics and plots go")
    thumbs: int = setting(0, "0: learn from the preference file; n > 0: from n fresh SFT "
                          "samples, each given a thumbs-up or -down by the raters",
                          "[0, 10_000_000]")
    raters: str = setting("default", "thumbs > 0: the rater preset that labels the samples",
                          choices=RATER_PRESETS)
    beta: float = setting(0.5, "strength of the implicit KL penalty, as DPO's beta", "(0, inf)")
    desirable_weight: float = setting(1.0, "w_d, the weight of thumbs-up examples", "(0, inf)")
    undesirable_weight: float = setting(1.0, "w_u, the weight of thumbs-down examples; the paper "
                                        "keeps w_d n_d / (w_u n_u) in [1, 4/3]", "(0, inf)")
    max_examples: int = setting(0, "use at most this many labelled responses (0: all)",
                                "[0, 10_000_000]")
    batch_size: int = setting(64, "labelled responses per step (a pair gives two)", "[2, 4096]")

    def check(self, upstream: dict | None = None) -> None:
        """Every setting in its range; with ``thumbs``, a batch its samples can fill."""
        super().check(upstream)
        if self.thumbs:
            n = min(self.thumbs, self.max_examples or self.thumbs)
            check_fits(self, "batch_size", n, f"the {n} sample{'s' * (n != 1)} thumbs = "
                       f"{self.thumbs} labels", "fewer when a sample does not finish within "
                       f"max_new_tokens = {self.max_new_tokens}: it is not labelled")


@dataclass
class KTOResult:
    config: KTOConfig
    checkpoint: str
    report: PolicyReport | None = None  # gold, win-rate vs SFT, KL
    metrics: list[dict[str, float]] = field(default_factory=list)  # one dict per step
    data: dict[str, float] = field(default_factory=dict)  # what the labels were
    plots: list[str] = field(default_factory=list)
    seconds: float = 0.0


def unpaired_data(config: KTOConfig, policy: GPT, tokenizer: CharTokenizer,
                  rng: np.random.Generator) -> tuple[list[UnpairedExample], str]:
    """The labelled responses KTO trains on (see the module docstring for the three sources),
    and where they come from, with their counts."""
    if config.thumbs:
        task, panel = get_task(config.task), get_panel(config.raters)
        prompts = task.sample_prompts(config.thumbs, rng)
        done = generate_text(policy, tokenizer, prompts, config.max_new_tokens, rng)
        kept = [(p, t) for p, (t, finished) in zip(prompts, done, strict=True) if finished and t]
        return (label_thumbs(task, panel, [p for p, _ in kept], [t for _, t in kept], rng),
                f"{config.thumbs} samples, {len(kept)} finished within max_new_tokens = "
                f"{config.max_new_tokens}")
    records = load_jsonl(config.preferences, tokenizer, policy.config.block_size)
    source = f"{config.preferences} ({len(records)} rows)"
    if records and isinstance(records[0], PreferencePair):
        return pairs_to_unpaired(records), source
    return records, source


def _logps(model: GPT, tokenizer: CharTokenizer, prompts: list[str], completions: list[str]):
    tokens, mask = encode_pairs(tokenizer, prompts, completions)
    return sequence_logps(model, tokens, mask)  # (B,)


def reference_point(policy: GPT, reference: GPT, tokenizer: CharTokenizer,
                    batch: list[UnpairedExample]) -> float:
    """Step 2: the batch's estimate of KL(pi || pi_ref), from mismatched pairs (each prompt with
    the next example's completion), without gradient; kto_loss clamps it at 0."""
    prompts = [e.prompt for e in batch]
    shifted = [batch[(i + 1) % len(batch)].completion for i in range(len(batch))]
    with no_grad():
        pol = _logps(policy, tokenizer, prompts, shifted).data
        ref = _logps(reference, tokenizer, prompts, shifted).data
    return float(np.mean(pol - ref))


def batch_loss_of(policy: GPT, reference: GPT, tokenizer: CharTokenizer,
                  examples: list[UnpairedExample], ref_logps: np.ndarray, config: KTOConfig
                  ) -> BatchLoss:
    """KTO's loss on a batch of ``examples`` (their indices), with the reference's log-probs
    ``ref_logps`` (N,) computed once, and TRL's KTO metrics (chosen: the thumbs-up rows,
    rejected: the others)."""
    desirable = np.array([e.label for e in examples])  # (N,) the thumbs-up rows

    def loss(idx: np.ndarray) -> tuple[Tensor, dict[str, float]]:
        batch = [examples[i] for i in idx]
        z0 = reference_point(policy, reference, tokenizer, batch)  # 2. the reference point
        lp = _logps(policy, tokenizer, [e.prompt for e in batch],  # 3. the policy's log-probs
                    [e.completion for e in batch])  # (B,)
        up = desirable[idx]
        losses, rewards = kto_loss(lp, ref_logps[idx], up, z0, config.beta,  # 4. the loss
                                   config.desirable_weight, config.undesirable_weight)
        row = {"kl": max(z0, 0.0)}
        for name, sel in (("chosen", up), ("rejected", ~up)):
            if sel.any():
                row[f"rewards/{name}"] = float(rewards[sel].mean())
                row[f"logps/{name}"] = float(lp.data[sel].mean())
        if up.any() and (~up).any():
            row["rewards/margins"] = row["rewards/chosen"] - row["rewards/rejected"]
        return losses.mean(), row
    return loss


@held_writes()
def train_kto(config: KTOConfig) -> KTOResult:
    """KTO from the SFT policy (also the frozen reference) on thumbs-up / thumbs-down labels."""
    STAGE.begin(config)
    t0 = time.time()
    rng = stream(config.seed, "train")
    policy, tokenizer, _ = load_model(config.init)
    reference, _, _ = load_model(config.init)
    examples, source = unpaired_data(config, policy, tokenizer, rng)
    if config.max_examples:
        examples = [examples[i] for i in rng.permutation(len(examples))[: config.max_examples]]
        source += f", max_examples = {config.max_examples}"
    check_fits(config, "batch_size", len(examples),
               f"the {len(examples)} labelled responses of {source}")
    desirable = np.array([e.label for e in examples])
    result = KTOResult(config=config, checkpoint="", data={
        "examples": len(examples), "desirable_share": float(desirable.mean()),
        "source": f"{config.thumbs} thumbs" if config.thumbs else config.preferences})
    log.info("kto: %d labelled responses, %.0f%% thumbs-up", len(examples),
             100 * desirable.mean())
    # 1. batches of similar lengths; the reference's log-probs once (it never changes)
    batches = unpaired_buckets(examples, config.batch_size, rng)
    ref_logps = np.zeros(len(examples), np.float32)
    with no_grad():
        for idx in batches:
            ref_logps[idx] = _logps(reference, tokenizer, [examples[i].prompt for i in idx],
                                    [examples[i].completion for i in idx]).data
    trainer = Trainer("kto", policy, config, len(batches) * config.epochs)
    loss = batch_loss_of(policy, reference, tokenizer, examples, ref_logps, config)
    trainer.epochs(shuffled(batches), loss, rng)
    result.metrics = trainer.close()
    result.checkpoint, result.report, result.plots = finish_offline(
        "kto", f"KTO (beta {config.beta})", config, policy, reference, tokenizer,
        result.metrics, ("kl", "rewards/chosen", "rewards/rejected"))
    result.seconds = time.time() - t0
    return result


def record(r: KTOResult, config: KTOConfig) -> dict:
    """What a run keeps (its record's numbers)."""
    return {**policy_numbers(r.report, config.eval_samples_per_prompt), "data": r.data,
            "plots": r.plots}


def show(r: KTOResult, config: KTOConfig) -> str:
    """What ``python -m minirlhf kto`` prints after training."""
    return (f"data: {r.data['examples']} labelled responses from {r.data['source']}, "
            f"{r.data['desirable_share']:.0%} thumbs-up\n" + offline_show(r, config, "KTO"))


STAGE = Stage(
    name="kto", title="KTO", help="KTO: alignment from thumbs-up / thumbs-down labels",
    config=KTOConfig, run=train_kto, record=record, show=show, policy=True,
    inputs={"preferences": "preferences", "init": "sft"},
    unused=lambda c: ("preferences",) if c.thumbs else (),
    presets={"tiny": dict(max_examples=1024, eval_samples_per_prompt=1, max_new_tokens=60)},
)
