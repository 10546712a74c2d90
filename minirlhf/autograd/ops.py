"""Differentiable primitive ops: each forward written beside its backward.

Every op has the same shape:

    out = <forward on arrays>
    def backward(g):          # g = dL/d(out), same shape as out
        return (dL/d(input_1), dL/d(input_2), ...)
    return Tensor._make(out, (inputs...), "name", backward)

``backward`` returns one gradient per input (``None`` when an input needs none); the engine in
``minirlhf.autograd.tensor`` accumulates them. Where NumPy broadcast an input in the forward
pass, the backward sums its gradient back with ``unbroadcast``.

dtype rule: a result has its inputs' dtype. Python numbers and 0-d constants take the Tensor's
dtype; mixing float32 and float64 arrays is an error rather than a silent upcast.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

import numpy as np

from minirlhf.autograd.runtime import matmul_rows, matmul_tn, rowwise
from minirlhf.autograd.tensor import Tensor, unbroadcast

_GELU_C = float(np.sqrt(2.0 / np.pi))  # a Python float, so float32 stays float32 (NEP 50)


# ---------------------------------------------------------------------------- helpers
def _constant(op: str, value: Any, like: Tensor) -> Tensor:
    """A non-Tensor operand as a constant Tensor of ``like``'s dtype."""
    arr = np.asarray(value)
    if arr.dtype.kind == "f" and arr.ndim > 0 and arr.dtype != like.dtype:
        raise TypeError(
            f"{op}: a {arr.dtype} array of shape {arr.shape} meets a {like.dtype} Tensor of shape "
            f"{like.shape}; convert one explicitly (minirlhf never upcasts silently)"
        )
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{op}: cannot combine a Tensor with {type(value).__name__}")
    return Tensor(arr.astype(like.dtype, copy=False))


def _operands(op: str, a: Any, b: Any) -> tuple[Tensor, Tensor]:
    """Both operands as Tensors of one dtype."""
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a.dtype != b.dtype:
            raise TypeError(
                f"{op}: dtypes differ, {a.dtype}{list(a.shape)} and {b.dtype}{list(b.shape)}; "
                "convert one with .astype() (minirlhf never upcasts silently)"
            )
        return a, b
    if isinstance(a, Tensor):
        return a, _constant(op, b, a)
    return _constant(op, a, b), b


def _broadcast_shape(op: str, a: Tensor, b: Tensor) -> None:
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} cannot be broadcast") from None


def _tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


# ---------------------------------------------------------------------- arithmetic
def add(a: Any, b: Any) -> Tensor:
    """a + b with broadcasting. a: (*sa), b: (*sb) -> (*broadcast(sa, sb))"""
    a, b = _operands("add", a, b)
    _broadcast_shape("add", a, b)
    out = a.data + b.data

    def backward(g):
        return unbroadcast(g, a.shape), unbroadcast(g, b.shape)

    return Tensor._make(out, (a, b), "add", backward)


def sub(a: Any, b: Any) -> Tensor:
    """a - b with broadcasting. a: (*sa), b: (*sb) -> (*broadcast(sa, sb))"""
    a, b = _operands("sub", a, b)
    _broadcast_shape("sub", a, b)
    out = a.data - b.data

    def backward(g):
        return unbroadcast(g, a.shape), unbroadcast(-g, b.shape)

    return Tensor._make(out, (a, b), "sub", backward)


def mul(a: Any, b: Any) -> Tensor:
    """a * b elementwise with broadcasting. a: (*sa), b: (*sb) -> (*broadcast(sa, sb))"""
    a, b = _operands("mul", a, b)
    _broadcast_shape("mul", a, b)
    out = a.data * b.data

    def backward(g):
        ga = unbroadcast(g * b.data, a.shape) if a.requires_grad else None
        gb = unbroadcast(g * a.data, b.shape) if b.requires_grad else None
        return ga, gb

    return Tensor._make(out, (a, b), "mul", backward)


def div(a: Any, b: Any) -> Tensor:
    """a / b elementwise with broadcasting. a: (*sa), b: (*sb) -> (*broadcast(sa, sb))"""
    a, b = _operands("div", a, b)
    _broadcast_shape("div", a, b)
    out = a.data / b.data

    def backward(g):
        ga = unbroadcast(g / b.data, a.shape) if a.requires_grad else None
        # d(a/b)/db = -a/b^2 = -out/b
        gb = unbroadcast(-g * out / b.data, b.shape) if b.requires_grad else None
        return ga, gb

    return Tensor._make(out, (a, b), "div", backward)


