"""What the experiments share: their config and result, the context that gives each stage its
paths and budgets (full or quick), stage runs shared by settings, gold at matched KL along a
sweep, and a bar chart."""


from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from minirlhf.config import (
    ConfigError,
    minirlhf_command,
    missing_input,
    setting,
    unchanged_by_default,
)
from minirlhf.files import CheckpointError, read_json, read_meta
from minirlhf.lm.checkpoint import atomic_write, file_digest
from minirlhf.lm.reward_model import RewardModel
from minirlhf.machine import blas_threads
from minirlhf.records import read_record, record_holds, record_path
from minirlhf.registry import COMMANDS, output_path
from minirlhf.stages.dpo import DPOConfig, train_dpo
from minirlhf.stages.ppo import PPOConfig, train_ppo
from minirlhf.stages.preferences import PreferenceConfig, build_preference_data
from minirlhf.stages.reward import RewardConfig, train_reward
from minirlhf.streams import stream_seed
from minirlhf.world.preference_data import PreferencePair, Ranking, load_jsonl, save_jsonl

ARITHMETIC_TOKENS = 32  # " you are right, it is 38." and its EOS fit with room to spare


@dataclass
class ExperimentConfig:
    """An experiment's settings, made with ``setting`` as a stage's are: ``check_settings``
    checks them before any work (``minirlhf.experiments.check_experiment``)."""

    name: str  # one of minirlhf.experiments.EXPERIMENTS
    base: str = setting("default", "the pipeline run to start from: <runs_dir>/<base>")
    runs_dir: str = setting("runs", "where pipeline runs live")
    quick: bool = setting(False, "small budgets, for tests (use with base = tiny)")
    seed: int = setting(0, "seeds every stage the experiment runs", "[0, inf)")
    progress: bool = setting(False, "tqdm bars of the stages")
    reuse: bool = setting(False, "return the saved results.json instead when it matches quick "
                          "and seed, and the thread count of this process (another count "
                          "trains another model) unless any_threads")
    any_threads: bool = setting(False, "a chapter reading the course's runs: results made with "
                                "any thread count are a fair draw")
    subdir: str = setting("", "a sub-folder of the experiment's folder (one seed of --seeds)")


@dataclass
class ExperimentResult:
    name: str
    numbers: dict[str, Any]  # what results.json holds
    plots: list[str]
    out_dir: str
    seconds: float = 0.0


def check_base(config: ExperimentConfig, needs: tuple[str, ...],
               route: Callable[[str], str] | None = None) -> None:
    """The files of the base run the experiment reads (the outputs of the stages ``needs``)
    are there; the first that is missing is an error with the command that makes it:
    ``route(path)``, or the pipeline's run at ``runs_dir/base`` (the tiny preset for a quick
    experiment, else the default one)."""
    base = Path(config.runs_dir) / config.base
    world = "scratchpad" if route is not None else "reviews"  # the route's world, or the pipeline's
    for stage in ("pretrain", "sft"):  # a base of another world: say so, and hint nothing over it
        path = base / stage / "model.npz"
        if path.is_file():
            try:
                task = read_meta(path).get("extra", {}).get("config", {}).get("task")
            except (CheckpointError, ValueError, OSError):
                continue  # unreadable: the stage that reads it names the file
            if task and task != world:
                fits = ("the scratchpad route's run (--base scratchpad)" if world == "scratchpad"
                        else "a pipeline run (--base default, or tiny with --quick)")
                raise ConfigError(f"experiment {config.name}: --base {config.base} is a run of "
                                  f"the {task} world ({path} was trained for it); "
                                  f"{config.name} reads {fits}")
    for stage in needs:  # the experiments start from a finished run
        path = output_path(stage, base)
        if not Path(path).exists():
            preset = "tiny" if config.base == "tiny" or (
                config.quick and config.base != "default") else "default"
            make = route(path) if route is not None else "make it with " + minirlhf_command(
                "pipeline", "--preset", preset, "--runs-dir", str(Path(config.runs_dir).absolute()),
                *(["--name", config.base] if config.base != preset else []))
            raise missing_input("the base run's file", path, make)


