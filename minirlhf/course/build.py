"""Everything the chapters read, built in worker processes: ``python -m minirlhf course``.

The course is a list of jobs, each a plain function call with picklable arguments: the
pipeline's run, the scratchpad world's route (its pretraining and SFT), every experiment once
per seed (``experiments/<name>/seed<k>/``, as ``experiment NAME --seeds N`` lays them out) and
their summaries over seeds, and the frontier. A job starts when the jobs it reads are done.

Jobs run in ``workers`` processes of one engine thread and one BLAS thread each (two such
processes use both cores fully, where Python threads inside one process do not), through the
standard library's ``concurrent.futures`` with the spawn start method. A finished job leaves a
small record in ``runs/<base>/course/``; a rerun skips every job whose record matches its
arguments and thread count, and the pipeline and the experiments resume inside a job as they
do on their own. A failing job is reported and the others go on (those that read its output
are not started); Ctrl-C stops every worker and keeps what finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm import tqdm

from minirlhf.config import ConfigError
from minirlhf.lm.checkpoint import atomic_write

KINDS = ("pipeline", "route", "experiment", "seeds")
THREAD_VARIABLES = ("MINIRLHF_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "OMP_NUM_THREADS")
# The experiments the chapters read over seeds (critic-free has its own base run).
EXPERIMENTS = ("rlaif", "sycophancy", "length-bias", "overoptimization", "rankings",
               "ppo-details", "dpo-details")
# A rough time per job on one engine thread of a 2-core laptop, in seconds, for the plan's
# estimate only: the default preset's single runs, about 1.5x their two-thread times.
SECONDS = {"pipeline": 300, "route": 420, "rlaif": 120, "sycophancy": 180, "length-bias": 270,
           "overoptimization": 200, "rankings": 190, "ppo-details": 480, "dpo-details": 210,
           "critic-free": 300, "frontier": 1000, "seeds": 1}


@dataclass(frozen=True)
class Job:
    """One unit of work: ``kind`` names what ``run_job`` calls, ``args`` its arguments, and
    ``needs`` the jobs whose outputs it reads."""

    name: str
    kind: str  # pipeline, route, experiment, seeds
    args: tuple[tuple[str, Any], ...]
    needs: tuple[str, ...] = ()

    def fingerprint(self, threads: int) -> str:
        text = json.dumps([self.kind, self.args, threads], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class CourseResult:
    done: list[str] = field(default_factory=list)  # run now
    reused: list[str] = field(default_factory=list)  # finished by an earlier run
    failed: dict[str, str] = field(default_factory=dict)  # job -> its one-line error
    not_started: list[str] = field(default_factory=list)  # needed a job that failed
    seconds: dict[str, float] = field(default_factory=dict)  # each job run now, by its clock


# ---------------------------------------------------------------------------- the plan
def plan(preset: str = "default", seeds: int = 3, runs_dir: str = "runs") -> list[Job]:
    """The jobs that make every run the chapters read, in an order that respects ``needs``.
    ``preset`` tiny: the tiny pipeline, quick experiments and a small scratchpad route."""
    if preset not in ("default", "tiny"):
        raise ConfigError(f"course: preset must be default or tiny, got {preset!r}")
    if not 1 <= seeds <= 10:
        raise ConfigError(f"course: --seeds must be in [1, 10], got {seeds}")
    quick = preset == "tiny"
    base = preset
    scratch = "scratchpad-tiny" if quick else "scratchpad"
    jobs = [Job("pipeline", "pipeline", (("name", base), ("preset", preset),
                                         ("runs_dir", runs_dir))),
            Job("route", "route", (("name", scratch), ("quick", quick),
                                   ("runs_dir", runs_dir)))]
    for name, on, n in [(e, base, seeds) for e in EXPERIMENTS] + [("critic-free", scratch,
                                                                    seeds)]:
        needs = ("route",) if on == scratch else ("pipeline",)
        runs = [f"{name}:seed{k}" for k in range(n)]
        jobs += [Job(run, "experiment", (("name", name), ("base", on), ("quick", quick),
                                         ("seed", k), ("runs_dir", runs_dir)), needs)
                 for k, run in enumerate(runs)]
        if n > 1:
            jobs.append(Job(f"{name}:seeds", "seeds", (("name", name), ("base", on),
                                                        ("quick", quick), ("seeds", n),
                                                        ("runs_dir", runs_dir)), tuple(runs)))
    jobs.append(Job("frontier", "experiment", (("name", "frontier"), ("base", base),
                                               ("quick", quick), ("seed", 0),
                                               ("runs_dir", runs_dir)), ("pipeline",)))
    return jobs


def estimate_minutes(jobs: list[Job], workers: int, quick: bool) -> float:
    """A rough wall-clock estimate: the jobs' one-thread times shared among the workers."""
    scale = 0.05 if quick else 1.0
    total = sum(SECONDS.get(_key(j), 60) for j in jobs) * scale
    return total / max(workers, 1) / 60


def _key(job: Job) -> str:
    args = dict(job.args)
    return args["name"] if job.kind == "experiment" else job.kind


