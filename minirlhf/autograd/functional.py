"""Fused functions with hand-derived backward passes (import as ``F``).

Each of these could be composed from the primitive ops, and the tests check that the fused
version matches that composition in value and gradient. Fusing buys two things: numerical
stability (no exp of a large logit is ever formed) and speed (one backward closure instead of a
dozen, and fewer temporary arrays).

The math of linear, layer norm and attention is written as plain functions on arrays
(``linear_forward``, ``layer_norm_forward``, ``layer_norm_backward``, ``attention_forward``,
``attention_backward``): the Tensor-level function runs them over the threads' row ranges
(``runtime.rowwise``) and registers the backward. ``GPT.decode`` runs the same functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minirlhf.autograd.ops import gelu, gelu_backward, gelu_forward  # noqa: F401  (F.gelu, ...)
from minirlhf.autograd.runtime import matmul_rows, matmul_tn, rowwise, sum_rows
from minirlhf.autograd.tensor import Tensor


def softmax_array(x: np.ndarray, axis: int) -> np.ndarray:
    """Softmax of an array, shifted by the max so exp never overflows."""
    z = np.exp(x - np.max(x, axis=axis, keepdims=True))
    z /= np.sum(z, axis=axis, keepdims=True)
    return z


def log_softmax_array(x: np.ndarray, axis: int) -> np.ndarray:
    """log softmax = x - logsumexp(x), with logsumexp = m + log sum exp(x - m)."""
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """y_i = exp(x_i) / sum_j exp(x_j) along ``axis``. (*s) -> (*s)

    Backward: dL/dx_i = y_i (g_i - sum_j g_j y_j), since dy_j/dx_i = y_j (delta_ij - y_i).
    """
    y = softmax_array(x.data, axis)

    def backward(g):
        # exercise softmax-backward: return (dx,), the gradient w.r.t. x, same shape as g; y holds
        #   softmax(x)
        ### BEGIN SOLUTION
        return (y * (g - np.sum(g * y, axis=axis, keepdims=True)),)
        ### END SOLUTION

    return Tensor._make(y, (x,), "softmax", backward)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """y_i = x_i - log sum_j exp(x_j) along ``axis``. (*s) -> (*s)

    Backward: dL/dx_i = g_i - softmax(x)_i * sum_j g_j.
    """
    y = log_softmax_array(x.data, axis)

    def backward(g):
        # exercise log-softmax-backward: return (dx,), same shape as g; y holds log_softmax(x)
        ### BEGIN SOLUTION
        return (g - np.exp(y) * np.sum(g, axis=axis, keepdims=True),)
        ### END SOLUTION

    return Tensor._make(y, (x,), "log_softmax", backward)


def cross_entropy(
    logits: Tensor,
    targets: Any,
    mask: Any = None,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood of integer targets under softmax(logits).

    logits: (*s, V) float; targets: (*s) int; mask: optional (*s) weights, 1 where a position
    counts and 0 where it does not (positions equal to ``ignore_index`` count 0 as well).
    reduction: "mean" (over counted positions) -> (), "sum" -> (), "none" -> (*s).

    loss_n = logsumexp(logits_n) - logits_n[target_n]
    dloss_n/dlogits_n = softmax(logits_n) - one_hot(target_n)
    """
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if targets.shape != logits.shape[:-1]:
        raise ValueError(
            f"cross_entropy: targets {targets.shape} must match logits {logits.shape} minus the "
            "last (vocabulary) axis"
        )
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be mean, sum or none, got {reduction!r}")
    V = logits.shape[-1]
    weight = np.ones(targets.shape, dtype=logits.dtype)
    if mask is not None:
        mask = np.asarray(mask.data if isinstance(mask, Tensor) else mask)
        if mask.shape != targets.shape:
            raise ValueError(f"cross_entropy: mask {mask.shape} must match targets {targets.shape}")
        weight *= mask.astype(logits.dtype)
    if ignore_index is not None:
        weight *= (targets != ignore_index).astype(logits.dtype)
    counted = weight != 0
    safe_targets = np.where(counted, targets, 0)  # an ignored position may hold any id
    if safe_targets.size and (safe_targets.min() < 0 or safe_targets.max() >= V):
        raise IndexError(f"cross_entropy: targets must be in [0, {V}) where counted")

    logp = log_softmax_array(logits.data, -1)  # (*s, V)
    picked = np.take_along_axis(logp, safe_targets[..., None], axis=-1)[..., 0]  # (*s,)
    losses = -picked * weight  # (*s,)
    if reduction == "none":
        out = losses
        scale = weight
    else:
        denom = max(float(weight.sum()), 1.0) if reduction == "mean" else 1.0
        out = np.asarray(losses.sum() / denom, dtype=logits.dtype)
        scale = weight / denom

    def backward(g):
        grad = np.exp(logp)  # softmax, (*s, V)
        np.put_along_axis(
            grad, safe_targets[..., None],
            np.take_along_axis(grad, safe_targets[..., None], axis=-1) - 1.0, axis=-1,
        )
        grad *= (g * scale)[..., None]
        return (grad,)

    return Tensor._make(out, (logits,), "cross_entropy", backward)


