"""Everything the chapters read, built in worker processes: ``python -m minirlhf course``.

The course is a list of jobs, each a plain function call with picklable arguments, for seeds
0 .. N-1 (a seed's run folder is ``<base>`` for seed 0, ``<base>-seed<k>`` else): the pipeline's
run of each seed, the scratchpad world's route (its pretraining and SFT) of each seed, every
experiment once per seed on the pipeline's seed-0 run (``experiments/<name>/seed<k>/``, as
``experiment NAME --seeds N`` lays them out) with its summary over seeds, critic-free's seed k on
route k, and the frontier of each seed. A job starts when the jobs it reads are done (and the
frontier's seed k after ppo-details' and dpo-details' when they are planned: it shares their
runs). The claims (``minirlhf.course.claims``) read these runs.

Jobs run in ``workers`` processes of one engine thread and one BLAS thread each (two such
processes use both cores fully, where Python threads inside one process do not), through the
standard library's ``concurrent.futures`` with the spawn start method, or on any other
``Executor`` (a Dask cluster's). A job that finishes writes its record in
``runs/<base>/course/``: its fingerprint (its call and arguments, the thread count, and the
fingerprints of the jobs it read) and the thread count it ran on. A rerun skips every job whose
record matches; the pipeline and the experiments also resume inside a job, as on their own.

What can go wrong: a job that fails is reported in one line and the jobs that read it are not
started, the others go on; a worker that dies (kill -9, out of memory) takes its pool with it,
so its running jobs go back in the queue on a new pool (twice at most); Ctrl-C stops every
worker and keeps what finished; a worker whose parent is gone stops itself.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import re
import shutil
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm import tqdm

from minirlhf.config import ConfigError, check_range
from minirlhf.files import read_cache
from minirlhf.lm.checkpoint import atomic_write
from minirlhf.machine import THREAD_VARIABLES, cores

log = logging.getLogger("minirlhf.course.build")

THREADS = 1  # a job runs on one engine thread and one BLAS thread (``claims`` may ask more)
ATTEMPTS = 2  # a job whose worker dies is given one more
# The experiments the chapters read over seeds (critic-free has its own base run).
EXPERIMENTS = ("rlaif", "sycophancy", "length-bias", "overoptimization", "rankings",
               "ppo-details", "dpo-details")
# A job's time on one engine thread of a 2-core laptop, in seconds (a worker's own clock, the
# default preset): the plan's estimate, and the order of the ready jobs (longest first, so the
# long ones do not end the run alone). The frontier's is without the four points of each seed
# it reads from ppo-details and dpo-details.
SECONDS = {"pipeline": 580, "route": 160, "rlaif": 210, "sycophancy": 255, "length-bias": 430,
           "overoptimization": 320, "rankings": 345, "ppo-details": 710, "dpo-details": 335,
           "critic-free": 1090, "frontier": 1300, "seeds": 1}
# The same, quick (the tiny preset's pipeline, each experiment's --quick): a few seconds each
QUICK_SECONDS = {"pipeline": 15, "route": 5, "seeds": 1}


@dataclass(frozen=True)
class Job:
    """One unit of work: ``call`` ("module:function") called with ``kwargs`` in a worker, after
    the jobs named in ``needs``, whose outputs it reads, and after those named in ``after``
    when they are in the plan and not done yet: their runs it shares when they are there (it
    trains them itself when they are not), so waiting saves work but is not needed."""

    name: str
    call: str
    kwargs: tuple[tuple[str, Any], ...]
    needs: tuple[str, ...] = ()
    after: tuple[str, ...] = ()


@dataclass
class CourseResult:
    done: list[str] = field(default_factory=list)  # run now
    reused: list[str] = field(default_factory=list)  # finished by an earlier run
    failed: dict[str, str] = field(default_factory=dict)  # job -> its one-line error
    not_started: dict[str, str] = field(default_factory=dict)  # job -> why
    seconds: dict[str, float] = field(default_factory=dict)  # each job run now, by its clock


# ---------------------------------------------------------------------------- the plan
def plan(preset: str = "default", seeds: int = 3, runs_dir: str = "runs") -> list[Job]:
    """The jobs that make every run the chapters read, each after the jobs it reads.
    ``preset`` tiny: the tiny pipeline, quick experiments and a small scratchpad route."""
    if preset not in ("default", "tiny"):
        raise ConfigError(f"course: preset must be default or tiny, got {preset!r}")
    check_range("course", "--seeds", seeds, "[1, 10]")
    quick, runs = preset == "tiny", str(Path(runs_dir).absolute())
    scratch = "scratchpad-tiny" if quick else "scratchpad"
    here = "minirlhf.course.build"

    def seeded(job: str, k: int) -> str:  # seed 0 keeps the plain name
        return job if k == 0 else f"{job}:seed{k}"

    jobs = [Job(seeded("pipeline", k), f"{here}:pipeline_run",
                (("name", run_name(preset, k)), ("preset", preset), ("runs_dir", runs),
                 *((("seed", k),) if k else ()))) for k in range(seeds)]
    jobs += [Job(seeded("route", k), f"{here}:scratchpad_route",
                 (("name", run_name(scratch, k)), ("quick", quick), ("runs_dir", runs),
                  *((("seed", k),) if k else ()))) for k in range(seeds)]
    for name in EXPERIMENTS:  # on the pipeline's seed-0 run, over the experiment's seeds
        args = (("name", name), ("base", preset), ("quick", quick), ("runs_dir", runs))
        per_seed = [Job(f"{name}:seed{k}", f"{here}:experiment_run", (*args, ("seed", k)),
                        ("pipeline",)) for k in range(seeds)]
        jobs += per_seed
        if seeds > 1:
            jobs.append(Job(f"{name}:seeds", f"{here}:experiment_seeds", (*args, ("seeds", seeds)),
                            tuple(j.name for j in per_seed)))
    # critic-free: seed k on the scratchpad route of seed k (the route is part of the draw)
    jobs += [Job(f"critic-free:seed{k}", f"{here}:experiment_run",
                 (("name", "critic-free"), ("base", run_name(scratch, k)), ("quick", quick),
                  ("runs_dir", runs), ("seed", k)), (seeded("route", k),))
             for k in range(seeds)]
    # the frontier: seed k on the pipeline's seed-0 run, in its folder (seed 0) or seed<k>/,
    # after ppo-details' and dpo-details' seed k when planned: it shares their runs
    jobs += [Job(seeded("frontier", k), f"{here}:experiment_run",
                 (("name", "frontier"), ("base", preset), ("quick", quick), ("runs_dir", runs),
                  ("seed", k)), ("pipeline",), (f"ppo-details:seed{k}", f"dpo-details:seed{k}"))
             for k in range(seeds)]
    return jobs


def run_name(base: str, seed: int) -> str:
    """The folder of a base run's seed: ``base`` for seed 0, ``base-seed<k>`` else."""
    return base if seed == 0 else f"{base}-seed{seed}"


