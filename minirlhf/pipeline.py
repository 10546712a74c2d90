"""The whole course in one command: every stage of the registry in order (pretrain -> SFT ->
preferences -> reward model -> best-of-n -> PPO -> DPO), then the report; resumable and
reproducible.

Each stage is the same entry point its own command calls (``train_sft(config)`` and so on);
this module only chooses their configs (paths inside the run folder, the preset, the
overrides), skips what is already done, and writes the report. It knows no stage by name: it
reads the registry (``minirlhf.registry``).

Resuming. When a stage finishes, a record ``runs/<name>/pipeline/<stage>.json`` is written
(atomically, by ``minirlhf.records``) with a fingerprint of the stage's config and of every
stage it depends on, and the numbers the report needs. A stage is skipped when its record's
fingerprint matches and its outputs are there and pass their checksums; otherwise it runs
again. So a changed config upstream (a new seed, another preset, ``--set sft.steps=10``)
invalidates everything that depends on it, and a run killed at any point redoes only the stage
it was in. Every stage is seeded, so the resumed run ends with the same ``summary.json`` as an
uninterrupted one.

Entry point: ``run_pipeline(config) -> PipelineResult``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from minirlhf.config import (
    SEEDS_RANGE,
    ConfigError,
    apply_overrides,
    check_checkpoints,
    check_range,
    check_settings,
    command_hint,
    require_folder_path,
    require_inputs,
    require_own_folder,
    run_path,
    setting,
    unchanged_by_default,
)
from minirlhf.evaluation import (
    POLICY_KEYS,
    figures_over_seeds,
    policy_numbers,
    policy_report,
    run_over_seeds,
)
from minirlhf.files import CheckpointError, InputError, read_json, read_meta
from minirlhf.lm.checkpoint import load_model
from minirlhf.lm.model import PRESETS as MODEL_PRESETS
from minirlhf.machine import THREAD_VARIABLES, blas_threads, cores, environment, peak_rss_mb
from minirlhf.records import (
    PipelineError,
    RunLock,
    digests,
    nan_to_null,
    read_record,
    record_holds,
    record_path,
    remove_half_written,
    write_json,
    write_record,
)
from minirlhf.registry import STAGES, depends_on, output_path, policy_stages
from minirlhf.world import get_task
from minirlhf.world.preference_data import load_jsonl

log = logging.getLogger("minirlhf.pipeline")

# The presets: "default" is every stage's defaults (the figures in the README); the others are
# what each stage's record says to change, e.g. "tiny", a one-minute smoke run (the tests use it).
PRESETS = ("default", *sorted({p for s in STAGES.values() for p in s.presets}))


@dataclass
class PipelineConfig:
    """The pipeline's own settings, made with ``setting`` as a stage's are (``stage_configs``
    checks them with ``check_settings``, then every stage's config, before any work)."""

    name: str = setting("default", "the run's folder: <runs_dir>/<name>")
    preset: str = setting("default", "default (about 14 minutes) or tiny (under 1)",
                          choices=PRESETS)
    runs_dir: str = setting("runs", "where run folders go")
    corpus: str = setting("reviews", "the pretraining corpus: a shipped one by name, or a file")
    seed: int = setting(0, "every stage's seed", "[0, inf)")
    force: bool = setting(False, "redo every stage even when its record matches")
    progress: bool = setting(True, "tqdm bars")
    overrides: list[str] = field(default_factory=list)  # "stage.key=value", e.g. "ppo.beta=0.1"


@dataclass
class PipelineResult:
    config: PipelineConfig
    report: str  # path of report.md
    summary: dict[str, Any]  # what summary.json holds
    ran: list[str] = field(default_factory=list)  # stages that ran
    skipped: list[str] = field(default_factory=list)  # stages whose records matched
    seconds: float = 0.0


# ------------------------------------------------------------------------ stage configs
def stage_configs(config: PipelineConfig) -> dict[str, Any]:
    """Every stage's config for this run: its folder and its inputs inside runs/<name>, the
    pipeline's seed, progress and corpus where the stage has such a setting, the preset and the
    overrides applied, and each checked (with the configs of the stages it reads from): every
    error is raised here, before any work starts."""
    check_settings(config)
    root = Path(config.runs_dir) / config.name
    per_stage: dict[str, list[str]] = {s: [] for s in STAGES}
    for item in config.overrides:
        stage, dot, rest = item.partition(".")
        if not dot or stage not in STAGES:
            raise ConfigError(f"pipeline override {item!r} must look like stage.key=value with "
                              f"stage one of {', '.join(STAGES)}")
        per_stage[stage].append(rest)
    common = dict(seed=config.seed, progress=config.progress, corpus=config.corpus)
    out: dict[str, Any] = {}
    for name, stage in STAGES.items():
        fields = {f.name for f in dataclasses.fields(stage.config)}
        paths = {"out_dir": run_path(name, root=root),
                 **{key: output_path(dep, root) for key, dep in stage.inputs.items()}}
        settings = {k: v for k, v in {**paths, **common}.items() if k in fields}
        cfg = stage.config(**{**settings, **stage.presets.get(config.preset, {})})
        try:
            out[name] = apply_overrides(cfg, per_stage[name])
            out[name].check({key: out[dep] for key, dep in stage.inputs.items()})
            _check_given_files(out[name], stage, root)
        except ConfigError as e:  # name the stage, as the override does: ppo.beta=...
            raise ConfigError(f"{name}: {e}") from None
    folders: dict[Path, str] = {}
    for name, cfg in out.items():  # each stage writes a folder of its own
        other = folders.setdefault(Path(cfg.out_dir).resolve(), name)
        if other != name:
            raise ConfigError(f"{name}.out_dir = {cfg.out_dir} is {other}'s folder too: each "
                              "stage writes a folder of its own")
    return out


def _check_given_files(cfg: Any, stage: Any, root: Path) -> None:
    """What a stage's settings name outside what the pipeline makes, checked now rather than
    when the stage starts: its folder (no file in the way, none of its inputs), an input given
    instead of an earlier stage's output and read by this config (there, and a preference file
    read through), and each such checkpoint (kind, world, tokenizer). No two stages share a
    folder (``stage_configs``)."""
    require_folder_path(cfg.out_dir, f"{stage.name}.out_dir")
    require_own_folder(cfg, stage.name, stage.output, others=False)
    # not read by this config, or made by the pipeline before this stage runs (or rerun)
    skip = list(stage.unused(cfg))
    for key, dep in stage.inputs.items():
        given = getattr(cfg, key)
        if key in skip or Path(given).resolve() == Path(output_path(dep, root)).resolve():
            skip.append(key)
            continue
        require_inputs(cfg, {key: dep})
        if key == "preferences":
            load_jsonl(given)  # file and line of the first bad record, before any work
    check_checkpoints(cfg, skip)


def fingerprints(cfgs: dict[str, Any], root: Path, threads: int) -> dict[str, str]:
    """A hash of each stage's config, of the BLAS thread count (results depend on it, see
    ``blas_threads``) and of its upstream stages' fingerprints. Paths inside the run folder
    count relative to it (a moved or copied run folder stays valid), and progress bars do not
    change results, so they are left out, as are settings added later at their default
    (``unchanged_by_default``: runs made before them stay valid)."""
    prefix = str(root) + os.sep
    out: dict[str, str] = {}
    for stage in STAGES:
        left_out = {"progress"} | unchanged_by_default(cfgs[stage])
        fields = {k: (v.replace(prefix, "<run>/") if isinstance(v, str) else v)
                  for k, v in asdict(cfgs[stage]).items() if k not in left_out}
        text = json.dumps({"stage": stage, "config": fields, "blas_threads": threads,
                           "upstream": [out[d] for d in depends_on(stage)]}, sort_keys=True)
        out[stage] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return out


def estimate_seconds(config: PipelineConfig, cfgs: dict[str, Any], stages: list[str]
                     ) -> dict[str, float]:
    """A rough running time of each of ``stages`` on the reference 2-core laptop: the time the
    stage took with the preset's own settings, scaled by how much more work these settings ask
    for (``Stage.work``). Stages that declare no work or no time for the preset are left out."""
    todo = [s for s in stages if STAGES[s].work is not None
            and config.preset in STAGES[s].seconds]
    if not todo:
        return {}
    base = stage_configs(dataclasses.replace(config, overrides=[]))
    out = {}
    for name in todo:
        stage = STAGES[name]
        ratio = stage.work(cfgs[name], cfgs) / max(stage.work(base[name], base), 1e-12)
        out[name] = stage.seconds[config.preset] * ratio
    return out


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86400:,.0f} days"