# --------------------------------------------------------------------------- the jobs
def run_job(job: Job) -> float:
    """Run one job in this process (a worker's) on one thread; returns its seconds."""
    if job.kind not in KINDS:
        raise ValueError(f"run_job: unknown kind {job.kind!r}; kinds: {', '.join(KINDS)}")
    one_thread()
    t0 = time.time()
    a = dict(job.args)
    if job.kind == "pipeline":
        from minirlhf.pipeline import PipelineConfig, run_pipeline

        run_pipeline(PipelineConfig(name=a["name"], preset=a["preset"], runs_dir=a["runs_dir"],
                                    progress=False))
    elif job.kind == "route":
        _route(a["name"], a["quick"], a["runs_dir"])
    elif job.kind == "experiment":
        from minirlhf.experiments import ExperimentConfig, run_experiment

        subdir = "" if a["name"] == "frontier" else f"seed{a['seed']}"
        run_experiment(ExperimentConfig(a["name"], base=a["base"], runs_dir=a["runs_dir"],
                                        quick=a["quick"], seed=a["seed"], subdir=subdir,
                                        reuse=True))
    else:  # seeds
        from minirlhf.experiments import ExperimentConfig, summarize_seeds

        summarize_seeds(ExperimentConfig(a["name"], base=a["base"], runs_dir=a["runs_dir"],
                                         quick=a["quick"]), list(range(a["seeds"])))
    return time.time() - t0


def _route(name: str, quick: bool, runs_dir: str) -> None:
    """The scratchpad world's base run: pretraining on worked sums, then SFT on right ones
    (``stages.grpo.SCRATCHPAD_ROUTE``'s two commands; small budgets when ``quick``)."""
    from minirlhf.stages.pretrain import PretrainConfig, train_pretrain
    from minirlhf.stages.sft import SFTConfig, train_sft

    root = Path(runs_dir) / name
    if not (root / "pretrain" / "model.npz").exists():
        small = dict(preset="tiny", steps=200) if quick else {}
        train_pretrain(PretrainConfig(task="scratchpad", corpus="scratchpad",
                                      out_dir=str(root / "pretrain"), progress=False, **small))
    if not (root / "sft" / "model.npz").exists():
        small = dict(steps=60, n_demos=1000, eval_samples_per_prompt=1, max_new_tokens=60) \
            if quick else dict(steps=600, n_demos=8000)
        train_sft(SFTConfig(task="scratchpad", init=str(root / "pretrain" / "model.npz"),
                            out_dir=str(root / "sft"), progress=False, **small))


def one_thread() -> None:
    """One engine thread and one BLAS thread in this process, and the variables that say so
    (the pipeline's records read them): what every job runs on, in a worker of ours or of a
    Dask cluster."""
    from minirlhf.autograd.runtime import configure

    for name in THREAD_VARIABLES:
        os.environ[name] = "1"
    configure(1)


# ------------------------------------------------------------------------ the runner
def record_path(runs_dir: str, base: str, job: Job) -> Path:
    return Path(runs_dir) / base / "course" / f"{job.name.replace(':', '_')}.json"


def is_done(job: Job, runs_dir: str, base: str, threads: int) -> bool:
    path = record_path(runs_dir, base, job)
    try:
        return json.loads(path.read_text()).get("fingerprint") == job.fingerprint(threads)
    except (OSError, ValueError):
        return False  # missing, or half-written by a kill: run it again


def build(jobs: list[Job], base: str, runs_dir: str = "runs", workers: int = 2,
          executor: Executor | None = None, progress: bool = True,
          on_start: Callable[[list[Job], list[Job]], None] | None = None) -> CourseResult:
    """Run every job not yet done, each as soon as the jobs it needs are done, ``workers`` at
    a time in processes of one thread each (or on ``executor``, e.g. a Dask client's).
    ``on_start(to_run, reused)`` is called before any work (the command prints the plan)."""
    threads = 1
    result = CourseResult()
    done = {j.name for j in jobs if is_done(j, runs_dir, base, threads)}
    result.reused = [j.name for j in jobs if j.name in done]
    pending = [j for j in jobs if j.name not in done]
    if on_start is not None:
        on_start(pending, [j for j in jobs if j.name in done])
    if not pending:
        return result
    own = executor is None
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    if own:  # the workers start with one thread in their environment, before NumPy loads
        os.environ.update({name: "1" for name in THREAD_VARIABLES})
        executor = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
    bar = tqdm(total=len(pending), desc="course", disable=not progress)
    running: dict[Any, Job] = {}
    try:
        while pending or running:
            for j in [j for j in pending if any(n in result.failed or n in result.not_started
                                                for n in j.needs)]:
                pending.remove(j)  # it reads what a failed job was to make
                result.not_started.append(j.name)
                bar.update(1)
            ready = [j for j in pending if all(n in done for n in j.needs)]
            for j in ready[: max(0, workers - len(running))]:
                pending.remove(j)
                running[executor.submit(run_job, j)] = j
            if not running:  # what is left needs jobs that are not in the list
                result.not_started += [j.name for j in pending]
                break
            bar.set_postfix_str(", ".join(sorted(j.name for j in running.values())))
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                try:
                    seconds = future.result()
                except Exception as e:  # the job's error, in one line
                    message = (str(e).strip().splitlines() or [""])[0]
                    result.failed[job.name] = f"{type(e).__name__}: {message}".rstrip(": ")
                else:
                    done.add(job.name)
                    result.done.append(job.name)
                    result.seconds[job.name] = round(seconds, 1)
                    record = {"job": asdict(job), "fingerprint": job.fingerprint(threads),
                              "threads": threads, "seconds": round(seconds, 1)}
                    atomic_write(record_path(runs_dir, base, job), lambda f, r=record: f.write(
                        json.dumps(r, default=str, indent=1).encode()))
                bar.update(1)
    except KeyboardInterrupt:  # stop every worker now; what finished keeps its record
        if own:
            for process in list(getattr(executor, "_processes", {}).values()):
                process.terminate()
        raise
    finally:
        bar.close()
        if own:
            executor.shutdown(wait=True, cancel_futures=True)
            for name, value in saved.items():  # this process keeps its own thread count
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    return result