def _mean_last(a: np.ndarray) -> np.ndarray:
    """Mean over the last axis, keeping it: (*s, C) -> (*s, 1).

    Written as a matrix-vector product because BLAS does this several times faster than
    NumPy's reduction along a short contiguous axis."""
    C = a.shape[-1]
    return a @ np.full((C, 1), 1.0 / C, dtype=a.dtype)


# ------------------------------------------------------------------------------ linear
def linear_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None,
                   out: np.ndarray | None = None) -> np.ndarray:
    """y = x W + b on arrays. x: (N, k), weight: (k, m), bias: (m,) or None -> y (N, m)
    ``out``: an (N, m) array to write y into."""
    y = np.matmul(x, weight, out=out)  # (N, m)
    if bias is not None:
        y += bias
    return y


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W + b. x: (*s, k), weight: (k, m), bias: (m,) -> (*s, m)

    Backward: dx = g W^T;  dW = x^T g (summed over all rows);  db = sum of g over all rows.
    One op instead of matmul + add: the bias is added in place and its gradient is one
    vector-matrix product.
    """
    k, m = weight.shape
    if x.shape[-1] != k or (bias is not None and bias.shape != (m,)):
        raise ValueError(f"linear: x {x.shape}, weight {weight.shape} and bias "
                         f"{None if bias is None else bias.shape} do not fit")
    x2 = x.data.reshape(-1, k)  # (N, k)
    b = None if bias is None else bias.data
    out = rowwise(linear_forward, [x2], weight.data, b, out=[(m,)],
                  dtype=np.result_type(x2, weight.data), elements=x2.size * m)  # (N, m)
    parents = (x, weight) if bias is None else (x, weight, bias)

    def backward(g):
        g2 = g.reshape(-1, m)  # (N, m)
        dx = matmul_rows(g2, weight.data.T).reshape(x.shape) if x.requires_grad else None
        dw = matmul_tn(x2, g2) if weight.requires_grad else None  # (k, m)
        if bias is None:
            return dx, dw
        return dx, dw, sum_rows(g2)

    return Tensor._make(out.reshape(*x.shape[:-1], m), parents, "linear", backward)


# -------------------------------------------------------------------------- layer norm
def layer_norm_forward(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None,
                       eps: float, out: tuple[np.ndarray, ...] | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layer norm on arrays. x: (N, C), weight, bias: (C,) or None -> y (N, C), and for the
    backward xhat (N, C) and rstd = 1 / sqrt(var + eps) (N, 1).
    ``out``: (y, xhat, rstd) arrays to write into."""
    y, xhat, rstd = (None, None, None) if out is None else out
    xc = x - _mean_last(x)  # (N, C)
    rstd = np.divide(1.0, np.sqrt(_mean_last(xc * xc) + eps), out=rstd)  # (N, 1)
    xhat = np.multiply(xc, rstd, out=xhat)  # (N, C)
    if weight is not None:
        y = np.multiply(xhat, weight, out=y)  # (N, C)
    else:
        y = np.positive(xhat, out=y)  # a copy of xhat
    if bias is not None:
        y += bias
    return y, xhat, rstd


def layer_norm_backward(g: np.ndarray, xhat: np.ndarray, rstd: np.ndarray,
                        weight: np.ndarray | None) -> np.ndarray:
    """dL/dx of layer norm from g = dL/dy (N, C), xhat (N, C), rstd (N, 1) and weight (C,)
    or None. -> (N, C)"""
    # exercise layer-norm-backward: set dx (N, C), the gradient w.r.t. x, from g (N, C), weight (C,)
    #   or None, xhat (N, C) and rstd (N, 1)
    ### BEGIN SOLUTION
    dxhat = g * weight if weight is not None else g
    dx = dxhat - _mean_last(dxhat)
    dx -= xhat * _mean_last(dxhat * xhat)
    dx *= rstd
    ### END SOLUTION
    return dx


