"""Fused functions with hand-derived backward passes (import as ``F``).

Each of these could be composed from the primitive ops, and the tests check that the fused
version matches that composition in value and gradient. Fusing buys two things: numerical
stability (no exp of a large logit is ever formed) and speed (one backward closure instead of a
dozen, and fewer temporary arrays).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minirlhf.autograd.ops import gelu, gelu_into  # noqa: F401  (re-exported: F.gelu)
from minirlhf.autograd.runtime import matmul_rows, matmul_tn, parallel_rows
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
        # exercise: return (dx,), the gradient w.r.t. x, same shape as g; y holds softmax(x)
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
        # exercise: return (dx,), same shape as g; y holds log_softmax(x)
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
    NumPy's reduction along a short contiguous axis (0.009 vs 0.06 ms for (2048, 64) here)."""
    C = a.shape[-1]
    return a @ np.full((C, 1), 1.0 / C, dtype=a.dtype)


def _sum_leading(a: np.ndarray) -> np.ndarray:
    """Sum over every axis but the last: (*s, C) -> (C,), as a vector-matrix product, its
    columns split over the threads (each sums all its rows at once)."""
    rows = a.reshape(-1, a.shape[-1])  # (N, C)
    ones = np.ones(len(rows), dtype=a.dtype)
    out = np.empty(rows.shape[1], dtype=a.dtype)
    parallel_rows(len(out), lambda lo, hi: np.matmul(ones, rows[:, lo:hi], out=out[lo:hi]),
                  rows.size)
    return out


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
    out = matmul_rows(x2, weight.data)  # (N, m), rows split over the threads (runtime.py)
    if bias is not None:
        out += bias.data
    out = out.reshape(*x.shape[:-1], m)  # (*s, m)
    parents = (x, weight) if bias is None else (x, weight, bias)

    def backward(g):
        g2 = g.reshape(-1, m)  # (N, m)
        dx = matmul_rows(g2, weight.data.T).reshape(x.shape) if x.requires_grad else None
        dw = matmul_tn(x2, g2) if weight.requires_grad else None  # (k, m)
        if bias is None:
            return dx, dw
        return dx, dw, _sum_leading(g2)

    return Tensor._make(out, parents, "linear", backward)


def layer_norm_into(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None,
                    eps: float, xhat: np.ndarray, rstd: np.ndarray, out: np.ndarray) -> None:
    """Layer norm's forward on arrays, written into preallocated ones. x, xhat, out: (N, C);
    rstd: (N, 1); weight, bias: (C,) or None. ``layer_norm`` runs it on each thread's rows (and
    keeps xhat and rstd for its backward); the decoder of ``minirlhf.lm.model`` on its buffers."""
    xc = x - _mean_last(x)  # (N, C)
    np.divide(1.0, np.sqrt(_mean_last(xc * xc) + eps), out=rstd)  # (N, 1)
    np.multiply(xc, rstd, out=xhat)  # (N, C)
    if weight is not None:
        np.multiply(xhat, weight, out=out)
    else:
        out[...] = xhat
    if bias is not None:
        out += bias


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
    N = len(x2)
    xhat_all = np.empty_like(x2)  # (N, C)
    rstd_all = np.empty((N, 1), dtype=x2.dtype)  # (N, 1)
    out = np.empty_like(x2)  # (N, C)

    # Each row is normalised on its own, so the rows are split over the threads (runtime.py).
    w, b = (None if p is None else p.data for p in (weight, bias))
    parallel_rows(N, lambda lo, hi: layer_norm_into(x2[lo:hi], w, b, eps, xhat_all[lo:hi],
                                                    rstd_all[lo:hi], out[lo:hi]), N * C)
    out = out.reshape(x.shape)  # (*s, C)
    parents = tuple(p for p in (x, weight, bias) if p is not None)

    def backward(g):
        g2 = g.reshape(-1, C)  # (N, C)
        dx_all = np.empty_like(g2)

        def rows(lo, hi):
            g, xhat, rstd = g2[lo:hi], xhat_all[lo:hi], rstd_all[lo:hi]  # this thread's rows
            # exercise: set dx (..., C), the gradient w.r.t. x, from g (..., C), weight (C,) or
            #   None, xhat and rstd (..., 1)
            ### BEGIN SOLUTION
            dxhat = g * weight.data if weight is not None else g
            dx = dxhat - _mean_last(dxhat)
            dx -= xhat * _mean_last(dxhat * xhat)
            dx *= rstd
            ### END SOLUTION
            dx_all[lo:hi] = dx

        parallel_rows(N, rows, N * C)
        grads = [dx_all.reshape(x.shape)]
        if weight is not None:
            grads.append(_sum_leading(g2 * xhat_all))
        if bias is not None:
            grads.append(_sum_leading(g2))
        return tuple(grads)

    return Tensor._make(out, parents, "layer_norm", backward)


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


