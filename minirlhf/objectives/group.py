"""Critic-free objectives: group baselines, the clipped surrogate per token, and how per-token
losses become one number.

Shapes: N prompts, G samples per prompt (``num_generations``), B = N * G sequences, T positions.
Rewards of a batch are (N, G) (row i holds prompt i's group); per-token tensors are (B, T) with
the group's samples in consecutive rows; ``mask`` (B, T) is 1 on response tokens.

Names follow TRL's GRPOTrainer where it has them (``scale_rewards``, ``loss_type``,
``epsilon``, ``epsilon_high``, ``beta``); the formulas are written here from the papers:
GRPO (Shao et al. 2024), Dr. GRPO (Liu et al. 2025), DAPO (Yu et al. 2025), RLOO (Ahmadian et
al. 2024), REINFORCE++ (Hu 2025), ReMax (Li et al. 2023). PPO's clipped surrogate is the
``epsilon_high = epsilon`` case of ``clipped_token_losses``.
"""

from __future__ import annotations

import numpy as np

from minirlhf.autograd import ops
from minirlhf.autograd.tensor import Tensor

ADVANTAGES = ("grpo", "dr_grpo", "rloo", "reinforce", "remax")
SCALE_REWARDS = ("group", "batch", "none")
TOKEN_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")  # aggregations of per-token losses
LOSS_TYPES = (*TOKEN_LOSS_TYPES, "rloo")  # rloo: one clipped ratio per sequence
STD_EPS = 1e-4  # added to a standard deviation before dividing by it (TRL's value)


# ------------------------------------------------------------------------ advantages
def group_advantages(rewards: np.ndarray, kind: str = "grpo", scale_rewards: str = "group",
                     baseline: np.ndarray | None = None) -> np.ndarray:
    """One advantage per sample, from the rewards of the groups. rewards: (N, G) -> (N, G).

    - ``grpo``: r - mean of its group, divided by a standard deviation chosen by
      ``scale_rewards``: its group's (``group``), the whole batch's (``batch``) or none
      (``none``). Standard deviations are the unbiased ones (ddof 1), as torch.std and TRL.
    - ``dr_grpo``: r - mean of its group, never divided (Dr. GRPO's correction).
    - ``rloo``: r - mean of the *other* G - 1 samples of its group (leave-one-out), which is
      G / (G - 1) times the group-centred reward.
    - ``reinforce``: r - mean of the whole batch.
    - ``remax``: r - ``baseline`` (N,), the reward of each prompt's greedy response.

    A group whose rewards are all equal gets advantage 0 with every kind but ``reinforce`` and
    ``remax``: it carries no signal about which of its samples is better.
    """
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"group_advantages: rewards must be (N, G), got shape {r.shape}")
    N, G = r.shape
    if kind in ("grpo", "dr_grpo", "rloo") and G < 2:
        raise ValueError(f"group_advantages: {kind} needs at least 2 samples per group, got {G}")
    if kind == "grpo":
        adv = r - r.mean(axis=1, keepdims=True)
        if scale_rewards == "group":
            adv = adv / (r.std(axis=1, ddof=1, keepdims=True) + STD_EPS)
        elif scale_rewards == "batch":
            adv = adv / (r.std(ddof=1) + STD_EPS)
        elif scale_rewards != "none":
            raise ValueError(f"group_advantages: scale_rewards must be one of {SCALE_REWARDS}, "
                             f"got {scale_rewards!r}")
    elif kind == "dr_grpo":
        adv = r - r.mean(axis=1, keepdims=True)
    elif kind == "rloo":
        others = (r.sum(axis=1, keepdims=True) - r) / (G - 1)
        adv = r - others
    elif kind == "reinforce":
        adv = r - r.mean()
    elif kind == "remax":
        if baseline is None or np.shape(baseline) != (N,):
            raise ValueError(f"group_advantages: remax needs baseline of shape ({N},), the "
                             "greedy responses' rewards")
        adv = r - np.asarray(baseline, dtype=np.float64)[:, None]
    else:
        raise ValueError(f"group_advantages: kind must be one of {ADVANTAGES}, got {kind!r}")
    return adv