def layer_norm(
    x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5
) -> Tensor:
    """Normalise over the last axis, then scale and shift. x: (*s, C), weight, bias: (C,)

    xhat = (x - mean) / sqrt(var + eps);  y = xhat * weight + bias
    Backward, with dxhat = g * weight and means over the C features:
    dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) / sqrt(var + eps)
    """
    C = x.shape[-1]
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != (C,):
            raise ValueError(f"layer_norm: {name} has shape {p.shape}, expected ({C},)")
    x2 = x.data.reshape(-1, C)  # (N, C)
    w, b = (None if p is None else p.data for p in (weight, bias))
    # each row is normalised on its own: the rows are split over the threads (runtime.py)
    y, xhat, rstd = rowwise(layer_norm_forward, [x2], w, b, eps, out=[(C,), (C,), (1,)])
    parents = tuple(p for p in (x, weight, bias) if p is not None)

    def backward(g):
        g2 = g.reshape(-1, C)  # (N, C)
        grads = [rowwise(layer_norm_backward, [g2, xhat, rstd], w, out=[(C,)], copy=True)]
        if weight is not None:
            grads.append(sum_rows(g2 * xhat))
        if bias is not None:
            grads.append(sum_rows(g2))
        return (grads[0].reshape(x.shape), *grads[1:])

    return Tensor._make(y.reshape(x.shape), parents, "layer_norm", backward)


def logsigmoid(x: Tensor) -> Tensor:
    """log sigmoid(x) = min(x, 0) - log(1 + exp(-|x|)), finite for any x. (*s) -> (*s)

    Backward: d/dx log sigmoid(x) = 1 - sigmoid(x) = sigmoid(-x).
    """
    d = x.data
    out = np.minimum(d, 0) - np.log1p(np.exp(-np.abs(d)))

    def backward(g):
        return (g * 0.5 * (1.0 - np.tanh(0.5 * d)),)

    return Tensor._make(out, (x,), "logsigmoid", backward)


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x < 0, finite as x -> 0- and as x -> -inf. (*s) -> (*s)

    Forward: log(-expm1(x)) near 0 (where 1 - exp(x) cancels) and log1p(-exp(x)) below
    -log 2 (where exp(x) is small), the split of Maechler (2012). x >= 0 is an error: 1 - e^x
    would be <= 0.
    Backward: d/dx log(1 - e^x) = -e^x / (1 - e^x) = e^x / expm1(x): no overflow at any x < 0
    (it tends to 0 as x -> -inf and to -inf as x -> 0-, as it should).
    """
    d = x.data
    if np.any(d >= 0):
        raise ValueError(f"log1mexp: needs x < 0, got max {d.max()}")
    near = d > -np.log(2.0)
    out = np.where(near, np.log(-np.expm1(np.where(near, d, -1.0))),
                   np.log1p(-np.exp(np.where(near, -1.0, d))))

    def backward(g):
        return (g * (np.exp(d) / np.expm1(d)),)

    return Tensor._make(out.astype(d.dtype), (x,), "log1mexp", backward)


# ---------------------------------------------------------------------------- attention
_CAUSAL_BIAS: dict[tuple[int, int, int, str], np.ndarray] = {}


def causal_bias(T: int, Tk: int, pos: int, dtype: np.dtype) -> np.ndarray:
    """0 where query i (at position pos + i) may see key j, -inf where j is in its future.
    (T, Tk). Adding it is one pass over the scores, far cheaper than boolean-mask assignment;
    the few shapes a run uses are kept."""
    key = (T, Tk, pos, str(dtype))
    bias = _CAUSAL_BIAS.get(key)
    if bias is None:
        # exercise causal-mask: set future (T, Tk) bool, True where key j is after query i (query i
        #   sits at position pos + i)
        ### BEGIN SOLUTION
        future = np.arange(Tk)[None, :] > (pos + np.arange(T))[:, None]  # (T, Tk)
        ### END SOLUTION
        bias = np.where(future, -np.inf, 0.0).astype(dtype)
        if len(_CAUSAL_BIAS) < 64:
            _CAUSAL_BIAS[key] = bias
    return bias


def attention_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float,
                      bias: np.ndarray | None = None, out: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Scaled dot-product attention on arrays, every sequence and head at once.
    q: (B, nh, T, hs), k, v: (B, nh, Tk, hs); bias: (T, Tk), added to the scores (-inf where a
    query may not look; ``causal_bias``), or None -> y (B, nh, T, hs), and for the backward the
    probabilities P (B, nh, T, Tk). ``out``: a (B, nh, T, hs) array to write y into."""
    # exercise attention-scores: set att (B, nh, T, Tk), the scaled scores, from q (B, nh, T, hs), k
    #   (B, nh, Tk, hs) and scale
    ### BEGIN SOLUTION
    att = q @ k.swapaxes(-1, -2)  # (B, nh, T, Tk)
    att *= scale
    ### END SOLUTION
    if bias is not None:
        att += bias  # (T, Tk), broadcast over (B, nh)
    att -= att.max(axis=-1, keepdims=True)  # softmax over the keys, in place
    np.exp(att, out=att)
    att /= att.sum(axis=-1, keepdims=True)  # P
    y = np.matmul(att, v, out=out)  # (B, nh, T, hs)
    return y, att


