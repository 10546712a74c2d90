"""ORPO: SFT and preference learning in one loss, without a reference model (Hong et al., 2024).

With p(y|x) = exp(mean over y's tokens of log pi) (a per-token geometric mean, so long and short
responses are comparable), the odds of a response are p / (1 - p), and

    L_ORPO = -(1/|y_w|) log pi(y_w|x)  -  lam log sigmoid( log odds(y_w) - log odds(y_l) )

The first term is the SFT loss on the chosen response; the second pushes its odds above the
rejected one's. No reference model enters the loss and nothing ties the policy to where it
started: the stage still loads the SFT policy, only to *measure* the KL it drifts, for the
frontier. TRL's ORPOTrainer calls ``lam`` beta, and logs per-token mean log-probs as
``logps/chosen``; so do we here.

Each step (``minirlhf.training.Trainer``): 1. a length-bucketed batch of pairs; 2. summed
log-probs and lengths of the chosen and rejected responses; 3. the loss below (``orpo_loss``) and
its metrics; 4. an AdamW step.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from minirlhf.autograd.tensor import Tensor
from minirlhf.config import Stage, run_path, setting
from minirlhf.evaluation import PolicyReport
from minirlhf.lm.checkpoint import held_writes
from minirlhf.objectives.preference import orpo_loss
from minirlhf.training import (
    OfflineSettings,
    PolicySettings,
    PreferenceInputs,
    finish_offline,
    offline_record,
    offline_show,
    train_on_pairs,
)

log = logging.getLogger("minirlhf.stages.orpo")


@dataclass
class ORPOConfig(PreferenceInputs, OfflineSettings, PolicySettings):
    out_dir: str = setting(run_path("orpo"), "where the checkpoint, metrics and plots go")
    lam: float = setting(0.1, "weight of the odds-ratio term beside the SFT term (TRL's beta, "
                         "the paper's lambda)", "(0, inf)")
    max_pairs: int = setting(0, "use at most this many pairs (0: all)", "[0, 10_000_000]")


@dataclass
class ORPOResult:
    config: ORPOConfig
    checkpoint: str
    report: PolicyReport | None = None  # gold, win-rate vs SFT, KL
    metrics: list[dict[str, float]] = field(default_factory=list)  # one dict per step
    plots: list[str] = field(default_factory=list)
    seconds: float = 0.0


@held_writes()
def train_orpo(config: ORPOConfig) -> ORPOResult:
    """ORPO from the SFT policy on the preference pairs: the chosen response's NLL plus lam
    times the odds-ratio loss. No reference model in the loss."""
    STAGE.begin(config)
    t0 = time.time()
    result = ORPOResult(config=config, checkpoint="")

    def loss(lp: Tensor, lengths: np.ndarray, B: int) -> tuple[Tensor, dict[str, float]]:
        """ORPO's loss on a batch, and TRL's ORPO metrics (log-probs as per-token means)."""
        losses, log_odds = orpo_loss(lp[:B], lp[B:], lengths[:B], lengths[B:], config.lam)
        mean_c, mean_r = lp.data[:B] / lengths[:B], lp.data[B:] / lengths[B:]
        return losses.mean(), {
            "nll_loss": float(-mean_c.mean()), "log_odds_ratio": float(log_odds.mean()),
            "rewards/chosen": float(config.lam * mean_c.mean()),
            "rewards/rejected": float(config.lam * mean_r.mean()),
            "rewards/accuracies": float(np.mean(mean_c > mean_r)),
            "rewards/margins": float(config.lam * (mean_c - mean_r).mean()),
            "logps/chosen": float(mean_c.mean()), "logps/rejected": float(mean_r.mean())}

    policy, reference, tokenizer, result.metrics = train_on_pairs(config, "orpo", "ORPO",
                                                                  loss)
    result.checkpoint, result.report, result.plots = finish_offline(
        "orpo", f"ORPO (lam {config.lam})", config, policy, reference, tokenizer,
        result.metrics, ("nll_loss", "log_odds_ratio", "logps/chosen", "logps/rejected"))
    result.seconds = time.time() - t0
    return result


def show(r: ORPOResult, config: ORPOConfig) -> str:
    """What ``python -m minirlhf orpo`` prints after training."""
    return offline_show(r, config, "ORPO")


STAGE = Stage(
    name="orpo", title="ORPO", help="ORPO: SFT plus an odds-ratio preference loss, no reference",
    config=ORPOConfig, run=train_orpo, record=offline_record, show=show, policy=True,
    inputs={"preferences": "preferences", "init": "sft"},
    presets={"tiny": dict(max_pairs=512, eval_samples_per_prompt=1, max_new_tokens=60)},
)
