"""Text from a model, and the log-probabilities of text under a model.

* ``generate``: batched sampling with a KV cache, each row stopping at EOS. Sequences come back
  as prompt + response + PAD (right padding), with a response mask and per-token log-probs.
* ``rollout``: **the one function** that turns text prompts into sampled text (it encodes,
  calls ``generate`` and decodes); ``generate_text`` runs it over batches.

Conventions (the same as ``minirlhf.lm.sequences``, which scores given text under a model):
``response_mask[b, t] = 1`` where token t of row b is a response token (EOS included); prompt
and padding tokens are 0. Log-probs are aligned with the tokens they score:
``logprobs[b, t] = log p(tokens[b, t] | tokens[b, :t])``, 0 where the mask is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from minirlhf.autograd import functional as F
from minirlhf.autograd.tensor import no_grad
from minirlhf.lm.model import GPT, KVCache
from minirlhf.lm.tokenizer import EOS, PAD, CharTokenizer


@dataclass
class Generation:
    """A batch of sampled sequences. All arrays are (B, T) unless noted."""

    tokens: np.ndarray  # int: prompt, response (ending in EOS if finished), then PAD
    response_mask: np.ndarray  # float32: 1 on response tokens, EOS included
    logprobs: np.ndarray  # float32: log-prob of each response token at the sampling temperature
    prompt_lengths: np.ndarray  # (B,) int: tokens in each prompt (BOS included)
    finished: np.ndarray  # (B,) bool: the response ended with EOS within the budget

    def responses(self) -> list[np.ndarray]:
        """Each row's response tokens (EOS included when present)."""
        return [row[m > 0] for row, m in zip(self.tokens, self.response_mask, strict=True)]