class Context:
    """Paths and budgets shared by an experiment's stages."""

    def __init__(self, config: ExperimentConfig,
                 needs: tuple[str, ...] = ("sft", "preferences", "reward"),
                 route: Callable[[str], str] | None = None):
        """``needs``: the stages of the base run whose outputs the experiment reads (checked
        now: ``check_base``); ``route(path)``: the command that makes them, when it is not the
        pipeline's."""
        self.config = config
        self.base = Path(config.runs_dir) / config.base
        self.out = self.base / "experiments" / config.name / config.subdir
        self.sft = output_path("sft", self.base)
        self.preferences = output_path("preferences", self.base)
        self.reward_path = output_path("reward", self.base)
        check_base(config, needs, route)
        self.out.mkdir(parents=True, exist_ok=True)

    def n(self, full: int, quick: int) -> int:
        return quick if self.config.quick else full

    def common(self) -> dict[str, Any]:
        return dict(seed=self.config.seed, progress=self.config.progress)

    def seed_for(self, name: str) -> int:
        """The seed of one of the experiment's sub-runs: its own named stream of the run's
        seed (two sub-runs with the same name see the same prompts and samples)."""
        return stream_seed(self.config.seed, f"{self.config.name}/{name}")

    def prefs(self, name: str, n_pairs: int, raters: str = "default", samples: str | None = None,
              policy: str | None = None, task: str = "reviews", ranking_size: int = 2
              ) -> list[PreferencePair] | list[Ranking]:
        out = self.out / f"prefs_{name}"
        cfg = PreferenceConfig(task=task, policy=policy or self.sft, raters=raters,
                               n_pairs=n_pairs, out_dir=str(out), ranking_size=ranking_size,
                               **self.common())
        cfg = replace(cfg, seed=self.seed_for(samples or name),
                      max_new_tokens=self.n(80, 60) if task == "reviews" else ARITHMETIC_TOKENS)
        return load_jsonl(build_preference_data(cfg).path)

    def reward(self, name: str, pairs: list[PreferencePair] | list[Ranking],
               init: str | None = None, task: str = "reviews", epochs: int = 2,
               batch_size: int = 32, **kw: Any) -> RewardModel:
        """A reward model trained on ``pairs`` (or rankings) by the reward stage; ``kw``
        overrides its other settings (e.g. ranking_loss)."""
        path = self.out / f"{name}.jsonl"
        save_jsonl(path, pairs)
        cfg = RewardConfig(task=task, preferences=str(path), init=init or self.sft,
                           out_dir=str(self.out / f"rm_{name}"), epochs=self.n(epochs, 1),
                           val_fraction=0.05, norm_samples=self.n(256, 64),
                           corr_samples=self.n(128, 32), **self.common())
        cfg = replace(cfg, seed=self.seed_for(f"reward/{name}"),
                      batch_size=min(batch_size, int(len(pairs) * 0.95)), **kw)
        return RewardModel.load(train_reward(cfg).checkpoint)

    def dpo_settings(self, n_pairs: int, task: str = "reviews") -> dict[str, Any]:
        """What every DPO run of the experiments sets: batches of 32 pairs (fewer when there are
        fewer) and how the policy is judged."""
        return dict(batch_size=min(32, n_pairs), eval_samples_per_prompt=self.n(4, 1),
                    max_new_tokens=self.n(80, 60) if task == "reviews" else ARITHMETIC_TOKENS)

    def dpo(self, name: str, pairs: list[PreferencePair], init: str | None = None,
            task: str = "reviews", **kw) -> Any:
        path = self.out / f"{name}.jsonl"
        save_jsonl(path, pairs)
        cfg = DPOConfig(task=task, preferences=str(path), init=init or self.sft,
                        out_dir=str(self.out / f"dpo_{name}"), **self.common(),
                        **self.dpo_settings(len(pairs), task))
        return train_dpo(replace(cfg, **kw))

    def ppo_settings(self) -> dict[str, Any]:
        """What every PPO run of the experiments sets: no table in the log, how the policy is
        judged, and the quick budgets when quick."""
        out: dict[str, Any] = dict(table_every=0, eval_samples_per_prompt=self.n(4, 1),
                                   max_new_tokens=self.n(80, 60))
        if self.config.quick:
            out.update(iterations=3, rollout_size=16, minibatch_size=8)
        return out

    def ppo(self, name: str, reward_model: str, **kw) -> Any:
        cfg = PPOConfig(init=self.sft, reward_model=reward_model,
                        out_dir=str(self.out / f"ppo_{name}"), **self.common())
        return train_ppo(replace(cfg, **{**self.ppo_settings(), **kw}))

    def base_inputs(self, stage: str) -> dict[str, str]:
        """The base run's files for the inputs ``stage`` declares (its SFT policy, preference
        pairs, reward model), by setting."""
        paths = {"sft": self.sft, "preferences": self.preferences, "reward": self.reward_path}
        return {field: str(paths[made_by]) for field, made_by in COMMANDS[stage].inputs.items()}

    def stage_run(self, folder: str, stage: str, **settings: Any) -> StageRun:
        """The run of ``stage`` on the base run's files with the experiment's seed and
        ``settings``. A finished run of the base with these very settings, inputs and thread
        count (``find_run``: the pipeline's own stage, a frontier point, another experiment's
        run, or this folder's from before) is read back; else the stage trains in ``folder`` of
        the experiment's. Trained or read back, the run is what its files hold."""
        config = COMMANDS[stage].config(**{**self.base_inputs(stage), **self.common(),
                                           "out_dir": str(self.out / folder), **settings})
        threads = blas_threads()
        found = find_run(self.base, stage, config, threads)
        if found is not None:
            return found
        out = Path(config.out_dir)
        (out / RUN_FILE).unlink(missing_ok=True)  # it would describe another run's files
        t0 = time.time()
        COMMANDS[stage].run(config)
        row = described(stage, config, threads, round(time.time() - t0, 1))
        data = (json.dumps(row, indent=1) + "\n").encode()
        atomic_write(out / RUN_FILE, lambda f: f.write(data))
        return read_run(out, row["seconds"])

    def save(self, numbers: dict[str, Any]) -> None:
        """results.json, written whole or not at all (a kill leaves the old file or none)."""
        data = (json.dumps(numbers, indent=2, sort_keys=True) + "\n").encode()
        atomic_write(self.out / "results.json", lambda f: f.write(data))