def neg(a: Tensor) -> Tensor:
    """-a. (*s) -> (*s)"""
    out = -a.data

    def backward(g):
        return (-g,)

    return Tensor._make(out, (a,), "neg", backward)


def pow(a: Tensor, exponent: float) -> Tensor:  # noqa: A001  (mirrors Python's ** operator)
    """a ** p for a scalar exponent p. (*s) -> (*s)"""
    if isinstance(exponent, Tensor) or np.ndim(exponent) != 0:
        raise TypeError(f"pow: the exponent must be a number, got {type(exponent).__name__}")
    p = float(exponent)
    out = a.data**p

    def backward(g):
        return (g * (p * a.data ** (p - 1.0)),)

    return Tensor._make(out, (a,), "pow", backward)


# ------------------------------------------------------------------ elementwise maps
def exp(a: Tensor) -> Tensor:
    """e^a. (*s) -> (*s)"""
    out = np.exp(a.data)

    def backward(g):
        return (g * out,)

    return Tensor._make(out, (a,), "exp", backward)


def expm1(a: Tensor) -> Tensor:
    """e^a - 1, exact near a = 0 where exp(a) - 1 loses its digits. (*s) -> (*s)"""
    out = np.expm1(a.data)

    def backward(g):
        return (g * np.exp(a.data),)

    return Tensor._make(out, (a,), "expm1", backward)


def log(a: Tensor) -> Tensor:
    """Natural log. (*s) -> (*s)"""
    out = np.log(a.data)

    def backward(g):
        return (g / a.data,)

    return Tensor._make(out, (a,), "log", backward)


def sqrt(a: Tensor) -> Tensor:
    """Square root. (*s) -> (*s)"""
    out = np.sqrt(a.data)

    def backward(g):
        return (g * 0.5 / out,)

    return Tensor._make(out, (a,), "sqrt", backward)


def tanh(a: Tensor) -> Tensor:
    """Hyperbolic tangent. (*s) -> (*s)"""
    out = np.tanh(a.data)

    def backward(g):
        return (g * (1.0 - out * out),)

    return Tensor._make(out, (a,), "tanh", backward)


def sigmoid(a: Tensor) -> Tensor:
    """1 / (1 + e^-a), computed as (1 + tanh(a/2)) / 2 so it never overflows. (*s) -> (*s)"""
    out = 0.5 * (1.0 + np.tanh(0.5 * a.data))

    def backward(g):
        return (g * out * (1.0 - out),)

    return Tensor._make(out, (a,), "sigmoid", backward)


def relu(a: Tensor) -> Tensor:
    """max(a, 0). Its derivative jumps at 0 (a kink); we use 0 there. (*s) -> (*s)"""
    out = np.maximum(a.data, 0)

    def backward(g):
        return (g * (a.data > 0),)

    return Tensor._make(out, (a,), "relu", backward)


