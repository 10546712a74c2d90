"""The stage registry: every stage the pipeline runs, in order, and what follows from it.

Each stage is one file in ``minirlhf/stages/`` that ends with a ``STAGE = Stage(...)`` record
(see ``minirlhf.config.Stage``). This list is the only other place a stage is named: the
pipeline (order, fingerprints, resumption, invalidation), the report, summary.json, the
comparison table and the command line's subcommands all read it. Adding an algorithm is its
file and one line here, after the stages whose outputs it reads: in ``STAGE_MODULES`` to join
the pipeline, or in ``COMMAND_MODULES`` for a command of its own that the pipeline does not run
(its time budget is spent).
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from minirlhf.config import Stage, run_path
from minirlhf.files import read_cache

log = logging.getLogger("minirlhf.registry")

STAGE_MODULES = (
    "pretrain",
    "sft",
    "preferences",
    "reward",
    "best_of_n",
    "ppo",
    "dpo",
)

COMMAND_MODULES = (  # a command each, outside the default pipeline
    "grpo",
    "kto",
    "orpo",
    "simpo",
    "rft",
)


def _load(modules: tuple[str, ...], before: dict[str, Stage] | None = None
          ) -> dict[str, Stage]:
    stages: dict[str, Stage] = dict(before or {})
    for module in modules:
        stage = importlib.import_module(f"minirlhf.stages.{module}").STAGE
        late = [d for d in stage.inputs.values() if d not in stages]
        if late:  # a stage must come after every stage whose output it reads
            raise ImportError(f"registry: stage {stage.name!r} reads the output of {late[0]!r}, "
                              "which is not registered before it")
        stages[stage.name] = stage
    return stages


STAGES: dict[str, Stage] = _load(STAGE_MODULES)  # the pipeline's, in order
COMMANDS: dict[str, Stage] = _load(COMMAND_MODULES, STAGES)  # every stage with a command


def depends_on(name: str) -> tuple[str, ...]:
    """The stages whose outputs ``name`` reads, in registry order."""
    reads = set(STAGES[name].inputs.values())
    return tuple(s for s in STAGES if s in reads)


def output_path(name: str, root: str | Path) -> str:
    """The file stage ``name`` leaves for later stages in the run at ``root``."""
    return run_path(name, STAGES[name].output, root)


def policy_stages(among: dict[str, Stage] | None = None) -> list[Stage]:
    """The pipeline's stages that make a policy (or those ``among`` the given stages), judged
    like every policy (table, frontier, samples)."""
    return [s for s in (STAGES if among is None else among).values() if s.policy]


def comparison_rows(root: str | Path) -> list[tuple[str, float, float, float]]:
    """(policy, gold, win-rate vs SFT, KL) for each policy stage (of the pipeline or a command)
    whose summary exists in the run at ``root``, in registry order."""
    rows = []
    for stage in policy_stages(COMMANDS):
        path = Path(run_path(stage.name, "summary.json", root))
        s = read_cache(path, log, "it is left out of the comparison")
        if s is not None:
            s = s.get("policy", s)  # best-of-n keeps its policy beside its table
            rows.append((stage.title, s["gold_reward"], s["win_rate_vs_sft"], s["kl_to_ref"]))
    return rows
