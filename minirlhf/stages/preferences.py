"""Stage: a preference dataset. Two responses of the SFT policy per prompt, labelled by simulated
raters, written as JSON Lines in TRL's format (see ``minirlhf.world.preference_data``).

Entry point: ``build_preference_data(config) -> PreferenceResult``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from minirlhf.config import Stage, StageConfig, run_path, setting, stream
from minirlhf.lm.checkpoint import load_model
from minirlhf.lm.sampling import generate_text
from minirlhf.world import TASK_NAMES, get_task
from minirlhf.world.preference_data import PreferencePair, dataset_stats, label_pairs, save_jsonl
from minirlhf.world.raters import PRESETS as RATER_PRESETS
from minirlhf.world.raters import get_panel

log = logging.getLogger("minirlhf.stages.preferences")


@dataclass
class PreferenceConfig(StageConfig):
    task: str = setting(
        "reviews", "which world: reviews or arithmetic", choices=TASK_NAMES)
    policy: str = setting(run_path("sft", "model.npz"), "the model whose samples are compared")
    raters: str = setting("default", "who labels: a preset of world.raters.PRESETS",
                          choices=RATER_PRESETS)
    n_pairs: int = setting(10_000, "labelled pairs to make", "[1, 10_000_000]")
    temperature: float = setting(1.0, "sampling temperature of the policy", "(0, inf)")
    max_new_tokens: int = setting(
        80, "response budget; unfinished responses are dropped", "[1, 126]")
    out_dir: str = setting(run_path("preferences"), "where preferences.jsonl goes")


@dataclass
class PreferenceResult:
    config: PreferenceConfig
    path: str
    stats: dict[str, float] = field(default_factory=dict)
    dropped_unfinished: int = 0  # sampled pairs dropped because a response had no EOS
    dropped_identical: int = 0  # sampled pairs dropped because both responses were equal
    seconds: float = 0.0


def build_preference_data(config: PreferenceConfig) -> PreferenceResult:
    """Sample two responses per prompt from the policy, label each pair with the raters, write
    JSON Lines, and report the accuracy ceiling beside the measured rater-gold agreement."""
    STAGE.begin(config)
    t0 = time.time()
    task, panel = get_task(config.task), get_panel(config.raters)
    model, tokenizer, _ = load_model(config.policy)
    rng = stream(config.seed, "preferences")
    pairs: list[PreferencePair] = []
    result = PreferenceResult(config=config, path=str(Path(config.out_dir) / STAGE.output))
    bar = tqdm(total=config.n_pairs, desc="preferences", disable=not config.progress)
    while len(pairs) < config.n_pairs:
        need = config.n_pairs - len(pairs)
        prompts = task.sample_prompts(min(max(need, 64), 1024), rng)
        a = generate_text(model, tokenizer, prompts, config.max_new_tokens, rng,
                          config.temperature)
        b = generate_text(model, tokenizer, prompts, config.max_new_tokens, rng,
                          config.temperature)
        keep = []
        for prompt, (ta, fa), (tb, fb) in zip(prompts, a, b, strict=True):
            if not (fa and fb) or not ta or not tb:
                result.dropped_unfinished += 1
            elif ta == tb:
                result.dropped_identical += 1
            else:
                keep.append((prompt, ta, tb))
        keep = keep[:need]
        new = label_pairs(task, panel, *map(list, zip(*keep, strict=True)), rng) if keep else []
        pairs.extend(new)
        bar.update(len(new))
    bar.close()
    save_jsonl(result.path, pairs)
    result.stats = dataset_stats(pairs)
    result.seconds = time.time() - t0
    log.info("%d pairs: ceiling %.3f, gold agreement %.3f", len(pairs),
             result.stats["ceiling"], result.stats["measured_gold_agreement"])
    return result


# ------------------------------------------------------------------ the stage's record
def record(r: PreferenceResult, config: PreferenceConfig) -> dict:
    """What the pipeline keeps of a run (its record's numbers)."""
    return {"stats": r.stats}


def show(r: PreferenceResult, config: PreferenceConfig) -> str:
    """What ``python -m minirlhf preferences`` prints."""
    s = r.stats
    return (f"{s['pairs']} pairs written to {r.path} ({r.dropped_unfinished} unfinished and "
            f"{r.dropped_identical} identical pairs dropped), {r.seconds:.0f} s\n"
            f"accuracy ceiling (best any reward model can do on these labels): "
            f"{s['ceiling']:.2%}\nrater-gold agreement: expected "
            f"{s['expected_gold_agreement']:.2%}, measured {s['measured_gold_agreement']:.2%} "
            f"(gold ties: {s['gold_ties']:.1%})")


STAGE = Stage(
    name="preferences", title="preferences", help="make a preference dataset with simulated raters",
    config=PreferenceConfig, run=build_preference_data, record=record, show=show,
    inputs={"policy": "sft"}, output="preferences.jsonl",
    presets={"tiny": dict(n_pairs=1000, max_new_tokens=60)},
    work=lambda c, _: c.n_pairs * c.max_new_tokens,  # tokens sampled (at most)
    seconds={"tiny": 2.2, "default": 83.2},  # measured 2026-11-30
)