def announce(estimate: dict[str, float], runs: str = "", logger: logging.Logger = log,
             keeps: str = "every finished stage") -> None:
    """Log the estimate of a whole run (``estimate``: its parts' seconds; ``runs``: what they
    add up over, "3 seeds" say); a run of over an hour is a warning (shown with -q too)."""
    if not estimate:
        return
    total = sum(estimate.values())
    parts = (f"{runs}: " if runs else "") + ", ".join(f"{name} {_duration(s)}"
                                                      for name, s in estimate.items())
    if total > 3600:
        logger.warning("this run will take about %s on a 2-core laptop (%s); Ctrl-C stops it, "
                       "keeping %s", _duration(total), parts, keeps)
    else:
        logger.info("estimated time: about %s on a 2-core laptop (%s)", _duration(total), parts)


def model_preset(config: Any) -> str:
    """The model size a stage's config trains (pretrain: its ``preset``; the others: that of
    the checkpoint they start from, by its architecture), "default" when it cannot be told."""
    if hasattr(config, "preset"):
        return config.preset
    path = getattr(config, "init", "") or getattr(config, "policy", "")
    try:
        arch = read_meta(path)["config"]
    except (CheckpointError, OSError, KeyError, TypeError):
        return "default"
    return next((name for name, spec in MODEL_PRESETS.items()
                 if all(arch.get(k) == v for k, v in spec.items())), "default")


