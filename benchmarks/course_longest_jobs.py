"""The course's two longest jobs timed whole, side by side as two workers of one thread each:
the frontier's seed 1 (its 24 points) and critic-free's seed 0.

    python benchmarks/course_longest_jobs.py --source runs --out /tmp/bigjobs

``--source`` holds a finished default pipeline run (``default/``) and the scratchpad route
(``scratchpad/``); both are copied to ``--out``, where the jobs run. Prints each job's clock,
the wall time and the peak memory summed over the process tree.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from course_throughput import COPIED, PeakMemory

from minirlhf.course.build import Job, build


def job(name: str, base: str, seed: int, runs_dir: str) -> Job:
    return Job(f"{name}:seed{seed}", "minirlhf.course.build:experiment_run",
               (("name", name), ("base", base), ("quick", False), ("runs_dir", runs_dir),
                ("seed", seed)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--source", default="runs", help="holds default/ and scratchpad/")
    parser.add_argument("--out", default="/tmp/bigjobs", help="where the copies run")
    args = parser.parse_args()
    source, runs = Path(args.source), Path(args.out)
    if runs.exists():
        shutil.rmtree(runs)
    for folder in COPIED:
        shutil.copytree(source / "default" / folder, runs / "default" / folder)
    for folder in ("pretrain", "sft"):
        shutil.copytree(source / "scratchpad" / folder, runs / "scratchpad" / folder)
    here = str(runs.absolute())
    jobs = [job("frontier", "default", 1, here), job("critic-free", "scratchpad", 0, here)]
    with PeakMemory() as memory:
        t0 = time.time()
        result = build(jobs, "default", here, workers=2, progress=False, threads=1)
        wall = time.time() - t0
    print(json.dumps({"wall": round(wall, 1), "seconds": result.seconds,
                      "failed": result.failed, "peak_rss_mb": round(memory.peak)}))


if __name__ == "__main__":
    main()
