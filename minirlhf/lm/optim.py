"""Optimisation: AdamW, gradient-norm clipping, and a warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from minirlhf.autograd.tensor import Tensor
from minirlhf.lm.nn import Linear, Module, Parameter


def decayed_parameter_names(model: Module) -> set[str]:
    """Names of the weights that weight decay should shrink: the matrices of Linear layers.

    Biases, LayerNorm weights and embeddings are left alone (as in GPT-2 and nanoGPT): decaying
    a LayerNorm gain towards 0 or an embedding towards the origin only hurts.
    """
    return {f"{name}.weight" if name else "weight"
            for name, m in model.named_modules() if isinstance(m, Linear)}


class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    For each parameter p with gradient g, at step t (from 1):
        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
        p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)  +  lr * wd * p   (decayed only)
    """

    def __init__(self, named_params: Iterable[tuple[str, Parameter]], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                 weight_decay: float = 0.0, decay: set[str] | None = None):
        self.params = list(named_params)
        if not self.params:
            raise ValueError("AdamW: no parameters to optimise")
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        names = {n for n, _ in self.params}
        unknown = set(decay or ()) - names
        if unknown:
            raise KeyError(f"AdamW: decay names {sorted(unknown)} are not among the parameters")
        self.decay = set(decay) if decay is not None else set()
        self.m = {n: np.zeros_like(p.data) for n, p in self.params}
        self.v = {n: np.zeros_like(p.data) for n, p in self.params}
        self.t = 0  # steps taken (TRL's global step once a step is done)
        self.grad_norm = 0.0  # the last step's gradient norm before clipping (TRL's grad_norm)

    def zero_grad(self) -> None:
        for _, p in self.params:
            p.grad = None

    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        self.t += 1
        b1, b2 = self.betas
        c1 = 1.0 - b1**self.t
        c2 = 1.0 - b2**self.t
        step_size = self.lr / c1
        for name, p in self.params:
            g = p.grad
            if g is None:
                continue
            m, v = self.m[name], self.v[name]
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            if self.weight_decay and name in self.decay:
                p.data *= 1.0 - self.lr * self.weight_decay
            denom = np.sqrt(v / c2)
            denom += self.eps
            p.data -= step_size * (m / denom)

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {f"m.{n}": a for n, a in self.m.items()}
        out.update({f"v.{n}": a for n, a in self.v.items()})
        out["t"] = np.array(self.t)
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for n in self.m:
            self.m[n][...] = state[f"m.{n}"]
            self.v[n][...] = state[f"v.{n}"]
        self.t = int(state["t"])


def clip_grad_norm(params: Iterable[Parameter], max_norm: float) -> float:
    """Scale all gradients together so their global L2 norm is at most ``max_norm``.
    Returns the norm before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    total = math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads))
    if total > max_norm > 0:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= scale
    return total


def cosine_lr(step: int, max_steps: int, lr: float, warmup_steps: int = 0,
              min_lr: float = 0.0) -> float:
    """Linear warmup from 0 to ``lr`` over ``warmup_steps``, then cosine decay to ``min_lr``
    at ``max_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def optimizer_step(opt: AdamW, loss: Tensor, params: Iterable[Parameter], grad_clip: float,
                   where: str) -> float:
    """One guarded training step: backward, clip, update. A loss or gradient that is not finite
    raises FloatingPointError naming ``where`` (stage and step) *before* any weight changes, so
    the model, and every checkpoint already written, stay intact. Returns the loss value; the
    gradient norm before clipping is left in ``opt.grad_norm``."""
    value = loss.item()
    if not math.isfinite(value):
        raise FloatingPointError(f"{where}: loss is {value}")
    opt.zero_grad()
    loss.backward()
    norm = clip_grad_norm(params, grad_clip)
    if not math.isfinite(norm):
        raise FloatingPointError(f"{where}: gradient norm is {norm} (loss {value:.4g})")
    opt.grad_norm = norm
    opt.step()
    return value
