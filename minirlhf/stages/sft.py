"""Stage 2, supervised fine-tuning: imitate demonstrations, learning from response tokens only.

A demonstration is a prompt and a demonstrator's response. The model reads
BOS + prompt + response + EOS and is trained to predict the response tokens and the EOS; the
prompt's tokens are context, not targets, so they contribute exactly zero to the loss and its
gradient:

    L = - sum_{t in response} log pi(x_t | x_<t) / (number of response tokens)

computed with ``sampling.token_logprobs``, the same function PPO and DPO use.

Entry point: ``train_sft(config) -> SFTResult``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from minirlhf.autograd.tensor import Tensor
from minirlhf.config import validate
from minirlhf.evaluation import PolicyEval, evaluate_policy
from minirlhf.lm.checkpoint import load_model, save_model
from minirlhf.lm.model import GPT
from minirlhf.lm.optim import AdamW, cosine_lr, decayed_parameter_names, optimizer_step
from minirlhf.lm.sequences import encode_pairs, token_logprobs
from minirlhf.plots import plot_loss_curves
from minirlhf.world import get_task

log = logging.getLogger("minirlhf.stages.sft")


def sft_loss(model: GPT, tokens: np.ndarray, response_mask: np.ndarray) -> Tensor:
    """Mean negative log-likelihood of the response tokens. tokens, mask: (B, T) -> scalar"""
    ### BEGIN SOLUTION
    logp = token_logprobs(model, tokens, response_mask)  # (B, T), 0 off the response
    return -logp.sum() * (1.0 / max(float(response_mask.sum()), 1.0))
    ### END SOLUTION


@dataclass
class SFTConfig:
    task: str = "reviews"  # which world: reviews or arithmetic
    init: str = "runs/default/pretrain/model.npz"  # the pretrained checkpoint to start from
    out_dir: str = "runs/default/sft"  # where the checkpoint and plot go
    n_demos: int = 4000  # demonstrations drawn from the task's demonstrator
    steps: int = 300  # optimizer steps
    batch_size: int = 32  # demonstrations per step
    lr: float = 1e-3  # peak learning rate
    warmup_steps: int = 20  # linear warmup
    weight_decay: float = 0.0  # AdamW decay on Linear weights
    grad_clip: float = 1.0  # max global gradient norm
    eval_samples_per_prompt: int = 4  # samples per evaluation prompt, before and after
    max_new_tokens: int = 80  # response budget when sampling
    seed: int = 0  # seeds demonstrations, batches and samples
    progress: bool = True  # show a tqdm bar


@dataclass
class SFTResult:
    config: SFTConfig
    checkpoint: str
    before: PolicyEval
    after: PolicyEval
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    plot: str = ""


def train_sft(config: SFTConfig) -> SFTResult:
    """Fine-tune the pretrained model on demonstrations; evaluate with gold before and after."""
    validate(config)
    t0 = time.time()
    task = get_task(config.task)
    if not Path(config.init).exists():
        raise FileNotFoundError(f"SFT starts from {config.init}, which does not exist (make it "
                                "with: python -m minirlhf pretrain)")
    if config.batch_size > config.n_demos:
        raise ValueError(f"batch_size {config.batch_size} is larger than n_demos "
                         f"{config.n_demos}")
    model, tokenizer, _ = load_model(config.init)
    rng = np.random.default_rng(config.seed)
    prompts = task.sample_prompts(config.n_demos, rng)
    responses = [task.demonstration(p, rng) for p in prompts]
    longest = max(len(p) + len(r) + 2 for p, r in zip(prompts, responses, strict=True))
    if longest > model.config.block_size:
        raise ValueError(f"a demonstration of {longest} tokens does not fit the model's "
                         f"block_size {model.config.block_size}")

    eval_rng = np.random.default_rng(config.seed + 1)
    before = evaluate_policy(model, tokenizer, task, eval_rng, config.eval_samples_per_prompt,
                             config.max_new_tokens)
    log.info("before SFT: gold %.3f, valid %.1f%%, length %.1f", before.gold_mean,
             100 * before.valid_rate, before.mean_length)

    opt = AdamW(model.named_parameters(), lr=config.lr, weight_decay=config.weight_decay,
                decay=decayed_parameter_names(model))
    result = SFTResult(config=config, checkpoint="", before=before, after=before)
    for step in tqdm(range(config.steps), desc="sft", disable=not config.progress):
        opt.lr = cosine_lr(step, config.steps, config.lr, config.warmup_steps, config.lr * 0.1)
        idx = rng.choice(config.n_demos, size=config.batch_size, replace=False)
        tokens, mask = encode_pairs(tokenizer, [prompts[i] for i in idx],
                                    [responses[i] for i in idx])
        loss = sft_loss(model, tokens, mask)
        optimizer_step(opt, loss, model.parameters(), config.grad_clip, f"sft: step {step}")
        result.loss_curve.append((step, loss.item()))

    out = Path(config.out_dir)
    result.checkpoint = str(out / "model.npz")
    save_model(result.checkpoint, model, tokenizer,
               extra={"stage": "sft", "config": asdict(config)})
    eval_rng = np.random.default_rng(config.seed + 1)
    result.after = evaluate_policy(model, tokenizer, task, eval_rng,
                                   config.eval_samples_per_prompt, config.max_new_tokens)
    log.info("after SFT: gold %.3f, valid %.1f%%, length %.1f", result.after.gold_mean,
             100 * result.after.valid_rate, result.after.mean_length)
    result.plot = str(plot_loss_curves(out / "loss.png", result.loss_curve, [],
                                       title=f"SFT ({config.task})"))
    result.seconds = time.time() - t0
    return result
