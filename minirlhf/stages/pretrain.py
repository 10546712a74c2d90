"""Stage 1, pretraining: next-character prediction on a task's corpus (the reviews, by default).

The corpus is one document per line. Each document becomes BOS, its characters, EOS, and the reviews
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

from minirlhf.autograd.tensor import no_grad
from minirlhf.config import (
    ConfigError,
    InputError,
    Stage,
    StageConfig,
    command_hint,
    missing_input,
    run_path,
    setting,
)
from minirlhf.lm.checkpoint import held_writes, save_model
from minirlhf.lm.model import GPT, PRESETS, GPTConfig
from minirlhf.lm.optim import AdamW, cosine_lr, decayed_parameter_names, optimizer_step
from minirlhf.lm.sampling import generate_text
from minirlhf.lm.tokenizer import BOS, CharTokenizer
from minirlhf.objectives.sft import lm_loss
from minirlhf.plots import plot_loss_curves
from minirlhf.streams import stream
from minirlhf.world import CORPUS_NAMES, TASK_NAMES, corpus_path, get_task

log = logging.getLogger("minirlhf.stages.pretrain")


@dataclass
class PretrainConfig(StageConfig):
    preset: str = setting("default", "model size, a key of lm.model.PRESETS", choices=PRESETS)
    task: str = setting("reviews", "the world whose grammar judges the samples",
                        choices=TASK_NAMES)
    corpus: str = setting("reviews", "the corpus: a shipped one by name (reviews, arithmetic, "
                          "scratchpad) or the path of a text file, one document per line")
    out_dir: str = setting(run_path("pretrain"), "where the checkpoint and plots go")
    steps: int = setting(1500, "optimizer steps", "[1, 1_000_000]")
    batch_size: int = setting(16, "windows per batch, B", "[1, 4096]")
    seq_len: int = setting(128, "tokens per window, T (at most the model's block_size)", "[1, inf)")
    lr: float = setting(6e-3, "peak learning rate", "(0, inf)")
    min_lr: float = setting(1e-4, "learning rate at the end of the cosine decay", "[0, inf)")
    warmup_steps: int = setting(100, "linear warmup from 0 to lr", "[0, 1_000_000]")
    weight_decay: float = setting(0.1, "AdamW decay, applied to Linear weights only", "[0, inf)")
    grad_clip: float = setting(1.0, "max global gradient norm", "[0, inf)")
    val_fraction: float = setting(0.05, "share of reviews held out for validation", "(0, 1)")
    eval_every: int = setting(250, "steps between validation evaluations", "[1, inf)")
    eval_windows: int = setting(
        256, "validation windows per evaluation (fixed across evaluations)", "[1, 100_000]")
    n_samples: int = setting(
        200, "samples drawn at the end to measure the grammatical rate", "[1, 100_000]")

    def check(self, upstream: dict | None = None) -> None:
        """Every setting in its range, windows that fit the model, and a corpus that is there
        (it is an input no stage makes)."""
        super().check(upstream)
        if self.min_lr > self.lr:
            raise ConfigError(f"PretrainConfig: min_lr = {self.min_lr} is above lr = {self.lr}; "
                              "the cosine decays from lr down to min_lr: set min_lr too (e.g. "
                              f"min_lr={self.lr / 10:g})")
        if not corpus_path(self.corpus).exists():
            raise missing_corpus(self.corpus)
        block = PRESETS[self.preset]["block_size"]
        if self.seq_len > block:
            raise ConfigError(f"PretrainConfig: seq_len = {self.seq_len} exceeds the "
                              f"{self.preset} preset's block_size {block}; allowed range "
                              f"[1, {block}]")


@dataclass
class PretrainResult:
    config: PretrainConfig
    checkpoint: str  # path of the saved model
    val_loss: float  # final validation loss, nats per token
    train_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, train loss)
    val_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, val loss)
    grammatical_rate: float = 0.0  # share of samples (from BOS alone) the task's grammar parses
    samples: list[str] = field(default_factory=list)  # drawn after training
    samples_before: list[str] = field(default_factory=list)  # three drawn before training
    seconds: float = 0.0
    plot: str = ""


def missing_corpus(corpus: str | Path) -> FileNotFoundError:
    """A corpus (a setting: a shipped one's name, or a file) that is not there: a shipped one
    is made again by data/make_corpora.py (the command, when the script is beside the
    package); a file of the user's is theirs to give."""
    path = corpus_path(corpus)
    script = Path(__file__).resolve().parents[2] / "data" / "make_corpora.py"
    if str(corpus) in CORPUS_NAMES and script.exists():
        return missing_input("corpus", path,
                             f"make it with {command_hint(['python', str(script)])}")
    return FileNotFoundError(f"{missing_input('corpus', path)}: give a text file, one document "
                             f"per line, or a shipped corpus by name ({', '.join(CORPUS_NAMES)})")


def load_corpus(path: str | Path, tokenizer: CharTokenizer) -> list[list[int]]:
    """Each line of the corpus (a file, or a shipped corpus by name) as BOS + ids + EOS. A bad
    line is an error naming file and line."""
    corpus, path = path, corpus_path(path)
    if not path.exists():
        raise missing_corpus(corpus)
    docs = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8").rstrip("\n")
            except UnicodeDecodeError as e:
                raise InputError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte "
                                 f"{e.start})") from None
            if not text:
                continue
            try:
                docs.append(tokenizer.encode(text, bos=True, eos=True))
            except ValueError as e:
                raise InputError(f"{path}:{lineno}: {e}") from None
    if not docs:
        raise InputError(f"{path}: the corpus is empty")
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