def fingerprints(jobs: list[Job], threads: int = THREADS) -> dict[str, str]:
    """Each job's fingerprint: its call and arguments (the runs folder aside: moving it keeps
    the records), the thread count, and the fingerprints of the jobs it reads."""
    out: dict[str, str] = {}
    for job in jobs:  # in plan order: every job after what it needs
        kwargs = [kv for kv in job.kwargs if kv[0] != "runs_dir"]
        text = json.dumps([job.call, kwargs, threads, [out.get(n, n) for n in job.needs]],
                          sort_keys=True, default=str)
        out[job.name] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return out


def seconds(job: Job, quick: bool = False) -> float:
    """The job's rough one-thread time (``SECONDS``, or ``QUICK_SECONDS``; a minute, or 4 s,
    for a job it does not know)."""
    kind = job.call.rsplit(":", 1)[1]
    key = dict(job.kwargs)["name"] if kind == "experiment_run" else \
        {"pipeline_run": "pipeline", "scratchpad_route": "route"}.get(kind, "seeds")
    return QUICK_SECONDS.get(key, 4) if quick else SECONDS.get(key, 60)


def critical_seconds(jobs: list[Job]) -> dict[str, float]:
    """Each job's time plus the longest chain of jobs that wait for it: started in this order,
    a short job that unlocks long ones (a route, before its critic-free run) goes early."""
    after: dict[str, list[str]] = {j.name: [] for j in jobs}
    for j in jobs:
        for n in (*j.needs, *j.after):
            after.setdefault(n, []).append(j.name)
    by_name = {j.name: j for j in jobs}
    out: dict[str, float] = {}
    for j in reversed(jobs):  # the plan lists every job after what it needs
        out[j.name] = seconds(j) + max((out[n] for n in after[j.name] if n in by_name),
                                       default=0.0)
    return out


