"""PPO's objectives and estimators: the KL to the reference per token (k1, k2, k3 and the exact
KL over the vocabulary), the KL-penalised reward, generalised advantage estimation, whitening,
the clipped policy and value losses, the entropy bonus and the adaptive KL controller.

All arrays are (B, T) over the full sequences (prompt + response + PAD), with a response mask
that is 1 on response tokens; everything outside the mask is ignored and returned as 0.
"""

from __future__ import annotations

import numpy as np

from minirlhf.autograd import functional as F
from minirlhf.autograd import ops
from minirlhf.autograd.tensor import Tensor
from minirlhf.lm.sequences import eos_positions, masked_mean, masked_mean_array
from minirlhf.objectives.group import clamp, clipped_token_losses

KL_ESTIMATORS = ("k1", "k2", "k3")


# ----------------------------------------------------------------------- KL estimators
def kl_estimate(logp: Tensor | np.ndarray, ref_logp: np.ndarray, kind: str = "k1") -> Tensor:
    """A per-token estimate of KL(pi || pi_ref) from the sampled token, with gradient when
    ``logp`` is a Tensor (an array gives a constant Tensor: read ``.data``). logp, ref_logp:
    (B, T). With log r = log pi_ref - log pi (so r = pi_ref / pi):

    - k1 = -log r = log pi - log pi_ref: unbiased, but of either sign on a token; in the loss
      its expected gradient on-policy is E[grad log pi] = 0, so it restrains nothing there (PPO
      puts it in the reward);
    - k2 = (log r)^2 / 2: biased, but its expected gradient is the gradient of KL(pi || pi_ref);
    - k3 = (r - 1) - log r: unbiased and never negative (Schulman 2020), but its expected
      gradient on-policy is that of the *reverse* KL(pi_ref || pi) (what GRPO's loss uses).
    """
    if kind not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimate: kind must be one of {KL_ESTIMATORS}, got {kind!r}")
    if not isinstance(logp, Tensor):
        logp = Tensor(np.asarray(logp))
    log_r = ops.neg(logp - ref_logp)  # log pi_ref - log pi, (B, T)
    if kind == "k1":
        # exercise kl-estimators: return the (B, T) Tensor of k1
        ### BEGIN SOLUTION
        return ops.neg(log_r)
        ### END SOLUTION
    if kind == "k2":
        # exercise kl-in-the-loss: return the (B, T) Tensor of k2
        ### BEGIN SOLUTION
        return log_r * log_r * 0.5
        ### END SOLUTION
    # exercise kl-estimators: return the (B, T) Tensor of k3 (ops.expm1(x) is e^x - 1, exact near 0)
    ### BEGIN SOLUTION
    return ops.expm1(log_r) - log_r
    ### END SOLUTION


def exact_kl(logits: np.ndarray, ref_logits: np.ndarray, mask: np.ndarray,
             temperature: float = 1.0) -> float:
    """The exact KL(pi || pi_ref) summed over the whole vocabulary at every response position,
    in nats per response (a diagnostic: cheap at our vocabulary size)."""
    lp = F.log_softmax_array(logits / temperature, axis=-1)  # (B, T-1, V)
    lq = F.log_softmax_array(ref_logits / temperature, axis=-1)
    per_token = (np.exp(lp) * (lp - lq)).sum(axis=-1)  # (B, T-1)
    return float((per_token * mask[:, 1:]).sum(axis=1).mean())