def estimate_stage(name: str, config: Any) -> float | None:
    """A stage command's rough time on the reference 2-core laptop, as ``estimate_seconds``
    counts a pipeline's stage: the time it took with the pipeline preset of its model's size,
    scaled by its work (the other stages' configs that preset's); None for a stage that
    declares no work or no time for that size (the stages beyond the pipeline)."""
    stage = STAGES.get(name)
    preset = model_preset(config)
    if stage is None or stage.work is None or preset not in stage.seconds:
        return None
    base = stage_configs(PipelineConfig(preset=preset))
    return stage.seconds[preset] * stage.work(config, {**base, name: config}) / max(
        stage.work(base[name], base), 1e-12)


def to_run(config: PipelineConfig, cfgs: dict[str, Any], found: dict[str, Any],
           prints: dict[str, str]) -> list[str]:
    """The stages a run will run: every one with ``force``, else those without a record of
    this fingerprint (``found``: each stage's record or None)."""
    return [s for s in STAGES if config.force or found[s] is None
            or found[s].get("fingerprint") != prints[s]]


def stages_to_run(config: PipelineConfig, threads: int) -> list[str]:
    """The stages ``run_pipeline(config)`` would train in a process of ``threads`` threads:
    those whose record is missing or was made with other settings (the records read as they
    are, without a word: the run says what it finds; their files are not hashed)."""
    cfgs = stage_configs(config)
    root = Path(config.runs_dir) / config.name
    found = {}
    for name in STAGES:
        try:
            found[name] = read_json(record_path(root, name))
        except (OSError, InputError):
            found[name] = None
    return to_run(config, cfgs, found, fingerprints(cfgs, root, threads))


def estimate_run(config: PipelineConfig) -> dict[str, float]:
    """The estimate of ``run_pipeline(config)``, before it runs: its stages still to run
    (``stages_to_run``), each timed by ``estimate_seconds``."""
    return estimate_seconds(config, stage_configs(config), stages_to_run(config, blas_threads()))


# ---------------------------------------------------------------------------- the stages
def _log_samples(stage: str, numbers: dict[str, Any]) -> None:
    """A few generations before and after the stage, so the log shows what it changed."""
    lines = []
    for when in ("before", "after"):
        if numbers.get(when):
            lines.append(f"  {when} {stage}:")
            lines += [f"    {text}" for text in numbers[when]]
    if numbers.get("samples"):  # a policy stage: its samples beside their gold reward
        lines.append(f"  after {stage} (gold reward, prompt|response):")
        lines += [f"    {gold:+6.2f}  {prompt}|{response}"
                  for prompt, response, gold in numbers["samples"][:3]]
    if lines:
        log.info("samples\n%s", "\n".join(lines))


