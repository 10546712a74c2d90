"""The reward model's objectives: turn comparisons into a number.

Under the Bradley-Terry model a rater prefers A to B with probability sigmoid(r_A - r_B), so the
loss on a labelled pair is the negative log-likelihood of the label:

    L = -log sigmoid(r_chosen - r_rejected - margin)   (+ c (r_chosen + r_rejected)^2)

The optional margin asks for a gap; the optional centering term (Eisenstein et al., 2023) keeps
rewards near zero, since BT only fixes differences. For rankings of K responses, Plackett-Luce
(the best is picked first, then the best of the rest, ...) or InstructGPT's average over all
K(K-1)/2 pairs; both reduce to BT at K = 2.
"""

from __future__ import annotations

import numpy as np

from minirlhf.autograd import functional as F
from minirlhf.autograd.tensor import Tensor


def bradley_terry_loss(r_chosen: Tensor, r_rejected: Tensor, margin: float = 0.0,
                       center_coef: float = 0.0) -> Tensor:
    """Mean over pairs of -log sigmoid(r_c - r_r - margin) + center_coef (r_c + r_r)^2.
    r_chosen, r_rejected: (B,) -> scalar"""
    # exercise bradley-terry: return the scalar Tensor
    ### BEGIN SOLUTION
    loss = -F.logsigmoid(r_chosen - r_rejected - margin).mean()
    if center_coef:
        s = r_chosen + r_rejected
        loss = loss + center_coef * (s * s).mean()
    return loss
    ### END SOLUTION


def plackett_luce_loss(scores: Tensor) -> Tensor:
    """Negative log-likelihood of rankings under Plackett-Luce. scores: (B, K), best first.

    P(ranking) = prod_k exp(s_k) / sum_{j >= k} exp(s_j): the best is chosen among all, the
    second among the rest, and so on. The last factor is 1, so k runs to K - 1.
    """
    # exercise plackett-luce: return the scalar Tensor, the mean over rankings of -log P(ranking)
    ### BEGIN SOLUTION
    B, K = scores.shape
    total = None
    for k in range(K - 1):
        rest = scores[:, k:]  # (B, K - k)
        term = F.log_softmax(rest, axis=-1)[:, 0]  # s_k - logsumexp(s_k..s_K)
        total = term if total is None else total + term
    return -total.mean()
    ### END SOLUTION


def all_pairs_loss(scores: Tensor) -> Tensor:
    """InstructGPT's ranking loss: the mean of -log sigmoid(s_i - s_j) over all pairs with i
    ranked above j. scores: (B, K), best first -> scalar"""
    K = scores.shape[1]
    i, j = np.triu_indices(K, k=1)  # every (better, worse) pair of positions
    return -F.logsigmoid(scores[:, i] - scores[:, j]).mean()


RANKING_LOSSES = {"plackett_luce": plackett_luce_loss, "all_pairs": all_pairs_loss}


def ranking_loss(scores: Tensor, kind: str = "plackett_luce", center_coef: float = 0.0
                 ) -> Tensor:
    """The loss on a batch of rankings: ``RANKING_LOSSES[kind]`` plus the centering term
    center_coef (2 mean_k s_k)^2 averaged over rankings, which is BT's (r_c + r_r)^2 at K = 2.
    scores: (B, K), best first -> scalar"""
    loss = RANKING_LOSSES[kind](scores)
    if center_coef:
        c = scores.mean(axis=-1) * 2.0  # (B,)
        loss = loss + center_coef * (c * c).mean()
    return loss