def ragged_group_advantages(rewards: np.ndarray, groups: np.ndarray, kind: str = "grpo",
                            scale_rewards: str = "group") -> np.ndarray:
    """``group_advantages`` for groups of any sizes, in any order (after dynamic sampling
    dropped some samples, say). rewards: (B,); groups: (B,) an id per sample. Returns (B,).

    - ``grpo``: r - its group's mean, divided by its group's std (ddof 1) + STD_EPS when
      ``scale_rewards`` is ``group`` (``none``: not divided);
    - ``dr_grpo``: r - its group's mean;
    - ``rloo``: r - the mean of the *other* samples of its group.

    A sample alone in its group has no peer to compare with: advantage 0, with every kind. So
    has every sample of a group whose rewards are all equal.
    """
    r = np.asarray(rewards, dtype=np.float64)
    g = np.asarray(groups)
    if r.ndim != 1 or g.shape != r.shape:
        raise ValueError(f"ragged_group_advantages: rewards {r.shape} and groups {g.shape} "
                         f"must both be (B,)")
    if kind not in ("grpo", "dr_grpo", "rloo") or scale_rewards not in ("group", "none"):
        raise ValueError(f"ragged_group_advantages: kind must be grpo, dr_grpo or rloo and "
                         f"scale_rewards group or none, got {kind!r}, {scale_rewards!r}")
    # exercise group-advantage: set adv (B,) float64, one advantage per sample
    ### BEGIN SOLUTION
    _, idx = np.unique(g, return_inverse=True)  # (B,) each sample's group, 0..K-1
    size = np.bincount(idx).astype(np.float64)  # (K,)
    total = np.bincount(idx, weights=r)  # (K,)
    mean = total / size  # (K,)
    adv = r - mean[idx]
    if kind == "rloo":
        others = (total[idx] - r) / np.maximum(size[idx] - 1.0, 1.0)
        adv = r - others
    elif kind == "grpo" and scale_rewards == "group":
        sq = np.bincount(idx, weights=(r - mean[idx]) ** 2)  # (K,)
        std = np.sqrt(sq / np.maximum(size - 1.0, 1.0))  # ddof 1
        adv = adv / (std[idx] + STD_EPS)
    adv = np.where(size[idx] > 1, adv, 0.0)
    ### END SOLUTION
    return adv


def reinforce_pp_advantages(scores: np.ndarray, kl: np.ndarray, mask: np.ndarray,
                            beta: float) -> np.ndarray:
    """REINFORCE++: per-token returns of a reward with the KL penalty in it, whitened over every
    response token of the batch (no critic, no group).

    scores: (B,) the sequence rewards; kl: (B, T) a per-token KL estimate (k1, as PPO);
    mask: (B, T). The token reward is -beta kl_t, plus the score on the last response token;
    the return from t is the sum of token rewards from t to the end (gamma 1). Returns (B, T),
    0 outside the mask, mean 0 and standard deviation 1 over the mask.
    """
    m = mask > 0
    rewards = np.where(m, -beta * kl, 0.0)
    last = mask.shape[1] - 1 - np.argmax(m[:, ::-1], axis=1)  # each row's last response token
    rewards[np.arange(len(scores)), last] += scores
    returns = np.cumsum(rewards[:, ::-1], axis=1)[:, ::-1] * m  # sum from t to the end
    mean = returns[m].mean()
    std = returns[m].std()
    return np.where(m, (returns - mean) / (std + 1e-8), 0.0)


def zero_std_groups(rewards: np.ndarray) -> np.ndarray:
    """(N,) bool: the groups whose rewards are all equal (no signal; DAPO's dynamic sampling
    drops them, TRL logs their share as ``frac_reward_zero_std``)."""
    r = np.asarray(rewards)
    return np.all(r == r[:, :1], axis=1)


# -------------------------------------------------------------------- per-token losses
def clamp(x: Tensor, lo: np.ndarray | float, hi: np.ndarray | float) -> Tensor:
    """Clamp elementwise; the gradient is zero wherever the clamp binds."""
    return ops.where(x.data < lo, lo, ops.where(x.data > hi, hi, x))


def clipped_token_losses(logp: Tensor, old_logp: np.ndarray, advantages: np.ndarray,
                         mask: np.ndarray, epsilon: float = 0.2,
                         epsilon_high: float | None = None) -> tuple[Tensor, dict[str, float]]:
    """The clipped surrogate per token, as a loss to minimise (not yet aggregated).

    logp: (B, T) Tensor, log pi of the sampled tokens; old_logp: (B, T) the same under the policy
    that sampled them; advantages: (B, T), or (B, 1) for one advantage per sequence; mask: (B, T).
    ratio = exp(logp - old_logp); loss_t = -min(ratio A, clip(ratio, 1 - epsilon,
    1 + epsilon_high) A), epsilon_high = epsilon unless given (DAPO's clip-higher). Before the
    first optimizer step on fresh samples the ratio is exactly 1 and the loss is -A per token.

    Also returns TRL's clipping metrics, shares of response tokens: ``clip_ratio/low_mean``
    (ratio below 1 - epsilon with A < 0), ``clip_ratio/high_mean`` (above 1 + epsilon_high with
    A > 0) and ``clip_ratio/region_mean`` (either).
    """
    hi = epsilon if epsilon_high is None else epsilon_high
    adv = np.broadcast_to(np.asarray(advantages, dtype=logp.dtype), logp.shape)
    # exercise clipped-objective, clipped-token-losses: set ratio and losses, both (B, T) Tensors
    #   (losses not yet masked); the clip band is [1 - epsilon, 1 + hi] (hi = epsilon for PPO;
    #   clip-higher widens it)
    ### BEGIN SOLUTION
    ratio = ops.exp(logp - old_logp)  # (B, T)
    unclipped = ratio * adv
    clipped = clamp(ratio, 1.0 - epsilon, 1.0 + hi) * adv
    losses = -ops.where(unclipped.data <= clipped.data, unclipped, clipped)  # -min(...)
    ### END SOLUTION
    m = mask > 0
    n = max(int(m.sum()), 1)
    low = (ratio.data < 1.0 - epsilon) & (adv < 0) & m
    high = (ratio.data > 1.0 + hi) & (adv > 0) & m
    stats = {"clip_ratio/low_mean": float(low.sum() / n),
             "clip_ratio/high_mean": float(high.sum() / n),
             "clip_ratio/region_mean": float((low | high).sum() / n)}
    return losses * mask.astype(logp.dtype), stats