def _relative_plots(numbers: dict[str, Any], root: Path) -> None:
    """Plot paths relative to the run folder, which may move."""
    if "plot" in numbers:
        numbers["plot"] = os.path.relpath(numbers["plot"], root)
    if "plots" in numbers:
        numbers["plots"] = [os.path.relpath(p, root) for p in numbers["plots"]]


def run_pipeline(config: PipelineConfig,
                 on_stage_done: Callable[[str], None] | None = None,
                 estimate: bool = True, course: bool = False) -> PipelineResult:
    """Run every stage that is not already done, then write report.md and summary.json.
    ``on_stage_done(stage)`` is called after each stage's record is written; ``estimate``:
    log the run's estimated time first (``run_seeds`` logs the estimate of all its seeds);
    ``course``: the course's own run, marked as such (``keep_the_course_run``)."""
    t0 = time.time()
    cfgs = stage_configs(config)  # every config error surfaces here, before any work
    root = Path(config.runs_dir) / config.name
    threads = blas_threads()
    prints = fingerprints(cfgs, root, threads)
    result = PipelineResult(config=config, report="", summary={})
    records: dict[str, dict[str, Any]] = {}
    with RunLock(root):
        seeds = sorted(root.glob("seed*/pipeline"))
        if seeds:  # their summary.json and report.md over seeds would be replaced
            raise PipelineError(f"{root} holds runs over seeds ({seeds[0].parent}, ...); give "
                                "the run of one seed a --name of its own")
        found = _records(root)
        if not course:
            keep_the_course_run(root, config, cfgs, threads)
        refuse_other_threads(root, threads, config.force, found, pipeline_words(
            config.preset, config.name, config.runs_dir, config.seed, config.overrides))
        log.info("run folder %s", root.absolute())
        remove_half_written(root, [root / "pipeline", *(root / name for name in STAGES)])
        if estimate:
            announce(estimate_seconds(config, cfgs, to_run(config, cfgs, found, prints)))
        for i, name in enumerate(STAGES):
            record = _reusable(root, name, found[name], prints[name], config.force, i)
            if record is not None:
                records[name] = record
                result.skipped.append(name)
                continue
            records[name] = _run_stage(root, name, cfgs, prints[name], threads, i)
            result.ran.append(name)
            if on_stage_done is not None:
                on_stage_done(name)
        _write_summary_and_report(result, cfgs, records, root, t0)
        if course:
            mark_as_course_run(config, threads)
    rss = peak_rss_mb()
    log.info("pipeline finished in %.0f s; peak resident memory %s", result.seconds,
             "unknown" if rss is None else f"{rss:.0f} MB")
    return result


def _relative_output(stage: str, root: Path) -> str:
    """The file ``stage`` leaves for later stages, relative to the run folder (which may
    move)."""
    return os.path.relpath(output_path(stage, root), root)


def _inputs(stage: str, root: Path) -> list[str]:
    """The files ``stage`` reads, relative to the run folder."""
    return [_relative_output(d, root) for d in depends_on(stage)]


def _first_run_with_other_threads(found: dict[str, dict[str, Any] | None],
                                  threads: int) -> str | None:
    """The first stage whose record was made with another BLAS thread count, if any."""
    return next((name for name, record in found.items() if record is not None
                 and record.get("blas_threads", threads) != threads), None)


def _records(root: Path) -> dict[str, dict[str, Any] | None]:
    """Every stage's record in the run at ``root`` (None where there is none)."""
    return {name: read_record(record_path(root, name)) for name in STAGES}


def other_thread_count(root: Path, threads: int) -> int | None:
    """The thread count of the first stage of the run in ``root`` made with another count than
    ``threads``, if any."""
    found = _records(root)
    name = _first_run_with_other_threads(found, threads)
    return None if name is None else int(found[name]["blas_threads"])


