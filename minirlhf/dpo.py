"""DPO and its family: preference optimisation without a reward model.

Start from the KL-regularised objective RLHF optimises,

    max_pi  E_y~pi [ r(x, y) ] - beta KL(pi(.|x) || pi_ref(.|x)),

whose optimum is pi*(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z(x). Solve for the reward:
r(x, y) = beta log(pi*(y|x) / pi_ref(y|x)) + beta log Z(x). Put that into the Bradley-Terry
likelihood of a labelled pair (y_w preferred to y_l): Z(x) cancels, and what is left depends on
the policy alone (Rafailov et al., 2023):

    L_DPO = -log sigmoid(beta h),
    h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)]

Log-probabilities are summed over the response tokens (as in the paper and its reference code;
a per-token mean is an explicit option of the stage, never the default). The implicit rewards
beta (log pi - log pi_ref) of the chosen and rejected responses are what TRL logs as
``rewards/chosen`` and ``rewards/rejected``.

Variants, selected by ``loss_type``:
- ``sigmoid``: DPO. With ``label_smoothing`` eps > 0 it is conservative DPO (labels assumed
  flipped with probability eps): -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h).
- ``ipo``: (h - 1/(2 beta))^2 (Azar et al., 2023): regresses h to a fixed margin, so it cannot
  push h to infinity on deterministic preferences.
- ``hinge``: max(0, 1 - beta h) (SLiC, Zhao et al., 2023).
"""

from __future__ import annotations

import numpy as np

from minirlhf import functional as F
from minirlhf import ops
from minirlhf.tensor import Tensor

LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def dpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
             reference_chosen_logps: Tensor | np.ndarray,
             reference_rejected_logps: Tensor | np.ndarray, beta: float,
             loss_type: str = "sigmoid", label_smoothing: float = 0.0
             ) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """Per-example losses and implicit rewards.

    All four log-prob arguments are (B,): each response's log-prob summed over its tokens.
    The reference log-probs carry no gradient. Returns (losses (B,) Tensor, chosen rewards (B,),
    rejected rewards (B,)), the rewards being beta (log pi - log pi_ref), detached.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"dpo_loss: loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if not beta > 0:
        raise ValueError(f"dpo_loss: beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo_loss: label_smoothing must be in [0, 0.5), got {label_smoothing}")
    ref_c = _array(reference_chosen_logps)
    ref_r = _array(reference_rejected_logps)
    chosen_ratio = policy_chosen_logps - ref_c  # log pi(y_w) - log pi_ref(y_w), (B,)
    rejected_ratio = policy_rejected_logps - ref_r  # (B,)
    h = chosen_ratio - rejected_ratio  # (B,)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(h * beta)
        if label_smoothing:
            losses = losses * (1.0 - label_smoothing) - F.logsigmoid(h * -beta) * label_smoothing
    elif loss_type == "ipo":
        gap = h - 1.0 / (2.0 * beta)
        losses = gap * gap
    else:  # hinge
        losses = ops.relu(1.0 - h * beta)
    return losses, beta * chosen_ratio.data.copy(), beta * rejected_ratio.data.copy()


def _array(x: Tensor | np.ndarray) -> np.ndarray:
    return x.data if isinstance(x, Tensor) else np.asarray(x)
