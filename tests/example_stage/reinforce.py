"""REINFORCE with a batch-mean baseline, as a stage: this file in minirlhf/stages/ and one line
in minirlhf/registry.py put it in the pipeline, the command line, summary.json and the report.

    loss = -mean_b (r_b - mean_b' r_b') log pi(y_b | x_b),  r = the reward model's score
"""

from dataclasses import dataclass

import numpy as np

from minirlhf.config import Stage, StageConfig, require_inputs, run_path, setting
from minirlhf.evaluation import PolicyReport, finish_policy_stage, policy_numbers
from minirlhf.lm.checkpoint import load_model
from minirlhf.lm.optim import AdamW, optimizer_step
from minirlhf.lm.reward_model import RewardModel
from minirlhf.lm.sampling import rollout
from minirlhf.lm.sequences import sequence_logps
from minirlhf.streams import stream
from minirlhf.world import get_task


@dataclass
class ReinforceConfig(StageConfig):
    init: str = setting(run_path("sft", "model.npz"), "the SFT policy: start and reference")
    reward_model: str = setting(run_path("reward", "model.npz"), "the proxy reward")
    out_dir: str = setting(run_path("reinforce"), "where the checkpoint and summary go")
    iterations: int = setting(4, "rollout + update rounds", "[1, inf)")
    batch_size: int = setting(16, "prompts per iteration", "[2, inf)")
    lr: float = setting(1e-5, "learning rate", "(0, inf)")


@dataclass
class ReinforceResult:
    checkpoint: str
    report: PolicyReport


def train_reinforce(config: ReinforceConfig) -> ReinforceResult:
    """REINFORCE against the reward model, the batch's mean score as the baseline."""
    config.check()
    require_inputs(config, STAGE.inputs)
    task, rng = get_task("reviews"), stream(config.seed, "train")
    policy, tokenizer, _ = load_model(config.init)
    reference, _, _ = load_model(config.init)
    rm = RewardModel.load(config.reward_model)
    opt = AdamW(policy.named_parameters(), lr=config.lr)
    for it in range(config.iterations):
        prompts = task.sample_prompts(config.batch_size, rng)  # 1. rollout
        r = rollout(policy, tokenizer, prompts, 60, rng)
        scores = rm.score(prompts, r.texts, r.finished)  # 2. score
        adv = (scores - scores.mean()).astype(np.float32)  # 4. advantages: batch-mean baseline
        logp = sequence_logps(policy, r.generation.tokens, r.generation.response_mask)  # (B,)
        optimizer_step(opt, -(logp * adv).mean(), policy.parameters(), 1.0, f"reinforce {it}")
    checkpoint, report = finish_policy_stage("reinforce", config.out_dir, config, policy,
                                             reference, tokenizer, task, [], config.seed, 1, 60)
    return ReinforceResult(checkpoint, report)


STAGE = Stage(name="reinforce", title="REINFORCE", help="REINFORCE with a batch-mean baseline",
              config=ReinforceConfig, run=train_reinforce, policy=True,
              record=lambda r, c: policy_numbers(r.report, 1),
              show=lambda r, c: r.report.describe("REINFORCE", 1),
              inputs={"init": "sft", "reward_model": "reward"})