_CAUSAL_BIAS: dict[tuple[int, int, int, str], np.ndarray] = {}

#: Attention works through a thread's scores in blocks of about ATTENTION_BLOCK_BYTES (whole
#: sequences while one sequence's scores, n_head x T x Tk, fit, else groups of heads of one
#: sequence) once they exceed ATTENTION_UNBLOCKED_BYTES. The softmax makes five passes over the
#: scores and the backward three over their gradient; when both threads' scores outgrow the
#: shared cache (32 MB of L3 here), a block that stays in cache spares each pass a trip to
#: memory. Measured on 2 cores (benchmarks/README.md), five alternating repetitions in one
#: process: bench_gpt's config C (16 MB of scores per thread) trained 1.07x as fast in 2 MB
#: blocks (1.06x in 512 KB, 1.05x in 8 MB); config B (4 MB per thread) 0.95x in 2 MB blocks,
#: so ranges up to 8 MB stay whole; the default model at 16-64 sequences of 90-128 tokens
#: within +-1.5% either way. A block is the same products and row-wise steps as
#: the whole, so the numbers do not change.
ATTENTION_BLOCK_BYTES = 1 << 21
ATTENTION_UNBLOCKED_BYTES = 1 << 23


def score_blocks(lo: int, hi: int, n_head: int, seq_bytes: int):
    """(b0, b1, h0, h1): blocks of batch rows [lo, hi) and heads [0, n_head) for attention to
    work through; ``seq_bytes``: the scores of one sequence, all heads (see above)."""
    if (hi - lo) * seq_bytes <= ATTENTION_UNBLOCKED_BYTES:  # they fit in cache as they are
        yield lo, hi, 0, n_head
    elif seq_bytes <= ATTENTION_BLOCK_BYTES:  # whole sequences per block
        step = ATTENTION_BLOCK_BYTES // seq_bytes
        for b0 in range(lo, hi, step):
            yield b0, min(hi, b0 + step), 0, n_head
    else:  # groups of heads of one sequence
        heads = max(1, n_head * ATTENTION_BLOCK_BYTES // seq_bytes)
        for b in range(lo, hi):
            for h0 in range(0, n_head, heads):
                yield b, b + 1, h0, min(n_head, h0 + heads)


def causal_bias(T: int, Tk: int, pos: int, dtype: np.dtype) -> np.ndarray:
    """0 where query i (at position pos + i) may see key j, -inf where j is in its future.
    (T, Tk). Adding it is one pass over the scores, far cheaper than boolean-mask assignment;
    the few shapes a run uses are kept."""
    key = (T, Tk, pos, str(dtype))
    bias = _CAUSAL_BIAS.get(key)
    if bias is None:
        # exercise: set future (T, Tk) bool, True where key j is after query i (query i sits at
        #   position pos + i)
        ### BEGIN SOLUTION
        future = np.arange(Tk)[None, :] > (pos + np.arange(T))[:, None]  # (T, Tk)
        ### END SOLUTION
        bias = np.where(future, -np.inf, 0.0).astype(dtype)
        if len(_CAUSAL_BIAS) < 64:
            _CAUSAL_BIAS[key] = bias
    return bias


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
    heads = qkv.data.reshape(B, T, 3, n_head, hs).transpose(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
    q, k, v = heads[0], heads[1], heads[2]  # each (B, nh, T, hs)
    pos = 0
    if cache is not None:
        if qkv.requires_grad:
            raise RuntimeError("causal_self_attention: a KV cache is for generation under "
                               "no_grad(); training attends over the full sequence")
        pos = cache.pos
        k, v = cache.store(layer, k, v)  # (B, nh, pos + T, hs)
    Tk = k.shape[2]
    q_all, k_all, v_all = q, k, v
    out = np.empty((B, T, C), dtype=qkv.dtype)
    out_heads = out.reshape(B, T, n_head, hs)  # a view: head h of row b at out[b, :, h]
    saved: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}  # (b0, h0) -> (P, y)
    seq_bytes = n_head * T * Tk * qkv.dtype.itemsize  # the scores of one sequence

    # Every batch row attends on its own, so the rows are split over the threads (runtime.py):
    # each range of rows runs the whole computation, softmax included, on its own core, one
    # cache-sized block of rows and heads at a time (score_blocks).
    def forward(lo, hi):
        for b0, b1, h0, h1 in score_blocks(lo, hi, n_head, seq_bytes):
            blk = (slice(b0, b1), slice(h0, h1))  # this block's rows and heads
            q, k, v = q_all[blk], k_all[blk], v_all[blk]  # (b, h, T or Tk, hs)
            # exercise: set att (B, nh, T, Tk), the scaled scores, from q (B, nh, T, hs), k (B,
            #   nh, Tk, hs) and scale (here B and nh count this block's rows and heads)
            ### BEGIN SOLUTION
            att = q @ k.swapaxes(-1, -2)  # (B, nh, T, Tk)
            att *= scale
            ### END SOLUTION
            if T > 1:  # future keys j > pos + i get -inf (one query sees every cached key)
                att += causal_bias(T, Tk, pos, att.dtype)  # (T, Tk), broadcast over (b, h)
            att -= att.max(axis=-1, keepdims=True)
            np.exp(att, out=att)
            att /= att.sum(axis=-1, keepdims=True)  # P, (b, h, T, Tk)
            y = att @ v  # (b, h, T, hs)
            out_heads[b0:b1, :, h0:h1] = y.transpose(0, 2, 1, 3)  # (b, T, h, hs)
            saved[b0, h0] = (att, y)

    parallel_rows(B, forward, B * n_head * T * Tk * hs)  # the work: multiply-adds

    def backward(g):
        grad = np.empty((B, T, 3, n_head, hs), dtype=g.dtype)
        g_heads = g.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)  # (B, nh, T, hs), a view
        grad_all = grad.transpose(2, 0, 3, 1, 4)  # (3, B, nh, T, hs), a view

        def rows(lo, hi):
            for b0, b1, h0, h1 in score_blocks(lo, hi, n_head, seq_bytes):
                backward_block(b0, b1, h0, h1)

        def backward_block(b0, b1, h0, h1):
            blk = (slice(b0, b1), slice(h0, h1))  # the forward's block of rows and heads
            att, y = saved[b0, h0]  # the softmax P (b, h, T, T) and y (b, h, T, hs)
            q, k, v = q_all[blk], k_all[blk], v_all[blk]  # (b, h, T, hs)
            gh = g_heads[blk]  # (b, h, T, hs)
            grad_heads = grad_all[:, b0:b1, h0:h1]  # (3, b, h, T, hs), a view
            # exercise: fill grad_heads[0] (dq), [1] (dk), [2] (dv), each (B, nh, T, hs), from
            #   gh, att (the softmax, B, nh, T, T), y, q, k, v and scale (B, nh: this block's)
            ### BEGIN SOLUTION
            grad_heads[2] = att.swapaxes(-1, -2) @ gh  # dv
            ds = gh @ v.swapaxes(-1, -2)  # dP, (B, nh, T, T)
            # sum_j dP_ij P_ij = sum_j (G_i . v_j) P_ij = G_i . y_i: a dot product over hs
            # instead of a sum over T (the trick FlashAttention uses)
            ds -= (gh * y).sum(axis=-1, keepdims=True)
            ds *= att
            ds *= scale  # dS, the gradient of the scaled scores
            grad_heads[0] = ds @ k  # dq
            grad_heads[1] = ds.swapaxes(-1, -2) @ q  # dk
            ### END SOLUTION

        parallel_rows(B, rows, B * n_head * T * T * hs)
        return (grad.reshape(B, T, C3),)

    return Tensor._make(out, (qkv,), "causal_self_attention", backward)