def kl_penalized_rewards(scores: np.ndarray, logp: np.ndarray, ref_logp: np.ndarray,
                         mask: np.ndarray, beta: float, estimator: str = "k1"
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The per-token RLHF reward, r_t = -beta KL_t, plus the score on each response's last
    token. scores: (B,); the others (B, T). Returns (rewards, per-token KL), both (B, T) and 0
    outside the mask."""
    kl = kl_estimate(logp, ref_logp, estimator).data * mask  # (B, T)
    rewards = -beta * kl
    last = eos_positions(mask)
    rewards[np.arange(len(last)), last] += scores  # the score lands on the final token
    return rewards, kl


# ------------------------------------------------------------------------ advantages
def whiten(x: np.ndarray, mask: np.ndarray, shift_mean: bool = True) -> np.ndarray:
    """Scale ``x`` to unit variance (and zero mean, unless ``shift_mean`` is False) over the
    masked entries; entries outside the mask are 0."""
    mean = masked_mean_array(x, mask)
    var = masked_mean_array((x - mean) ** 2, mask)
    out = (x - mean) / np.sqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return (out * mask).astype(x.dtype)


def gae(rewards: np.ndarray, values: np.ndarray, mask: np.ndarray, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation over each row's response tokens.

    rewards, values, mask: (B, T). The value after a row's last response token is 0 (the
    episode ends). With delta_t = r_t + gamma V_{t+1} - V_t, the advantage is
    A_t = delta_t + gamma lam A_{t+1}, computed backwards; returns = A + V.
    Returns (advantages, returns), both (B, T) and 0 outside the mask.
    """
    B, T = rewards.shape
    adv = np.zeros((B, T), dtype=np.float64)
    next_value = np.zeros(B)
    next_adv = np.zeros(B)
    # exercise gae: fill adv (B, T) from the last position to the first, carrying next_value and
    #   next_adv (B,)
    ### BEGIN SOLUTION
    for t in range(T - 1, -1, -1):  # one vectorised step per position, over all rows
        m = mask[:, t] > 0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        a = delta + gamma * lam * next_adv
        adv[:, t] = np.where(m, a, 0.0)
        next_value = np.where(m, values[:, t], next_value)
        next_adv = np.where(m, a, next_adv)
    ### END SOLUTION
    adv = adv.astype(rewards.dtype)
    returns = (adv + values) * mask
    return adv, returns.astype(rewards.dtype)


# ------------------------------------------------------------------------------ losses
def maximum(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise max; the gradient goes to the larger side."""
    return ops.where(a.data >= b.data, a, b)


def clipped_policy_loss(logp: Tensor, old_logp: np.ndarray, advantages: np.ndarray,
                        mask: np.ndarray, clip: float = 0.2) -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped surrogate, as a loss to minimise. All (B, T).

    ratio = exp(log pi - log pi_old);  loss = mean over response tokens of
    -min(ratio A, clip(ratio, 1 - eps, 1 + eps) A): ``clipped_token_losses`` with
    epsilon_high = epsilon, averaged over every response token of the batch. Where the clipped
    term is the smaller, its gradient is exactly zero: no incentive to move the ratio further
    outside [1 - eps, 1 + eps] in the direction the advantage favours. Also returns the share of
    tokens where clipping binds and the approximate KL 0.5 mean (log pi - log pi_old)^2.
    """
    if not 0.0 < clip < 1.0:
        raise ValueError(f"clipped_policy_loss: clip must be in (0, 1), got {clip}")
    losses, clipping = clipped_token_losses(logp, old_logp, advantages, mask, clip, clip)
    loss = masked_mean(losses, mask)
    stats = {
        "clipfrac": clipping["clip_ratio/region_mean"],
        "approxkl": 0.5 * masked_mean_array((logp.data - old_logp) ** 2, mask),
        "ratio": masked_mean_array(np.exp(logp.data - old_logp), mask),
    }
    return loss, stats


def clipped_value_loss(values: Tensor, old_values: np.ndarray, returns: np.ndarray,
                       mask: np.ndarray, clip: float = 0.2) -> tuple[Tensor, dict[str, float]]:
    """0.5 mean over response tokens of max((V - R)^2, (clip(V, V_old +- eps) - R)^2): the value
    head may not move more than eps from its old prediction to reduce its error."""
    v_clipped = clamp(values, old_values - clip, old_values + clip)
    a = (values - returns) * (values - returns)
    b = (v_clipped - returns) * (v_clipped - returns)
    loss = masked_mean(maximum(a, b), mask) * 0.5
    return loss, {"clipfrac": masked_mean_array((b.data > a.data).astype(float), mask)}


def mean_entropy(logits: Tensor, mask: np.ndarray, temperature: float) -> Tensor:
    """Mean entropy of the next-token distributions that produced response tokens (the optional
    entropy bonus). logits: (B, T-1, V); mask: (B, T) -> scalar"""
    logp = F.log_softmax(logits * (1.0 / temperature), axis=-1)  # (B, T-1, V)
    per_token = -(ops.exp(logp) * logp).sum(axis=-1)  # (B, T-1)
    return masked_mean(per_token, mask[:, 1:])


# ---------------------------------------------------------------------- KL controller
class AdaptiveKLController:
    """Ziegler et al. (2019): adjust beta so that the measured KL tracks a target.

    error = clip(KL / target - 1, -0.2, 0.2);  beta <- beta (1 + error n_steps / horizon)
    """

    def __init__(self, init_beta: float, target: float, horizon: int):
        if init_beta <= 0 or target <= 0 or horizon <= 0:
            raise ValueError("AdaptiveKLController: init_beta, target and horizon must be > 0")
        self.beta, self.target, self.horizon = init_beta, target, horizon

    def update(self, kl: float, n_steps: int) -> float:
        error = float(np.clip(kl / self.target - 1.0, -0.2, 0.2))
        self.beta *= 1.0 + error * n_steps / self.horizon
        return self.beta
