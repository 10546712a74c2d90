"""SimPO: the length-normalised log-prob as the implicit reward, no reference model (Meng et
al., 2024).

DPO's implicit reward is beta log(pi / pi_ref), summed over the response. SimPO replaces it with
the *mean* per-token log-prob, so a response is not rewarded for being short or long, and asks
the chosen response to win by a target margin gamma:

    L_SimPO = -log sigmoid( beta/|y_w| log pi(y_w|x) - beta/|y_l| log pi(y_l|x) - gamma )

No reference model enters the loss (and no SFT term, unlike ORPO): nothing ties the policy to
where it started. The stage loads the SFT policy only to *measure* the KL it drifts. TRL runs
SimPO as ``CPOTrainer(loss_type="simpo", cpo_alpha=0)`` and logs per-token mean log-probs as
``logps/chosen``; so do we here.

Each step (``minirlhf.training.Trainer``): 1. a length-bucketed batch of pairs; 2. summed
log-probs and lengths of the chosen and rejected responses; 3. the loss below (``simpo_loss``) and
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
from minirlhf.objectives.preference import simpo_loss
from minirlhf.training import (
    OfflineSettings,
    PolicySettings,
    PreferenceInputs,
    finish_offline,
    offline_record,
    offline_show,
    train_on_pairs,
)

log = logging.getLogger("minirlhf.stages.simpo")


@dataclass
class SimPOConfig(PreferenceInputs, OfflineSettings, PolicySettings):
    out_dir: str = setting(run_path("simpo"), "where the checkpoint, metrics and plots go")
    beta: float = setting(2.0, "scale of the length-normalised reward (the paper's default)",
                          "(0, inf)")
    gamma: float = setting(0.5, "target margin between chosen and rejected rewards", "[0, inf)")
    max_pairs: int = setting(0, "use at most this many pairs (0: all)", "[0, 10_000_000]")


@dataclass
class SimPOResult:
    config: SimPOConfig
    checkpoint: str
    report: PolicyReport | None = None  # gold, win-rate vs SFT, KL
    metrics: list[dict[str, float]] = field(default_factory=list)  # one dict per step
    plots: list[str] = field(default_factory=list)
    seconds: float = 0.0


@held_writes()
def train_simpo(config: SimPOConfig) -> SimPOResult:
    """SimPO from the SFT policy on the preference pairs: a margin between length-normalised
    log-probs. No reference model in the loss."""
    STAGE.begin(config)
    t0 = time.time()
    result = SimPOResult(config=config, checkpoint="")

    def loss(lp: Tensor, lengths: np.ndarray, B: int) -> tuple[Tensor, dict[str, float]]:
        """SimPO's loss on a batch, and TRL's CPO/SimPO metrics (rewards beta x per-token
        mean log-probs)."""
        losses = simpo_loss(lp[:B], lp[B:], lengths[:B], lengths[B:], config.beta, config.gamma)
        mean_c, mean_r = lp.data[:B] / lengths[:B], lp.data[B:] / lengths[B:]
        return losses.mean(), {
            "rewards/chosen": float(config.beta * mean_c.mean()),
            "rewards/rejected": float(config.beta * mean_r.mean()),
            "rewards/accuracies": float(np.mean(mean_c > mean_r)),
            "rewards/margins": float(config.beta * (mean_c - mean_r).mean()),
            "logps/chosen": float(mean_c.mean()), "logps/rejected": float(mean_r.mean())}

    policy, reference, tokenizer, result.metrics = train_on_pairs(config, "simpo", "SimPO",
                                                                   loss)
    result.checkpoint, result.report, result.plots = finish_offline(
        "simpo", f"SimPO (beta {config.beta}, gamma {config.gamma})", config, policy,
        reference, tokenizer, result.metrics,
        ("rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"))
    result.seconds = time.time() - t0
    return result


def show(r: SimPOResult, config: SimPOConfig) -> str:
    """What ``python -m minirlhf simpo`` prints after training."""
    return offline_show(r, config, "SimPO")


STAGE = Stage(
    name="simpo", title="SimPO", help="SimPO: a length-normalised margin loss, no reference",
    config=SimPOConfig, run=train_simpo, record=offline_record, show=show, policy=True,
    inputs={"preferences": "preferences", "init": "sft"},
    presets={"tiny": dict(max_pairs=512, eval_samples_per_prompt=1, max_new_tokens=60)},
)