@held_writes()
def train_pretrain(config: PretrainConfig) -> PretrainResult:
    """Pretrain a GPT on the corpus; save checkpoint and loss plot; measure samples."""
    STAGE.begin(config)
    t0 = time.time()
    tokenizer = CharTokenizer()
    docs = load_corpus(config.corpus, tokenizer)
    n_val = max(1, int(len(docs) * config.val_fraction))
    if len(docs) <= n_val:
        raise InputError(f"corpus {corpus_path(config.corpus)} has {len(docs)} document(s): it "
                         "needs at least two, one to train on and one held out for validation")
    train_stream, train_starts = _stream(docs[:-n_val])
    val_stream, val_doc_starts = _stream(docs[-n_val:])
    model_cfg = GPTConfig(vocab_size=tokenizer.vocab_size, seed=config.seed,
                          **PRESETS[config.preset])
    T = config.seq_len
    train_starts = train_starts[train_starts + T + 1 <= len(train_stream)]
    val_doc_starts = val_doc_starts[val_doc_starts + T + 1 <= len(val_stream)]
    if len(train_starts) == 0 or len(val_doc_starts) == 0:
        most = min(len(train_stream), len(val_stream)) - 1  # the longest window that fits both
        raise InputError(f"corpus {corpus_path(config.corpus)} is too small for seq_len {T}: "
                         + (f"set seq_len={most} or less, or give a larger corpus" if most >= 1
                            else "give a larger corpus"))
    model = GPT(model_cfg)
    log.info("model %s: %d parameters; corpus %d train / %d val tokens", config.preset,
             model.num_parameters(), len(train_stream), len(val_stream))
    opt = AdamW(model.named_parameters(), lr=config.lr, weight_decay=config.weight_decay,
                decay=decayed_parameter_names(model))
    rng = stream(config.seed, "train")
    val_rng = stream(config.seed, "validation")
    val_starts = val_rng.choice(val_doc_starts, size=config.eval_windows)

    result = PretrainResult(config=config, checkpoint="", val_loss=float("nan"))
    sample_rng = stream(config.seed, "samples")
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
    well_formed = get_task(config.task).well_formed
    result.grammatical_rate = float(np.mean([well_formed(s) for s in result.samples]))
    result.plot = str(plot_loss_curves(out / "loss.png", result.train_curve, result.val_curve,
                                       title=f"pretraining ({config.preset})"))
    result.seconds = time.time() - t0
    return result


# ------------------------------------------------------------------ the stage's record
def record(r: PretrainResult, config: PretrainConfig) -> dict:
    """What the pipeline keeps of a run (its record's numbers)."""
    return {"val_loss": r.val_loss, "grammatical_rate": r.grammatical_rate, "plot": r.plot,
            "before": r.samples_before[:3], "after": r.samples[:3]}


def show(r: PretrainResult, config: PretrainConfig) -> str:
    """What ``python -m minirlhf pretrain`` prints after training."""
    lines = ["samples before training (from BOS):"] + [f"    {s}" for s in r.samples_before]
    lines += ["samples after training (from BOS):"] + [f"    {s}" for s in r.samples[:8]]
    lines += [f"\nvalidation loss {r.val_loss:.4f} nats/token; grammatical samples "
              f"{r.grammatical_rate:.1%} of {len(r.samples)}; {r.seconds:.0f} s",
              f"checkpoint: {r.checkpoint}\nloss curve: {r.plot}"]
    return "\n".join(lines)


STAGE = Stage(
    name="pretrain", title="pretraining", help="pretrain the GPT on the review corpus",
    config=PretrainConfig, run=train_pretrain, record=record, show=show,
    summary=lambda n: {"pretrain": {k: n[k] for k in ("val_loss", "grammatical_rate")}},
    presets={"tiny": dict(preset="tiny", steps=600, eval_every=300, eval_windows=32,
                          n_samples=32)},
    work=lambda c, _: c.steps * c.batch_size * c.seq_len,  # tokens trained on
    seconds={"tiny": 12.0, "default": 118.0},  # on the reference 2-core laptop
)