# ------------------------------------------------------------ stage runs shared by settings
RUN_FILE = "run.json"  # beside a run ``Context.stage_run`` trained: ``described``
POINT_FILE = "point.json"  # beside a frontier point: its figures, and ``described`` if trained
DISPLAY = ("out_dir", "progress", "table_every")  # where a run writes, what it shows: no figure


@dataclass
class StageRun:
    """A finished stage run as its files hold it: what an experiment reads of it."""

    folder: Path
    figures: dict[str, Any]  # summary.json: the judged figures (PolicyReport.to_dict's names)
    metrics: list[dict[str, Any]]  # metrics.jsonl: one row per step or iteration
    seconds: float  # training and judging it took, by the clock of the process that ran it


def read_run(folder: Path, seconds: float) -> StageRun:
    """The run in ``folder``: its summary.json and its metrics.jsonl (none: no rows)."""
    rows = folder / "metrics.jsonl"
    metrics = ([json.loads(line) for line in rows.read_text().splitlines() if line]
               if rows.exists() else [])
    return StageRun(folder, read_json(folder / "summary.json"), metrics, seconds)


def run_settings(stage: str, config: Any) -> dict[str, Any]:
    """What makes a run of ``stage`` the run it is, its input files aside (``input_digests``):
    every setting of ``config`` but where it writes and what it shows (``DISPLAY``) and the
    settings added later at their default."""
    skip = set(DISPLAY) | set(input_fields(stage)) | unchanged_by_default(config)
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in skip}


def input_fields(stage: str) -> tuple[str, ...]:
    """The settings of ``stage`` that name files it reads: its ``inputs`` and its ``files``."""
    return (*COMMANDS[stage].inputs, *COMMANDS[stage].files)


def input_digests(stage: str, config: Any) -> dict[str, str]:
    """The SHA-256 of each input file of ``config`` (the fields ``stage`` declares, but those
    this config does not read, ``Stage.unused``), by setting: the same content is the same
    input wherever it lies, and however its path is written (relative or absolute)."""
    out = {}
    unused = set(COMMANDS[stage].unused(config))
    for field in (f for f in input_fields(stage) if f not in unused):
        path = Path(getattr(config, field))
        out[field] = file_digest(path) if path.is_file() else "missing"
    return out


