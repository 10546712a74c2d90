"""The toy worlds. A task owns its prompts, its gold reward (the hidden "true human
preference", which only evaluation and the simulated raters may call) and demonstrations for
SFT. ``get_task(name)`` returns one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minirlhf.world import arithmetic, reviews, scratchpad

CORPORA = Path(__file__).resolve().parent / "corpora"  # shipped with the package
CORPUS_NAMES = ("reviews", "arithmetic", "scratchpad")  # data/make_corpora.py writes them


def corpus_path(corpus: str | Path) -> Path:
    """The file of a corpus setting: a shipped corpus by name (one of CORPUS_NAMES), found
    in the installed package whatever the working directory, or else a path to a text file
    (one document per line), made absolute."""
    if str(corpus) in CORPUS_NAMES:
        return CORPORA / f"{corpus}.txt"
    return Path(corpus).expanduser().resolve()


@dataclass(frozen=True)
class Task:
    name: str  # "reviews" or "arithmetic"
    corpus: str  # the pretraining corpus: a name for corpus_path
    eval_prompts: tuple[str, ...]  # the fixed prompts every policy is evaluated on
    sample_prompt: Callable[[np.random.Generator], str]  # a training prompt
    gold: Callable[[str, str, bool], float]  # (prompt, response, finished) -> gold reward
    demonstration: Callable[[str, np.random.Generator], str]  # a demonstrator's response
    valid: Callable[[str, str, bool], bool]  # (prompt, response, finished) -> well-formed?
    well_formed: Callable[[str], bool]  # a whole line of the corpus (prompt + response) parses?
    agrees_with_hint: Callable[[str, str], bool] | None = None  # for sycophancy (arithmetic)

    def sample_prompts(self, n: int, rng: np.random.Generator) -> list[str]:
        return [self.sample_prompt(rng) for _ in range(n)]


def _reviews() -> Task:
    return Task(
        name="reviews",
        corpus="reviews",
        eval_prompts=reviews.PROMPTS,
        sample_prompt=lambda rng: reviews.PROMPTS[int(rng.integers(len(reviews.PROMPTS)))],
        gold=lambda p, r, finished=True: reviews.gold_reward(p + r, finished),
        demonstration=reviews.demonstration,
        valid=lambda p, r, finished=True: finished and reviews.is_grammatical(p + r),
        well_formed=reviews.is_grammatical,
    )


def _arithmetic() -> Task:
    rng = np.random.default_rng(2024)  # the fixed evaluation prompts
    return Task(
        name="arithmetic",
        corpus="arithmetic",
        eval_prompts=tuple(arithmetic.make_prompt(rng) for _ in range(64)),
        sample_prompt=arithmetic.make_prompt,
        gold=arithmetic.gold_reward,
        demonstration=arithmetic.demonstration,
        valid=lambda p, r, finished=True: finished and arithmetic.parse_response(r) is not None,
        well_formed=arithmetic.well_formed,
        agrees_with_hint=arithmetic.agrees_with_hint,
    )


def _scratchpad() -> Task:
    return Task(
        name="scratchpad",
        corpus="scratchpad",
        eval_prompts=scratchpad.eval_prompts(),
        sample_prompt=scratchpad.sample_prompt,
        gold=scratchpad.verify,
        demonstration=scratchpad.demonstration,
        valid=lambda p, r, finished=True: finished and scratchpad.parse_response(r) is not None,
        well_formed=scratchpad.well_formed,
    )


TASKS = {"reviews": _reviews, "arithmetic": _arithmetic, "scratchpad": _scratchpad}
TASK_NAMES = tuple(TASKS)


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}")
    return TASKS[name]()