def made_with(root: Path) -> int | None:
    """The BLAS thread count the run in ``root`` was made with (its first stage's record that
    says one), None when it has no record."""
    return next((int(r["blas_threads"]) for r in _records(root).values()
                 if r is not None and "blas_threads" in r), None)


def other_count_error(what: str, then: int, threads: int, same: str, again: str,
                      command: Sequence[str] = ()) -> str:
    """The one line for ``what`` made with ``then`` threads where this process has ``threads``:
    what that count does (``same``: it is reused, say) and how to run with it
    (``threads_hint``: ``command``, the words of the command that met it, with that count),
    or ``--force``, which does ``again``."""
    same = (f"with that count {same}: {threads_hint(then, command)}" if then <= cores()
            else f"that count cannot run here ({threads_hint(then)})")
    return (f"{what} was made with {then} thread{'s' * (then != 1)}, this process has {threads}, "
            f"and results depend on the count; {same}; or add --force to {again}")


def refuse_other_threads(root: Path, threads: int, force: bool,
                         found: dict[str, dict[str, Any] | None] | None = None,
                         command: Sequence[str] = ()) -> None:
    """A run made with another BLAS thread count is not replaced unless ``force``: results
    depend on the count, so this process would train every stage again. One line, before any
    work, naming how to reuse the run (``command``, the one that met it, with that count) or
    replace it (``--force``)."""
    found = found or _records(root)
    name = _first_run_with_other_threads(found, threads)
    if name is None:
        return
    then = int(found[name]["blas_threads"])
    if force:
        log.warning("%s: was run with %d BLAS threads, this process has %d; --force: every "
                    "stage runs again", name, then, threads)
        return
    raise PipelineError(other_count_error(
        f"{root}: its {name} stage", then, threads, "the run is reused",
        f"train every stage again with {threads}, replacing the run", command))


def pipeline_words(preset: str, name: str, runs_dir: str | Path, seed: int = 0,
                   overrides: Sequence[str] = (), seeds: int = 1) -> list[str]:
    """The words of the command that runs the pipeline run ``runs_dir/name`` (``seeds``:
    runs over that many seeds from ``seed``)."""
    return ["python", "-m", "minirlhf", "pipeline", "--preset", preset, "--name", name,
            "--runs-dir", str(Path(runs_dir).absolute()),
            *(("--seed", str(seed)) if seed else ()), *(("--seeds", str(seeds)) if seeds > 1
                                                        else ()),
            *(("--set", *overrides) if overrides else ())]


def pipeline_command(preset: str, name: str, runs_dir: str | Path, seed: int = 0,
                     overrides: Sequence[str] = (), threads: int | None = None) -> str:
    """The ``command_hint`` of the pipeline run ``runs_dir/name`` (``threads``: the count it
    is run with, set before it)."""
    return command_hint(pipeline_words(preset, name, runs_dir, seed, overrides),
                        env=None if threads is None else {THREAD_VARIABLES[0]: str(threads)})


def report_command(root: Path) -> str | None:
    """The command that writes report.md of the finished pipeline run in ``root`` again,
    training nothing: the pipeline's, with the thread count the run was made with. None when
    the run has no summary.json, or its stages were made with other settings than its preset's
    (the command would train them again), or with more threads than this machine has."""
    try:
        summary = read_json(root / "summary.json")
        config = PipelineConfig(name=root.name, preset=summary["preset"],
                                runs_dir=str(root.parent), seed=int(summary["seed"]),
                                progress=False)
        count = made_with(root)
        if count is None or count > cores() or stages_to_run(config, count):
            return None
    except (OSError, InputError, ConfigError, KeyError, TypeError, ValueError):
        return None  # a hint, after the work is done: never an error of its own
    return pipeline_command(config.preset, root.name, root.parent, config.seed,
                            threads=count)  # set whatever the shell has set


# In a run's pipeline/ folder: the course made this run (the chapters and the claims read it),
# with these stages' fingerprints
COURSE_MARK = "course.json"


def mark_as_course_run(config: PipelineConfig, threads: int) -> None:
    """Say in the run of ``config`` that the course made it, with its stages' fingerprints on
    ``threads`` threads (``keep_the_course_run``)."""
    root = Path(config.runs_dir) / config.name
    write_json(root / "pipeline" / COURSE_MARK, {
        "made by": "python -m minirlhf course", "threads": threads,
        "fingerprints": fingerprints(stage_configs(config), root, threads)})