def experiment_seconds(name: str, quick: bool) -> float:
    """The rough one-thread time of one seed of experiment ``name`` (``SECONDS``, or
    ``QUICK_SECONDS`` for its quick run, as ``estimate_minutes`` counts it)."""
    return QUICK_SECONDS.get(name, 4) if quick else SECONDS.get(name, 60)


def estimate_minutes(jobs: list[Job], workers: int, quick: bool) -> float:
    """A rough wall-clock estimate: the jobs' one-thread times shared among the workers."""
    return sum(seconds(j, quick) for j in jobs) / max(workers, 1) / 60


# ------------------------------------------------------------------ the jobs' functions
def pipeline_run(name: str, preset: str, runs_dir: str, seed: int = 0) -> None:
    """The pipeline's run ``runs/<name>`` with ``seed`` (it resumes stage by stage), marked as
    the course's: ``pipeline`` with other settings does not train over it then."""
    from minirlhf.pipeline import PipelineConfig, run_pipeline

    run_pipeline(PipelineConfig(name=name, preset=preset, runs_dir=runs_dir, seed=seed,
                                progress=False), course=True)


def scratchpad_route(name: str, quick: bool, runs_dir: str, seed: int = 0) -> None:
    """The scratchpad world's base run ``runs/<name>`` with ``seed``: pretraining on worked
    sums, then SFT on right ones (``stages.grpo.SCRATCHPAD_ROUTE``'s two commands; small
    budgets when ``quick``)."""
    from minirlhf.stages.pretrain import PretrainConfig, train_pretrain
    from minirlhf.stages.sft import SFTConfig, train_sft

    root = Path(runs_dir) / name
    train_pretrain(PretrainConfig(task="scratchpad", corpus="scratchpad", seed=seed,
                                  out_dir=str(root / "pretrain"), progress=False,
                                  **(dict(preset="tiny", steps=200) if quick else {})))
    small = dict(steps=60, n_demos=1000, eval_samples_per_prompt=1, max_new_tokens=60)
    train_sft(SFTConfig(task="scratchpad", init=str(root / "pretrain" / "model.npz"),
                        out_dir=str(root / "sft"), progress=False, seed=seed,
                        **(small if quick else dict(steps=600, n_demos=8000))))


def experiment_run(name: str, base: str, quick: bool, runs_dir: str, seed: int) -> None:
    """One seed of an experiment, in ``experiments/<name>/seed<k>/`` (the frontier: its own
    folder, which caches its points)."""
    from minirlhf.experiments import ExperimentConfig, run_experiment

    run_experiment(ExperimentConfig(name, base=base, runs_dir=runs_dir, quick=quick, seed=seed,
                                    subdir=subdir(name, seed), reuse=True))


def subdir(name: str, seed: int) -> str:
    """An experiment's seed's folder inside its own: ``seed<k>``, as ``--seeds`` lays them out;
    the frontier's and critic-free's seed 0 is their folder itself, where their command (one
    seed by default) writes and chapters 9 and 11 read."""
    return "" if name in ("frontier", "critic-free") and seed == 0 else f"seed{seed}"


def experiment_seeds(name: str, base: str, quick: bool, runs_dir: str, seeds: int) -> None:
    """An experiment's numbers over its seeds, in ``experiments/<name>/seeds.json``."""
    from minirlhf.experiments import ExperimentConfig, summarize_seeds

    summarize_seeds(ExperimentConfig(name, base=base, runs_dir=runs_dir, quick=quick),
                    list(range(seeds)))


# --------------------------------------------------------------------------- a worker
def set_threads(threads: int = THREADS) -> int:
    """``threads`` engine threads and BLAS threads in this process, and the variables that say
    so (the pipeline's records read them). Returns the engine's thread count in effect."""
    from minirlhf.autograd.runtime import configure

    os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
    return configure(threads)