def _prompt_array(prompts: Sequence[Sequence[int]] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prompts as a right-padded (B, Tp) array and their lengths (B,)."""
    if isinstance(prompts, np.ndarray) and prompts.ndim == 2:
        lengths = (prompts != PAD).sum(axis=1)
        return prompts.astype(np.int64), lengths
    lengths = np.array([len(p) for p in prompts])
    if len(lengths) == 0 or lengths.min() == 0:
        raise ValueError("generate: need at least one prompt, each with at least one token")
    out = np.full((len(prompts), lengths.max()), PAD, dtype=np.int64)
    for b, p in enumerate(prompts):
        out[b, : len(p)] = p
    return out, lengths


def sample_from_logits(logits: np.ndarray, temperature: float, top_k: int | None,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one token per row. logits: (B, V) -> tokens (B,), log-probs (B,)

    The log-prob is under softmax(logits / temperature), the distribution ``token_logprobs``
    scores; with ``top_k`` the sampler draws from the renormalised top k only.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = logits * (1.0 / temperature)  # exactly as token_logprobs scales them
    logp = F.log_softmax_array(z, axis=-1)  # (B, V)
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k][:, None]  # (B, 1)
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    cdf = np.cumsum(p, axis=-1)  # (B, V)
    u = rng.random(len(p))[:, None] * cdf[:, -1:]  # (B, 1)
    tok = np.minimum((cdf <= u).sum(axis=-1), p.shape[-1] - 1)  # first index with cdf > u
    return tok, logp[np.arange(len(tok)), tok]


def generate(model: GPT, prompts: Sequence[Sequence[int]] | np.ndarray, max_new_tokens: int,
             temperature: float = 1.0, top_k: int | None = None,
             rng: np.random.Generator | None = None, use_cache: bool = True,
             eos_id: int | None = EOS) -> Generation:
    """Sample up to ``max_new_tokens`` response tokens after each prompt.

    prompts: B lists of token ids (each starting with BOS), or a right-padded (B, Tp) array.
    Returns a Generation with (B, max(Tp) + max_new_tokens) arrays, right-padded with PAD.
    A row stops at ``eos_id`` (GPT-2's is 50256; None: never stop early).

    Rows share one KV cache and advance one position per step. A row whose prompt is shorter
    than the longest simply starts generating earlier: while a row is still inside its prompt,
    its prompt token is fed instead of a sample, so every sequence stays contiguous
    (prompt, response, PAD) and no left padding or position shifting is needed.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    prompt_arr, lengths = _prompt_array(prompts)
    B = len(lengths)
    total = int(lengths.max()) + max_new_tokens
    if total > model.config.block_size:
        raise ValueError(f"generate: prompt ({lengths.max()}) + max_new_tokens ({max_new_tokens})"
                         f" exceeds the model's block_size {model.config.block_size}")
    tokens = np.full((B, total), PAD, dtype=np.int64)
    tokens[:, : prompt_arr.shape[1]] = prompt_arr
    mask = np.zeros((B, total), np.float32)
    logprobs = np.zeros((B, total), np.float32)
    done = np.zeros(B, bool)  # emitted EOS
    start = int(lengths.min())
    was_training = model.training
    model.eval()
    with no_grad():
        cache = KVCache(model.config, B, model.wte.weight.dtype) if use_cache else None
        logits = model(tokens[:, :start], cache).data[:, -1]  # (B, V)
        for t in range(start, total):
            generating = (t >= lengths) & ~done & (t < lengths + max_new_tokens)  # (B,)
            if not generating.any() and t >= lengths.max():
                break
            tok, lp = sample_from_logits(logits, temperature, top_k, rng)
            tokens[generating, t] = tok[generating]
            logprobs[generating, t] = lp[generating]
            mask[generating, t] = 1.0
            done |= generating & (tok == eos_id)
            if t + 1 < total:  # with the cache, one decode step (GPT.decode, no graph)
                logits = (model.decode(tokens[:, t], cache) if cache is not None
                          else model(tokens[:, : t + 1]).data[:, -1])  # (B, V)
    model.train(was_training)
    return Generation(tokens, mask, logprobs, lengths, done)


@dataclass
class Rollout:
    """Sampled responses to text prompts: the token arrays and the decoded text."""

    generation: Generation  # tokens, response_mask, logprobs: (B, T); finished: (B,)
    texts: list[str]  # each response decoded, without its EOS
    finished: list[bool]  # the response ended with EOS within the budget

    def marked(self) -> list[str]:
        """Each response with a trailing '~' when it never finished, so that an unfinished
        response can never be mistaken for a finished one in a printout."""
        return [t + ("" if f else "~") for t, f in zip(self.texts, self.finished, strict=True)]


def rollout(model: GPT, tokenizer: CharTokenizer, prompts: Sequence[str], max_new_tokens: int,
            rng: np.random.Generator, temperature: float = 1.0) -> Rollout:
    """Sample one response per prompt, all prompts in one batch. Prompts are encoded as
    BOS + text; the budget shrinks if the longest prompt leaves less room in the block."""
    ids = [tokenizer.encode(p, bos=True) for p in prompts]
    budget = min(max_new_tokens, model.config.block_size - max(len(i) for i in ids))
    g = generate(model, ids, budget, temperature=temperature, rng=rng)
    texts = [tokenizer.decode(r) for r in g.responses()]
    return Rollout(g, texts, [bool(f) for f in g.finished])


def generate_text(model: GPT, tokenizer: CharTokenizer, prompts: Sequence[str],
                  max_new_tokens: int, rng: np.random.Generator, temperature: float = 1.0,
                  batch_size: int = 128) -> list[tuple[str, bool]]:
    """Sample one response per prompt, ``batch_size`` prompts at a time: a list of
    (response text, finished with EOS)."""
    out: list[tuple[str, bool]] = []
    for i in range(0, len(prompts), batch_size):
        r = rollout(model, tokenizer, prompts[i:i + batch_size], max_new_tokens, rng,
                    temperature)
        out += list(zip(r.texts, r.finished, strict=True))
    return out
