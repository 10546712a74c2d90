"""What every stage shares about token sequences: how a (prompt, response) pair becomes tokens,
where a response ends, and the log-probability of a response under a model.

Conventions (the whole library uses them):

* A sequence is BOS + prompt + response (+ EOS), right-padded with PAD: ``tokens`` (B, T) int.
* ``response_mask[b, t] = 1`` where token t of row b is a response token whose log-prob counts
  (the EOS included); BOS, prompt and padding tokens are 0.
* Log-probs are aligned with the tokens they score: ``logprobs[b, t] = log p(tokens[b, t] |
  tokens[b, :t])``, exactly 0 where the mask is 0. ``token_logprobs`` is **the one function**
  that computes them: SFT, the reward model's users, PPO and DPO all call it, so "log pi(response)"
  means the same thing everywhere.
* A response's log-prob is the **sum** over its tokens (the DPO paper's convention); the per-token
  mean is an explicit, named option (``sequence_logps(mean=True)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from minirlhf.autograd import functional as F
from minirlhf.autograd import ops
from minirlhf.autograd.tensor import Tensor
from minirlhf.lm.model import GPT
from minirlhf.lm.tokenizer import PAD, CharTokenizer


def encode_pairs(tokenizer: CharTokenizer, prompts: Sequence[str], responses: Sequence[str],
                 eos: bool | Sequence[bool] = True) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (B, T) of BOS + prompt + response (+ EOS), right-padded with PAD, and the
    response mask (B, T): 1 on the response's tokens and its EOS, 0 on BOS, prompt and PAD.
    ``eos`` is one flag for every row, or one per row (False for a response that never
    finished)."""
    ends = [eos] * len(prompts) if isinstance(eos, bool) else list(eos)
    rows, masks = [], []
    for p, r, e in zip(prompts, responses, ends, strict=True):
        head = tokenizer.encode(p, bos=True)
        tail = tokenizer.encode(r, eos=e)
        rows.append(head + tail)
        masks.append([0] * len(head) + [1] * len(tail))
    T = max(len(r) for r in rows)
    tokens = np.full((len(rows), T), PAD, dtype=np.int64)
    mask = np.zeros((len(rows), T), dtype=np.float32)
    for b, (row, m) in enumerate(zip(rows, masks, strict=True)):
        tokens[b, : len(row)] = row
        mask[b, : len(m)] = m
    return tokens, mask


def eos_positions(response_mask: np.ndarray) -> np.ndarray:
    """Index of each row's last response token (its EOS, when it has one). (B, T) -> (B,)"""
    # exercise eos-positions: return (B,) int, the index of each row's last response token
    ### BEGIN SOLUTION
    T = response_mask.shape[1]
    return T - 1 - np.argmax(response_mask[:, ::-1] > 0, axis=1)
    ### END SOLUTION


def token_logprobs(model: GPT, tokens: np.ndarray, response_mask: np.ndarray,
                   temperature: float = 1.0) -> Tensor:
    """Log-probs of the given tokens under ``model``, on response positions only.

    tokens: (B, T) int, prompt + response + PAD; response_mask: (B, T), 1 on response tokens.
    Returns a Tensor (B, T) with ``out[b, t] = log softmax(logits[b, t-1] / temperature)[tokens
    [b, t]]`` where the mask is 1 and exactly 0 elsewhere; it carries gradient to the model.
    Sum it over T for a sequence's log-prob (the DPO and PPO convention).
    """
    tokens = np.asarray(tokens)
    response_mask = np.asarray(response_mask)
    if tokens.shape != response_mask.shape:
        raise ValueError(f"token_logprobs: tokens {tokens.shape} and response_mask "
                         f"{response_mask.shape} differ")
    if np.any(response_mask[:, 0]):
        raise ValueError("token_logprobs: the first token cannot be a response token (nothing "
                         "precedes it to predict it from)")
    return logprobs_from_logits(model(tokens[:, :-1]), tokens, response_mask, temperature)


def logprobs_from_logits(logits: Tensor, tokens: np.ndarray, response_mask: np.ndarray,
                         temperature: float = 1.0) -> Tensor:
    """The second half of ``token_logprobs``, from logits (B, T-1, V) that predict tokens[:, 1:].
    Returns (B, T); masked positions are exactly 0 and pass back exactly zero gradient."""
    # exercise token-logprobs: return the (B, T) Tensor of log-probs (0 at position 0 and off the
    #   mask)
    ### BEGIN SOLUTION
    if temperature != 1.0:
        logits = logits * (1.0 / temperature)
    nll = F.cross_entropy(logits, tokens[:, 1:], mask=response_mask[:, 1:], reduction="none")
    B = tokens.shape[0]
    first = Tensor(np.zeros((B, 1), dtype=nll.dtype))
    return ops.concatenate([first, -nll], axis=1)  # (B, T)
    ### END SOLUTION


def sequence_logps(model: GPT, tokens: np.ndarray, response_mask: np.ndarray, mean: bool = False
                   ) -> Tensor:
    """Each response's log-prob: summed over its tokens (or, explicitly, their mean).
    tokens, response_mask: (B, T) -> (B,)"""
    lp = token_logprobs(model, tokens, response_mask).sum(axis=1)  # (B,)
    if mean:
        lp = lp * (1.0 / np.maximum(response_mask.sum(axis=1), 1.0))
    return lp


def masked_mean(x: Tensor, mask: np.ndarray) -> Tensor:
    """Mean of ``x`` over the entries where ``mask`` is 1, with gradient. x, mask: (B, T) ->
    scalar. An all-zero mask gives 0."""
    m = mask.astype(x.dtype)
    return (x * m).sum() * (1.0 / max(float(m.sum()), 1.0))


def masked_mean_array(x: np.ndarray, mask: np.ndarray) -> float:
    """The same for arrays, as a float (metrics and statistics)."""
    return float((x * mask).sum() / max(float(mask.sum()), 1.0))
