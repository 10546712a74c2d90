"""The GPT: GPT-2's architecture at toy scale, with GPT-2's parameter names.

    idx (B, T) -> wte + wpe -> n_layer x Block -> ln_f -> logits = h @ wte^T (tied head)
    Block: x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))      (pre-LayerNorm)
    attn:  c_attn (C -> 3C), causal multi-head attention, c_proj (C -> C)
    mlp:   c_fc (C -> 4C), GELU (tanh approximation), c_proj (4C -> C)

Linear weights are stored (in, out), GPT-2's own checkpoint layout, so a state dict with keys
``wte.weight``, ``h.0.attn.c_attn.weight``, ... exchanges with GPT-2 implementations directly.
Optional scalar heads (a reward or a value) read the final hidden states.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Any

import numpy as np

from minirlhf.autograd import functional as F
from minirlhf.autograd import runtime
from minirlhf.autograd.runtime import matmul_rows, parallel_rows
from minirlhf.autograd.tensor import Tensor
from minirlhf.lm.nn import Embedding, LayerNorm, Linear, Module, ModuleList
from minirlhf.streams import stream


@dataclass
class GPTConfig:
    vocab_size: int = 49  # tokens: PAD, BOS, EOS and the tokenizer's characters
    block_size: int = 128  # longest sequence the model reads (number of learned positions)
    n_layer: int = 2  # transformer blocks
    n_head: int = 4  # attention heads per block; must divide n_embd
    n_embd: int = 64  # width of the residual stream, C
    seed: int = 0  # seeds the initial weights

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (
                    0 if f.name == "seed" else 1):
                raise ValueError(f"GPTConfig.{f.name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_head={self.n_head} must divide n_embd={self.n_embd}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Model sizes for a laptop CPU. "default" is what the pipeline trains; "tiny" is for tests.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(block_size=128, n_layer=1, n_head=2, n_embd=32),
    "default": dict(block_size=128, n_layer=2, n_head=4, n_embd=96),
    "large": dict(block_size=128, n_layer=4, n_head=4, n_embd=128),
}


#: ``GPT.decode`` hands a stretch of rows to the engine's threads from this many multiply-adds
#: in its attention stretch (4 B C^2: c_attn's 3 B C^2 and c_proj's B C^2), one hand-off for
#: five products; below it a hand-off costs more than the second core saves (with the default
#: model, 128 rows hand off and 64 do not).
DECODE_HANDOFF_MIN = 1 << 22


class KVCache:
    """Keys and values of every layer for the positions generated so far.

    Arrays are allocated once, (B, nh, block_size, hs) per layer, and filled as generation
    advances, so each new token costs one query against the cache instead of a rerun of the
    whole prefix.
    """

    def __init__(self, config: GPTConfig, batch_size: int, dtype: Any = np.float32):
        hs = config.n_embd // config.n_head
        shape = (batch_size, config.n_head, config.block_size, hs)
        self.k = [np.zeros(shape, dtype) for _ in range(config.n_layer)]
        self.v = [np.zeros(shape, dtype) for _ in range(config.n_layer)]
        self.pos = 0  # positions filled so far
        self.block_size = config.block_size
        # working arrays of GPT.decode (one token per row), allocated once for every step
        C, B = config.n_embd, batch_size
        self.work = {name: np.empty(shape, dtype) for name, shape in (
            ("x", (B, C)), ("h", (B, C)), ("xhat", (B, C)), ("rstd", (B, 1)), ("qkv", (B, 3 * C)),
            ("y", (B, C)), ("proj", (B, C)), ("fc", (B, 4 * C)), ("s", (B, 4 * C)),
            ("gelu", (B, 4 * C)))}

    def store(self, layer: int, k: np.ndarray, v: np.ndarray, rows: slice = slice(None)
              ) -> tuple[np.ndarray, np.ndarray]:
        """Write new keys/values (b, nh, T, hs) of ``rows`` (default: all B) at [pos, pos + T);
        return those rows' keys and values so far, (b, nh, pos + T, hs)."""
        end = self.pos + k.shape[2]
        if end > self.block_size:
            raise ValueError(f"KVCache: position {end} exceeds block_size {self.block_size}")
        self.k[layer][rows, :, self.pos:end] = k
        self.v[layer][rows, :, self.pos:end] = v
        return self.k[layer][rows, :, :end], self.v[layer][rows, :, :end]


class CausalSelfAttention(Module):
    def __init__(self, config: GPTConfig, rng: np.random.Generator):
        C = config.n_embd
        self.n_head = config.n_head
        self.c_attn = Linear(C, 3 * C, rng=rng)
        # GPT-2 scales residual projections by 1/sqrt(2 n_layer) so the stream's variance
        # does not grow with depth
        self.c_proj = Linear(C, C, rng=rng, std=0.02 / np.sqrt(2 * config.n_layer))

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        qkv = self.c_attn(x)  # (B, T, 3C)
        y = F.causal_self_attention(qkv, self.n_head, cache, layer)  # (B, T, C)
        return self.c_proj(y)  # (B, T, C)