def run_job(job: Job, record: str, fingerprint: str, threads: int = THREADS) -> float:
    """Run one job in this process (a worker's) on ``threads`` threads, then write its record
    (its fingerprint and the thread count it ran on) to ``record``; returns its seconds."""
    module, _, function = job.call.partition(":")
    call = getattr(importlib.import_module(module), function)
    threads = set_threads(threads)
    t0 = time.time()
    with warnings.catch_warnings():  # a NaN is the job's one-line error, not NumPy's words
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"minirlhf\.")
        call(**dict(job.kwargs))
    seconds = round(time.time() - t0, 1)
    data = json.dumps({"job": job.name, "call": job.call, "kwargs": dict(job.kwargs),
                       "fingerprint": fingerprint, "threads": threads, "seconds": seconds},
                      indent=1, default=str).encode()
    atomic_write(Path(record), lambda f: f.write(data))
    return seconds


def _watch_parent(parent: int) -> None:
    """A worker's start: stop this process when its parent is gone (a kill -9 of ``course``
    must not leave workers training on, holding a run's lock)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup to run: the job's files are atomic
    threading.Thread(target=watch, daemon=True).start()


# ------------------------------------------------------------------------ the runner
def still_the_course_run(job: Job, threads: int, mark: bool = True) -> bool:
    """Whether a finished pipeline job's run still holds what the course made (true for every
    other job): ``pipeline --force`` with other settings trains stages over it, and the
    course trains them back (saying so), which gives the very files the course's other jobs
    read. A run the course made before it marked its runs is marked now (``mark``; --plan
    writes nothing)."""
    if not job.call.endswith(":pipeline_run"):
        return True
    from minirlhf.pipeline import COURSE_MARK, PipelineConfig, mark_as_course_run, stages_to_run

    args = dict(job.kwargs)
    config = PipelineConfig(name=args["name"], preset=args["preset"], runs_dir=args["runs_dir"],
                            seed=args.get("seed", 0), progress=False)
    root = Path(config.runs_dir) / config.name
    changed = stages_to_run(config, threads)
    if changed:
        many = len(changed) > 1
        log.warning("%s: the record%s of its %s stage%s %s missing or say%s other settings "
                    "(pipeline --force with others, say); the course trains %s again", root,
                    "s" * many, ", ".join(changed), "s" * many, "are" if many else "is",
                    "" if many else "s", "them" if many else "it")
        return False
    if not mark:  # --plan: nothing read for writing, nothing written
        return True
    held = read_cache(root / "pipeline" / COURSE_MARK, log, "marking the run again")
    if not (isinstance(held, dict) and "fingerprints" in held):
        mark_as_course_run(config, threads)  # none yet, or one written before it held them
    return True


def finished(jobs: list[Job], prints: dict[str, str], runs_dir: str, base: str, threads: int,
             gone: set[str], mark: bool = True) -> tuple[set[str], set[str]]:
    """The jobs done already: their records say so (``is_done``), their files were not kept
    aside (``gone``), and a pipeline run still holds what the course made
    (``still_the_course_run``; ``mark``: mark one the course made before it marked its runs).
    The jobs that read a run the course trains back run again too: each finds its own results
    still good, by their inputs' contents, or makes them again. Returns (the jobs done, the
    jobs run again to check their results)."""
    done = {j.name for j in jobs if j.name not in gone
            and is_done(j, prints[j.name], runs_dir, base)}
    changed = {j.name for j in jobs if j.name in done and not still_the_course_run(j, threads,
                                                                                  mark)}
    again = set(changed)
    for j in jobs:  # in plan order: a job after the jobs it reads
        if again.intersection(j.needs):
            again.add(j.name)
    return done - again, (again - changed) & done


def record_path(runs_dir: str, base: str, job: Job) -> Path:
    return Path(runs_dir) / base / "course" / f"{job.name.replace(':', '_')}.json"


def is_done(job: Job, fingerprint: str, runs_dir: str, base: str) -> bool:
    """Its record is there, whole, with this fingerprint (a record cut short by a kill, or
    written for other arguments, threads or inputs, is not done)."""
    record = read_cache(record_path(runs_dir, base, job), log, "the job runs again")
    return record is not None and record.get("fingerprint") == fingerprint


@contextmanager
def _own_pool(workers: int, threads: int) -> Iterator[Callable[[], ProcessPoolExecutor]]:
    """Worker processes of ``threads`` threads: the thread variables are set while they start (their
    BLAS reads them as NumPy loads), and restored in this process afterwards. Yields a
    function that gives the current pool, a new one after the last one broke."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    pools: list[ProcessPoolExecutor] = []

    def pool(new: bool = False) -> ProcessPoolExecutor:
        if new or not pools:
            if pools:
                pools[-1].shutdown(wait=False, cancel_futures=True)
            os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
            pools.append(ProcessPoolExecutor(max_workers=workers, initializer=_watch_parent,
                                             initargs=(os.getpid(),),
                                             mp_context=get_context("spawn")))
        return pools[-1]
    try:
        yield pool
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def build(jobs: list[Job], base: str, runs_dir: str = "runs", workers: int = 2,
          executor: Executor | None = None, progress: bool = True,
          on_start: Callable[[list[Job], list[Job], list[Job]], None] | None = None,
          threads: int = THREADS) -> CourseResult:
    """Run every job not yet done, each as soon as the jobs it needs are done, ``workers`` at
    a time in processes of ``threads`` threads each (or on ``executor``, e.g. a Dask
    cluster's). ``on_start(to_run, done, checked)`` is called before any work (the command
    prints the plan; ``checked``: the jobs of ``to_run`` that run to check their results)."""
    if not 1 <= workers <= 64:
        raise ConfigError(f"course: --workers must be in [1, 64], got {workers}")
    prints = fingerprints(jobs, threads)
    asides, gone = set_aside(jobs, runs_dir, base, threads,
                             done=lambda j: is_done(j, prints[j.name], runs_dir, base))
    result = CourseResult()
    done, checked = finished(jobs, prints, runs_dir, base, threads, gone)
    result.reused = [j.name for j in jobs if j.name in done]
    pending = [j for j in jobs if j.name not in done]
    if on_start is not None:
        on_start(pending, [j for j in jobs if j.name in done],
                 [j for j in jobs if j.name in checked])
    if not pending:
        return result
    with _own_pool(workers, threads) as own:
        _run(pending, done, result, prints, runs_dir, base, workers, executor, own, progress,
             threads)
    return result


