"""The direct-alignment objectives: preference optimisation without a reward model.

DPO (Rafailov et al., 2023). Start from the KL-regularised objective RLHF optimises,

    max_pi  E_y~pi [ r(x, y) ] - beta KL(pi(.|x) || pi_ref(.|x)),

whose optimum is pi*(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z(x). Solve for the reward:
r(x, y) = beta log(pi*(y|x) / pi_ref(y|x)) + beta log Z(x). Put that into the Bradley-Terry
likelihood of a labelled pair (y_w preferred to y_l): Z(x) cancels, and what is left depends on
the policy alone:

    L_DPO = -log sigmoid(beta h),
    h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)]

Its variants (``loss_type``): ``sigmoid`` with ``label_smoothing`` eps > 0 is conservative DPO,
-(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h); ``ipo`` is (h - 1/(2 beta))^2 (Azar
et al., 2023), which regresses h to a fixed margin; ``hinge`` is max(0, 1 - beta h) (SLiC, Zhao
et al., 2023).

Beyond DPO, as pure functions of log-probs:

- KTO (Ethayarajh et al. 2024): unpaired thumbs-up / thumbs-down, a prospect-theory value
  around a reference point z0 = KL(pi || pi_ref) estimated on the batch;
- ORPO (Hong et al. 2024): SFT's loss plus a log-odds-ratio penalty, no reference model;
- SimPO (Meng et al. 2024): a length-normalised log-prob as the implicit reward and a target
  margin gamma, no reference model.

Every log-prob argument is a response's log-prob *summed* over its tokens, (B,), as everywhere in
minirlhf (``lm.sequences.sequence_logps``); the methods that need per-token means take the
response lengths and divide themselves. Reference log-probs carry no gradient. Option names
follow TRL's trainers (``beta``, ``label_smoothing``, ``desirable_weight``, ``gamma``).
"""

from __future__ import annotations

import numpy as np

from minirlhf.autograd import functional as F
from minirlhf.autograd import ops
from minirlhf.autograd.tensor import Tensor

LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def _array(x: Tensor | np.ndarray) -> np.ndarray:
    return x.data if isinstance(x, Tensor) else np.asarray(x)


def _lengths(lengths: np.ndarray, n: int, name: str, dtype: np.dtype) -> np.ndarray:
    out = np.asarray(lengths, dtype=dtype)
    if out.shape != (n,) or not np.all(out >= 1):
        raise ValueError(f"{name}: lengths must be (B,) = ({n},) counts >= 1, got "
                         f"{np.asarray(lengths).tolist()}")
    return out


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
    # exercise dpo-margin: set chosen_ratio, rejected_ratio and h, each a (B,) Tensor
    ### BEGIN SOLUTION
    chosen_ratio = policy_chosen_logps - ref_c  # log pi(y_w) - log pi_ref(y_w), (B,)
    rejected_ratio = policy_rejected_logps - ref_r  # (B,)
    h = chosen_ratio - rejected_ratio  # (B,)
    ### END SOLUTION
    if loss_type == "sigmoid":
        # exercise dpo-sigmoid: set losses, a (B,) Tensor
        ### BEGIN SOLUTION
        losses = -F.logsigmoid(h * beta)
        if label_smoothing:
            losses = losses * (1.0 - label_smoothing) - F.logsigmoid(h * -beta) * label_smoothing
        ### END SOLUTION
    elif loss_type == "ipo":
        # exercise ipo: set losses, a (B,) Tensor
        ### BEGIN SOLUTION
        gap = h - 1.0 / (2.0 * beta)
        losses = gap * gap
        ### END SOLUTION
    else:  # hinge
        losses = ops.relu(1.0 - h * beta)
    return losses, beta * chosen_ratio.data.copy(), beta * rejected_ratio.data.copy()


