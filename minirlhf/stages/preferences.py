"""Stage: a preference dataset. Two responses of the SFT policy per prompt, labelled by simulated
raters, written as JSON Lines in TRL's format (see ``minirlhf.world.preference_data``).

Entry point: ``build_preference_data(config) -> PreferenceResult``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from minirlhf.config import validate
from minirlhf.lm.checkpoint import load_model
from minirlhf.lm.sampling import generate_text
from minirlhf.world import get_task
from minirlhf.world.preference_data import PreferencePair, dataset_stats, label_pairs, save_jsonl
from minirlhf.world.raters import get_panel

log = logging.getLogger("minirlhf.preferences")


@dataclass
class PreferenceConfig:
    task: str = "reviews"  # which world: reviews or arithmetic
    policy: str = "runs/default/sft/model.npz"  # the model whose samples are compared
    raters: str = "default"  # a preset of minirlhf.world.raters.PRESETS
    n_pairs: int = 10_000  # labelled pairs to make
    temperature: float = 1.0  # sampling temperature of the policy
    max_new_tokens: int = 80  # response budget; unfinished responses are dropped
    out: str = "runs/default/preferences.jsonl"  # where the JSON Lines go
    seed: int = 0  # seeds prompts, samples and labels
    progress: bool = True  # show a tqdm bar


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
    validate(config)
    t0 = time.time()
    task, panel = get_task(config.task), get_panel(config.raters)
    if config.n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {config.n_pairs}")
    model, tokenizer, _ = load_model(config.policy)
    rng = np.random.default_rng(config.seed)
    pairs: list[PreferencePair] = []
    result = PreferenceResult(config=config, path=config.out)
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
    save_jsonl(config.out, pairs)
    result.stats = dataset_stats(pairs)
    result.seconds = time.time() - t0
    log.info("%d pairs: ceiling %.3f, gold agreement %.3f", len(pairs),
             result.stats["ceiling"], result.stats["measured_gold_agreement"])
    return result