def described(stage: str, config: Any, threads: int, seconds: float) -> dict[str, Any]:
    """What a ``RUN_FILE`` (or a trained frontier point) says of its run: its stage, its
    settings, its inputs' digests, the thread count and the seconds it took."""
    return {"stage": stage, "config": dataclasses.asdict(config),
            "inputs": input_digests(stage, config), "threads": threads, "seconds": seconds}


def _described_runs(base: Path, stage: str) -> list[tuple[Path, dict[str, Any]]]:
    """The finished runs of ``stage`` the base run holds, each as (folder, ``described``
    row): the pipeline's own stage when its record holds (the files it names are the files
    it wrote and read), then every folder under ``experiments/`` that a ``RUN_FILE`` or a
    trained frontier point describes."""
    out = []
    record = read_record(record_path(base, stage))
    if record is not None and isinstance(record.get("config"), dict) \
            and record_holds(base, record, list(record.get("inputs") or {})) is None:
        read = record["inputs"]  # by file name in the run: the stage's inputs are its files
        names = {field: os.path.relpath(output_path(made_by, base), base)
                 for field, made_by in COMMANDS[stage].inputs.items()}
        out.append((base / stage, {
            "config": record["config"], "threads": record.get("blas_threads"),
            "seconds": record.get("seconds", 0.0),
            "inputs": {field: read.get(name) for field, name in names.items()}}))
    for name in (RUN_FILE, POINT_FILE):
        for path in sorted((base / "experiments").rglob(name)):
            try:
                row = read_json(path)
            except (OSError, ValueError):
                continue  # a run a kill cut off: not a run to read
            if row.get("stage") == stage and isinstance(row.get("config"), dict) \
                    and isinstance(row.get("inputs"), dict):
                out.append((path.parent, row))
    return out


def find_run(base: Path, stage: str, config: Any, threads: int) -> StageRun | None:
    """A finished run of ``stage`` in the base run with ``config``'s settings
    (``run_settings``), the same input files by content and ``threads`` threads (another count
    trains another model), read back; None when there is none. The same settings give the
    same run, so a run is never trained twice."""
    wanted, inputs = run_settings(stage, config), input_digests(stage, config)
    if "missing" in inputs.values():
        return None
    for folder, row in _described_runs(base, stage):
        if row.get("threads") != threads \
                or any(row["inputs"].get(f) != digest for f, digest in inputs.items()) \
                or not (folder / "summary.json").exists():
            continue
        try:
            theirs = run_settings(stage, COMMANDS[stage].config(**row["config"]))
        except (TypeError, ConfigError):  # settings of another version of the stage
            continue
        if theirs == wanted:
            return read_run(folder, row.get("seconds", 0.0))
    return None


def relative_folder(run: StageRun, ctx: Context) -> str:
    """Where ``run`` lives, relative to the experiment's folder (another experiment's run, or
    the pipeline's own stage, when the run was shared)."""
    return os.path.relpath(run.folder, ctx.out)


def gold_at_kl(kl: list[float], gold: list[float], target: float) -> float | None:
    """Gold interpolated linearly between the two runs of a sweep whose KLs bracket
    ``target`` (the runs sorted by KL); None when ``target`` lies outside the sweep's KLs."""
    order = np.argsort(kl)
    k, g = np.asarray(kl, dtype=np.float64)[order], np.asarray(gold, dtype=np.float64)[order]
    if not k[0] <= target <= k[-1]:
        return None
    return float(np.interp(target, k, g))


def bars(path: Path, groups: dict[str, dict[str, float]], ylabel: str, title: str) -> str:
    """Grouped bars: one group per key of ``groups``, one bar per inner key."""
    names = list(groups)
    fig = Figure(figsize=(max(7.0, 1.3 * len(names)), 3.8))
    ax = fig.subplots()
    inner = list(next(iter(groups.values())))
    width = 0.8 / len(inner)
    for k, key in enumerate(inner):
        ax.bar(np.arange(len(names)) + k * width, [groups[n][key] for n in names], width,
               label=key)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set(ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return str(path)