def gelu_forward(x: np.ndarray, out: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """GELU on arrays, as y = x s with s = sigmoid(2u), evaluated in place in s.
    x: (*s) -> y (*s), and s (*s) for the backward. ``out``: (y, s) arrays to write into."""
    y, s = (None, None) if out is None else out
    s = np.multiply(x, x, out=s)
    s *= -2.0 * 0.044715 * _GELU_C
    s -= 2.0 * _GELU_C
    s *= x  # -2u
    with np.errstate(over="ignore"):
        np.exp(s, out=s)
    s += 1.0
    np.reciprocal(s, out=s)  # s = 1 / (1 + exp(-2u))
    return np.multiply(x, s, out=y), s


def gelu_backward(g: np.ndarray, x: np.ndarray, s: np.ndarray,
                  out: np.ndarray | None = None) -> np.ndarray:
    """dL/dx of GELU from g = dL/dy, x and s = sigmoid(2u), in place in one array.
    (*s) -> (*s). ``out``: an array to write dx into."""
    dx = np.multiply(x, x, out=out)
    dx *= 2.0 * 3.0 * 0.044715 * _GELU_C
    dx += 2.0 * _GELU_C  # 2 du/dx
    dx *= x
    dx *= s * (1.0 - s)
    dx += s  # gelu'(x)
    dx *= g
    return dx


def gelu(a: Tensor) -> Tensor:
    """GELU with GPT-2's tanh approximation. (*s) -> (*s)

    gelu(x) = x/2 * (1 + tanh(u)),  u = c (x + 0.044715 x^3),  c = sqrt(2/pi)
    Evaluated as x * s with s = (1 + tanh(u))/2 = sigmoid(2u) = 1 / (1 + exp(-2u)): the same
    function, and NumPy's exp is about twice as fast as its tanh.
    gelu'(x) = s + x * s (1 - s) * 2 du/dx,  du/dx = c (1 + 3 * 0.044715 x^2)
    For x -> -inf, exp(-2u) overflows to inf and s to 0, the right limit (no warning).
    """
    # elementwise work runs on one core in NumPy: the flat array is split into ranges, one per
    # thread (runtime.py)
    x = a.data.reshape(-1)  # (n,)
    y, s = rowwise(gelu_forward, [x], out=[(), ()])

    def backward(g):
        return (rowwise(gelu_backward, [g.reshape(-1), x, s], out=[()]).reshape(a.shape),)

    return Tensor._make(y.reshape(a.shape), (a,), "gelu", backward)


def astype(a: Tensor, dtype: Any) -> Tensor:
    """An explicit, differentiable change of float dtype. (*s) -> (*s)"""
    out = a.data.astype(dtype)

    def backward(g):
        return (g.astype(a.dtype),)

    return Tensor._make(out, (a,), "astype", backward)


# ----------------------------------------------------------------------------- matmul
def matmul(a: Any, b: Any) -> Tensor:
    """Matrix product over the last two axes, batch axes broadcast.

    a: (*batch_a, n, k), b: (*batch_b, k, m) -> (*broadcast(batch_a, batch_b), n, m)
    """
    a, b = _operands("matmul", a, b)
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
        raise ValueError(
            f"matmul: shapes {a.shape} and {b.shape} do not fit; need (..., n, k) @ (..., k, m)"
        )
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch axes of {a.shape} and {b.shape} differ") from None
    # A weight shared by every row, (*s, k) @ (k, m), runs as one (N, k) @ (k, m) product:
    # NumPy would otherwise call BLAS once per leading index, two to three times slower here.
    # Its rows are split over the threads (see runtime.py).
    shared = b.ndim == 2
    k, m = b.shape[-2:]
    if shared:
        out = matmul_rows(a.data.reshape(-1, k), b.data).reshape(*a.shape[:-1], m)
    else:
        out = a.data @ b.data

    def backward(g):
        ga = gb = None
        if a.requires_grad:  # dL/da = g @ b^T
            if shared:
                ga = matmul_rows(g.reshape(-1, m), b.data.T).reshape(a.shape)
            else:
                ga = unbroadcast(g @ np.swapaxes(b.data, -1, -2), a.shape)
        if b.requires_grad:  # dL/db = a^T @ g, summed over broadcast batch axes
            if shared:
                gb = matmul_tn(a.data.reshape(-1, k), g.reshape(-1, m))
            else:
                gb = unbroadcast(np.swapaxes(a.data, -1, -2) @ g, b.shape)
        return ga, gb

    return Tensor._make(out, (a, b), "matmul", backward)


# ------------------------------------------------------------------------ reductions
def _expand(g: np.ndarray, shape: tuple[int, ...], axis: Any, keepdims: bool) -> np.ndarray:
    """Broadcast a reduction's gradient back to its input's shape."""
    if axis is not None and not keepdims:
        g = np.expand_dims(g, axis)
    elif axis is None and not keepdims:
        g = np.reshape(g, (1,) * len(shape))
    return np.broadcast_to(g, shape)


def _check_axis(op: str, a: Tensor, axis: Any) -> Any:
    axes = (axis,) if isinstance(axis, int) else (axis or ())
    for ax in axes:
        if not -a.ndim <= ax < a.ndim:
            raise ValueError(f"{op}: axis {ax} is out of range for shape {a.shape}")
    return tuple(axis) if isinstance(axis, list) else axis


def sum(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Sum over ``axis`` (int, tuple or None for all). (*s) -> (*s without axis)"""
    axis = _check_axis("sum", a, axis)
    out = np.sum(a.data, axis=axis, keepdims=keepdims)

    def backward(g):
        return (_expand(g, a.shape, axis, keepdims),)

    return Tensor._make(np.asarray(out), (a,), "sum", backward)


def mean(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis``. (*s) -> (*s without axis)"""
    axis = _check_axis("mean", a, axis)
    out = np.mean(a.data, axis=axis, keepdims=keepdims)
    count = a.size // builtins.max(np.asarray(out).size, 1) if a.size else 1

    def backward(g):
        return (_expand(g / count, a.shape, axis, keepdims),)

    return Tensor._make(np.asarray(out), (a,), "mean", backward)


def max(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Maximum over ``axis``. (*s) -> (*s without axis)

    The gradient goes to the maximal element; tied maxima share it equally (a kink: the max
    is not differentiable where two elements tie).
    """
    axis = _check_axis("max", a, axis)
    out = np.max(a.data, axis=axis, keepdims=keepdims)

    def backward(g):
        kept = _expand(out, a.shape, axis, keepdims)
        winners = a.data == kept
        share = winners / np.sum(winners, axis=axis, keepdims=True)
        return (_expand(g, a.shape, axis, keepdims) * share.astype(a.dtype),)

    return Tensor._make(np.asarray(out), (a,), "max", backward)


# ---------------------------------------------------------------------- shape changes
def reshape(a: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Same elements, new shape. (*s) -> (*shape)"""
    try:
        out = a.data.reshape(shape)
    except ValueError:
        msg = f"reshape: cannot reshape {a.shape} ({a.size} elements) to {shape}"
        raise ValueError(msg) from None

    def backward(g):
        return (g.reshape(a.shape),)

    return Tensor._make(out, (a,), "reshape", backward)


def transpose(a: Tensor, axes: Sequence[int] | None = None) -> Tensor:
    """Permute axes (reverse them when ``axes`` is None). (*s) -> (*s permuted)"""
    if axes is not None and sorted(ax % a.ndim for ax in axes) != list(range(a.ndim)):
        raise ValueError(f"transpose: axes {tuple(axes)} are not a permutation for shape {a.shape}")
    out = np.transpose(a.data, axes)
    inverse = None if axes is None else tuple(np.argsort([ax % a.ndim for ax in axes]))

    def backward(g):
        return (np.transpose(g, inverse),)

    return Tensor._make(out, (a,), "transpose", backward)


def _is_basic_index(index: Any) -> bool:
    """True for ints, slices, None and Ellipsis: such an index never repeats an element."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(
        isinstance(p, (int, np.integer, slice, type(None), type(Ellipsis))) for p in parts
    )


def getitem(a: Tensor, index: Any) -> Tensor:
    """a[index]: slicing and integer-array indexing. Repeated indices accumulate gradient."""
    if isinstance(index, Tensor):
        index = index.data
    if isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    try:
        out = a.data[index]
    except IndexError as e:
        raise IndexError(f"getitem: {e} (Tensor shape {a.shape})") from None
    basic = _is_basic_index(index)

    def backward(g):
        grad = np.zeros_like(a.data)
        if basic:
            grad[index] = g
        else:
            np.add.at(grad, index, g)  # an index may repeat: each copy adds its share
        return (grad,)

    return Tensor._make(np.asarray(out), (a,), "getitem", backward)


def embedding(weight: Tensor, ids: np.ndarray) -> Tensor:
    """Row lookup: weight[ids]. weight: (V, C), ids: (*s) ints -> (*s, C)

    Backward adds each output row's gradient into the row it came from; a token that appears
    many times collects many contributions. As a one-hot matrix product this is one BLAS call,
    much faster than ``np.add.at`` for the small vocabularies here.
    """
    ids = np.asarray(ids.data if isinstance(ids, Tensor) else ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be integers, got {ids.dtype}")
    V, C = weight.shape
    if ids.size and (ids.min() < 0 or ids.max() >= V):
        got = f"[{ids.min()}, {ids.max()}]"
        raise IndexError(f"embedding: ids must be in [0, {V}), got range {got}")
    out = weight.data[ids]  # (*s, C)

    def backward(g):
        flat = ids.reshape(-1)  # (N,)
        g2 = g.reshape(-1, C)  # (N, C)
        if V <= 4096:
            one_hot = (flat[None, :] == np.arange(V)[:, None]).astype(g.dtype)  # (V, N)
            return (one_hot @ g2,)  # (V, C)
        grad = np.zeros_like(weight.data)
        np.add.at(grad, flat, g2)
        return (grad,)

    return Tensor._make(out, (weight,), "embedding", backward)


def concatenate(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join along an existing axis. n x (..., s_i, ...) -> (..., sum s_i, ...)"""
    tensors = [_tensor(t) for t in tensors]
    _same_dtype("concatenate", tensors)
    try:
        out = np.concatenate([t.data for t in tensors], axis=axis)
    except ValueError:
        shapes = [t.shape for t in tensors]
        raise ValueError(f"concatenate: shapes {shapes} do not fit along axis {axis}") from None
    bounds = np.cumsum([t.shape[axis] for t in tensors])[:-1]

    def backward(g):
        return tuple(np.split(g, bounds, axis=axis))

    return Tensor._make(out, tuple(tensors), "concatenate", backward)


def stack(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join along a new axis. n x (*s) -> (*s with n inserted at axis)"""
    tensors = [_tensor(t) for t in tensors]
    _same_dtype("stack", tensors)
    try:
        out = np.stack([t.data for t in tensors], axis=axis)
    except ValueError:
        shapes = [t.shape for t in tensors]
        raise ValueError(f"stack: shapes {shapes} must all be equal") from None

    def backward(g):
        return tuple(np.take(g, i, axis=axis) for i in range(len(tensors)))

    return Tensor._make(out, tuple(tensors), "stack", backward)


def split(a: Tensor, sections: int | Sequence[int], axis: int = 0) -> list[Tensor]:
    """Split into equal parts (an int) or at indices (a list), like ``np.split``.

    Each part is a slice of ``a``, so its backward is the slice's backward.
    """
    n = a.shape[axis]
    if isinstance(sections, int):
        if sections <= 0 or n % sections:
            msg = f"split: axis {axis} of shape {a.shape} does not divide into {sections}"
            raise ValueError(msg)
        bounds = list(range(0, n + 1, n // sections))
    else:
        bounds = [0, *sections, n]
    lead = (slice(None),) * (axis % a.ndim)
    pairs = zip(bounds[:-1], bounds[1:], strict=True)
    return [getitem(a, (*lead, slice(lo, hi))) for lo, hi in pairs]


def _same_dtype(op: str, tensors: Sequence[Tensor]) -> None:
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        raise TypeError(f"{op}: mixed dtypes {sorted(map(str, dtypes))}; convert explicitly")


# -------------------------------------------------------------------- selection
def where(condition: Any, a: Any, b: Any) -> Tensor:
    """Elementwise ``a if condition else b``, with broadcasting. condition: bool (*s)"""
    cond = np.asarray(condition.data if isinstance(condition, Tensor) else condition, dtype=bool)
    a, b = _operands("where", a, b)
    try:
        out = np.where(cond, a.data, b.data)
    except ValueError:
        raise ValueError(
            f"where: condition {cond.shape}, a {a.shape} and b {b.shape} cannot be broadcast"
        ) from None

    def backward(g):
        zero = np.zeros((), dtype=g.dtype)
        ga = unbroadcast(np.where(cond, g, zero), a.shape) if a.requires_grad else None
        gb = unbroadcast(np.where(cond, zero, g), b.shape) if b.requires_grad else None
        return ga, gb

    return Tensor._make(out, (a, b), "where", backward)


def masked_fill(a: Tensor, mask: Any, value: float) -> Tensor:
    """``value`` where mask is True, else a. mask: bool, broadcastable to a's shape."""
    mask = np.asarray(mask.data if isinstance(mask, Tensor) else mask, dtype=bool)
    try:
        np.broadcast_to(mask, a.shape)
    except ValueError:
        msg = f"masked_fill: mask {mask.shape} does not broadcast to {a.shape}"
        raise ValueError(msg) from None
    out = np.where(mask, a.dtype.type(value), a.data)

    def backward(g):
        return (np.where(mask, np.zeros((), dtype=g.dtype), g),)

    return Tensor._make(out, (a,), "masked_fill", backward)