def keep_the_course_run(root: Path, config: PipelineConfig, cfgs: dict[str, Any],
                        threads: int) -> None:
    """Other settings do not train a stage again over the run the course made (the chapters
    and the claims read it): one line, before any work, naming the command that makes a run
    of its own. With ``--force`` they do, and the run is the course's no more (``course``
    trains its stages back: ``stages_to_run``). Another thread count alone is
    ``refuse_other_threads``'s to say (forced, the run is the course's no more either: the
    course keeps it aside)."""
    mark = root / "pipeline" / COURSE_MARK
    try:
        made = json.loads(mark.read_text())
        then, theirs = made["threads"], made["fingerprints"]
        mine = fingerprints(cfgs, root, then)  # on the course's count
    except (OSError, ValueError, TypeError, KeyError):  # no mark (or none it can read)
        return
    changed = [s for s in STAGES if mine[s] != theirs.get(s)]
    if config.force and not changed and threads != then:
        mark.unlink()  # trained again with another count: another run than the course's
        return
    if not changed:
        return
    which = f"its {', '.join(changed)} stage{'s' * (len(changed) > 1)}"
    if config.force:
        log.warning("%s: the course made this run; --force: %s trained with these settings "
                    "(python -m minirlhf course trains them back)", root, which)
        mark.unlink()
        return
    own = pipeline_command(config.preset, f"{config.name}-mine", config.runs_dir, config.seed,
                           config.overrides)
    raise PipelineError(f"{root}: the course made this run, which the chapters and the claims "
                        f"read, and these settings would train {which} again over it: give "
                        f"this run a folder of its own, {own}, or add --force to train every "
                        "stage again with these settings, replacing it")


def threads_hint(count: int, command: Sequence[str] = ()) -> str:
    """How to run again with ``count`` threads (what a run or a result made with that count
    needs to be reused): ``command`` (its words) with the variable that wins over the others
    (``THREAD_VARIABLES``' first, whatever else is set) before it, as a ``command_hint``
    (without ``command``: the variable, for the same command); or why it cannot be done on
    this machine."""
    if count > cores():
        return (f"this machine lets this process use {cores()} core(s), so it cannot run with "
                f"{count} threads")
    env = {THREAD_VARIABLES[0]: str(count)}
    if command:
        return f"run {command_hint(list(command), env=env)}"
    return (f"run the same command with {command_hint([], env=env)}"
            f" before it ({THREAD_VARIABLES[0]} wins over {', '.join(THREAD_VARIABLES[1:])})")


def _reusable(root: Path, name: str, record: dict[str, Any] | None, fingerprint: str,
              force: bool, i: int) -> dict[str, Any] | None:
    """The stage's record if the stage is done already (its fingerprint matches, the files it
    names are the very files it wrote and read, and ``force`` is off), else None."""
    if record is None or record.get("fingerprint") != fingerprint:
        return None
    problem = record_holds(root, record, _inputs(name, root))
    if problem is None and not force:
        log.info("[%d/%d] %s: done already (config %s), skipped", i + 1, len(STAGES), name,
                 fingerprint)
        return record
    if problem:
        log.warning("%s: %s; running the stage again", name, problem)
    return None


def _run_stage(root: Path, name: str, cfgs: dict[str, Any], fingerprint: str, threads: int,
               i: int) -> dict[str, Any]:
    """Run one stage and write its record. The record is written last, holding the hashes of
    what the stage wrote and read: a stage killed before its record is written looks
    unfinished, and a file changed since (truncated, altered, another stage's copied in) makes
    it run again."""
    stage, cfg = STAGES[name], cfgs[name]
    log.info("[%d/%d] %s ...", i + 1, len(STAGES), name)
    t = time.time()
    read = digests(root, _inputs(name, root))  # what the stage reads, hashed before it reads it
    try:
        numbers = stage.record(stage.run(cfg), cfg)
    except FloatingPointError as e:
        started = ", ".join(f"{k} = {getattr(cfg, k)}" for k in stage.inputs)
        raise PipelineError(
            f"stage {name} stopped: {e}. It started from {started or 'scratch'}, which "
            "is intact, as is every finished stage; fix the config and run the pipeline "
            "again to resume from there") from None
    _relative_plots(numbers, root)
    record = write_record(record_path(root, name), {
        "stage": name, "fingerprint": fingerprint, "blas_threads": threads,
        "outputs": digests(root, [_relative_output(name, root)]), "inputs": read,
        "config": asdict(cfg), "numbers": numbers, "seconds": round(time.time() - t, 1)})
    log.info("%s finished in %.0f s", name, time.time() - t)
    _log_samples(name, numbers)
    return record


