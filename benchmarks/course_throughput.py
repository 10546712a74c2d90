"""Throughput of the course's two ways of using two cores, side by side on the same jobs.

    python benchmarks/course_throughput.py --base runs/default --out /tmp/throughput

The same experiment jobs (default: rlaif and sycophancy, seeds 0 and 1) run twice on copies of
a finished default pipeline run (``--base``; its sft, preferences, reward and best_of_n
folders and its records are copied, its experiments are not):

1. ``workers``: ``course``'s way, two worker processes of one engine thread and one BLAS
   thread each (``minirlhf.course.build.build(..., workers=2, threads=1)``);
2. ``threads``: one process of two engine threads and two BLAS threads running the jobs one
   after another (the same runner with ``workers=1, threads=2``).

``--course-seed K`` runs instead every experiment job the course runs at seed K, as its plan
orders them (critic-free on the scratchpad route of seed K, copied from beside ``--base``; the
frontier after ppo-details and dpo-details, whose runs it shares). Take K >= 1: at seed 0 the
one-thread way reads two frontier points from the pipeline's own (one-thread) records, which
the two-thread way would have to train.

It prints and writes ``throughput.json``: each way's wall time and the jobs' own clocks, the
ratio of the wall times (the throughput of 1 over that of 2), and each way's peak memory, the
resident set summed over the benchmark's process and its children, sampled every second. Run
it on a quiet machine: another process on the cores changes both ways' times.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

from minirlhf.course.build import Job, build, plan, run_name

COPIED = ("pretrain", "sft", "preferences", "reward", "best_of_n", "pipeline")


def tree_rss_mb(root: int) -> float:
    """Resident memory of ``root`` and every process below it, in MB (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class PeakMemory:
    """The largest ``tree_rss_mb`` of this process seen while the block runs."""

    def __enter__(self) -> PeakMemory:
        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_mb(os.getpid()))
            self._stop.wait(1.0)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def jobs(names: list[str], seeds: int, runs_dir: str) -> list[Job]:
    here = "minirlhf.course.build"
    return [Job(f"{name}:seed{k}", f"{here}:experiment_run",
                (("name", name), ("base", "default"), ("quick", False), ("runs_dir", runs_dir),
                 ("seed", k))) for name in names for k in range(seeds)]


def course_jobs(seed: int, runs_dir: str) -> list[Job]:
    """Every experiment job of the course's plan at ``seed``, without the bases it needs
    (they are copied), in the plan's order."""
    return [replace(j, needs=()) for j in plan("default", seed + 1, runs_dir)
            if j.call.endswith(":experiment_run") and dict(j.kwargs)["seed"] == seed]


def one_way(label: str, base: Path, out: Path, names: list[str], seeds: int, workers: int,
            threads: int, course_seed: int | None = None) -> dict:
    runs = out / label
    if runs.exists():
        shutil.rmtree(runs)
    for folder in COPIED:
        shutil.copytree(base / folder, runs / "default" / folder)
    if course_seed is None:
        todo = jobs(names, seeds, str(runs.absolute()))
    else:
        route = run_name("scratchpad", course_seed)
        for folder in ("pretrain", "sft"):
            shutil.copytree(base.parent / route / folder, runs / route / folder)
        todo = course_jobs(course_seed, str(runs.absolute()))
    with PeakMemory() as memory:
        t0 = time.time()
        result = build(todo, "default", str(runs), workers=workers, progress=False,
                       threads=threads)
        wall = time.time() - t0
    if result.failed or len(result.done) != len(todo):
        raise SystemExit(f"{label}: jobs failed: {result.failed}")
    row = {"workers": workers, "threads": threads, "wall_seconds": round(wall, 1),
           "job_seconds": result.seconds, "peak_rss_mb": round(memory.peak)}
    print(f"{label}: {workers} worker(s) of {threads} thread(s): {wall:.0f} s wall, jobs "
          + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
          + f"; peak memory {memory.peak:.0f} MB", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--base", default="runs/default", help="a finished default pipeline run")
    parser.add_argument("--out", default="/tmp/throughput", help="where the copies run")
    parser.add_argument("--experiments", default="rlaif,sycophancy")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--course-seed", type=int, default=None,
                        help="instead: every experiment job of the course at this seed")
    args = parser.parse_args()
    base, out = Path(args.base), Path(args.out)
    names = args.experiments.split(",")
    for folder in COPIED:
        if not (base / folder).is_dir():
            raise SystemExit(f"--base {base}: no {folder}/ (run the default pipeline first)")
    out.mkdir(parents=True, exist_ok=True)
    if args.course_seed is not None and not (base.parent / run_name(
            "scratchpad", args.course_seed) / "sft").is_dir():
        raise SystemExit(f"--course-seed {args.course_seed}: no scratchpad route beside {base}")
    rows = {"workers": one_way("workers", base, out, names, args.seeds, 2, 1, args.course_seed),
            "threads": one_way("threads", base, out, names, args.seeds, 1, 2, args.course_seed)}
    ratio = rows["threads"]["wall_seconds"] / rows["workers"]["wall_seconds"]
    rows["throughput_ratio"] = round(ratio, 3)
    rows["cpus"] = os.cpu_count()
    print(f"two one-thread workers: {ratio:.2f}x the throughput of one two-thread process")
    (out / "throughput.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
