"""Likelihood objectives: next-token prediction (pretraining) and the response-only loss of
supervised fine-tuning.

SFT reads BOS + prompt + response + EOS and is trained to predict the response tokens and the
EOS; the prompt's tokens are context, not targets, so they contribute exactly zero to the loss:

    L = - sum_{t in response} log pi(x_t | x_<t) / (number of response tokens)
"""

from __future__ import annotations

import numpy as np

from minirlhf.autograd import functional as F
from minirlhf.autograd.tensor import Tensor
from minirlhf.lm.model import GPT
from minirlhf.lm.sequences import token_logprobs
from minirlhf.lm.tokenizer import BOS


def lm_loss(model: GPT, x: np.ndarray, y: np.ndarray) -> Tensor:
    """Mean next-token cross-entropy, not counting BOS targets (BOS always follows EOS, so
    predicting it is free). x, y: (B, T) -> scalar"""
    return F.cross_entropy(model(x), y, mask=y != BOS)


def sft_loss(model: GPT, tokens: np.ndarray, response_mask: np.ndarray) -> Tensor:
    """Mean negative log-likelihood of the response tokens. tokens, mask: (B, T) -> scalar"""
    # exercise sft-loss: return the scalar Tensor
    ### BEGIN SOLUTION
    logp = token_logprobs(model, tokens, response_mask)  # (B, T), 0 off the response
    return -logp.sum() * (1.0 / max(float(response_mask.sum()), 1.0))
    ### END SOLUTION