@dataclass(frozen=True)
class Aside:
    """A job's earlier output, made with another thread count, kept aside for the course."""

    job: str
    folder: Path  # a run folder, an experiment's seed<k>/, or (seed 0 of the frontier or
    # critic-free) the experiment's folder, of which only the files of that seed move
    kept: Path  # where it is kept
    count: int  # the thread count it was made with
    whole: bool  # the whole folder moved (else its seed<k>/ folders stay)
    reuse: str = ""  # the command that reads a pipeline run kept aside again
    other_settings: bool = False  # a pipeline run made with other settings than the preset's


def aside_line(a: Aside, threads: int, will: bool = False) -> str:
    """What the course says of a run it keeps aside."""
    kept = "it will be kept" if will else "kept"
    if a.count == 0:
        return (f"{a.folder} holds a scratchpad route the course's records do not know (made "
                f"by chapter 9 or the stage commands, say): {kept} as {a.kept}; the course "
                f"makes its own with {threads}")
    what = "a pipeline run" if a.job.startswith("pipeline") else f"{a.job}'s results"
    return (f"{a.folder} holds {what} made with {a.count} thread{'s' * (a.count != 1)}"
            + (" and other settings than the preset's (its records in pipeline/ hold them)"
               if a.other_settings else "") + f": {kept} as {a.kept}"
            + (f" ({a.reuse} reads it again)" if a.reuse else "")
            + f"; the course makes its own with {threads}")


def job_folder(job: Job) -> Path | None:
    """The folder a job of the plan writes in: a run (pipeline, route) or an experiment's
    folder; None for a call the plan does not make."""
    args = dict(job.kwargs)
    if not job.call.startswith(f"{__name__}:") or "runs_dir" not in args:
        return None
    if "base" not in args:
        return Path(args["runs_dir"]) / args["name"]
    folder = Path(args["runs_dir"]) / args["base"] / "experiments" / args["name"]
    return folder / subdir(args["name"], args["seed"]) if "seed" in args else folder


