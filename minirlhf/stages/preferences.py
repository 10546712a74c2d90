"""Stage: a preference dataset. Two responses of the SFT policy per prompt, labelled by simulated
raters, written as JSON Lines in TRL's format (see ``minirlhf.world.preference_data``). With
``ranking_size`` K > 2, K responses per prompt ranked by the raters (Plackett-Luce), as
InstructGPT collected its labels; the reward stage trains on either. With ``format=unpaired``
each labelled pair is written as two unpaired lines, its chosen response a thumbs-up and its
rejected one a thumbs-down (``pairs_to_unpaired``, as KTO's paper makes unpaired data from
pairs; TRL's ``{"prompt", "completion", "label"}``), the file the KTO stage reads.

Entry point: ``build_preference_data(config) -> PreferenceResult``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from minirlhf.config import ConfigError, Stage, StageConfig, check_fits, run_path, setting
from minirlhf.lm.checkpoint import held_writes, load_model
from minirlhf.lm.sampling import generate_text
from minirlhf.streams import stream
from minirlhf.world import TASK_NAMES, get_task
from minirlhf.world.preference_data import (
    PreferencePair,
    Ranking,
    dataset_stats,
    label_pairs,
    label_rankings,
    pairs_to_unpaired,
    ranking_stats,
    save_jsonl,
)
from minirlhf.world.raters import PRESETS as RATER_PRESETS
from minirlhf.world.raters import get_panel

log = logging.getLogger("minirlhf.stages.preferences")


FORMATS = ("pairs", "unpaired")


@dataclass
class PreferenceConfig(StageConfig):
    task: str = setting(
        "reviews", "which world: reviews or arithmetic", choices=TASK_NAMES)
    policy: str = setting(run_path("sft", "model.npz"), "the model whose samples are compared")
    raters: str = setting("default", "who labels: a preset of world.raters.PRESETS",
                          choices=RATER_PRESETS)
    n_pairs: int = setting(10_000, "labelled pairs (or rankings) to make", "[1, 10_000_000]")
    ranking_size: int = setting(
        2, "responses per prompt the raters compare: 2 writes chosen/rejected pairs, K > 2 "
        "K-way rankings (best first)", "[2, 16]")
    temperature: float = setting(1.0, "sampling temperature of the policy", "(0, inf)")
    max_new_tokens: int = setting(
        80, "response budget; unfinished responses are dropped", "[1, 126]")
    format: str = setting(
        "pairs", "what the file holds: pairs (chosen/rejected; rankings with ranking_size > 2) "
        "or unpaired (each pair as a thumbs-up and a thumbs-down line, prompt/completion/label, "
        "as KTO reads)", choices=FORMATS, added=True)
    out_dir: str = setting(run_path("preferences"), "where preferences.jsonl goes")

    def check(self, upstream: dict | None = None) -> None:
        """Every setting in its range; unpaired lines are made from pairs, not rankings."""
        super().check(upstream)
        if self.format == "unpaired" and self.ranking_size > 2:
            raise ConfigError(f"PreferenceConfig: format = unpaired splits pairs, and "
                              f"ranking_size = {self.ranking_size} makes rankings; set "
                              "ranking_size = 2")


@dataclass
class PreferenceResult:
    config: PreferenceConfig
    path: str
    stats: dict[str, float] = field(default_factory=dict)
    dropped_unfinished: int = 0  # sampled pairs (rankings) dropped: a response had no EOS
    dropped_identical: int = 0  # sampled pairs (rankings) dropped: two responses were equal
    seconds: float = 0.0


@held_writes()
def build_preference_data(config: PreferenceConfig) -> PreferenceResult:
    """Sample two responses per prompt from the policy, label each pair with the raters, write
    JSON Lines, and report the accuracy ceiling beside the measured rater-gold agreement. With
    ``ranking_size`` K > 2: K responses per prompt, ranked (and the pairs' agreement with gold
    reported; a ranking has no simple ceiling)."""
    STAGE.begin(config)
    t0 = time.time()
    task, panel = get_task(config.task), get_panel(config.raters)
    model, tokenizer, _ = load_model(config.policy)
    rng = stream(config.seed, "preferences")
    K = config.ranking_size
    records: list[PreferencePair] | list[Ranking] = []
    result = PreferenceResult(config=config, path=str(Path(config.out_dir) / STAGE.output))
    bar = tqdm(total=config.n_pairs, desc="preferences" if K == 2 else "rankings",
               disable=not config.progress)
    while len(records) < config.n_pairs:
        need = config.n_pairs - len(records)
        prompts = task.sample_prompts(min(max(need, 64), 1024), rng)
        samples = [generate_text(model, tokenizer, prompts, config.max_new_tokens, rng,
                                 config.temperature) for _ in range(K)]
        keep = []  # (prompt, its K different finished responses)
        unfinished, identical = result.dropped_unfinished, result.dropped_identical
        for i, prompt in enumerate(prompts):
            outs = [s[i] for s in samples]
            texts = [t for t, _ in outs]
            if not all(f and t for t, f in outs):
                result.dropped_unfinished += 1
            elif len(set(texts)) < K:
                result.dropped_identical += 1
            else:
                keep.append((prompt, texts))
        keep = keep[:need]
        check_fits(config, None, len(keep), f"none of {len(prompts)} prompts' {K} samples "
                   f"from {config.policy} are usable ({result.dropped_unfinished - unfinished} "
                   f"with an unfinished or empty response within max_new_tokens = "
                   f"{config.max_new_tokens}, {result.dropped_identical - identical} with two "
                   "equal responses)")
        new = _label(task, panel, keep, rng)
        records.extend(new)
        bar.update(len(new))
    bar.close()
    save_jsonl(result.path, pairs_to_unpaired(records) if config.format == "unpaired"
               else records)
    result.stats = dataset_stats(records) if K == 2 else ranking_stats(records)
    result.seconds = time.time() - t0
    if K == 2:
        log.info("%d pairs: ceiling %.3f, gold agreement %.3f", len(records),
                 result.stats["ceiling"], result.stats["measured_gold_agreement"])
    else:
        log.info("%d rankings of %d: implied pairs agree with gold %.3f", len(records), K,
                 result.stats["measured_gold_agreement"])
    return result


def _label(task, panel, keep: list[tuple[str, list[str]]], rng
           ) -> list[PreferencePair] | list[Ranking]:
    """One label per kept prompt: a pair's (two responses) or a ranking's (K > 2)."""
    prompts = [p for p, _ in keep]
    if len(keep[0][1]) == 2:
        return label_pairs(task, panel, prompts, [t[0] for _, t in keep],
                           [t[1] for _, t in keep], rng)
    return label_rankings(task, panel, prompts, [t for _, t in keep], rng)


# ------------------------------------------------------------------ the stage's record
def record(r: PreferenceResult, config: PreferenceConfig) -> dict:
    """What the pipeline keeps of a run (its record's numbers)."""
    return {"stats": r.stats}


def show(r: PreferenceResult, config: PreferenceConfig) -> str:
    """What ``python -m minirlhf preferences`` prints."""
    s = r.stats
    if "rankings" in s:
        return (f"{s['rankings']} rankings of {s['ranking_size']} written to {r.path} "
                f"({r.dropped_unfinished} with an unfinished response and {r.dropped_identical} "
                f"with two equal responses dropped), {r.seconds:.0f} s\n"
                f"the {s['implied_pairs']} pairs they imply agree with gold "
                f"{s['measured_gold_agreement']:.2%} (gold ties: {s['gold_ties']:.1%})")
    form = (f" as {2 * s['pairs']} unpaired lines (each pair's chosen a thumbs-up, its "
            "rejected a thumbs-down)") if config.format == "unpaired" else ""
    return (f"{s['pairs']} pairs written to {r.path}{form} ({r.dropped_unfinished} unfinished and "
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
    work=lambda c, _: c.n_pairs * c.ranking_size / 2 * c.max_new_tokens,  # tokens sampled
    seconds={"tiny": 2.2, "default": 60.1},  # on the reference 2-core laptop
)