def attention_backward(dy: np.ndarray, att: np.ndarray, y: np.ndarray, q: np.ndarray,
                       k: np.ndarray, v: np.ndarray, scale: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``attention_forward`` from dy = dL/dy (B, nh, T, hs), its probabilities
    att (B, nh, T, T), its y, and q, k, v. -> dq, dk, dv, each (B, nh, T, hs)"""
    # exercise attention-backward: set dq, dk and dv, each (B, nh, T, hs), from dy, att (the
    #   softmax, B, nh, T, T), y, q, k, v and scale
    ### BEGIN SOLUTION
    dv = att.swapaxes(-1, -2) @ dy  # (B, nh, T, hs)
    ds = dy @ v.swapaxes(-1, -2)  # dP, (B, nh, T, T)
    # sum_j dP_ij P_ij = sum_j (G_i . v_j) P_ij = G_i . y_i: a dot product over hs
    # instead of a sum over T (the trick FlashAttention uses)
    ds -= (dy * y).sum(axis=-1, keepdims=True)
    ds *= att
    ds *= scale  # dS, the gradient of the scaled scores
    dq = ds @ k  # (B, nh, T, hs)
    dk = ds.swapaxes(-1, -2) @ q  # (B, nh, T, hs)
    ### END SOLUTION
    return dq, dk, dv


def causal_self_attention(qkv: Tensor, n_head: int, cache: Any = None, layer: int = 0) -> Tensor:
    """Multi-head causal self-attention from packed queries, keys and values.

    qkv: (B, T, 3C), the output of the c_attn projection: [q | k | v] along the last axis.
    Returns y: (B, T, C), the heads' outputs side by side (before the c_proj projection).

    Per head h, with q, k, v of shape (T, hs) and hs = C / n_head:
        S = q k^T / sqrt(hs);  S[i, j] = -inf for j > i (a token never sees its future)
        P = softmax(S) along j;  y = P v
    Backward (G = dL/dy for the head):
        dv = P^T G;  dP = G v^T;  dS = P * (dP - sum_j dP * P);  dq = dS k / sqrt(hs);
        dk = dS^T q / sqrt(hs)

    With a KV cache (generation, no gradient): the new keys and values are written into the
    cache for ``layer`` at positions [cache.pos, cache.pos + T), and the T queries attend to all
    cached positions up to their own. Query i sits at position pos + i, so it may see keys
    j <= pos + i: the same causal rule, shifted.
    """
    B, T, C3 = qkv.shape
    C = C3 // 3
    if C3 % 3 or C % n_head:
        raise ValueError(f"causal_self_attention: qkv {qkv.shape} does not split into 3 x "
                         f"{n_head} heads")
    hs = C // n_head
    scale = 1.0 / float(np.sqrt(hs))
    q, k, v = qkv.data.reshape(B, T, 3, n_head, hs).transpose(2, 0, 3, 1, 4)  # (B, nh, T, hs)
    pos = 0
    if cache is not None:
        if qkv.requires_grad:
            raise RuntimeError("causal_self_attention: a KV cache is for generation under "
                               "no_grad(); training attends over the full sequence")
        pos = cache.pos
        k, v = cache.store(layer, k, v)  # (B, nh, pos + T, hs)
    Tk = k.shape[2]
    bias = causal_bias(T, Tk, pos, qkv.dtype) if T > 1 else None  # one query sees every key
    out = np.empty((B, T, C), dtype=qkv.dtype)  # the heads side by side
    y = out.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)  # (B, nh, T, hs), a view of out
    # every sequence attends on its own: the rows are split over the threads, and each thread
    # works through its scores in cache-sized blocks (runtime.py)
    seq_bytes = n_head * T * Tk * qkv.dtype.itemsize  # the scores of one sequence
    _, att = rowwise(attention_forward, [q, k, v], scale, bias, out=[y, None],
                     elements=B * n_head * T * Tk * hs, blocks=seq_bytes)

    def backward(g):
        grad = np.empty((B, T, 3, n_head, hs), dtype=g.dtype)
        dqkv = grad.transpose(2, 0, 3, 1, 4)  # (3, B, nh, T, hs), a view of grad
        dy = g.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)  # (B, nh, T, hs), a view of g
        rowwise(attention_backward, [dy, att, y, q, k, v], scale, out=list(dqkv), copy=True,
                elements=B * n_head * T * T * hs, blocks=seq_bytes)
        return (grad.reshape(B, T, C3),)

    return Tensor._make(out, (qkv,), "causal_self_attention", backward)