def set_aside(jobs: list[Job], runs_dir: str, base: str, threads: int = THREADS,
              move: bool = True, done: Callable[[Job], bool] | None = None
              ) -> tuple[list[Aside], set[str]]:
    """The plan's runs made with another thread count than the course's (the README's
    ``pipeline``, or a chapter's experiment, run with two threads before the course, say):
    each is kept, never replaced: a pipeline run moves to ``<folder>-threads<N>``, an
    experiment's seed to ``seed<k>-threads<N>`` (seed 0 of the frontier and critic-free, whose
    folder holds the other seeds, to ``threads<N>/`` inside it), and a scratchpad route the
    course's records do not know (``done``: the job's record; a route records no thread count)
    to ``<folder>-kept``, before any job looks at its records. Returns what is kept aside and
    the jobs that are therefore to run (those, the jobs whose folders went with them, and the
    jobs that read theirs); ``move`` False only says so (``--plan``). A run folder a live run
    holds is an error naming it, before any move. When the course's own folder of records
    moves, the records of the jobs outside what moved come back; the records of the jobs to
    run are removed."""
    from minirlhf.experiments import KEPT_APART, ExperimentConfig, made_with_other_threads
    from minirlhf.pipeline import (
        PipelineConfig,
        other_thread_count,
        pipeline_command,
        stages_to_run,
    )
    from minirlhf.records import Owner, PipelineError

    asides: list[Aside] = []
    for job in jobs:
        folder, args = job_folder(job), dict(job.kwargs)
        if folder is None or any(a.whole and folder.is_relative_to(a.folder) for a in asides):
            continue  # not the plan's, or it goes with a run already kept aside
        whole = True
        if job.call.endswith(":pipeline_run"):
            count = other_thread_count(folder, threads)
        elif job.call.endswith(":scratchpad_route"):
            count = 0 if done is not None and not done(job) and any(
                (folder / stage / "model.npz").exists() for stage in ("pretrain", "sft")) \
                else None
        elif job.call.endswith(":experiment_run"):
            whole = bool(subdir(args["name"], args["seed"]))
            found = made_with_other_threads(
                ExperimentConfig(args["name"], base=args["base"], runs_dir=args["runs_dir"],
                                 quick=args["quick"], seed=args["seed"]),
                [args["seed"]] if whole else None, threads)
            count = None if found is None else found[1]
        else:
            continue
        if count is None:
            continue
        # a live run's folder is not moved (nor one an experiment inside it is running in):
        # the error names the holder
        for lock in sorted(folder.rglob(".lock")) if whole else [folder / ".lock"]:
            try:
                if lock.exists():
                    Owner.read(lock).stale_because(lock, instead="")
            except PipelineError as e:
                made = f"made with {count} threads" if count else "which the course did not make"
                raise PipelineError(f"the course would keep {folder} aside ({made}), but {e}"
                                    ) from None
        name = (f"{folder.name}-kept" if count == 0 else f"{folder.name}-threads{count}"
                if whole else f"threads{count}")
        kept, k = (folder.with_name(name) if whole else folder / name), 1
        while kept.exists() or any(a.kept == kept for a in asides):
            k += 1
            kept = kept.with_name(f"{name}-{k}")
        other = job.call.endswith(":pipeline_run") and bool(stages_to_run(PipelineConfig(
            name=folder.name, preset=args["preset"], runs_dir=str(folder.parent),
            seed=args.get("seed", 0), progress=False), count))  # the preset's, or others?
        reuse = pipeline_command(  # a count this machine can run, on the preset's settings
            args["preset"], kept.name, kept.parent, args.get("seed", 0), threads=count
        ) if job.call.endswith(":pipeline_run") and count <= cores() and not other else ""
        asides.append(Aside(job.name, folder, kept, count, whole, reuse, other))
    gone = {a.job for a in asides} | {j.name for j in jobs if _inside(j, asides)}
    for j in jobs:  # in plan order: a job after the jobs it reads
        if gone.intersection(j.needs):
            gone.add(j.name)
    if not move:
        return asides, gone
    records = Path(runs_dir).absolute() / base / "course"
    for a in asides:
        if a.whole:
            a.folder.rename(a.kept)
        else:
            a.kept.mkdir()
            for entry in sorted(a.folder.iterdir()):
                if not re.fullmatch(KEPT_APART, entry.name):
                    entry.rename(a.kept / entry.name)
        log.warning("%s", aside_line(a, threads))
        if a.whole and records.is_relative_to(a.folder.absolute()):
            _records_back(a.kept.absolute() / records.relative_to(a.folder.absolute()),
                          records, asides, gone)
    for j in jobs:  # a record that outlived its job's files would say the job is done
        if j.name in gone:
            record_path(runs_dir, base, j).unlink(missing_ok=True)
    return asides, gone


def _inside(job: Job, asides: list[Aside]) -> bool:
    """The job's folder went with a run kept aside whole."""
    folder = job_folder(job)
    return folder is not None and any(a.whole and folder.is_relative_to(a.folder)
                                      for a in asides)


