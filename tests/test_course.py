"""``python -m minirlhf course``: the plan, worker processes of one thread, resumption, a failing
job, the same numbers in a worker as alone, and a Dask cluster as the executor."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minirlhf.config import ConfigError
from minirlhf.course.build import EXPERIMENTS, Job, build, plan, run_job

ROOT = Path(__file__).resolve().parent.parent


def test_the_plan_holds_every_run_the_chapters_read_after_what_it_reads():
    jobs = plan("default", seeds=3)
    names = [j.name for j in jobs]
    assert names[:2] == ["pipeline", "route"] and names[-1] == "frontier"
    for e in (*EXPERIMENTS, "critic-free"):
        assert [n for n in names if n.startswith(f"{e}:")] == [
            f"{e}:seed0", f"{e}:seed1", f"{e}:seed2", f"{e}:seeds"]
    for k, job in enumerate(jobs):  # every job after the jobs it needs
        assert all(names.index(n) < k for n in job.needs), job
    assert {j.needs for j in jobs if j.name.startswith("critic-free:seed") and not
            j.name.endswith("seeds")} == {("route",)}
    assert len({j.fingerprint(1) for j in jobs}) == len(jobs)
    assert jobs[0].fingerprint(1) != jobs[0].fingerprint(2)  # the thread count is recorded


@pytest.mark.parametrize("args, needle", [
    (["--seeds", "0"], "course: --seeds must be in [1, 10], got 0"),
    (["--workers", "0"], "course: --workers must be in [1, 64], got 0"),
    (["--executor", "spark://x"], "course: --executor must look like dask://HOST:PORT"),
])
def test_bad_settings_are_one_line_before_any_work(tmp_path, args, needle):
    proc = subprocess.run([sys.executable, "-m", "minirlhf", "course", "--preset", "tiny",
                           "--runs-dir", str(tmp_path), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing made


def test_plan_mode_prints_the_jobs_and_runs_nothing(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "minirlhf", "course", "--preset", "tiny",
                           "--seeds", "2", "--plan", "--runs-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "27 jobs for --seeds 2" in proc.stdout and "0 done, 27 to run" in proc.stdout
    assert "  rlaif:seeds" in proc.stdout and "after rlaif:seed0, rlaif:seed1" in proc.stdout
    assert not any(tmp_path.iterdir())


def _job(job, kind, needs=(), **args):
    return Job(job, kind, tuple(args.items()), tuple(needs))


@pytest.mark.catalogue
def test_workers_resume_report_a_failure_and_give_the_numbers_of_a_run_alone(tmp_path):
    """On the tiny preset, two workers: the pipeline, then a quick experiment; a job on a run
    that does not exist fails in one line, the job that reads it is not started, the others
    finish. A rerun reuses what finished. The experiment run alone, in a fresh process on one
    thread, gives the same results.json to the last bit."""
    runs = tmp_path / "runs"
    exp = dict(name="rankings", base="tiny", quick=True, seed=0, runs_dir=str(runs))
    jobs = [_job("pipeline", "pipeline", name="tiny", preset="tiny", runs_dir=str(runs)),
            _job("rankings:seed0", "experiment", ("pipeline",), **exp),
            _job("broken", "experiment", (), **{**exp, "base": "nowhere"}),
            _job("after-broken", "experiment", ("broken",), **exp)]
    r = build(jobs, base="tiny", runs_dir=str(runs), workers=2, progress=False)
    assert sorted(r.done) == ["pipeline", "rankings:seed0"]
    assert list(r.failed) == ["broken"] and "\n" not in r.failed["broken"]
    assert "nowhere" in r.failed["broken"] and r.not_started == ["after-broken"]
    record = json.loads((runs / "tiny" / "course" / "rankings_seed0.json").read_text())
    assert record["threads"] == 1

    again = build(jobs[:2], base="tiny", runs_dir=str(runs), workers=2, progress=False)
    assert sorted(again.reused) == ["pipeline", "rankings:seed0"] and again.done == []

    results = runs / "tiny" / "experiments" / "rankings" / "seed0" / "results.json"
    in_worker = json.loads(results.read_text())
    alone = tmp_path / "alone"
    shutil.copytree(runs, alone)
    shutil.rmtree(alone / "tiny" / "experiments")
    code = ("import sys; from minirlhf.course.build import Job, run_job; "
            f"run_job(Job('rankings:seed0', 'experiment', "
            f"{tuple({**exp, 'runs_dir': str(alone)}.items())!r}))")
    env = {**os.environ, "MINIRLHF_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    by_itself = json.loads((alone / "tiny" / "experiments" / "rankings" / "seed0" /
                            "results.json").read_text())
    for numbers in (in_worker, by_itself):
        numbers.pop("seconds")
    assert by_itself == in_worker


@pytest.mark.catalogue
def test_a_dask_cluster_runs_the_jobs(tmp_path):
    """The same jobs through ``distributed.Client(...).get_executor()`` on a local cluster of
    two worker processes (skipped without Dask: pip install -e '.[cluster]')."""
    distributed = pytest.importorskip("distributed")
    runs = tmp_path / "runs"
    jobs = [_job("pipeline", "pipeline", name="tiny", preset="tiny", runs_dir=str(runs)),
            _job("rankings:seed0", "experiment", ("pipeline",), name="rankings", base="tiny",
                 quick=True, seed=0, runs_dir=str(runs))]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        r = build(jobs, base="tiny", runs_dir=str(runs), workers=2,
                  executor=client.get_executor(), progress=False)
    assert sorted(r.done) == ["pipeline", "rankings:seed0"] and not r.failed
    assert (runs / "tiny" / "experiments" / "rankings" / "seed0" / "results.json").exists()


def test_run_job_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="unknown kind 'nothing'"):
        run_job(Job("x", "nothing", ()))


def test_plan_refuses_an_unknown_preset():
    with pytest.raises(ConfigError, match="preset must be default or tiny"):
        plan("huge")
