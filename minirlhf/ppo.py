"""PPO's pieces (the training stage itself is still to come): per-token KL penalties,
generalised advantage estimation, whitening, the clipped policy and value losses, and the
adaptive KL controller.

All arrays are (B, T) over the full sequences (prompt + response + PAD), with a response mask
that is 1 on response tokens; everything outside the mask is ignored and returned as 0.
"""

from __future__ import annotations

import numpy as np

from minirlhf import ops
from minirlhf.tensor import Tensor


def kl_per_token(logp: np.ndarray, ref_logp: np.ndarray, kind: str = "k1") -> np.ndarray:
    """An estimate of KL(pi || pi_ref) from the sampled token's log-probs, per token.

    k1 = log pi - log pi_ref (unbiased, can be negative on a token);
    k3 = (rho - 1) - log rho with rho = pi_ref / pi (unbiased, never negative; Schulman 2020).
    """
    if kind == "k1":
        return logp - ref_logp
    if kind == "k3":
        log_rho = ref_logp - logp
        return np.expm1(log_rho) - log_rho
    raise ValueError(f"kl_per_token: kind must be k1 or k3, got {kind!r}")


def masked_mean(x: np.ndarray, mask: np.ndarray) -> float:
    return float((x * mask).sum() / max(float(mask.sum()), 1.0))


def whiten(x: np.ndarray, mask: np.ndarray, shift_mean: bool = True) -> np.ndarray:
    """Scale ``x`` to unit variance (and zero mean, unless ``shift_mean`` is False) over the
    masked entries; entries outside the mask are 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
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
    for t in range(T - 1, -1, -1):  # one vectorised step per position, over all rows
        m = mask[:, t] > 0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        a = delta + gamma * lam * next_adv
        adv[:, t] = np.where(m, a, 0.0)
        next_value = np.where(m, values[:, t], next_value)
        next_adv = np.where(m, a, next_adv)
    adv = adv.astype(rewards.dtype)
    returns = (adv + values) * mask
    return adv, returns.astype(rewards.dtype)


def _clip(x: Tensor, lo: np.ndarray | float, hi: np.ndarray | float) -> Tensor:
    """Clamp elementwise; the gradient is zero wherever the clamp binds."""
    return ops.where(x.data < lo, lo, ops.where(x.data > hi, hi, x))


def _maximum(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise max; the gradient goes to the larger side."""
    return ops.where(a.data >= b.data, a, b)


def _masked_mean(x: Tensor, mask: np.ndarray) -> Tensor:
    m = mask.astype(x.dtype)
    return (x * m).sum() * (1.0 / max(float(m.sum()), 1.0))


def clipped_policy_loss(logp: Tensor, old_logp: np.ndarray, advantages: np.ndarray,
                        mask: np.ndarray, clip: float = 0.2) -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped surrogate, as a loss to minimise. All (B, T).

    ratio = exp(log pi - log pi_old);  loss = mean over response tokens of
    max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps)). Where the clipped term is the larger, its
    gradient is exactly zero: no incentive to move the ratio further outside [1 - eps, 1 + eps].
    Also returns the share of tokens where clipping binds and the approximate KL
    0.5 mean (log pi - log pi_old)^2.
    """
    if not 0.0 < clip < 1.0:
        raise ValueError(f"clipped_policy_loss: clip must be in (0, 1), got {clip}")
    ratio = ops.exp(logp - old_logp)
    unclipped = ratio * -advantages
    clipped = _clip(ratio, 1.0 - clip, 1.0 + clip) * -advantages
    loss = _masked_mean(_maximum(unclipped, clipped), mask)
    stats = {
        "clipfrac": masked_mean((clipped.data > unclipped.data).astype(float), mask),
        "approxkl": 0.5 * masked_mean((logp.data - old_logp) ** 2, mask),
        "ratio": masked_mean(ratio.data, mask),
    }
    return loss, stats


def clipped_value_loss(values: Tensor, old_values: np.ndarray, returns: np.ndarray,
                       mask: np.ndarray, clip: float = 0.2) -> tuple[Tensor, dict[str, float]]:
    """0.5 mean over response tokens of max((V - R)^2, (clip(V, V_old +- eps) - R)^2): the value
    head may not move more than eps from its old prediction to reduce its error."""
    v_clipped = _clip(values, old_values - clip, old_values + clip)
    a = (values - returns) * (values - returns)
    b = (v_clipped - returns) * (v_clipped - returns)
    loss = _masked_mean(_maximum(a, b), mask) * 0.5
    return loss, {"clipfrac": masked_mean((b.data > a.data).astype(float), mask)}


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
