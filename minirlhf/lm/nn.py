"""Layers: Module (named parameters, state dicts, train/eval), Linear, Embedding, LayerNorm,
Dropout.

Parameter names are dotted paths of attribute names (``h.0.attn.c_attn.weight``), so a model's
``state_dict()`` reads like a GPT-2 checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from minirlhf.autograd import functional as F
from minirlhf.autograd import ops
from minirlhf.autograd.tensor import Tensor


class Parameter(Tensor):
    """A Tensor that is a trainable weight of a Module (it always requires grad)."""

    __slots__ = ()

    def __init__(self, data: np.ndarray):
        super().__init__(data, requires_grad=True)


class Module:
    """Base class: subclasses set Parameters and sub-Modules as attributes and define forward."""

    training: bool = True

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) pairs, in the order the attributes were set."""
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value.named_parameters(prefix + name + ".")

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """(dotted name, module) pairs for this module and every module inside it."""
        yield prefix.rstrip("."), self
        for name, child in self.named_children():
            yield from child.named_modules(prefix + name + ".")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> Module:
        self.training = mode
        for _, child in self.named_children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter's array, by dotted name."""
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict[str, np.ndarray], strict: bool = True) -> None:
        """Copy arrays into the parameters. Missing, unexpected or mis-shaped keys are errors
        naming the key (unexpected and missing keys are allowed when ``strict`` is False)."""
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name, p in own.items():
            if name not in state:
                continue
            value = np.asarray(state[name])
            if value.shape != p.shape:
                raise ValueError(
                    f"load_state_dict: {name} has shape {value.shape} in the state dict but "
                    f"{p.shape} in the model"
                )
            p.data = value.astype(p.dtype, copy=True)

    def to(self, dtype: Any) -> Module:
        """Convert every parameter to ``dtype`` in place (float64 for gradient checks)."""
        for _, p in self.named_parameters():
            p._data = p.data.astype(dtype)
            p.grad = None
        return self


class ModuleList(Module):
    """A list of Modules whose parameters are named by position: ``h.0``, ``h.1``, ..."""

    def __init__(self, modules: list[Module]):
        for i, m in enumerate(modules):
            setattr(self, str(i), m)
        self._n = len(modules)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> Module:
        return getattr(self, str(i))

    def __iter__(self) -> Iterator[Module]:
        return (self[i] for i in range(self._n))


class Linear(Module):
    """y = x W + b, with W stored (in_features, out_features) as in GPT-2's checkpoints
    (their Conv1D layout), so GPT-2 weights load without transposing.

    x: (*s, in_features) -> (*s, out_features)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 rng: np.random.Generator | None = None, std: float = 0.02,
                 dtype: Any = np.float32):
        rng = rng if rng is not None else np.random.default_rng(0)
        w = rng.normal(0.0, std, size=(in_features, out_features)) if std > 0 else \
            np.zeros((in_features, out_features))
        self.weight = Parameter(w.astype(dtype))
        self.bias = Parameter(np.zeros(out_features, dtype)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class Embedding(Module):
    """A lookup table. ids: (*s) ints -> (*s, embedding_dim)"""

    def __init__(self, num_embeddings: int, embedding_dim: int,
                 rng: np.random.Generator | None = None, std: float = 0.02,
                 dtype: Any = np.float32):
        rng = rng if rng is not None else np.random.default_rng(0)
        self.weight = Parameter(rng.normal(0.0, std, (num_embeddings, embedding_dim)).astype(dtype))

    def forward(self, ids: np.ndarray) -> Tensor:
        return ops.embedding(self.weight, ids)


class LayerNorm(Module):
    """Normalise the last axis, then scale and shift. x: (*s, C) -> (*s, C)"""

    def __init__(self, dim: int, eps: float = 1e-5, dtype: Any = np.float32):
        self.weight = Parameter(np.ones(dim, dtype))
        self.bias = Parameter(np.zeros(dim, dtype))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight, self.bias, self.eps)


class Dropout(Module):
    """Zero each element with probability p while training, scaling the rest by 1/(1-p).
    An identity in eval mode or when p = 0. x: (*s) -> (*s)"""

    def __init__(self, p: float = 0.0, rng: np.random.Generator | None = None):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = self.rng.random(x.shape) >= self.p
        return x * Tensor((keep / (1.0 - self.p)).astype(x.dtype))
