"""REINFORCE with a batch-mean baseline, as a stage: this file in minirlhf/stages/, its objective
in minirlhf/objectives/reinforce.py and one line in minirlhf/registry.py put it in the pipeline,
the command line, summary.json and the report."""

from dataclasses import dataclass

from minirlhf.config import Stage, run_path, setting
from minirlhf.evaluation import PolicyReport, finish_policy_stage, policy_numbers
from minirlhf.lm.checkpoint import held_writes, load_model
from minirlhf.lm.optim import AdamW, optimizer_step
from minirlhf.lm.reward_model import RewardModel
from minirlhf.lm.sampling import rollout
from minirlhf.lm.sequences import sequence_logps
from minirlhf.objectives.reinforce import reinforce_loss
from minirlhf.streams import stream
from minirlhf.training import PolicySettings
from minirlhf.world import get_task


@dataclass
class ReinforceConfig(PolicySettings):
    init: str = setting(run_path("sft", "model.npz"), "the SFT policy: start and reference")
    reward_model: str = setting(run_path("reward", "model.npz"), "the proxy reward")
    out_dir: str = setting(run_path("reinforce"), "where the checkpoint and summary go")
    iterations: int = setting(4, "rollout + update rounds", "[1, inf)")
    batch_size: int = setting(16, "prompts per iteration", "[2, inf)")
    lr: float = 1e-5
    max_new_tokens: int = 60
    eval_samples_per_prompt: int = 1


@dataclass
class ReinforceResult:
    checkpoint: str
    report: PolicyReport


@held_writes()  # its files move into place together when it ends, or none does
def train_reinforce(config: ReinforceConfig) -> ReinforceResult:
    """REINFORCE against the reward model, the batch's mean score as the baseline."""
    STAGE.begin(config)  # settings, input files and their kinds, the output folder
    task, rng = get_task("reviews"), stream(config.seed, "train")
    policy, tokenizer, _ = load_model(config.init)
    reference, _, _ = load_model(config.init)
    rm = RewardModel.load(config.reward_model)
    opt = AdamW(policy.named_parameters(), lr=config.lr)
    for it in range(config.iterations):
        prompts = task.sample_prompts(config.batch_size, rng)  # 1. rollout
        r = rollout(policy, tokenizer, prompts, config.max_new_tokens, rng)
        scores = rm.score(prompts, r.texts, r.finished)  # 2. score
        logp = sequence_logps(policy, r.generation.tokens, r.generation.response_mask)  # (B,)
        loss = reinforce_loss(logp, scores)  # 4. advantages: the batch mean as the baseline
        optimizer_step(opt, loss, policy.parameters(), config.grad_clip, f"reinforce {it}")
    checkpoint, report = finish_policy_stage(
        "reinforce", config.out_dir, config, policy, reference, tokenizer, task, [],
        config.seed, config.eval_samples_per_prompt, config.max_new_tokens)
    return ReinforceResult(checkpoint, report)


STAGE = Stage(name="reinforce", title="REINFORCE", help="REINFORCE with a batch-mean baseline",
              config=ReinforceConfig, run=train_reinforce, policy=True,
              record=lambda r, c: policy_numbers(r.report, c.eval_samples_per_prompt),
              show=lambda r, c: r.report.describe("REINFORCE", c.eval_samples_per_prompt),
              inputs={"init": "sft", "reward_model": "reward"})