def kto_loss(policy_logps: Tensor, reference_logps: Tensor | np.ndarray, desirable: np.ndarray,
             kl_ref: float, beta: float = 0.1, desirable_weight: float = 1.0,
             undesirable_weight: float = 1.0) -> tuple[Tensor, np.ndarray]:
    """KTO's loss per example (Ethayarajh et al. 2024, eq. 8):

        r = log pi(y|x) - log pi_ref(y|x),   z0 = max(kl_ref, 0) (no gradient),
        desirable:   w_d (1 - sigmoid(beta (r - z0)))
        undesirable: w_u (1 - sigmoid(beta (z0 - r)))

    policy_logps (B,) Tensor; reference_logps (B,); desirable (B,) bool, the thumbs-up rows;
    kl_ref: the batch's estimate of KL(pi || pi_ref), from mismatched prompt / completion pairs
    as the paper does, clamped at 0 here. Returns (losses (B,) Tensor, rewards beta r (B,),
    detached). 1 - sigmoid(u) is computed as exp(log sigmoid(-u)): finite at any u.
    """
    if not beta > 0:
        raise ValueError(f"kto_loss: beta must be > 0, got {beta}")
    desirable = np.asarray(desirable, dtype=bool)
    if desirable.shape != policy_logps.shape:
        raise ValueError(f"kto_loss: desirable {desirable.shape} must match the log-probs "
                         f"{policy_logps.shape}")
    z0 = max(float(kl_ref), 0.0)
    ref = _array(reference_logps)
    # exercise kto: set losses, a (B,) Tensor (r, the log-ratio, is a (B,) Tensor too)
    ### BEGIN SOLUTION
    r = policy_logps - ref  # (B,)
    sign = np.where(desirable, 1.0, -1.0).astype(r.dtype)  # +1: up-weighted, -1: down
    weight = np.where(desirable, desirable_weight, undesirable_weight).astype(r.dtype)
    u = (r - z0) * (beta * sign)  # beta (r - z0) or beta (z0 - r)
    losses = ops.exp(F.logsigmoid(ops.neg(u))) * weight  # w (1 - sigmoid(u))
    ### END SOLUTION
    return losses, beta * (policy_logps.data - ref)


def orpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
              chosen_lengths: np.ndarray, rejected_lengths: np.ndarray, lam: float = 0.1
              ) -> tuple[Tensor, np.ndarray]:
    """ORPO's loss per pair (Hong et al. 2024, eqs. 6-7):

        m = log P(y|x) / |y|  (the mean per-token log-prob; P = exp(m) in (0, 1)),
        log odds(y) = m - log(1 - exp(m)),
        loss = -m_chosen - lam log sigmoid(log odds(y_w) - log odds(y_l))

    i.e. the chosen response's mean negative log-likelihood (SFT's loss) plus an odds-ratio
    term. No reference model. log(1 - exp(m)) is ``F.log1mexp``: finite as m -> 0-.
    policy_*_logps: (B,) summed log-probs (< 0); *_lengths: (B,) response lengths in tokens.
    Returns (losses (B,) Tensor, the log-odds ratio (B,), detached).
    """
    B = policy_chosen_logps.shape[0]
    dtype = policy_chosen_logps.data.dtype
    lc = _lengths(chosen_lengths, B, "orpo_loss", dtype)
    lr = _lengths(rejected_lengths, B, "orpo_loss", dtype)
    # exercise orpo: set losses (B,) Tensor and log_odds_ratio (B,) Tensor
    ### BEGIN SOLUTION
    mc = policy_chosen_logps * (1.0 / lc)  # mean per-token log-probs, (B,)
    mr = policy_rejected_logps * (1.0 / lr)
    log_odds_ratio = (mc - F.log1mexp(mc)) - (mr - F.log1mexp(mr))  # (B,)
    losses = ops.neg(mc) - F.logsigmoid(log_odds_ratio) * lam
    ### END SOLUTION
    return losses, log_odds_ratio.data.copy()


def simpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
               chosen_lengths: np.ndarray, rejected_lengths: np.ndarray, beta: float = 2.0,
               gamma: float = 0.5) -> Tensor:
    """SimPO's loss per pair (Meng et al. 2024, eq. 6):

        -log sigmoid(beta log pi(y_w)/|y_w| - beta log pi(y_l)/|y_l| - gamma)

    the length-normalised log-prob as the implicit reward, a target margin gamma, no reference
    model. (B,) summed log-probs and (B,) lengths -> (B,) Tensor.
    """
    if not beta > 0:
        raise ValueError(f"simpo_loss: beta must be > 0, got {beta}")
    B = policy_chosen_logps.shape[0]
    dtype = policy_chosen_logps.data.dtype
    lc = _lengths(chosen_lengths, B, "simpo_loss", dtype)
    lr = _lengths(rejected_lengths, B, "simpo_loss", dtype)
    # exercise simpo: return the (B,) Tensor of losses
    ### BEGIN SOLUTION
    margin = policy_chosen_logps * (beta / lc) - policy_rejected_logps * (beta / lr)  # (B,)
    return ops.neg(F.logsigmoid(margin - gamma))
    ### END SOLUTION