def _write_summary_and_report(result: PipelineResult, cfgs: dict[str, Any],
                              records: dict[str, dict[str, Any]], root: Path, t0: float) -> None:
    """summary.json (the SFT policy judged like the others beside every stage's numbers), then
    report.md; into ``result``."""
    from minirlhf.report import write_report

    sft_numbers = _sft_policy_numbers(cfgs)
    result.summary = nan_to_null(build_summary(result.config, records, sft_numbers))
    write_json(root / "summary.json", result.summary)
    result.seconds = time.time() - t0
    result.report = str(write_report(root, result.summary, records, result.seconds))


def _sft_policy_numbers(cfgs: dict[str, Any]) -> dict[str, Any]:
    """The SFT policy judged like the others (against its own, independently seeded samples:
    its win-rate is near 1/2 and its KL exactly 0), with the evaluation settings of the first
    trained policy stage."""
    cfg = next(cfgs[s.name] for s in policy_stages()
               if hasattr(cfgs[s.name], "eval_samples_per_prompt"))
    sft, tokenizer, _ = load_model(cfg.init)
    rep = policy_report(sft, sft, tokenizer, get_task(cfg.task), cfg.seed,
                        cfg.eval_samples_per_prompt, cfg.max_new_tokens)
    return policy_numbers(rep, cfg.eval_samples_per_prompt)


def _merge(into: dict[str, Any], more: dict[str, Any]) -> None:
    """Merge ``more`` into ``into``, dictionaries key by key."""
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def policy_figures(numbers: dict[str, Any]) -> dict[str, Any]:
    """A policy's headline figures for summary.json, with their 95% intervals over the
    evaluation prompts (``ci95``) when its record has them."""
    out = {k: numbers[k] for k in POLICY_KEYS}
    if "ci95" in numbers:
        out["ci95"] = numbers["ci95"]
    return out


def build_summary(config: PipelineConfig, records: dict[str, dict[str, Any]],
                  sft_numbers: dict[str, Any]) -> dict[str, Any]:
    """The report's table numbers, machine-readable: each policy's headline figures and
    samples, whatever each stage's record says, and the machine's ``environment`` (Python,
    NumPy, BLAS and its threads, CPU). No timings: the same seed on the same machine gives the
    same file."""
    summary: dict[str, Any] = {
        "name": config.name, "preset": config.preset, "seed": config.seed,
        "environment": environment(),
        "policies": {"sft": policy_figures(sft_numbers)},
        "samples": {"sft": sft_numbers["samples"]}}
    for name, stage in STAGES.items():
        numbers = records[name]["numbers"]
        if stage.policy:
            summary["policies"][name] = policy_figures(numbers)
            summary["samples"][name] = numbers["samples"]
        if stage.summary is not None:
            _merge(summary, stage.summary(numbers))
    return summary


# ------------------------------------------------------------------------------- seeds
@dataclass
class SeedsResult:
    config: PipelineConfig
    seeds: list[int]
    runs: list[PipelineResult]  # one full pipeline run per seed
    report: str  # path of the aggregate report.md
    summary: dict[str, Any]  # what the aggregate summary.json holds
    seconds: float = 0.0


