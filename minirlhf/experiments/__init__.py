"""Where RLHF goes wrong, measured, and every method compared: one command per experiment.

Experiments, as minGPT keeps its projects: separate programs over the library, one file each.
``python -m minirlhf experiment NAME`` with NAME one of

- ``rlaif``: a small human budget, the same budget plus AI labels, AI labels alone (see
  ``minirlhf.world.ai_labelers``); each labeler's agreement with gold; the reward model and
  the DPO policy of each; the constitution's blind spot (it cannot read negation in the
  prompt) and each policy's gold after prompts ending in "not", beside a human-labelled policy
  trained as long, for which those prompts are harder too.
- ``sycophancy``: the arithmetic world with honest and with sycophantic raters; the sycophancy
  rate of the SFT policy, of each reward model's preferences and of each DPO policy, and a
  mitigation (a share of gold-checked labels).
- ``length-bias``: raters who like longer answers; response length and gold under PPO and DPO,
  beside unbiased raters at the same label budget.
- ``overoptimization``: gold and proxy reward against d = sqrt(KL) for best-of-n and for PPO,
  with Gao et al.'s (2022) functional forms fitted and their peaks; a reward model trained on
  fewer pairs beside one trained on more; an ensemble with a disagreement penalty as mitigation.
- ``critic-free``: on the scratchpad world (its own base run, ``runs/scratchpad``), GRPO, Dr.
  GRPO, RLOO, REINFORCE++, ReMax and PPO with a critic at equal samples over seeds, with
  intervals; GRPO's pitfalls as switches; the length lab; the std's weighting by difficulty.
- ``frontier``: every method (best-of-n, PPO, DPO / IPO / cDPO / hinge, online DPO, KTO, ORPO,
  SimPO, rejection-sampling fine-tuning, GRPO / Dr. GRPO / RLOO on the reward model) at a few
  strengths on one gold-vs-KL plot, with Gao et
  al.'s forms fitted and a table; each point cached in its folder, so the command resumes.
- ``rankings``: the same labelling effort (responses read) spent on pairs or on rankings of 4
  (Plackett-Luce raters); reward models trained with Bradley-Terry, Plackett-Luce and the
  all-pairs loss, judged against gold over seeds with intervals.
- ``ppo-details``: PPO's KL coefficient swept (0, 0.05, 0.2) and four implementation details
  (whitening, value clipping, the missing-EOS penalty, the separate critic) switched off one at
  a time, each paired with the baseline on the same random stream (chapter 5 reads it).
- ``dpo-details``: DPO's beta swept (0.2, 0.5, 1.0); per-token mean log-probs at the same beta
  and at beta times the mean response length; the same label budget spent online in four
  rounds; each paired with the main run (chapter 6 reads it).

Every experiment but ``critic-free`` starts from a finished pipeline run (``runs/<base>``: its
SFT policy, its preference data and its reward model), writes ``results.json`` and its plots to
``runs/<base>/experiments/<name>/``, and has a ``quick`` mode for tests (the tiny pipeline run,
small budgets). Every number is against the hidden gold reward.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from pathlib import Path
from types import ModuleType

from minirlhf.config import ConfigError, check_settings
from minirlhf.experiments import (
    critic_free,
    dpo_details,
    frontier,
    length_bias,
    overoptimization,
    ppo_details,
    rankings,
    rlaif,
    sycophancy,
)
from minirlhf.experiments.common import (
    POINT_FILE,
    RUN_FILE,
    Context,
    ExperimentConfig,
    ExperimentResult,
    check_base,
)
from minirlhf.files import read_cache, read_json
from minirlhf.lm.checkpoint import atomic_write, file_digest
from minirlhf.machine import blas_threads
from minirlhf.records import RunLock
from minirlhf.registry import output_path

# The registry: an experiment is one file with a ``run(ctx)`` and one line here. A module may
# say which base run it starts from (BASE, default "default"), which of that run's stages it
# reads (NEEDS), the command that makes them when it is not the pipeline (ROUTE) and how many
# seeds its command runs by default (SEEDS, default 1; see ``default_seeds``).
EXPERIMENTS: dict[str, ModuleType] = {
    "rlaif": rlaif,
    "sycophancy": sycophancy,
    "length-bias": length_bias,
    "overoptimization": overoptimization,
    "critic-free": critic_free,
    "frontier": frontier,
    "rankings": rankings,
    "ppo-details": ppo_details,
    "dpo-details": dpo_details,
}
log = logging.getLogger("minirlhf.experiments")


def default_base(name: str, quick: bool) -> str:
    """The base run an experiment starts from when none is given."""
    return getattr(EXPERIMENTS[name], "BASE", "tiny" if quick else "default")


def default_seeds(name: str, quick: bool) -> int:
    """How many seeds ``experiment NAME`` runs without ``--seeds``: the module's SEEDS, 1 with
    ``--quick`` (a seconds-long check). The rule behind each SEEDS: three seeds where three run
    in about 5 minutes on 2 cores, else one. Two are not worth their time: with two seeds
    Student's t puts the 95% interval at 12.7 standard errors either side of the mean, and a
    single run already carries bootstrap intervals over its evaluation prompts."""
    return 1 if quick else int(getattr(EXPERIMENTS[name], "SEEDS", 1))


def check_experiment(config: ExperimentConfig) -> None:
    """What every experiment checks before any work (its command, a seed of ``--seeds``, a
    course job): a known name, every setting in its range (``check_settings``, as a stage's),
    and the base run's files it reads (``check_base``: a missing one names the command that
    makes it)."""
    if config.name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {config.name!r}; experiments: "
                          f"{', '.join(EXPERIMENTS)}")
    check_settings(config)
    module = EXPERIMENTS[config.name]
    check_base(config, getattr(module, "NEEDS", ("sft", "preferences", "reward")),
               getattr(module, "ROUTE", None))


# The folders inside an experiment's folder that are not its seed 0's: the other seeds'
# (``seed<k>``) and what the course kept aside (``seed<k>-threads<N>``, ``threads<N>``).
KEPT_APART = r"seed\d+(-threads\d+(-\d+)?)?|threads\d+(-\d+)?"


def made_with_other_threads(config: ExperimentConfig, seeds: list[int] | None,
                            threads: int) -> tuple[Path, int] | None:
    """A file this experiment's command would replace (``results.json``, a run's ``run.json``,
    a trained frontier point's ``point.json``) that says it was made with another thread count
    than ``threads``, and that count; None when there is none. ``seeds``: the seeds of
    ``--seeds`` (their ``seed<k>/`` folders), None for one run in the experiment's folder
    itself (its ``seed<k>/`` folders left out)."""
    folder = Path(config.runs_dir) / config.base / "experiments" / config.name
    tops = [folder] if seeds is None else [folder / f"seed{k}" for k in seeds]
    for top in tops:
        paths = [top / "results.json", *sorted(top.rglob(RUN_FILE)),
                 *sorted(top.rglob(POINT_FILE))]
        for path in paths:
            inside = path.relative_to(top).parts
            if seeds is None and len(inside) > 1 and re.fullmatch(KEPT_APART, inside[0]):
                continue  # another seed's folder, or what the course kept aside: left alone
            try:
                count = json.loads(path.read_text()).get("threads")
            except (OSError, ValueError, AttributeError):
                continue  # not there, or unreadable: its own reader says so when it is read
            if isinstance(count, int) and count != threads:
                return path, count
    return None


def run_experiment(config: ExperimentConfig) -> ExperimentResult:
    """Run one experiment; write its results.json and plots; return them."""
    check_experiment(config)
    t0 = time.time()
    module = EXPERIMENTS[config.name]
    needs = getattr(module, "NEEDS", ("sft", "preferences", "reward"))
    ctx = Context(config, needs, getattr(module, "ROUTE", None))
    saved = ctx.out / "results.json"
    threads = blas_threads()  # another count trains another model: not reused
    read = base_digests(ctx.base, needs)  # what it reads of the base run, by content
    # one process at a time in the folder (the course keeps aside no folder a live run holds)
    with RunLock(ctx.out, instead=""):
        numbers = read_cache(saved, log, "running the experiment again") if config.reuse \
            else None
        if numbers is not None:
            if (numbers.get("quick"), numbers.get("seed")) == (config.quick, config.seed) and (
                    config.any_threads or numbers.get("threads") == threads) \
                    and numbers.get("base_files", read) == read:  # none kept: before they were
                plots = sorted(str(p) for p in ctx.out.glob("*.png"))
                return ExperimentResult(config.name, numbers, plots, str(ctx.out), 0.0)
        numbers, plots = module.run(ctx)
        numbers["seconds"] = round(time.time() - t0, 1)
        numbers["quick"], numbers["seed"], numbers["threads"] = config.quick, config.seed, \
            threads
        numbers["base_files"] = read
        ctx.save(numbers)
    return ExperimentResult(config.name, numbers, plots, str(ctx.out), time.time() - t0)


def base_digests(base: Path, needs: tuple[str, ...]) -> dict[str, str]:
    """The SHA-256 of each file the experiment reads of the base run (``needs``: the stages
    whose outputs it reads), by stage: its results are reused only on these very files."""
    return {stage: file_digest(path) for stage in needs
            if (path := Path(output_path(stage, base))).is_file()}


def run_experiment_seeds(config: ExperimentConfig, n: int) -> dict:
    """The experiment ``n`` times with seeds ``config.seed`` .. ``config.seed + n - 1``, each in
    ``experiments/<name>/seed<k>/`` with its own results.json and plots, then
    ``summarize_seeds``: every number over seeds in ``experiments/<name>/seeds.json``."""
    from minirlhf.evaluation import run_over_seeds

    check_experiment(config)

    seeds, _, numbers = run_over_seeds(
        config.seed, n,
        lambda seed: run_experiment(dataclasses.replace(config, seed=seed, subdir=f"seed{seed}")),
        lambda runs: summarize_seeds(config, [r.numbers["seed"] for r in runs],
                                     [r.numbers for r in runs]),
        "experiment")
    return numbers


def summarize_seeds(config: ExperimentConfig, seeds: list[int],
                    results: list[dict] | None = None) -> dict:
    """Every number of the seeds' results over seeds (``nested_over_seeds``: the mean under
    each key, with ``mean``, ``ci95`` and ``per_seed`` beside the numbers of each level),
    written to ``experiments/<name>/seeds.json`` (with the seeds as ``run_seeds``) and
    returned. ``results``: each seed's numbers, else read from its results.json."""
    from minirlhf.evaluation import nested_over_seeds

    folder = Path(config.runs_dir) / config.base / "experiments" / config.name
    if results is None:
        results = [read_json(folder / f"seed{s}" / "results.json") for s in seeds]
        for s, r in zip(seeds, results, strict=True):  # the runs asked for, on one count
            if (r.get("seed"), r.get("quick"), r.get("threads")) != \
                    (s, config.quick, results[0].get("threads")):
                raise ValueError(f"{folder / f'seed{s}' / 'results.json'}: holds seed "
                                 f"{r.get('seed')}, quick {r.get('quick')}, threads "
                                 f"{r.get('threads')}; expected seed {s}, quick "
                                 f"{config.quick}, the other seeds' thread count")
    # "run_seeds": an experiment's results may have a figure of their own named "seeds"
    numbers = {**nested_over_seeds([{k: v for k, v in r.items() if k != "base_files"}
                                    for r in results]), "run_seeds": seeds}
    data = (json.dumps(numbers, indent=2, sort_keys=True) + "\n").encode()
    atomic_write(folder / "seeds.json", lambda f: f.write(data))
    numbers["path"] = str(folder / "seeds.json")
    return numbers
