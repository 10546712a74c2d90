"""DPO: preference optimisation without a reward model (Rafailov et al., 2023).

The loss and its variants (IPO, cDPO, hinge) are ``objectives.preference.dpo_loss``; this stage
trains with it, offline on the preference file or online on fresh pairs of the current policy,
from the SFT policy, which is also the frozen reference. Log-probabilities are summed over the
response tokens (a per-token mean is an explicit option, never the default). The implicit
rewards beta (log pi - log pi_ref) of the chosen and rejected responses are what TRL logs as
``rewards/chosen`` and ``rewards/rejected``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from minirlhf.autograd.tensor import Tensor, no_grad
from minirlhf.config import (
    ConfigError,
    Stage,
    check_fits,
    require_inputs,
    run_path,
    setting,
)
from minirlhf.evaluation import PolicyReport, policy_numbers
from minirlhf.lm.checkpoint import held_writes, load_model
from minirlhf.lm.model import GPT
from minirlhf.lm.reward_model import RewardModel
from minirlhf.lm.sampling import generate_text
from minirlhf.lm.sequences import sequence_logps
from minirlhf.lm.tokenizer import CharTokenizer
from minirlhf.objectives.preference import LOSS_TYPES, dpo_loss
from minirlhf.streams import stream
from minirlhf.training import (
    BatchLoss,
    OfflineSettings,
    PolicySettings,
    PreferenceInputs,
    Trainer,
    finish_offline,
    offline_show,
    pair_logps,
    shuffled,
)
from minirlhf.world import Task, get_task
from minirlhf.world.preference_data import (
    PreferencePair,
    encode_chosen_rejected,
    label_pairs,
    length_buckets,
    load_jsonl,
    require_pairs,
)
from minirlhf.world.raters import PRESETS as RATER_PRESETS
from minirlhf.world.raters import get_panel

log = logging.getLogger("minirlhf.stages.dpo")


# ------------------------------------------------------------------------------- stage
@dataclass
class DPOConfig(PreferenceInputs, OfflineSettings, PolicySettings):
    out_dir: str = setting(run_path("dpo"), "where the checkpoint, metrics and plots go")
    beta: float = setting(0.5, "strength of the implicit KL penalty, > 0", "(0, inf)")
    loss_type: str = setting(
        "sigmoid", "sigmoid (DPO), ipo or hinge", choices=LOSS_TYPES)
    label_smoothing: float = setting(
        0.0, "conservative DPO's assumed label-flip rate, in [0, 0.5)", "[0, 0.5)")
    mean_logps: bool = setting(False, "per-token mean log-probs instead of sums (not the default)")
    max_pairs: int = setting(0, "offline: use at most this many pairs (0: all)", "[0, 10_000_000]")
    online_rounds: int = setting(
        0, "0: offline; k > 0: online DPO in k rounds of fresh labels", "[0, 1000]")
    online_pairs: int = setting(10_000, "online: labels across all rounds (the offline set's size)",
                                "[1, 10_000_000]")
    labeler: str = setting("raters", "online: who labels the fresh pairs: the raters, or the "
                           "reward model (the higher score is chosen)",
                           choices=("raters", "reward_model"))
    reward_model: str = setting("", "online with labeler = reward_model: the reward model's "
                                "model.npz (e.g. runs/default/reward/model.npz)")
    raters: str = setting("default", "online: the rater preset that labels fresh pairs",
                          choices=RATER_PRESETS)

    def check(self, upstream: dict | None = None) -> None:
        """Every setting in its range; rounds that each get a pair; batches the pairs can fill
        (offline: checked here when the preference stage's config is at hand, as in the
        pipeline, and again by ``train_dpo`` on the file it reads)."""
        super().check(upstream)
        self.check_labeler()
        if self.online_rounds:
            if self.online_pairs < self.online_rounds:
                raise ConfigError(f"DPOConfig: online_rounds = {self.online_rounds} is more "
                                  f"than online_pairs = {self.online_pairs}; allowed range "
                                  f"[0, {self.online_pairs}]")
            self.check_data(self.online_pairs // self.online_rounds)
        elif (upstream or {}).get("preferences") is not None:
            prefs = upstream["preferences"]
            if getattr(prefs, "format", "pairs") == "unpaired":
                raise ConfigError("DPOConfig: offline DPO trains on chosen/rejected pairs, and "
                                  "preferences.format = unpaired writes thumbs-up/down lines; "
                                  "set it to pairs (or train DPO online)")
            if prefs.ranking_size > 2:
                raise ConfigError(f"DPOConfig: offline DPO trains on chosen/rejected pairs, and "
                                  f"preferences.ranking_size = {prefs.ranking_size} makes "
                                  "rankings; set it to 2 (or train DPO online)")
            self.check_data(prefs.n_pairs)

    def check_labeler(self) -> None:
        """A labeler only where pairs are labelled (online), and a reward model named when it
        labels."""
        if not self.online_rounds and self.labeler != "raters":
            raise ConfigError(f"DPOConfig: labeler = {self.labeler} labels online DPO's fresh "
                              "pairs, and online_rounds = 0 trains on the preference file: set "
                              "online_rounds (e.g. 4)")
        if self.online_rounds and self.labeler == "reward_model" and not self.reward_model:
            raise ConfigError("DPOConfig: labeler = reward_model needs reward_model, the reward "
                              "model's model.npz (e.g. runs/default/reward/model.npz)")

    def check_data(self, n_pairs: int, source: str = "") -> None:
        """A batch that a round of ``n_pairs`` pairs (after ``max_pairs``) can fill; ``source``
        names the file they come from."""
        used = min(n_pairs, self.max_pairs) if self.max_pairs and not self.online_rounds \
            else n_pairs
        check_fits(self, "batch_size", used, f"the {used} pairs per round" + (
            f" of {source} ({n_pairs} rows)" if source else ""))


@dataclass
class DPOResult:
    config: DPOConfig
    checkpoint: str
    report: PolicyReport | None = None  # gold, win-rate vs SFT, KL
    metrics: list[dict[str, float]] = field(default_factory=list)  # one dict per step
    warnings: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _reference_logps(reference: GPT, tokenizer: CharTokenizer, pairs: list[PreferencePair],
                     batches: list[np.ndarray], mean: bool) -> np.ndarray:
    """The reference's log-probs of every pair's chosen and rejected response, computed once
    (the reference never changes). -> (N, 2) float32"""
    out = np.zeros((len(pairs), 2), dtype=np.float32)
    with no_grad():
        for idx in batches:
            tokens, mask = encode_chosen_rejected(tokenizer, [pairs[i] for i in idx])
            lp = sequence_logps(reference, tokens, mask, mean).data
            out[idx, 0], out[idx, 1] = lp[: len(idx)], lp[len(idx):]
    return out


def _online_pairs(policy: GPT, tokenizer: CharTokenizer, config: DPOConfig, n: int,
                  rng: np.random.Generator) -> list[PreferencePair]:
    """``n`` fresh pairs: two samples of the current policy per prompt, labelled by the raters
    (or by the reward model: the higher score is chosen, and ``p_chosen`` is the model's
    Bradley-Terry probability). Pairs with an unfinished or identical response are skipped
    (and resampled)."""
    task, panel = get_task(config.task), get_panel(config.raters)
    rm = RewardModel.load(config.reward_model) if config.labeler == "reward_model" else None
    pairs: list[PreferencePair] = []
    while len(pairs) < n:
        prompts = task.sample_prompts(n - len(pairs) + 16, rng)
        a = generate_text(policy, tokenizer, prompts, config.max_new_tokens, rng)
        b = generate_text(policy, tokenizer, prompts, config.max_new_tokens, rng)
        keep = [(p, ta, tb) for p, (ta, fa), (tb, fb) in zip(prompts, a, b, strict=True)
                if fa and fb and ta and tb and ta != tb][: n - len(pairs)]
        check_fits(config, None, len(keep), sampled_pairs(a, b, config.max_new_tokens))
        if keep and rm is not None:
            pairs += rm_label_pairs(rm, task, *map(list, zip(*keep, strict=True)))
        elif keep:
            pairs += label_pairs(task, panel, *map(list, zip(*keep, strict=True)), rng)
    return pairs


def sampled_pairs(a: list[tuple[str, bool]], b: list[tuple[str, bool]],
                  max_new_tokens: int) -> str:
    """What a round of sampled pairs held, for a round that gave no pair to learn from: how
    many had an unfinished (or empty) response, how many two equal ones."""
    unfinished = sum(not (fa and fb and ta and tb) for (ta, fa), (tb, fb) in zip(a, b,
                                                                               strict=True))
    return (f"none of {len(a)} pairs of fresh samples is usable ({unfinished} with an "
            f"unfinished or empty response within max_new_tokens = {max_new_tokens}, "
            f"{len(a) - unfinished} with two equal responses)")


def rm_label_pairs(rm: RewardModel, task: Task, prompts: list[str], first: list[str],
                   second: list[str]) -> list[PreferencePair]:
    """Pairs labelled by a reward model: the higher-scored response is chosen (ties: the
    first); ``p_chosen`` is sigmoid(score difference), the model's own Bradley-Terry
    probability. Gold is recorded for the analysis, as for raters."""
    sa, sb = rm.score(prompts, first), rm.score(prompts, second)
    out = []
    for p, a, b, x, y in zip(prompts, first, second, sa, sb, strict=True):
        chosen, rejected = (a, b) if x >= y else (b, a)
        out.append(PreferencePair(p, chosen, rejected, task.gold(p, chosen, True),
                                  task.gold(p, rejected, True),
                                  float(1.0 / (1.0 + np.exp(-abs(x - y))))))
    return out


def batch_loss_of(policy: GPT, tokenizer: CharTokenizer, pairs: list[PreferencePair],
                  ref_logps: np.ndarray, config: DPOConfig) -> BatchLoss:
    """DPO's loss on a batch of ``pairs`` (their indices), with the reference's log-probs
    ``ref_logps`` (N, 2) computed once, and TRL's DPO metrics (step counted from 1, as TRL
    does)."""
    def loss(idx: np.ndarray) -> tuple[Tensor, dict[str, float]]:
        lp, _ = pair_logps(policy, tokenizer, [pairs[i] for i in idx], config.mean_logps)
        B = len(idx)
        losses, r_c, r_r = dpo_loss(lp[:B], lp[B:], ref_logps[idx, 0], ref_logps[idx, 1],
                                    config.beta, config.loss_type, config.label_smoothing)
        return losses.mean(), {
            "rewards/chosen": float(r_c.mean()), "rewards/rejected": float(r_r.mean()),
            "rewards/accuracies": float(np.mean(r_c > r_r)),
            "rewards/margins": float(np.mean(r_c - r_r)),
            "logps/chosen": float(lp.data[:B].mean()),
            "logps/rejected": float(lp.data[B:].mean())}
    return loss


@held_writes()
def train_dpo(config: DPOConfig) -> DPOResult:
    """DPO from the SFT policy, with it as the frozen reference.

    Offline (``online_rounds`` = 0): on the preference dataset. Online (k rounds): each round
    samples ``online_pairs / k`` fresh pairs from the current policy, has the raters label them,
    and trains on them: the same label budget, spent on the policy's own current answers.
    """
    rm_labels = config.online_rounds and config.labeler == "reward_model"
    STAGE.begin(config)
    if rm_labels:
        require_inputs(config, {"reward_model": "reward"})
    t0 = time.time()
    rng = stream(config.seed, "train")
    policy, tokenizer, _ = load_model(config.init)
    reference, _, _ = load_model(config.init)
    if config.online_rounds:
        per_round = config.online_pairs // config.online_rounds
        rounds = config.online_rounds
    else:
        pairs = require_pairs(load_jsonl(config.preferences, tokenizer,
                                         policy.config.block_size), config.preferences, "DPO")
        config.check_data(len(pairs), config.preferences)
        if config.max_pairs:
            pairs = [pairs[i] for i in rng.permutation(len(pairs))[: config.max_pairs]]
        per_round, rounds = len(pairs), 1

    total = rounds * -(-per_round // config.batch_size) * config.epochs  # every pair is used
    result = DPOResult(config=config, checkpoint="")
    trainer = Trainer("dpo", policy, config, total)
    for _ in range(rounds):
        if config.online_rounds:
            pairs = _online_pairs(policy, tokenizer, config, per_round, rng)
        batches = length_buckets(pairs, config.batch_size, rng)
        ref_logps = _reference_logps(reference, tokenizer, pairs, batches, config.mean_logps)
        loss = batch_loss_of(policy, tokenizer, pairs, ref_logps, config)
        trainer.epochs(shuffled(batches), loss, rng)
    result.metrics = trainer.close()
    result.warnings = chosen_logp_warning(result.metrics)
    for w in result.warnings:
        log.warning(w)

    result.checkpoint, result.report, result.plots = finish_offline(
        "dpo", f"DPO ({config.loss_type}, beta {config.beta})", config, policy, reference,
        tokenizer, result.metrics,
        ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"))
    result.seconds = time.time() - t0
    return result


def chosen_logp_warning(metrics: list[dict[str, float]]) -> list[str]:
    """A warning when chosen log-probs fell while margins grew (first vs last tenth of training):
    DPO can widen the margin by pushing both responses down, the rejected one faster, so the
    policy moves its probability to responses in neither set."""
    n = max(1, len(metrics) // 10)
    if len(metrics) < 2 * n:
        return []
    first, last = metrics[:n], metrics[-n:]

    def mean(rows, key):
        return float(np.mean([r[key] for r in rows]))

    d_logp = mean(last, "logps/chosen") - mean(first, "logps/chosen")
    d_margin = mean(last, "rewards/margins") - mean(first, "rewards/margins")
    if d_logp < 0 and d_margin > 0:
        return [f"dpo: chosen log-probs fell by {-d_logp:.2f} nats while margins grew by "
                f"{d_margin:.2f}: the policy is lowering both responses, moving probability to "
                "responses in neither set"]
    return []


# ------------------------------------------------------------------ the stage's record
def record(r: DPOResult, config: DPOConfig) -> dict:
    """What the pipeline keeps of a run (its record's numbers)."""
    return {**policy_numbers(r.report, config.eval_samples_per_prompt), "plots": r.plots,
            "warnings": r.warnings}


def show(r: DPOResult, config: DPOConfig) -> str:
    """What ``python -m minirlhf dpo`` prints after training."""
    return offline_show(r, config, "DPO")


STAGE = Stage(
    name="dpo", title="DPO", help="direct preference optimisation (offline, or online)",
    config=DPOConfig, run=train_dpo, record=record, show=show, policy=True,
    inputs={"preferences": "preferences", "init": "sft"},
    files=("reward_model",),  # online rounds labelled by a reward model
    unused=lambda c: ((("preferences",) if c.online_rounds else ())
                      + (() if c.online_rounds and c.labeler == "reward_model"
                         else ("reward_model",))),
    presets={"tiny": dict(max_pairs=512, eval_samples_per_prompt=1, max_new_tokens=60)},
    work=lambda c, cfgs: c.epochs * (c.online_pairs * (1 + c.max_new_tokens / 10)
                                     if c.online_rounds else
                                     min(c.max_pairs or math.inf, cfgs["preferences"].n_pairs)),
    seconds={"tiny": 1.0, "default": 53.0},  # on the reference 2-core laptop
)