def clipped_sequence_losses(logp: Tensor, old_logp: np.ndarray, advantages: np.ndarray,
                            mask: np.ndarray, epsilon: float = 0.2,
                            epsilon_high: float | None = None) -> tuple[Tensor, dict[str, float]]:
    """The clipped surrogate with one ratio per sequence (RLOOTrainer's loss), per sequence.

    logp: (B, T) Tensor; old_logp: (B, T); advantages: (B, T), one value along each response
    (its first response token's is read); mask: (B, T). ratio_i = exp(sum_t (logp - old_logp))
    over the response, pi(o_i) / pi_old(o_i); loss_i = -min(ratio_i A_i, clip(ratio_i,
    1 - epsilon, 1 + epsilon_high) A_i). Returns the (B,) losses (0 on a row with no token in
    the mask) and the clipping metrics as shares of those sequences.
    """
    m = mask.astype(logp.dtype)
    rows = (m.sum(axis=1, keepdims=True) > 0).astype(logp.dtype)  # (B, 1)
    first = m.argmax(axis=1)  # the first response token of each row
    adv = np.asarray(advantages, dtype=logp.dtype)[np.arange(m.shape[0]), first][:, None] * rows
    seq_logp = (logp * m).sum(axis=1, keepdims=True)  # (B, 1) log pi(o)
    seq_old = (np.asarray(old_logp) * m).sum(axis=1, keepdims=True)  # (B, 1) log pi_old(o)
    # the per-token surrogate on one "token" per row: the whole response
    losses, stats = clipped_token_losses(seq_logp, seq_old, adv, rows, epsilon, epsilon_high)
    return losses.reshape(-1), stats


def sequence_mean(losses: Tensor, mask: np.ndarray) -> Tensor:
    """Per-sequence losses (B,) -> their mean over the rows with any token in the mask (the
    ``rloo`` loss type's aggregation)."""
    return losses.sum() * (1.0 / max(float((mask.sum(axis=1) > 0).sum()), 1.0))


def aggregate(losses: Tensor, mask: np.ndarray, loss_type: str = "grpo",
              max_completion_length: int | None = None,
              dapo_tokens: float | None = None) -> Tensor:
    """Per-token losses (B, T) of one minibatch -> one scalar (TRL's ``loss_type``):

    - ``grpo``: the mean over each sequence's tokens, then over the sequences (those with any
      token in the mask): a token of a short response weighs more than one of a long response
      (the length bias Dr. GRPO points out).
    - ``dr_grpo``: the sum over every token / (B * max_completion_length): a constant divisor,
      so every token weighs the same whatever its response's length.
    - ``dapo``: the sum over every token / ``dapo_tokens``, one count for every minibatch of
      the generation batch (the stage's: its response tokens per optimizer step, as TRL's
      ``num_items_in_batch`` rescaled to one step), so every token of the batch weighs the
      same; this minibatch's own count when not given.
    - ``bnpo``: the sum over every token / this minibatch's own response tokens (TRL's
      ``bnpo``): a token of a minibatch with fewer tokens weighs more. The same as ``dapo``
      when the minibatch is the whole batch.
    """
    if loss_type == "dr_grpo" and not max_completion_length:
        raise ValueError("aggregate: dr_grpo needs max_completion_length")
    if loss_type not in TOKEN_LOSS_TYPES:
        raise ValueError(f"aggregate: loss_type must be one of {TOKEN_LOSS_TYPES}, "
                         f"got {loss_type!r}")
    m = mask.astype(losses.dtype)
    n_tokens = float(m.sum()) if dapo_tokens is None or loss_type == "bnpo" \
        else float(dapo_tokens)  # dapo's divisor (bnpo's: this minibatch's own count)
    if loss_type == "bnpo":
        loss_type = "dapo"
    # exercise loss-aggregation: return the scalar Tensor for each loss_type (dapo divides by
    #   n_tokens)
    ### BEGIN SOLUTION
    if loss_type == "grpo":
        lengths = m.sum(axis=1)  # (B,)
        per_seq = (losses * m).sum(axis=1) * (1.0 / np.maximum(lengths, 1.0))  # (B,)
        return per_seq.sum() * (1.0 / max(float((lengths > 0).sum()), 1.0))
    if loss_type == "dr_grpo":
        return (losses * m).sum() * (1.0 / (m.shape[0] * max_completion_length))
    if loss_type == "dapo":
        return (losses * m).sum() * (1.0 / max(n_tokens, 1.0))
    ### END SOLUTION
    raise ValueError(f"aggregate: loss_type must be one of {TOKEN_LOSS_TYPES}, "
                     f"got {loss_type!r}")
