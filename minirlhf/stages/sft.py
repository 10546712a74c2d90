"""Stage 2, supervised fine-tuning: imitate demonstrations, learning from response tokens only.

A demonstration is a prompt and a demonstrator's response. The model reads
BOS + prompt + response + EOS and is trained to predict the response tokens and the EOS; the
prompt's tokens are context, not targets, so they contribute exactly zero to the loss and its
gradient:

    L = - sum_{t in response} log pi(x_t | x_<t) / (number of response tokens)

The loss is ``objectives.sft.sft_loss``, computed with ``lm.sequences.token_logprobs``, the same
function PPO and DPO use.

Entry point: ``train_sft(config) -> SFTResult``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from minirlhf.autograd.tensor import Tensor
from minirlhf.config import Stage, check_fits, run_path, setting
from minirlhf.evaluation import PolicyEval, evaluate_policy, sample_table
from minirlhf.lm.checkpoint import held_writes, load_model, save_model
from minirlhf.lm.optim import AdamW, decayed_parameter_names
from minirlhf.lm.sequences import encode_pairs
from minirlhf.objectives.sft import sft_loss
from minirlhf.plots import plot_loss_curves
from minirlhf.streams import stream
from minirlhf.training import PolicySettings, Trainer, in_order
from minirlhf.world import TASK_NAMES, get_task

log = logging.getLogger("minirlhf.stages.sft")


@dataclass
class SFTConfig(PolicySettings):
    task: str = setting(
        "reviews", "which world: reviews or arithmetic", choices=TASK_NAMES)
    init: str = setting(
        run_path("pretrain", "model.npz"), "the pretrained checkpoint to start from")
    out_dir: str = setting(run_path("sft"), "where the checkpoint and plot go")
    n_demos: int = setting(
        4000, "demonstrations drawn from the task's demonstrator", "[1, 10_000_000]")
    steps: int = setting(300, "optimizer steps", "[1, 1_000_000]")
    batch_size: int = setting(32, "demonstrations per step", "[1, 4096]")
    warmup_steps: int = setting(20, "linear warmup of the learning rate, in steps",
                                "[0, 1_000_000]")
    weight_decay: float = setting(0.0, "AdamW decay on Linear weights", "[0, inf)")
    lr: float = 1e-3
    eval_samples_per_prompt: int = setting(
        4, "samples per evaluation prompt, before and after", "[1, 1000]")

    def check(self, upstream: dict | None = None) -> None:
        """Every setting in its range; a batch the demonstrations can fill."""
        super().check(upstream)
        check_fits(self, "batch_size", self.n_demos, f"the {self.n_demos} demonstrations")


@dataclass
class SFTResult:
    config: SFTConfig
    checkpoint: str
    before: PolicyEval
    after: PolicyEval
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    plot: str = ""


@held_writes()
def train_sft(config: SFTConfig) -> SFTResult:
    """Fine-tune the pretrained model on demonstrations; evaluate with gold before and after."""
    STAGE.begin(config)
    t0 = time.time()
    task = get_task(config.task)
    model, tokenizer, _ = load_model(config.init)
    rng = stream(config.seed, "train")
    prompts = task.sample_prompts(config.n_demos, rng)
    responses = [task.demonstration(p, rng) for p in prompts]
    longest = max(len(p) + len(r) + 2 for p, r in zip(prompts, responses, strict=True))
    if longest > model.config.block_size:
        raise ValueError(f"a demonstration of {longest} tokens does not fit the model's "
                         f"block_size {model.config.block_size}")

    eval_rng = stream(config.seed, "eval")
    before = evaluate_policy(model, tokenizer, task, eval_rng, config.eval_samples_per_prompt,
                             config.max_new_tokens)
    log.info("before SFT: gold %.3f, valid %.1f%%, length %.1f", before.gold_mean,
             100 * before.valid_rate, before.mean_length)

    opt = AdamW(model.named_parameters(), lr=config.lr, weight_decay=config.weight_decay,
                decay=decayed_parameter_names(model))
    result = SFTResult(config=config, checkpoint="", before=before, after=before)
    batches = [rng.choice(config.n_demos, size=config.batch_size, replace=False)
               for _ in range(config.steps)]  # steps batches, each drawn without replacement

    def loss(idx: np.ndarray) -> tuple[Tensor, dict[str, float]]:
        tokens, mask = encode_pairs(tokenizer, [prompts[i] for i in idx],
                                    [responses[i] for i in idx])
        return sft_loss(model, tokens, mask), {}

    trainer = Trainer("sft", model, config, config.steps, optimizer=opt)
    trainer.epochs(in_order(batches), loss, rng, passes=1)
    result.loss_curve = [(m["step"] - 1, m["loss"]) for m in trainer.close()]

    out = Path(config.out_dir)
    result.checkpoint = str(out / "model.npz")
    save_model(result.checkpoint, model, tokenizer,
               extra={"stage": "sft", "config": asdict(config)})
    eval_rng = stream(config.seed, "eval")  # the same prompts and draws as before SFT
    result.after = evaluate_policy(model, tokenizer, task, eval_rng,
                                   config.eval_samples_per_prompt, config.max_new_tokens)
    log.info("after SFT: gold %.3f, valid %.1f%%, length %.1f", result.after.gold_mean,
             100 * result.after.valid_rate, result.after.mean_length)
    result.plot = str(plot_loss_curves(out / "loss.png", result.loss_curve, [],
                                       title=f"SFT ({config.task})"))
    result.seconds = time.time() - t0
    return result


# ------------------------------------------------------------------ the stage's record
def record(r: SFTResult, config: SFTConfig) -> dict:
    """What the pipeline keeps of a run (its record's numbers)."""
    step = config.eval_samples_per_prompt
    return {"gold_before": r.before.gold_mean, "gold_after": r.after.gold_mean,
            "valid_after": r.after.valid_rate, "plot": r.plot,
            "before": [f"{p}|{t}" for p, t, _ in r.before.samples[::step][:3]],
            "after": [f"{p}|{t}" for p, t, _ in r.after.samples[::step][:3]]}


def show(r: SFTResult, config: SFTConfig) -> str:
    """What ``python -m minirlhf sft`` prints after training."""
    step = config.eval_samples_per_prompt
    lines = ["samples before SFT ('|' marks where the prompt ends; '~' an unfinished response):",
             sample_table(r.before.samples[::step]), "samples after SFT:",
             sample_table(r.after.samples[::step]),
             f"\n{'':<8}{'gold reward':>12}{'valid':>8}{'length':>8}"]
    for name, e in (("before", r.before), ("after", r.after)):
        lines.append(f"{name:<8}{e.gold_mean:>12.3f}{e.valid_rate:>8.1%}{e.mean_length:>8.1f}")
    lines.append(f"\n{r.seconds:.0f} s; checkpoint: {r.checkpoint}; loss curve: {r.plot}")
    return "\n".join(lines)


STAGE = Stage(
    name="sft", title="SFT", help="supervised fine-tuning on demonstrations", config=SFTConfig,
    run=train_sft, record=record, show=show, inputs={"init": "pretrain"},
    presets={"tiny": dict(n_demos=1000, steps=100, eval_samples_per_prompt=1,
                          max_new_tokens=60)},
    work=lambda c, _: c.steps * c.batch_size,  # demonstrations trained on
    seconds={"tiny": 2.8, "default": 27.7},  # on the reference 2-core laptop
)