def run_seeds(config: PipelineConfig, n: int) -> SeedsResult:
    """The pipeline ``n`` times, with seeds ``config.seed`` .. ``config.seed + n - 1`` (every
    stage's random streams derive from the seed, so the runs are independent), each in its own
    folder ``runs/<name>/seed<k>/`` (itself a resumable run with its report), then the figures
    aggregated over seeds in ``runs/<name>/summary.json`` and ``report.md``."""
    t0 = time.time()
    root = Path(config.runs_dir) / config.name
    check_range("pipeline", "--seeds", n, SEEDS_RANGE)

    def seed_config(seed: int) -> PipelineConfig:
        return dataclasses.replace(config, seed=seed, name=f"seed{seed}", runs_dir=str(root))

    if (root / "pipeline").is_dir():  # its summary.json and report.md would be replaced
        raise PipelineError(f"{root} holds a run of one seed (its records, {root / 'pipeline'}"
                            "); give the runs over seeds a --name of their own")
    seeds = range(config.seed, config.seed + n)
    made = {s: c for s in seeds if (c := made_with(root / f"seed{s}")) is not None}
    if len(set(made.values())) > 1 and not config.force:  # no one count reuses them all
        each = ("; each seed is read again with its own count: `" + " && ".join(
            pipeline_command(config.preset, f"seed{s}", root, s, config.overrides,
                             threads=c).strip("`")  # one command each, its count before it
            for s, c in made.items()) + "`") if max(made.values()) <= cores() else ""
        raise PipelineError(
            f"{root}: its seeds were made with different BLAS thread counts ("
            + ", ".join(f"seed{s}: {c}" for s, c in made.items()) + f"), this process has "
            f"{blas_threads()}, and results depend on the count{each}; or add --force to "
            f"train every seed again with {blas_threads()}, replacing them")
    if not config.force:  # every seed's folder, before any work (--force: each seed's run
        for seed in seeds:  # says what it replaces)
            refuse_other_threads(root / f"seed{seed}", blas_threads(), False, command=(
                pipeline_words(config.preset, config.name, config.runs_dir, config.seed,
                               config.overrides, seeds=n)))
    total: dict[str, float] = {}  # the whole run's estimate, before the first seed starts
    for seed in range(config.seed, config.seed + n):
        for stage, seconds in estimate_run(seed_config(seed)).items():
            total[stage] = total.get(stage, 0.0) + seconds
    announce(total, f"{n} seeds")

    def one(seed: int) -> PipelineResult:
        log.info("seed %d of %d (seed %d): %s", seed - config.seed + 1, n, seed,
                 root / f"seed{seed}")
        return run_pipeline(seed_config(seed), estimate=False)

    seeds, runs, over_seeds = run_over_seeds(
        config.seed, n, one, lambda done: aggregate_seeds([r.summary for r in done]), "pipeline")
    summary = nan_to_null({"name": config.name, "preset": config.preset, "seeds": seeds,
                           "environment": runs[0].summary["environment"], **over_seeds})
    write_json(root / "summary.json", summary)
    from minirlhf.report import write_seeds_report

    seconds = time.time() - t0
    report = write_seeds_report(root, summary, [f"seed{s}" for s in seeds], seconds)
    return SeedsResult(config, seeds, runs, str(report), summary, seconds)


def aggregate_seeds(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of several runs' summaries (one per seed) over seeds: for each policy and
    the reward model, ``figures_over_seeds`` (each figure's mean under today's key, so readers
    of a one-seed summary keep working, and beside them ``mean``, ``ci95`` and ``per_seed``).
    Within-run intervals (over prompts) stay in each seed's own summary."""
    out: dict[str, Any] = {}
    if isinstance(summaries[0].get("policies"), dict):
        out["policies"] = {name: figures_over_seeds([s["policies"][name] for s in summaries])
                           for name in summaries[0]["policies"]}
    if isinstance(summaries[0].get("reward_model"), dict):
        rms = [s["reward_model"] for s in summaries]
        out["reward_model"] = figures_over_seeds(rms)
        if all(rm.get(k) is None for rm in rms for k in DATA_GOLD_KEYS):  # data without gold:
            out["reward_model"].update(dict.fromkeys(DATA_GOLD_KEYS))  # null, as in each seed's
    return out


# The reward model's figures that need the data's gold or label probabilities (null in
# summary.json, "not available" in report.md, when the preference file has neither).
DATA_GOLD_KEYS = ("ceiling", "expected_accuracy", "gold_accuracy")
