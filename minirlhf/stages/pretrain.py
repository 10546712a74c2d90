"""Stage 1, pretraining: next-character prediction on the review corpus.

The corpus is one review per line. Each review becomes BOS, its characters, EOS, and the reviews
are laid end to end in one token stream. A batch is B windows of T + 1 tokens, each starting at
the BOS of a random review (so position 0 is always BOS, as it is when we sample, and every
position up to T is trained); the model predicts tokens 1..T from tokens 0..T-1. A target that
is BOS is not counted: BOS always follows EOS, so predicting it is free and would flatter the
loss.

Entry point: ``train_pretrain(config) -> PretrainResult``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from minirlhf.autograd import functional as F
from minirlhf.autograd.tensor import no_grad
from minirlhf.config import validate
from minirlhf.lm.checkpoint import save_model
from minirlhf.lm.model import GPT, PRESETS, GPTConfig
from minirlhf.lm.optim import AdamW, cosine_lr, decayed_parameter_names, optimizer_step
from minirlhf.lm.sampling import generate_text
from minirlhf.lm.tokenizer import BOS, CharTokenizer
from minirlhf.plots import plot_loss_curves
from minirlhf.world.reviews import is_grammatical

log = logging.getLogger("minirlhf.stages.pretrain")


@dataclass
class PretrainConfig:
    preset: str = "default"  # model size, a key of model.PRESETS
    corpus: str = "data/reviews.txt"  # one review per line
    out_dir: str = "runs/default/pretrain"  # where the checkpoint and plots go
    steps: int = 1500  # optimizer steps
    batch_size: int = 16  # windows per batch, B
    seq_len: int = 128  # tokens per window, T (at most the model's block_size)
    lr: float = 6e-3  # peak learning rate
    min_lr: float = 1e-4  # learning rate at the end of the cosine decay
    warmup_steps: int = 100  # linear warmup from 0 to lr
    weight_decay: float = 0.1  # AdamW decay, applied to Linear weights only
    grad_clip: float = 1.0  # max global gradient norm
    val_fraction: float = 0.05  # share of reviews held out for validation
    eval_every: int = 250  # steps between validation evaluations
    eval_windows: int = 256  # validation windows per evaluation (fixed across evaluations)
    n_samples: int = 200  # samples drawn at the end to measure the grammatical rate
    seed: int = 0  # seeds the model, the batches and the samples
    progress: bool = True  # show a tqdm bar


@dataclass
class PretrainResult:
    config: PretrainConfig
    checkpoint: str  # path of the saved model
    val_loss: float  # final validation loss, nats per token
    train_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, train loss)
    val_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, val loss)
    grammatical_rate: float = 0.0  # share of samples (from BOS alone) that parse
    samples: list[str] = field(default_factory=list)  # drawn after training
    samples_before: list[str] = field(default_factory=list)  # three drawn before training
    seconds: float = 0.0
    plot: str = ""


def load_corpus(path: str | Path, tokenizer: CharTokenizer) -> list[list[int]]:
    """Each line of the corpus as BOS + ids + EOS. A bad line is an error naming file and line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"corpus {path} not found (make it with: python "
                                "data/make_corpora.py)")
    docs = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            text = line.rstrip("\n")
            if not text:
                continue
            try:
                docs.append(tokenizer.encode(text, bos=True, eos=True))
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
    if not docs:
        raise ValueError(f"{path}: the corpus is empty")
    return docs


