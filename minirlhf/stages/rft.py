"""Rejection-sampling fine-tuning (expert iteration): sample, keep the best, fine-tune, repeat.

The simplest way to use a reward model (or a verifier) without RL (Anthony et al. 2017's expert
iteration; RAFT, Dong et al. 2023; Llama 2's rejection sampling): each round,

    1. rollout: sample n responses to each of P prompts from the current policy;
    2. score: the reward model's score of each (or the verifier's, on the scratchpad world);
    3. select: keep the best-scored finished response of each prompt;
    4. fine-tune: the SFT loss on the kept responses (response tokens only);
    5. evaluate: gold reward and KL to the SFT policy, after the round.

Best-of-n picks the best of n at *inference*; RFT distils that choice into the weights, round
after round. Does the selection help, or only the extra fine-tuning on the policy's own samples?
``select = random`` is the control: the same number of responses, one per prompt, chosen at
random instead of by score (``python -m minirlhf rft --set select=random``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from minirlhf.autograd.tensor import Tensor
from minirlhf.config import Stage, check_fits, run_path, setting
from minirlhf.evaluation import PolicyReport, finish_policy_stage, policy_numbers, policy_report
from minirlhf.lm.checkpoint import held_writes, load_model
from minirlhf.lm.model import GPT
from minirlhf.lm.reward_model import RewardModel
from minirlhf.lm.sampling import generate_text
from minirlhf.lm.sequences import encode_pairs
from minirlhf.lm.tokenizer import CharTokenizer
from minirlhf.objectives.sft import sft_loss
from minirlhf.plots import plot_reward_vs_kl
from minirlhf.streams import stream
from minirlhf.training import PolicySettings, Trainer, shuffled_chunks
from minirlhf.world import TASK_NAMES, Task, get_task

log = logging.getLogger("minirlhf.stages.rft")


@dataclass
class RFTConfig(PolicySettings):
    task: str = setting("reviews", "which world", choices=TASK_NAMES)
    init: str = setting(run_path("sft", "model.npz"),
                        "the SFT policy: the first round's sampler, and the reference for KL")
    reward: str = setting("reward_model", "what scores the samples: the reward model, or the "
                          "task's verifier, its gold reward (the scratchpad world's check of "
                          "the answer; in the reviews world, the hidden gold itself: an "
                          "oracle's upper bound)",
                          choices=("reward_model", "verifier"))
    reward_model: str = setting(run_path("reward", "model.npz"),
                                "the (normalised) reward model, when reward = reward_model")
    out_dir: str = setting(run_path("rft"), "where the checkpoint, metrics and plots go")
    select: str = setting("best", "best: keep each prompt's best-scored sample; random: one at "
                          "random (the control: same data size, no selection)",
                          choices=("best", "random"))
    rounds: int = setting(3, "sample-select-fine-tune rounds", "[1, 100]")
    prompts_per_round: int = setting(512, "P, prompts sampled per round", "[1, 100_000]")
    n: int = setting(8, "samples per prompt; the best of them is kept", "[1, 256]")
    epochs: int = setting(2, "passes over each round's kept samples", "[1, 100]")
    batch_size: int = setting(32, "kept samples per step", "[1, 4096]")
    lr: float = setting(1e-4, "learning rate (constant)", "(0, inf)")
    temperature: float = setting(1.0, "sampling temperature", "(0, inf)")


@dataclass
class RFTResult:
    config: RFTConfig
    checkpoint: str
    report: PolicyReport | None = None  # the final policy: gold, win-rate vs SFT, KL
    rounds: list[dict[str, float]] = field(default_factory=list)  # one row per round
    metrics: list[dict[str, float]] = field(default_factory=list)  # one row per step
    plot: str = ""
    seconds: float = 0.0


def sample_round(policy: GPT, tokenizer: CharTokenizer, task: Task, config: RFTConfig,
                 rng: np.random.Generator) -> tuple[list[str], list[str], list[bool]]:
    """Step 1: n samples of each of P prompts, each prompt's samples in a row. -> (P n,) lists"""
    prompts = [p for p in task.sample_prompts(config.prompts_per_round, rng)
               for _ in range(config.n)]
    done = generate_text(policy, tokenizer, prompts, config.max_new_tokens, rng,
                         config.temperature)
    return prompts, [t for t, _ in done], [f for _, f in done]


def score(rm: RewardModel | None, task: Task, prompts: list[str], texts: list[str],
          finished: list[bool]) -> np.ndarray:
    """Step 2: the reward model's normalised scores (or the verifier's 0/1). -> (P n,)"""
    if rm is None:
        return np.array([task.gold(p, t, f) for p, t, f in zip(prompts, texts, finished,
                                                                strict=True)], np.float64)
    return rm.score(prompts, texts, finished)


def select(scores: np.ndarray, finished: list[bool], n: int, how: str,
           rng: np.random.Generator) -> np.ndarray:
    """Step 3: one index per prompt whose samples include a finished one: the best-scored
    finished sample (``best``) or a random finished one (``random``). scores: (P n,)
    -> kept indices (<= P,)"""
    ok = np.asarray(finished, bool).reshape(-1, n)  # (P, n)
    s = np.where(ok, scores.reshape(-1, n), -np.inf)  # unfinished samples never win
    rows = np.flatnonzero(ok.any(axis=1))
    if how == "best":
        cols = s[rows].argmax(axis=1)
    else:  # uniformly among the finished samples of each prompt
        cols = np.array([rng.choice(np.flatnonzero(ok[r])) for r in rows], dtype=np.int64)
    return rows * n + cols


