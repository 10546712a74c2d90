"""``python -m minirlhf course``: the plan, worker processes of one thread, resumption, a failing
job, the same numbers in a worker as alone, and a Dask cluster as the executor."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from minirlhf.config import ConfigError
from minirlhf.course.build import EXPERIMENTS, Job, build, fingerprints, plan

ROOT = Path(__file__).resolve().parent.parent


def test_the_plan_holds_every_run_the_chapters_read_after_what_it_reads():
    jobs = plan("default", seeds=3)
    names = [j.name for j in jobs]
    for base in ("pipeline", "route", "frontier"):  # seed 0 keeps the plain name
        assert [n for n in names if n.split(":")[0] == base] == [
            base, f"{base}:seed1", f"{base}:seed2"]
    for e in EXPERIMENTS:
        assert [n for n in names if n.startswith(f"{e}:")] == [
            f"{e}:seed0", f"{e}:seed1", f"{e}:seed2", f"{e}:seeds"]
    for k, job in enumerate(jobs):  # every job after the jobs it needs
        assert all(names.index(n) < k for n in job.needs), job
    by_name = {j.name: j for j in jobs}
    for k, route in enumerate(("route", "route:seed1", "route:seed2")):  # its own route
        job = by_name[f"critic-free:seed{k}"]
        assert job.needs == (route,) and dict(job.kwargs)["base"] == dict(
            by_name[route].kwargs)["name"] == ("scratchpad" if k == 0 else f"scratchpad-seed{k}")
    assert dict(by_name["pipeline:seed2"].kwargs)["name"] == "default-seed2"
    assert len(set(fingerprints(jobs).values())) == len(jobs)


@pytest.mark.parametrize("args, needle", [
    (["--seeds", "0"], "course: --seeds = 0 is outside its allowed range [1, 10]"),
    (["--workers", "0"], "course: --workers = 0 is outside its allowed range [1, 64]"),
    (["--executor", "spark://x"], "course: --executor must look like dask://HOST:PORT"),
    (["--executor", "dask://"], "course: --executor must look like dask://HOST:PORT"),
    (["--executor", "dask://host:port", "--plan"], "got 'dask://host:port'"),
    (["--runs-dir", "FILE/runs"], "FILE is a file, not a folder"),
])
def test_bad_settings_are_one_line_before_any_work(tmp_path, args, needle):
    (tmp_path / "FILE").write_text("")
    args = [a.replace("FILE", str(tmp_path / "FILE")) for a in args]
    proc = subprocess.run([sys.executable, "-m", "minirlhf", "course", "--preset", "tiny",
                           "--runs-dir", str(tmp_path), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["FILE"]  # nothing made


def test_plan_mode_prints_the_jobs_and_runs_nothing(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "minirlhf", "course", "--preset", "tiny",
                           "--seeds", "2", "--plan", "--runs-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "29 jobs for --seeds 2" in proc.stdout and "0 done, 29 to run" in proc.stdout
    assert "  rlaif:seeds" in proc.stdout and "after rlaif:seed0, rlaif:seed1" in proc.stdout
    assert not any(tmp_path.iterdir())


def _job(job, call, needs=(), **kwargs):
    return Job(job, call, tuple(kwargs.items()), tuple(needs))


def _test_job(job, function, needs=(), **kwargs):
    return _job(job, f"course_jobs:{function}", needs, **kwargs)


def test_a_failure_is_one_line_its_readers_wait_and_a_rerun_runs_only_what_is_left(tmp_path):
    """Two workers: a job that fails is one line, the job that reads it is not started, the
    others finish; a rerun reuses every finished job, and a record cut short is not done."""
    out = tmp_path / "out"
    out.mkdir()
    jobs = [_test_job("a", "write", path=str(out / "a")),
            _test_job("b", "fail", message="no such file\nsecond line"),
            _test_job("c", "write", ("b",), path=str(out / "c")),
            _test_job("d", "write", ("a",), path=str(out / "d"))]
    r = build(jobs, base="t", runs_dir=str(tmp_path), workers=2, progress=False)
    assert sorted(r.done) == ["a", "d"] and r.failed == {"b": "ValueError: no such file"}
    assert list(r.not_started) == ["c"] and not (out / "c").exists()
    record = json.loads((tmp_path / "t" / "course" / "a.json").read_text())
    assert record["threads"] == 1 and record["fingerprint"] == fingerprints(jobs)["a"]

    fixed = [*jobs[:1], _test_job("b", "write", path=str(out / "b")), *jobs[2:]]
    (tmp_path / "t" / "course" / "d.json").write_text('{"fingerprint": "')  # cut by a kill
    again = build(fixed, base="t", runs_dir=str(tmp_path), workers=2, progress=False)
    assert again.reused == ["a"] and sorted(again.done) == ["b", "c", "d"]
    assert not again.failed and not again.not_started


def test_a_job_waits_for_the_planned_jobs_whose_runs_it_shares_and_runs_without_them(tmp_path):
    """``after``: with two free workers, a job still waits for a planned job it shares runs
    with; without that job in the plan it runs at once. Neither changes its fingerprint, and
    the claims of the frontier alone do not ask for ppo-details or dpo-details."""
    from minirlhf.course import claims as C

    out = tmp_path / "out"
    out.mkdir()
    first = _test_job("a", "write_later", path=str(out / "a"), seconds=1.0)  # b is ready now
    sharing = Job("b", "course_jobs:write_seen", (("path", str(out / "b")),
                                                  ("other", str(out / "a"))), (), ("a",))
    r = build([first, sharing], base="t", runs_dir=str(tmp_path), workers=2, progress=False)
    assert sorted(r.done) == ["a", "b"] and (out / "b").read_text() == "seen"
    alone = build([replace(sharing, kwargs=(("path", str(out / "c")),
                                            ("other", str(out / "z"))))],
                  base="u", runs_dir=str(tmp_path), workers=2, progress=False)
    assert alone.done == ["b"] and (out / "c").read_text() == "not there"
    without = build([replace(first, kwargs=(("path", str(out / "d")), ("seconds", 1.0))),
                     replace(sharing, after=(), kwargs=(("path", str(out / "e")),
                                                       ("other", str(out / "d"))))],
                    base="v", runs_dir=str(tmp_path), workers=2, progress=False)
    assert sorted(without.done) == ["a", "b"] and (out / "e").read_text() == "not there"
    assert fingerprints([sharing])["b"] == fingerprints([replace(sharing, after=())])["b"]
    frontier = [c for c in C.CLAIMS if c.reads == "frontier"]
    names = {j.name for j in C.needed_jobs(frontier, "default", 3, str(tmp_path))}
    assert names == {"pipeline", "frontier", "frontier:seed1", "frontier:seed2"}


def test_a_fingerprint_holds_the_thread_count_and_what_the_job_read():
    jobs = [_test_job("a", "write", path="x"), _test_job("b", "write", ("a",), path="y")]
    other = [_test_job("a", "write", path="z"), jobs[1]]
    assert fingerprints(jobs)["b"] != fingerprints(other)["b"]  # a's input changed
    assert fingerprints(jobs, threads=1)["a"] != fingerprints(jobs, threads=2)["a"]
    moved = [_test_job("a", "write", path="x", runs_dir="/elsewhere")]
    assert fingerprints(moved)["a"] == fingerprints([_test_job("a", "write", path="x",
                                                               runs_dir="runs")])["a"]


def test_a_worker_killed_mid_job_is_run_again_on_a_new_pool(tmp_path):
    """kill -9 of a worker breaks the pool; its jobs run again on a new one, and a job of the
    other worker, broken with the pool, too; every job ends done."""
    jobs = [_test_job("dies", "die_once", marker=str(tmp_path / "died")),
            *[_test_job(f"w{k}", "write", path=str(tmp_path / f"w{k}")) for k in range(3)]]
    r = build(jobs, base="t", runs_dir=str(tmp_path), workers=2, progress=False)
    assert sorted(r.done) == ["dies", "w0", "w1", "w2"] and not r.failed, r
    assert (tmp_path / "died").exists()


def _pid_gone(pid: int, seconds: float = 10.0) -> bool:
    end = time.time() + seconds
    while time.time() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _parent(tmp_path: Path) -> subprocess.Popen:
    """A course of two jobs in a process of its own: one finishes, one works on forever."""
    # Ctrl-C as a terminal delivers it, even when these tests run in a background job whose
    # shell set SIGINT to be ignored (Python then installs no KeyboardInterrupt handler)
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "sys.path.insert(0, 'tests'); from test_course import _test_job; "
            "from minirlhf.course.build import build\n"
            f"jobs = [_test_job('quick', 'write', path={str(tmp_path / 'q')!r}), "
            f"_test_job('forever', 'wait_forever', pid_file={str(tmp_path / 'pid')!r})]\n"
            "try:\n"
            f"    build(jobs, base='t', runs_dir={str(tmp_path)!r}, workers=2, progress=False)\n"
            "except KeyboardInterrupt:\n    sys.exit(130)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE,
                            text=True)
    end = time.time() + 60
    while not ((tmp_path / "pid").exists() and (tmp_path / "t" / "course" /
                                                "quick.json").exists()):
        assert time.time() < end and proc.poll() is None, proc.stderr.read() if \
            proc.poll() is not None else "the jobs did not start"
        time.sleep(0.1)
    return proc


@pytest.mark.parametrize("stop", ["ctrl-c", "kill -9"])
def test_stopping_the_parent_stops_its_workers_and_keeps_what_finished(tmp_path, stop):
    proc = _parent(tmp_path)
    worker = int((tmp_path / "pid").read_text())
    proc.send_signal(signal.SIGINT if stop == "ctrl-c" else signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == (130 if stop == "ctrl-c" else -signal.SIGKILL)
    assert _pid_gone(worker), "the worker kept running without its parent"
    again = build([_test_job("quick", "write", path=str(tmp_path / "q"))], base="t",
                  runs_dir=str(tmp_path), workers=1, progress=False)
    assert again.reused == ["quick"]


@pytest.mark.catalogue
def test_a_worker_gives_the_numbers_of_the_command_run_alone_on_one_thread(tmp_path):
    """On the tiny preset: the pipeline and a quick experiment in workers; the same experiment
    by its own command, alone, with MINIRLHF_THREADS=1, gives the same results.json to the
    last bit."""
    runs = tmp_path / "runs"
    here = "minirlhf.course.build"
    exp = dict(name="rankings", base="tiny", quick=True, runs_dir=str(runs), seed=0)
    jobs = [_job("pipeline", f"{here}:pipeline_run", name="tiny", preset="tiny",
                 runs_dir=str(runs)),
            _job("rankings:seed0", f"{here}:experiment_run", ("pipeline",), **exp)]
    r = build(jobs, base="tiny", runs_dir=str(runs), workers=2, progress=False)
    assert sorted(r.done) == ["pipeline", "rankings:seed0"] and not r.failed
    in_worker = json.loads((runs / "tiny" / "experiments" / "rankings" / "seed0" /
                            "results.json").read_text())
    alone = tmp_path / "alone"
    shutil.copytree(runs, alone)
    shutil.rmtree(alone / "tiny" / "experiments")
    env = {**os.environ, "MINIRLHF_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "minirlhf", "experiment", "rankings", "--quick",
                           "--base", "tiny", "--runs-dir", str(alone), "-q"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    by_itself = json.loads((alone / "tiny" / "experiments" / "rankings" /
                            "results.json").read_text())
    for numbers in (in_worker, by_itself):
        numbers.pop("seconds")
    assert by_itself == in_worker


@pytest.mark.catalogue
def test_a_dask_cluster_runs_the_jobs(tmp_path):
    """The jobs through ``distributed.Client(...).get_executor()`` on a local cluster of two
    one-thread worker processes (skipped without Dask: pip install -e '.[cluster]')."""
    distributed = pytest.importorskip("distributed")
    runs = tmp_path / "runs"
    here = "minirlhf.course.build"
    jobs = [_job("pipeline", f"{here}:pipeline_run", name="tiny", preset="tiny",
                 runs_dir=str(runs)),
            _job("rankings:seed0", f"{here}:experiment_run", ("pipeline",), name="rankings",
                 base="tiny", quick=True, runs_dir=str(runs), seed=0),
            _job("broken", f"{here}:experiment_run", (), name="rankings", base="nowhere",
                 quick=True, runs_dir=str(runs), seed=0)]
    environment = dict(os.environ)  # Dask's nannies set thread variables in this process
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            r = build(jobs, base="tiny", runs_dir=str(runs), workers=2,
                      executor=client.get_executor(), progress=False)
    finally:
        os.environ.clear()
        os.environ.update(environment)
    assert sorted(r.done) == ["pipeline", "rankings:seed0"]
    assert list(r.failed) == ["broken"] and "nowhere" in r.failed["broken"]
    record = json.loads((runs / "tiny" / "course" / "rankings_seed0.json").read_text())
    assert record["threads"] == 1  # measured in the Dask worker


def test_plan_refuses_an_unknown_preset():
    with pytest.raises(ConfigError, match="preset must be default or tiny"):
        plan("huge")


def test_a_short_job_that_unlocks_a_long_one_starts_before_a_lone_long_one():
    from minirlhf.course.build import SECONDS, critical_seconds

    jobs = plan("default", seeds=2)
    chain = critical_seconds(jobs)
    assert chain["route"] > chain["length-bias:seed0"]  # route + critic-free beat a lone job
    # ppo-details unlocks the frontier, which shares its runs
    assert chain["ppo-details:seed0"] == SECONDS["ppo-details"] + chain["frontier"]
    assert chain["critic-free:seed1"] == chain["route:seed1"] - 160
    assert chain["pipeline"] > chain["frontier"]  # every experiment waits for it


@pytest.mark.parametrize("preset, result, judged", [
    ("default", dict(done=["pipeline"]), True),
    ("default", dict(failed={"pipeline": "boom"}), False),
    ("default", dict(not_started={"frontier": "stopped"}), False),
    ("tiny", dict(done=["pipeline"]), False),
])
def test_the_course_ends_with_the_claims_judged_on_its_seeds(tmp_path, capsys, monkeypatch,
                                                             preset, result, judged):
    """Once every job is done, the course judges every claim on the seeds it built (as
    ``claims --no-run``), whatever they find; after a failure, or on the tiny preset, it
    writes no claims table and says why."""
    import minirlhf.course.build as B
    from minirlhf.cli import main
    from minirlhf.course import claims as C
    from minirlhf.course.build import CourseResult

    monkeypatch.setattr(B, "build", lambda *a, **k: CourseResult(**result))
    code = main(["course", "--preset", preset, "--seeds", "2", "--runs-dir", str(tmp_path),
                 "-q"])
    out = capsys.readouterr().out.strip().splitlines()
    table = tmp_path / preset / "claims" / "claims.json"
    assert table.exists() == judged
    if judged:
        data = json.loads(table.read_text())
        assert code == 0 and data["seeds"] == [0, 1] and data["threads"] == 1
        assert len(data["claims"]) == len(C.CLAIMS)
        assert "Made by `python -m minirlhf course --seeds 2`" in table.with_suffix(
            ".md").read_text()
        assert out[-1] == f"claims: {len(C.CLAIMS)} not run; {table.with_suffix('.md')}, {table}"
    elif "failed" in result or "not_started" in result:
        assert code == 1 and out[-1].startswith("claims: not judged: a job failed or did not")
    else:
        assert code == 0 and out[-1].startswith("claims: not judged: the tiny preset")


# What other tests add to the shared tiny run (their experiments, at their thread count): not
# part of the pipeline run these tests copy.
OTHER_TESTS = shutil.ignore_patterns("experiments", "course")


def _made_with(run: Path, threads: int, seed: int = 0) -> None:
    """Say in each stage's record of ``run`` (the tiny preset's, with ``seed``) that it was made
    with ``threads`` threads, its fingerprint the one that count gives."""
    from minirlhf.pipeline import PipelineConfig, fingerprints, stage_configs
    from minirlhf.records import write_record

    config = PipelineConfig(name=run.name, preset="tiny", runs_dir=str(run.parent), seed=seed)
    prints = fingerprints(stage_configs(config), run, threads)
    for record in (run / "pipeline").glob("*.json"):
        if record.stem not in prints:  # the course's mark
            continue
        data = json.loads(record.read_text())
        write_record(record, {k: v for k, v in data.items() if k != "checksum"}
                     | {"blas_threads": threads, "fingerprint": prints[record.stem]})


def test_a_pipeline_run_of_another_thread_count_is_kept_aside_not_replaced(tiny_run, tmp_path):
    """The README's `pipeline` run in a shell of two threads, then `course` (one thread): the
    course says before any work that the run is kept as tiny-threads<N>, and moves it there
    whole instead of training over it; the records of the jobs outside it come back."""
    from minirlhf.course.build import record_path, set_aside
    from minirlhf.machine import cores

    runs = tmp_path / "runs"
    shutil.copytree(Path(tiny_run[0]) / "tiny", runs / "tiny", ignore=OTHER_TESTS)
    _made_with(runs / "tiny", 2)
    jobs = plan("tiny", seeds=2, runs_dir=str(runs))
    by_name = {j.name: j for j in jobs}
    for name in ("route", "pipeline:seed1", "rlaif:seed0"):  # as if these had finished
        record = record_path(str(runs), "tiny", by_name[name])
        record.parent.mkdir(parents=True, exist_ok=True)
        job = by_name[name]
        record.write_text(json.dumps({"job": name, "call": job.call, "fingerprint": name,
                                      "kwargs": dict(job.kwargs)}))
    before = {p.relative_to(runs / "tiny"): p.read_bytes() for p in (runs / "tiny").rglob("*")
              if p.is_file()}
    proc = subprocess.run([sys.executable, "-m", "minirlhf", "course", "--preset", "tiny",
                           "--seeds", "2", "--runs-dir", str(runs), "--plan"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == (
        f"{(runs / 'tiny').absolute()} holds a pipeline run made with 2 threads: it will be "
        f"kept as {(runs / 'tiny-threads2').absolute()}" + (
            f" (`MINIRLHF_THREADS=2 python -m minirlhf pipeline --preset tiny --name "
            f"tiny-threads2 --runs-dir {runs.absolute()}` reads it again)" if cores() > 1
            else "") + "; the course makes its own with 1")
    assert "pipeline                    to run" in proc.stdout
    assert sorted(p.name for p in runs.iterdir()) == ["tiny"]  # --plan moves nothing
    asides, gone = set_aside(jobs, str(runs), "tiny")
    assert [(a.job, a.kept, a.count) for a in asides] == [
        ("pipeline", (runs / "tiny-threads2").absolute(), 2)]
    assert "rlaif:seed0" in gone and "rlaif:seeds" in gone and "frontier:seed1" in gone
    assert "route" not in gone and "pipeline:seed1" not in gone and "critic-free:seed0" \
        not in gone
    kept = runs / "tiny-threads2"
    assert {p.relative_to(kept): p.read_bytes() for p in kept.rglob("*") if p.is_file()} \
        == before
    assert sorted(p.name for p in (runs / "tiny" / "course").iterdir()) == [
        "pipeline_seed1.json", "route.json"]  # the records of the jobs outside it, back
    assert set_aside(jobs, str(runs), "tiny") == ([], set())  # nothing left of another count
    shutil.rmtree(runs / "tiny")
    shutil.copytree(kept, runs / "tiny")  # a second one is kept beside the first
    assert [a.kept.name for a in set_aside(jobs, str(runs), "tiny")[0]] == ["tiny-threads2-2"]
    _made_with(runs / "tiny-threads2", 1)  # one thread: the course's own count, not moved
    shutil.rmtree(runs / "tiny")
    shutil.copytree(runs / "tiny-threads2", runs / "tiny")
    assert set_aside(jobs, str(runs), "tiny") == ([], set()) and (runs / "tiny").exists()


def test_an_experiment_of_another_thread_count_is_kept_aside(tmp_path):
    """A chapter's experiment made with two threads in the course's folders: its seed is kept
    aside (seed 0 of the frontier: its own files, not the other seeds' folders), its summary
    over seeds runs again, and `experiment` with the course's count is not refused by it."""
    from minirlhf.course.build import record_path, set_aside
    from minirlhf.experiments import ExperimentConfig, made_with_other_threads

    runs = tmp_path / "runs"
    exps = runs / "tiny" / "experiments"
    for folder, threads in [("rlaif/seed1", 2), ("rlaif/seed0", 1), ("frontier", 2),
                            ("frontier/seed1", 1)]:
        (exps / folder).mkdir(parents=True)
        (exps / folder / "results.json").write_text(json.dumps({"threads": threads}))
    (exps / "frontier" / "PPO_b=0.1").mkdir()
    (exps / "frontier" / "PPO_b=0.1" / "point.json").write_text(json.dumps({"threads": 2}))
    jobs = plan("tiny", seeds=2, runs_dir=str(runs))
    asides, gone = set_aside(jobs, str(runs), "tiny", move=False)
    assert sorted((a.job, a.kept.relative_to(exps.absolute()).as_posix()) for a in asides) == [
        ("frontier", "frontier/threads2"), ("rlaif:seed1", "rlaif/seed1-threads2")]
    assert gone == {"frontier", "rlaif:seed1", "rlaif:seeds"}
    set_aside(jobs, str(runs), "tiny")
    assert sorted(p.name for p in (exps / "frontier").iterdir()) == ["seed1", "threads2"]
    assert sorted(p.name for p in (exps / "frontier" / "threads2").iterdir()) == [
        "PPO_b=0.1", "results.json"]
    assert sorted(p.name for p in (exps / "rlaif").iterdir()) == ["seed0", "seed1-threads2"]
    assert made_with_other_threads(ExperimentConfig("frontier", base="tiny",
                                                    runs_dir=str(runs)), None, 1) is None
    assert set_aside(jobs, str(runs), "tiny") == ([], set())
    (exps / "frontier" / "seed1" / "results.json").write_text(json.dumps({"threads": 2}))
    record = record_path(str(runs), "tiny", next(j for j in jobs if j.name == "frontier:seed1"))
    record.parent.mkdir(parents=True)
    record.write_text("{}")  # a record of the job, which would say it is done
    assert [a.kept.name for a in set_aside(jobs, str(runs), "tiny")[0]] == ["seed1-threads2"]
    assert not record.exists()  # the job runs again: its files are kept aside
    assert sorted(p.name for p in (exps / "frontier").iterdir()) == [
        "seed1-threads2", "threads2"]
    assert made_with_other_threads(ExperimentConfig("frontier", base="tiny",
                                                    runs_dir=str(runs)), None, 1) is None
    assert set_aside(jobs, str(runs), "tiny") == ([], set())  # nothing moves twice


def test_a_run_a_live_process_holds_is_not_moved(tiny_run, tmp_path):
    from minirlhf.course.build import set_aside
    from minirlhf.records import PipelineError, RunLock

    runs = tmp_path / "runs"
    shutil.copytree(Path(tiny_run[0]) / "tiny", runs / "tiny", ignore=OTHER_TESTS)
    _made_with(runs / "tiny", 7)
    with RunLock(runs / "tiny"), pytest.raises(PipelineError, match="tiny/.lock") as caught:
        set_aside(plan("tiny", seeds=1, runs_dir=str(runs)), str(runs), "tiny")
    assert (runs / "tiny" / "pipeline").is_dir()
    assert str(caught.value).startswith(
        f"the course would keep {runs / 'tiny'} aside (made with 7 threads), but the run "
        f"folder {runs / 'tiny'} is in use by process {os.getpid()}")
    assert str(caught.value).endswith("wait for it to finish")  # the course has no --name
    # nor while an experiment runs inside it (an experiment holds its folder's lock)
    inside = runs / "tiny" / "experiments" / "rlaif" / "seed0"
    with RunLock(inside), pytest.raises(PipelineError, match="rlaif/seed0/.lock"):
        set_aside(plan("tiny", seeds=1, runs_dir=str(runs)), str(runs), "tiny")
    assert (runs / "tiny" / "pipeline").is_dir() and not (runs / "tiny-threads7").exists()


def test_a_seed_s_pipeline_run_and_a_route_the_course_did_not_make_are_kept_aside(tiny_run,
                                                                                 tmp_path):
    """Seed 1's pipeline run of another count: the command that reads it again names its
    seed. A scratchpad route made outside the course (chapter 9, the stage commands), which
    records no thread count, is kept aside when the course has no record of making it."""
    from minirlhf.course.build import set_aside
    from minirlhf.machine import cores

    runs = tmp_path / "runs"
    shutil.copytree(Path(tiny_run[0]) / "tiny", runs / "tiny-seed1", ignore=OTHER_TESTS)
    _made_with(runs / "tiny-seed1", 2, seed=1)
    (runs / "scratchpad-tiny" / "sft").mkdir(parents=True)
    (runs / "scratchpad-tiny" / "sft" / "model.npz").write_bytes(b"")
    jobs = plan("tiny", seeds=2, runs_dir=str(runs))
    asides, gone = set_aside(jobs, str(runs), "tiny", move=False, done=lambda j: False)
    assert [(a.job, a.kept.name) for a in asides] == [
        ("pipeline:seed1", "tiny-seed1-threads2"), ("route", "scratchpad-tiny-kept")]
    if cores() > 1:
        assert asides[0].reuse.endswith("--name tiny-seed1-threads2 --runs-dir "
                                        f"{runs.absolute()} --seed 1`")
    assert {"route", "critic-free:seed0", "pipeline:seed1"} <= gone
    assert set_aside(jobs, str(runs), "tiny", move=False, done=lambda j: True)[0][1:] == []