def _stream(docs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Documents end to end as one token stream, and the offset where each one starts."""
    lengths = np.array([len(d) for d in docs])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.concatenate([np.array(d) for d in docs]), starts


def _windows(stream: np.ndarray, starts: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (B, T) and targets (B, T) from windows of the token stream."""
    idx = starts[:, None] + np.arange(T + 1)[None, :]  # (B, T+1)
    chunk = stream[idx]
    return chunk[:, :-1], chunk[:, 1:]


def lm_loss(model: GPT, x: np.ndarray, y: np.ndarray):
    """Mean next-token cross-entropy, not counting BOS targets. x, y: (B, T) -> scalar Tensor"""
    return F.cross_entropy(model(x), y, mask=y != BOS)


def evaluate(model: GPT, stream: np.ndarray, starts: np.ndarray, T: int, batch: int) -> float:
    """Mean loss per counted token over fixed windows."""
    total, count = 0.0, 0
    with no_grad():
        for i in range(0, len(starts), batch):
            x, y = _windows(stream, starts[i:i + batch], T)
            n = float((y != BOS).sum())
            total += lm_loss(model, x, y).item() * n
            count += n
    return total / max(count, 1.0)


def sample_texts(model: GPT, tokenizer: CharTokenizer, n: int, rng: np.random.Generator,
                 prompt: str = "", max_new_tokens: int = 120) -> list[str]:
    """``n`` samples after BOS + prompt; a sample without EOS is returned with a trailing '~'
    so it can never be mistaken for a finished review."""
    samples = generate_text(model, tokenizer, [prompt] * n, max_new_tokens, rng)
    return [prompt + text + ("" if finished else "~") for text, finished in samples]


def train_pretrain(config: PretrainConfig) -> PretrainResult:
    """Pretrain a GPT on the corpus; save checkpoint and loss plot; measure samples."""
    validate(config)
    if config.preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {config.preset!r}")
    t0 = time.time()
    tokenizer = CharTokenizer()
    docs = load_corpus(config.corpus, tokenizer)
    n_val = max(1, int(len(docs) * config.val_fraction))
    train_stream, train_starts = _stream(docs[:-n_val])
    val_stream, val_doc_starts = _stream(docs[-n_val:])
    model_cfg = GPTConfig(vocab_size=tokenizer.vocab_size, seed=config.seed,
                          **PRESETS[config.preset])
    T = config.seq_len
    if T > model_cfg.block_size:
        raise ValueError(f"seq_len {T} exceeds the {config.preset} preset's block_size "
                         f"{model_cfg.block_size}")
    train_starts = train_starts[train_starts + T + 1 <= len(train_stream)]
    val_doc_starts = val_doc_starts[val_doc_starts + T + 1 <= len(val_stream)]
    if len(train_starts) == 0 or len(val_doc_starts) == 0:
        raise ValueError(f"corpus {config.corpus} is too small for seq_len {T}")
    model = GPT(model_cfg)
    log.info("model %s: %d parameters; corpus %d train / %d val tokens", config.preset,
             model.num_parameters(), len(train_stream), len(val_stream))
    opt = AdamW(model.named_parameters(), lr=config.lr, weight_decay=config.weight_decay,
                decay=decayed_parameter_names(model))
    rng = np.random.default_rng(config.seed)
    val_rng = np.random.default_rng(config.seed + 1)
    val_starts = val_rng.choice(val_doc_starts, size=config.eval_windows)

    result = PretrainResult(config=config, checkpoint="", val_loss=float("nan"))
    sample_rng = np.random.default_rng(config.seed + 2)
    result.samples_before = sample_texts(model, tokenizer, 3, sample_rng, max_new_tokens=60)
    bar = tqdm(range(config.steps), desc="pretrain", disable=not config.progress)
    for step in bar:
        lr = cosine_lr(step, config.steps, config.lr, config.warmup_steps, config.min_lr)
        opt.lr = lr
        starts = rng.choice(train_starts, size=config.batch_size)
        x, y = _windows(train_stream, starts, T)
        loss = lm_loss(model, x, y)
        value = optimizer_step(opt, loss, model.parameters(), config.grad_clip,
                               f"pretrain: step {step}")
        result.train_curve.append((step, value))
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            val = evaluate(model, val_stream, val_starts, T, config.batch_size)
            result.val_curve.append((step + 1, val))
            bar.set_postfix(loss=f"{value:.3f}", val=f"{val:.3f}")
            log.info("step %d: train %.4f, val %.4f, lr %.2e", step + 1, value, val, lr)
    result.val_loss = result.val_curve[-1][1]

    out = Path(config.out_dir)
    result.checkpoint = str(out / "model.npz")
    save_model(result.checkpoint, model, tokenizer,
               extra={"stage": "pretrain", "config": asdict(config), "val_loss": result.val_loss})
    result.samples = sample_texts(model, tokenizer, config.n_samples, sample_rng)
    result.grammatical_rate = float(np.mean([is_grammatical(s) for s in result.samples]))
    result.plot = str(plot_loss_curves(out / "loss.png", result.train_curve, result.val_curve,
                                       title=f"pretraining ({config.preset})"))
    result.seconds = time.time() - t0
    return result