class MLP(Module):
    def __init__(self, config: GPTConfig, rng: np.random.Generator):
        C = config.n_embd
        self.c_fc = Linear(C, 4 * C, rng=rng)
        self.c_proj = Linear(4 * C, C, rng=rng, std=0.02 / np.sqrt(2 * config.n_layer))

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class Block(Module):
    def __init__(self, config: GPTConfig, rng: np.random.Generator):
        self.ln_1 = LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config, rng)
        self.ln_2 = LayerNorm(config.n_embd)
        self.mlp = MLP(config, rng)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)  # (B, T, C)
        return x + self.mlp(self.ln_2(x))  # (B, T, C)


class GPT(Module):
    """GPT-2 at toy scale. ``model(idx)`` gives next-token logits (B, T, vocab_size)."""

    def __init__(self, config: GPTConfig, scalar_heads: tuple[str, ...] = ()):
        self.config = config
        rng = stream(config.seed, "init")
        self.wte = Embedding(config.vocab_size, config.n_embd, rng=rng)
        self.wpe = Embedding(config.block_size, config.n_embd, rng=rng)
        self.h = ModuleList([Block(config, rng) for _ in range(config.n_layer)])
        self.ln_f = LayerNorm(config.n_embd)
        for name in scalar_heads:
            self.add_scalar_head(name)

    @property
    def scalar_heads(self) -> tuple[str, ...]:
        return tuple(n for n, m in self.named_children() if n.endswith("_head"))

    def add_scalar_head(self, name: str, std: float = 0.0) -> None:
        """A Linear(C -> 1) read on the final hidden states, named ``<name>_head``.
        Zero-initialised by default, so a new head starts by predicting 0 everywhere."""
        rng = stream(self.config.seed, "head_init")
        head = Linear(self.config.n_embd, 1, rng=rng, std=std, dtype=self.wte.weight.dtype)
        setattr(self, f"{name}_head", head)

    def hidden(self, idx: np.ndarray, cache: KVCache | None = None) -> Tensor:
        """Final hidden states (after ln_f). idx: (B, T) int token ids -> (B, T, C)"""
        idx = np.asarray(idx)
        if idx.ndim != 2:
            raise ValueError(f"GPT: idx must be (B, T) token ids, got shape {idx.shape}")
        B, T = idx.shape
        pos = cache.pos if cache is not None else 0
        if pos + T > self.config.block_size:
            raise ValueError(f"GPT: sequence of {pos + T} tokens is longer than block_size "
                             f"{self.config.block_size}")
        x = self.wte(idx) + self.wpe(np.arange(pos, pos + T))  # (B, T, C) + (T, C)
        for layer, block in enumerate(self.h):
            x = block(x, cache, layer)  # (B, T, C)
        if cache is not None:
            cache.pos += T
        return self.ln_f(x)  # (B, T, C)

    def lm_logits(self, h: Tensor) -> Tensor:
        """Next-token logits with the head tied to the token embedding. (B, T, C) -> (B, T, V)"""
        return h @ self.wte.weight.T

    def scalar(self, name: str, h: Tensor) -> Tensor:
        """A scalar head on hidden states. (B, T, C) -> (B, T)"""
        head = getattr(self, f"{name}_head", None)
        if head is None:
            raise KeyError(f"GPT has no scalar head {name!r}; it has {list(self.scalar_heads)}")
        out = head(h)  # (B, T, 1)
        return out.reshape(out.shape[:-1])  # (B, T)

    def forward(self, idx: np.ndarray, cache: KVCache | None = None) -> Tensor:
        """idx: (B, T) int -> logits (B, T, vocab_size)"""
        return self.lm_logits(self.hidden(idx, cache))

    def decode(self, tok: np.ndarray, cache: KVCache) -> np.ndarray:
        """Logits for the next position after one more token per row: what generation calls
        once per new token. tok: (B,) ids, read at position cache.pos -> logits (B, vocab_size)

        The same computation as ``self(tok[:, None], cache).data[:, 0]``, to the last bit
        (tests/test_model.py), by the same plain functions on arrays (``F.layer_norm_forward``,
        ``F.linear_forward``, ``F.attention_forward``, ``F.gelu_forward``), written into the
        buffers the cache keeps (``KVCache.work``) with no autograd graph: at one token per row
        every array is small, so the time goes to NumPy calls, new arrays and thread hand-offs,
        not to arithmetic. A product's last bit depends on how many rows go into one call, so
        every projection and layer norm runs in the row ranges the forward's would
        (``parallel_rows``). Between two layer norms every step is row by row (projection,
        attention against the row's own cache, projection, residual), so with enough work
        (``DECODE_HANDOFF_MIN``) each thread runs its rows through the whole stretch, one
        hand-off for five products; below it the ranges run one after another on this thread,
        and attention, GELU and the residual adds take all rows at once."""
        B, C, nh = len(tok), self.config.n_embd, self.config.n_head
        hs, pos, w = C // nh, cache.pos, cache.work
        if w["x"].shape[0] != B:
            raise ValueError(f"GPT.decode: {B} tokens for a cache of {w['x'].shape[0]} rows")
        if pos >= self.config.block_size:
            raise ValueError(f"GPT.decode: position {pos} is past block_size "
                             f"{self.config.block_size}")
        scale = 1.0 / float(np.sqrt(hs))
        # Hand the stretches to the threads only when every projection of the forward splits
        # its rows (so the ranges are the forward's) and the work pays for the hand-off.
        handoff = (B * C * C >= runtime.MIN_PARALLEL_ELEMENTS
                   and 4 * B * C * C >= DECODE_HANDOFF_MIN)

        def norm(x, ln):  # (B, C) -> w["h"], in the row ranges F.layer_norm uses
            parallel_rows(B, lambda lo, hi: F.layer_norm_forward(
                x[lo:hi], ln.weight.data, ln.bias.data, ln.eps,
                out=(w["h"][lo:hi], w["xhat"][lo:hi], w["rstd"][lo:hi])), B * C, here=True)
            return w["h"]

        def linear(x, layer, out, lo, hi):  # rows lo:hi of x W + b, into out
            F.linear_forward(x[lo:hi], layer.weight.data, layer.bias.data, out=out[lo:hi])

        def linear_all(x, layer, out):  # x W + b into out, in the row ranges F.linear uses
            W, b = layer.weight.data, layer.bias.data  # (k, m), (m,)
            parallel_rows(B, lambda lo, hi: F.linear_forward(x[lo:hi], W, b, out=out[lo:hi]),
                          B * W.size, here=True)
            return out

        def attend(layer, lo, hi):  # rows lo:hi of w["qkv"]: store the new key and value, -> w["y"]
            q, k, v = w["qkv"][lo:hi].reshape(hi - lo, 3, nh, 1, hs).transpose(1, 0, 2, 3, 4)
            keys, values = cache.store(layer, k, v, slice(lo, hi))  # (b, nh, pos + 1, hs)
            y = w["y"][lo:hi].reshape(hi - lo, nh, 1, hs)  # a view: heads side by side
            F.attention_forward(q, keys, values, scale, out=y)  # one query sees every key: no mask

        def attention_rows(layer, lo, hi):  # rows lo:hi: x += attn(w["h"]), one thread's stretch
            attn = self.h[layer].attn
            linear(w["h"], attn.c_attn, w["qkv"], lo, hi)  # (b, 3C)
            attend(layer, lo, hi)
            linear(w["y"], attn.c_proj, w["proj"], lo, hi)  # heads side by side: (b, C)
            x[lo:hi] += w["proj"][lo:hi]

        def mlp_rows(layer, lo, hi):  # rows lo:hi: x += mlp(w["h"]), one thread's stretch
            mlp = self.h[layer].mlp
            linear(w["h"], mlp.c_fc, w["fc"], lo, hi)  # (b, 4C)
            F.gelu_forward(w["fc"][lo:hi], out=(w["gelu"][lo:hi], w["s"][lo:hi]))
            linear(w["gelu"], mlp.c_proj, w["proj"], lo, hi)  # (b, C)
            x[lo:hi] += w["proj"][lo:hi]

        x = np.add(self.wte.weight.data[tok], self.wpe.weight.data[pos], out=w["x"])  # (B, C)
        for layer, block in enumerate(self.h):
            norm(x, block.ln_1)
            if handoff:  # each thread its rows, one hand-off per stretch
                parallel_rows(B, partial(attention_rows, layer), B * C * C)
                norm(x, block.ln_2)
                parallel_rows(B, partial(mlp_rows, layer), 4 * B * C * C)
                continue
            # the same ranges on this thread, each op over all rows at once
            linear_all(w["h"], block.attn.c_attn, w["qkv"])  # (B, 3C)
            attend(layer, 0, B)
            x += linear_all(w["y"], block.attn.c_proj, w["proj"])  # heads side by side: (B, C)
            linear_all(norm(x, block.ln_2), block.mlp.c_fc, w["fc"])  # (B, 4C)
            F.gelu_forward(w["fc"], out=(w["gelu"], w["s"]))
            x += linear_all(w["gelu"], block.mlp.c_proj, w["proj"])  # (B, C)
        cache.pos += 1
        return matmul_rows(norm(x, self.ln_f), self.wte.weight.data.T, here=True)  # (B, V)
