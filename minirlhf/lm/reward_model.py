"""The reward model as a model: a GPT trunk with a scalar ``reward`` head, read at each response's
EOS token, with the gain and bias that normalise its scores saved beside its weights.

Training it is a stage (``minirlhf.stages.reward``); scoring with it is what best-of-n, PPO and
the AI judge do, so the model lives here, below every stage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minirlhf.autograd.tensor import Tensor, no_grad
from minirlhf.lm.checkpoint import CheckpointError, load_model, save_model
from minirlhf.lm.model import GPT
from minirlhf.lm.sequences import encode_pairs, eos_positions
from minirlhf.lm.tokenizer import CharTokenizer

READOUTS = ("eos", "sum")  # where the score is read: the EOS token, or summed over the response


class RewardModel:
    """A GPT with a scalar ``reward`` head, read at each response's last token (its EOS).

    ``readout="sum"`` is the alternative studied in chapter 4, section 7: the head's value at
    every response token, summed. The gold reward is a sum over clauses, and one token's state,
    built by attention (which averages), represents a sum only roughly.
    """

    def __init__(self, model: GPT, tokenizer: CharTokenizer, gain: float = 1.0,
                 bias: float = 0.0, readout: str = "eos"):
        if readout not in READOUTS:
            raise ValueError(f"RewardModel: readout {readout!r} is not one of "
                             f"{', '.join(READOUTS)}")
        if "reward_head" not in model.scalar_heads:
            model.add_scalar_head("reward")
        self.model, self.tokenizer, self.gain, self.bias = model, tokenizer, gain, bias
        self.readout = readout

    def raw(self, tokens: np.ndarray, response_mask: np.ndarray) -> Tensor:
        """Unnormalised scores with gradient. tokens, response_mask: (B, T) -> (B,)"""
        h = self.model.hidden(tokens)  # (B, T, C)
        per_token = self.model.scalar("reward", h)  # (B, T)
        if self.readout == "sum":  # padding and prompt positions are masked out
            return (per_token * Tensor(response_mask.astype(per_token.dtype))).sum(axis=1)
        return per_token[np.arange(len(tokens)), eos_positions(response_mask)]  # (B,)

    def encode(self, prompts: list[str], responses: list[str], finished: list[bool] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded tokens and response masks; EOS ends each finished response."""
        return encode_pairs(self.tokenizer, prompts, responses,
                            True if finished is None else finished)

    def score(self, prompts: list[str], responses: list[str], finished: list[bool] | None = None,
              batch_size: int = 256) -> np.ndarray:
        """Normalised scores, gain * raw + bias, without gradient. -> (N,) float64"""
        out = []
        with no_grad():
            for i in range(0, len(prompts), batch_size):
                sl = slice(i, i + batch_size)
                tokens, mask = self.encode(prompts[sl], responses[sl],
                                           None if finished is None else finished[sl])
                out.append(self.raw(tokens, mask).data.astype(np.float64))
        return self.gain * np.concatenate(out) + self.bias if out else np.zeros(0)

    def save(self, path: str | Path, extra: dict | None = None) -> None:
        save_model(path, self.model, self.tokenizer,
                   extra={"stage": "reward", "gain": self.gain, "bias": self.bias,
                          "readout": self.readout, **(extra or {})})

    @classmethod
    def load(cls, path: str | Path) -> RewardModel:
        model, tokenizer, extra = load_model(path)
        if "reward_head" not in model.scalar_heads:
            raise CheckpointError(f"{path} is not a reward model (it has no reward head): pass "
                                  "the reward stage's model.npz")
        return cls(model, tokenizer, float(extra.get("gain", 1.0)), float(extra.get("bias", 0.0)),
                   str(extra.get("readout", "eos")))