def fine_tune(trainer: Trainer, tokenizer: CharTokenizer, prompts: list[str], texts: list[str],
              config: RFTConfig, rng: np.random.Generator) -> None:
    """Step 4: the SFT loss (mean NLL of the response tokens, EOS included) on the kept
    samples, ``epochs`` passes in random order, at a constant learning rate."""
    def loss(idx: np.ndarray) -> tuple[Tensor, dict[str, float]]:
        tokens, mask = encode_pairs(tokenizer, [prompts[k] for k in idx], [texts[k] for k in idx])
        return sft_loss(trainer.model, tokens, mask), {}

    trainer.epochs(shuffled_chunks(len(prompts), config.batch_size), loss, rng)


@held_writes()
def train_rft(config: RFTConfig) -> RFTResult:
    """Rejection-sampling fine-tuning from the SFT policy: ``rounds`` of sampling n per prompt,
    keeping the best by the reward model (or a random one: the control), and fine-tuning."""
    STAGE.begin(config)
    t0 = time.time()
    task = get_task(config.task)
    rng = stream(config.seed, "train")
    policy, tokenizer, _ = load_model(config.init)
    reference, _, _ = load_model(config.init)
    rm = RewardModel.load(config.reward_model) if config.reward == "reward_model" else None
    trainer = Trainer("rft", policy, config, schedule="constant", bar=False)
    result = RFTResult(config=config, checkpoint="")
    for k in tqdm(range(config.rounds), desc="rft", disable=not config.progress):
        # 1. rollout, 2. score, 3. select
        prompts, texts, finished = sample_round(policy, tokenizer, task, config, rng)
        scores = score(rm, task, prompts, texts, finished)
        kept = select(scores, finished, config.n, config.select, rng)
        check_fits(config, None, len(kept), f"round {k + 1} kept none of its "
                   f"{config.prompts_per_round} prompts: not one of their {config.n} samples "
                   f"finished within max_new_tokens = {config.max_new_tokens}")
        kept_prompts, kept_texts = [prompts[i] for i in kept], [texts[i] for i in kept]
        # 4. fine-tune on the kept samples
        fine_tune(trainer, tokenizer, kept_prompts, kept_texts, config, rng)
        # 5. evaluate (gold is measured for the log only: training never sees it)
        rep = policy_report(policy, reference, tokenizer, task, config.seed,
                            config.eval_samples_per_prompt, config.max_new_tokens)
        row = {"round": k + 1, "kept": len(kept), "score_kept": float(scores[kept].mean()),
               "score_all": float(scores[np.asarray(finished)].mean()),
               "gold_kept": float(np.mean([task.gold(p, t, True) for p, t in
                                           zip(kept_prompts, kept_texts, strict=True)])),
               "gold": rep.gold, "kl": rep.kl, "win_rate": rep.win_rate,
               "valid_rate": rep.valid_rate, "seconds": time.time() - t0}
        result.rounds.append(row)
        log.info("rft round %d: kept %d, their score %.3f (all %.3f), gold %.3f, KL %.2f",
                 k + 1, row["kept"], row["score_kept"], row["score_all"], rep.gold, rep.kl)
    result.metrics = trainer.close()
    out = Path(config.out_dir)
    result.checkpoint, result.report = finish_policy_stage(
        "rft", out, config, policy, reference, tokenizer, task, result.metrics, config.seed,
        config.eval_samples_per_prompt, config.max_new_tokens)
    sft_gold = result.report.reference_gold
    result.plot = str(plot_reward_vs_kl(
        out / "reward_vs_kl.png",
        {f"RFT ({config.select})": {"kl": [0.0] + [r["kl"] for r in result.rounds],
                                    "gold": [sft_gold] + [r["gold"] for r in result.rounds],
                                    "labels": ["SFT"] + [f"round {r['round']}"
                                                         for r in result.rounds]}},
        title="Rejection-sampling fine-tuning: gold reward against KL, round by round"))
    result.seconds = time.time() - t0
    return result


def record(r: RFTResult, config: RFTConfig) -> dict:
    """What a run keeps (its record's numbers)."""
    return {**policy_numbers(r.report, config.eval_samples_per_prompt), "rounds": r.rounds,
            "plot": r.plot}


def show(r: RFTResult, config: RFTConfig) -> str:
    """What ``python -m minirlhf rft`` prints after training."""
    lines = [f"{'round':>5} {'kept':>6} {'score kept':>11} {'score all':>10} {'gold kept':>10} "
             f"{'gold':>7} {'KL':>6} {'win-rate':>9}"]
    for row in r.rounds:
        lines.append(f"{row['round']:>5} {row['kept']:>6} {row['score_kept']:>11.3f} "
                     f"{row['score_all']:>10.3f} {row['gold_kept']:>10.3f} {row['gold']:>7.3f} "
                     f"{row['kl']:>6.2f} {row['win_rate']:>9.1%}")
    return ("\n".join(lines) + "\n"
            + r.report.describe(f"RFT ({config.select})", config.eval_samples_per_prompt)
            + f"\n{r.seconds:.0f} s; checkpoint: {r.checkpoint}; plot: {r.plot}")


STAGE = Stage(
    name="rft", title="RFT", help="rejection-sampling fine-tuning: keep the best of n, "
    "fine-tune, repeat", config=RFTConfig, run=train_rft, record=record, show=show, policy=True,
    inputs={"init": "sft", "reward_model": "reward"},
    unused=lambda c: ("reward_model",) if c.reward == "verifier" else (),
    presets={"tiny": dict(rounds=2, prompts_per_round=32, n=4, eval_samples_per_prompt=1,
                          max_new_tokens=60)},
)