def _records_back(moved: Path, records: Path, asides: list[Aside], gone: set[str]) -> None:
    """Every record in ``moved`` (the course's folder of records, kept aside with its run) of
    a job whose folder did not move with it and that is not to run again (``gone``), back in
    ``records``: the routes and the seeds' pipeline runs stay done, also those of jobs outside
    this plan (``claims --chapter``), read from the record's own call."""
    for path in sorted(moved.glob("*.json")):
        try:
            row = json.loads(path.read_text())
            job = Job(row["job"], row["call"], tuple(row["kwargs"].items()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # not a record the course wrote: it stays with the kept run
        if job.name not in gone and not _inside(job, asides):
            records.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, records / path.name)


def _submit(executor: Executor | None, own: Callable[..., ProcessPoolExecutor], job: Job,
            record: str, fingerprint: str, threads: int) -> Future:
    """``run_job`` on the executor given, or on our pool (a new one if the pool broke since
    the last wait)."""
    if executor is not None:
        return executor.submit(run_job, job, record, fingerprint, threads)
    try:
        return own().submit(run_job, job, record, fingerprint, threads)
    except BrokenProcessPool:
        return own(new=True).submit(run_job, job, record, fingerprint, threads)


def _run(pending: list[Job], done: set[str], result: CourseResult, prints: dict[str, str],
         runs_dir: str, base: str, workers: int, executor: Executor | None,
         own: Callable[..., ProcessPoolExecutor], progress: bool, threads: int) -> None:
    """The loop: start what is ready (at most ``workers`` at once), wait for one to end,
    record it; a broken pool puts its running jobs back in the queue on a new pool."""
    attempts = {j.name: 0 for j in pending}
    chain = critical_seconds(pending)
    running: dict[Future, Job] = {}
    bar = tqdm(total=len(pending), desc="course", disable=not progress)
    try:
        while pending or running:
            for j in [j for j in pending if any(n in result.failed or n in result.not_started
                                                for n in j.needs)]:
                pending.remove(j)  # it reads what a failed job was to make
                result.not_started[j.name] = "reads the output of a job that failed"
                bar.update(1)
            waiting = {j.name for j in pending} | {j.name for j in running.values()}
            ready = sorted((j for j in pending if all(n in done for n in j.needs)
                            and not waiting.intersection(j.after)),
                           key=lambda j: chain[j.name], reverse=True)  # the longest chain first
            for j in ready[: max(0, workers - len(running))]:  # free workers only
                pending.remove(j)
                if attempts[j.name] and is_done(j, prints[j.name], runs_dir, base):
                    done.add(j.name)  # it finished and wrote its record before its pool broke
                    result.done.append(j.name)
                    bar.update(1)
                    continue
                attempts[j.name] += 1
                running[_submit(executor, own, j, str(record_path(runs_dir, base, j)),
                                prints[j.name], threads)] = j
            if not running:
                for j in pending:
                    result.not_started[j.name] = "needs a job that is not in the plan"
                break
            bar.set_postfix_str(", ".join(sorted(j.name for j in running.values())))
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            broken = False
            for future in finished:
                job = running.pop(future)
                try:
                    result.seconds[job.name] = future.result()
                except BrokenProcessPool:  # a worker died: every running job went with it
                    broken = True
                    if attempts[job.name] < ATTEMPTS:
                        pending.insert(0, job)
                        continue
                    result.failed[job.name] = "its worker died twice (killed, or out of memory)"
                except Exception as e:  # the job's own error, in one line
                    lines = str(e).strip().splitlines()
                    result.failed[job.name] = type(e).__name__ + (f": {lines[0]}" if lines
                                                                  else "")
                else:
                    done.add(job.name)
                    result.done.append(job.name)
                bar.update(1)
            if broken and executor is None:
                for future, job in list(running.items()):  # they died with the pool too
                    running.pop(future)
                    pending.insert(0, job)
                own(new=True)
    except KeyboardInterrupt:  # stop every worker now; what finished keeps its record
        for future in running:
            future.cancel()
        if executor is None:
            for process in list(getattr(own(), "_processes", {}).values()):  # no public way
                process.terminate()
        raise
    finally:
        bar.close()
        if executor is None:
            own().shutdown(wait=True, cancel_futures=True)
