"""The Tensor: a NumPy array that remembers how it was made, so gradients can flow back.

A Tensor wraps ``data`` (an ``np.ndarray``). When an op builds a new Tensor from inputs that
require gradients, the result keeps its inputs (``_parents``) and a closure (``_backward``) that
maps the gradient of the result to the gradients of each input. ``backward()`` visits the graph
in reverse topological order -- found iteratively, so a 10,000-op chain does not hit Python's
recursion limit -- and accumulates each input's gradient with ``+=``, which is what makes
``b = a + a`` give ``a.grad == 2``.

The ops themselves (forward beside backward) live in ``minirlhf.autograd.ops``; this file holds only
the graph machinery, the ``no_grad`` switch and the ``unbroadcast`` helper.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

_grad_enabled = True

#: A backward closure: the gradient of an op's output -> one gradient (or None) per parent.
BackwardFn = Callable[[np.ndarray], Sequence["np.ndarray | None"]]


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Within this block ops record no graph: for evaluation, sampling and optimizer updates."""
    global _grad_enabled
    previous = _grad_enabled
    _grad_enabled = False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled() -> bool:
    """True unless inside a ``no_grad()`` block."""
    return _grad_enabled


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` down to ``shape``, undoing NumPy broadcasting.

    If ``x`` of shape ``shape`` was broadcast to ``grad.shape`` in the forward pass, each element
    of ``x`` was used once per copy, so its gradient is the sum over those copies: over the
    leading axes broadcasting added, and over the axes where ``shape`` has size 1.

    grad: (*broadcast_shape) -> returns: (*shape)
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


def _to_array(data: Any, dtype: Any = None) -> np.ndarray:
    """Float NumPy arrays keep their dtype; lists, Python numbers and integer arrays become
    float32 (the training default)."""
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        return np.asarray(data, dtype=dtype)
    if isinstance(data, (np.ndarray, np.floating)) and data.dtype.kind == "f":
        return np.asarray(data)
    return np.asarray(data, dtype=np.float32)


def _what(value: Any) -> str:
    """A backward's return value in a few words, for its error."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} (write return (grad,) for one input)"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}"
    return f"a {type(value).__name__}"


class Tensor:
    """An n-dimensional array with reverse-mode automatic differentiation.

    data: np.ndarray of any shape (float32 for training, float64 for gradient checks)
    grad: np.ndarray of the same shape and dtype, or None until ``backward()`` reaches it
    """

    __slots__ = ("_data", "grad", "requires_grad", "_parents", "_backward", "_op", "_retain")
    # Makes ``ndarray * Tensor`` call ``Tensor.__rmul__`` instead of NumPy's own loop.
    __array_priority__ = 1000

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None):
        self._data = _to_array(data, dtype)
        if requires_grad and self._data.dtype.kind != "f":
            raise TypeError(f"only float Tensors can require gradients, got {self._data.dtype}")
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self._parents: tuple[Tensor, ...] = ()
        self._backward: BackwardFn | None = None
        self._op = ""  # name of the op that made this Tensor ("" for a leaf)
        self._retain = False  # keep .grad of a non-leaf after backward()

    @classmethod
    def _make(
        cls, data: np.ndarray, parents: tuple[Tensor, ...], op: str, backward: BackwardFn
    ) -> Tensor:
        """The result of an op: records parents and backward only when a gradient will flow."""
        out = cls.__new__(cls)
        out._data = data
        out.grad = None
        out._op = op
        out._retain = False
        out.requires_grad = _grad_enabled and any(p.requires_grad for p in parents)
        if out.requires_grad:
            out._parents = parents
            out._backward = backward
        else:
            out._parents = ()
            out._backward = None
        return out

    # ----------------------------------------------------------------- array-like access
    @property
    def data(self) -> np.ndarray:
        return self._data

    @data.setter
    def data(self, value: np.ndarray) -> None:
        value = np.asarray(value)
        if value.shape != self._data.shape or value.dtype != self._data.dtype:
            raise ValueError(
                f"Tensor.data assignment: new array is {value.dtype}{list(value.shape)} but the "
                f"Tensor is {self._data.dtype}{list(self._data.shape)}; make a new Tensor instead"
            )
        self._data = value

    @property
    def shape(self) -> tuple[int, ...]:
        return self._data.shape

    @property
    def dtype(self) -> np.dtype:
        return self._data.dtype

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def size(self) -> int:
        return self._data.size

    @property
    def is_leaf(self) -> bool:
        return self._backward is None

    def __len__(self) -> int:
        return len(self._data)

    def numpy(self) -> np.ndarray:
        """The underlying array (shared, not copied)."""
        return self._data

    def item(self) -> float:
        """The value of a one-element Tensor as a Python float."""
        if self._data.size != 1:
            raise ValueError(f"item() needs a one-element Tensor, got shape {self.shape}")
        return self._data.item()

    def detach(self) -> Tensor:
        """A new leaf Tensor sharing this data, cut off from the graph."""
        return Tensor(self._data)

    def retain_grad(self) -> Tensor:
        """Keep this non-leaf Tensor's ``.grad`` after ``backward()`` (leaves always keep it)."""
        self._retain = True
        return self

    def zero_grad(self) -> None:
        self.grad = None

    def __repr__(self) -> str:
        body = np.array2string(self._data, precision=4, separator=", ", threshold=20)
        extra = f", op={self._op}" if self._op else ""
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({body}, dtype={self.dtype}{grad}{extra})"

    # ------------------------------------------------------------------------ backward
    def backward(self, grad: np.ndarray | None = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        grad: array of self's shape, the upstream gradient; may be omitted for a scalar.
        retain_graph: keep the graph so backward() can be called through it again.
        """
        if not self.requires_grad:
            raise RuntimeError(
                f"backward() on a Tensor of shape {self.shape} that does not require grad "
                "(no input had requires_grad=True, or it was made under no_grad())"
            )
        if grad is None:
            if self._data.size != 1:
                raise RuntimeError(
                    f"backward() on a non-scalar Tensor of shape {self.shape} needs a gradient "
                    f"argument of that shape (or reduce it first, e.g. with .sum())"
                )
            grad = np.ones_like(self._data)
        grad = np.asarray(grad, dtype=self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"backward(): gradient of shape {grad.shape} for shape {self.shape}")

        order = self._topological_order()
        self.grad = grad if self.grad is None else self.grad + grad
        # An intermediate node's first gradient is borrowed, not copied (a copy of every
        # activation-sized gradient cost 4% of a training step): the backward closures never
        # change their g in place, so sharing is safe until a second contribution arrives, which
        # then makes a new array instead of adding in place. A leaf, or a node whose .grad is
        # kept, gets a private copy: its owner may change it in place (clip_grad_norm does).
        borrowed: set[int] = set()
        for node in reversed(order):
            if node._backward is None or node.grad is None:
                continue
            parent_grads = node._backward(node.grad)
            if not isinstance(parent_grads, tuple) or len(parent_grads) != len(node._parents):
                raise RuntimeError(
                    f"{node._op} backward must return a tuple of {len(node._parents)} "
                    f"gradient(s), one per input (None for an input it does not reach), "
                    f"got {_what(parent_grads)}"
                )
            for parent, g in zip(node._parents, parent_grads, strict=True):
                if g is None or not parent.requires_grad:
                    continue
                if g.shape != parent.shape:
                    raise RuntimeError(
                        f"{node._op} backward: gradient of shape {g.shape} for an input of "
                        f"shape {parent.shape}"
                    )
                if parent.grad is None:
                    if parent._backward is None or parent._retain or g.dtype != parent.dtype:
                        parent.grad = np.array(g, dtype=parent.dtype, copy=True)
                    else:
                        parent.grad = g
                        borrowed.add(id(parent))
                elif id(parent) in borrowed:
                    parent.grad = parent.grad + g  # a new array: g's owner keeps its own
                    borrowed.discard(id(parent))
                else:
                    parent.grad += g
            if not node._retain:
                node.grad = None  # a non-leaf's gradient is only a means to the leaves'
            if not retain_graph:
                node._parents = ()
                node._backward = None

    def _topological_order(self) -> list[Tensor]:
        """Every Tensor this one depends on (needing grad), each after all its parents.

        Iterative depth-first search: a node is pushed twice, once to expand its parents and
        once (``expanded=True``) to be emitted after them.
        """
        order: list[Tensor] = []
        visited: set[int] = set()
        stack: list[tuple[Tensor, bool]] = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            for parent in node._parents:
                if parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
        return order

    # ------------------------------------------------------- operators (see minirlhf.autograd.ops)
    def __add__(self, other: Any) -> Tensor:
        return ops.add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return ops.add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return ops.sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return ops.sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return ops.mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return ops.mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return ops.div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return ops.div(other, self)

    def __neg__(self) -> Tensor:
        return ops.neg(self)

    def __pow__(self, exponent: float) -> Tensor:
        return ops.pow(self, exponent)

    def __matmul__(self, other: Any) -> Tensor:
        return ops.matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return ops.matmul(other, self)

    def __getitem__(self, index: Any) -> Tensor:
        return ops.getitem(self, index)

    def _inplace(
        self, name: str, other: Any, fn: Callable[[np.ndarray, np.ndarray], Any]
    ) -> Tensor:
        if self.requires_grad and _grad_enabled:
            other_shape = getattr(other, "shape", ())
            raise RuntimeError(
                f"in-place {name} on a Tensor of shape {self.shape} that requires grad would "
                f"corrupt the graph (other operand shape {other_shape}); write `x = x {name[0]} y`"
                " or do it inside no_grad()"
            )
        fn(self._data, _to_array(other, self.dtype))
        return self

    def __iadd__(self, other: Any) -> Tensor:
        return self._inplace("+=", other, lambda a, b: np.add(a, b, out=a))

    def __isub__(self, other: Any) -> Tensor:
        return self._inplace("-=", other, lambda a, b: np.subtract(a, b, out=a))

    def __imul__(self, other: Any) -> Tensor:
        return self._inplace("*=", other, lambda a, b: np.multiply(a, b, out=a))

    def __itruediv__(self, other: Any) -> Tensor:
        return self._inplace("/=", other, lambda a, b: np.divide(a, b, out=a))

    def __setitem__(self, index: Any, value: Any) -> None:
        if self.requires_grad and _grad_enabled:
            raise RuntimeError(
                f"in-place item assignment on a Tensor of shape {self.shape} that requires grad "
                "would corrupt the graph; use where()/masked_fill() or do it inside no_grad()"
            )
        self._data[index] = _to_array(value, self.dtype)

    # ------------------------------------------------------------- methods (see ops)
    def sum(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return ops.sum(self, axis, keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return ops.mean(self, axis, keepdims)

    def max(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return ops.max(self, axis, keepdims)

    def reshape(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return ops.reshape(self, shape)

    def transpose(self, *axes: int) -> Tensor:
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return ops.transpose(self, axes or None)

    permute = transpose

    @property
    def T(self) -> Tensor:
        return ops.transpose(self, None)

    def exp(self) -> Tensor:
        return ops.exp(self)

    def log(self) -> Tensor:
        return ops.log(self)

    def sqrt(self) -> Tensor:
        return ops.sqrt(self)

    def tanh(self) -> Tensor:
        return ops.tanh(self)

    def sigmoid(self) -> Tensor:
        return ops.sigmoid(self)

    def relu(self) -> Tensor:
        return ops.relu(self)

    def astype(self, dtype: Any) -> Tensor:
        return ops.astype(self, dtype)

    def masked_fill(self, mask: Any, value: float) -> Tensor:
        return ops.masked_fill(self, mask, value)

    def split(self, sections: Any, axis: int = 0) -> list[Tensor]:
        return ops.split(self, sections, axis)


from minirlhf.autograd import ops  # noqa: E402  (ops needs Tensor defined first)
