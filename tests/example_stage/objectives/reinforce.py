"""REINFORCE with a batch-mean baseline (Williams 1992): this file in minirlhf/objectives/.

    loss = -mean_b (r_b - mean_b' r_b') log pi(y_b | x_b)
"""

import numpy as np

from minirlhf.autograd.tensor import Tensor


def reinforce_loss(logps: Tensor, scores: np.ndarray) -> Tensor:
    """logps: (B,) the sampled responses' summed log-probs; scores: (B,) their rewards.
    -> scalar"""
    adv = (scores - scores.mean()).astype(logps.dtype)  # the batch-mean baseline
    return -(logps * adv).mean()
