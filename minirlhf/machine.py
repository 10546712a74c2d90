"""The machine a run happens on: the cores this process may use, the thread count a run's
products are split over (``blas_threads``), what else its numbers depend on
(``environment()``: Python, NumPy, the BLAS, the CPU and its vector extensions), and the
process's peak memory.

This module imports nothing from the rest of the package: every floor may use it (the engine,
``minirlhf.autograd.runtime``, reads its thread count here).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np


def cores() -> int:
    """The cores this process may use (its CPU affinity where the system tells it)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, n or 1)


# The variables that set the thread count, the first one set winning (``blas_threads``).
THREAD_VARIABLES = ("MINIRLHF_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "OMP_NUM_THREADS")


def blas_threads() -> int:
    """How many threads a run's products are split over: the first of MINIRLHF_THREADS,
    OPENBLAS_NUM_THREADS, MKL_NUM_THREADS, OMP_NUM_THREADS that is set (at most the cores this
    process may use), else those cores. The command line gives the engine this many threads
    (``minirlhf.autograd.runtime``, which then sets the BLAS to one); a plain ``import
    minirlhf`` leaves the BLAS at its own count, read from the same variables.

    Results depend on it: a matrix product split over two threads adds its partial sums in
    another order than one thread does, so float32 weights differ in the last bits after the
    first step and the runs drift apart. The pipeline records the count with each stage."""
    available = cores()
    for name in THREAD_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return min(int(value), available)
    return available


def environment() -> dict[str, Any]:
    """What a run's numbers depend on besides its seed and settings: the Python and NumPy
    versions, the BLAS library under NumPy and its thread count (``blas_threads``), the CPU and
    its vector extensions (``simd``, from /proc/cpuinfo where there is one).
    The same values and the same seed give the same numbers bit for bit; anything else trains
    another draw, as another seed would (only what holds across seeds carries over).
    summary.json and report.md record it."""
    import platform

    blas = "unknown"
    try:  # NumPy >= 1.25 describes its build as a dict
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{info.get('name', 'unknown')} {info.get('version', '')}".strip()
    except Exception:  # noqa: BLE001 (an older NumPy, or a build that does not say)
        pass
    cpu = platform.processor() or platform.machine()
    simd = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines
                   if line.startswith("model name"))
        flags = next(line.split(":", 1)[1].split() for line in lines if line.startswith("flags"))
        # the vector extensions NumPy's and the BLAS's kernels choose between at run time: two
        # machines with one model name but other extensions may run other kernels, which may
        # round differently
        simd = " ".join(f for f in SIMD_FLAGS if f in flags) or "none"
    except (OSError, StopIteration):
        pass
    return {"python": platform.python_version(), "numpy": np.__version__, "blas": blas,
            "blas_threads": blas_threads(), "cpu": cpu, "simd": simd}


SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16",
              "amx_tile", "asimd", "sve")  # x86 and Arm flags as /proc/cpuinfo names them


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far, in MB (None where it cannot be read).

    Linux's VmHWM, not getrusage's ru_maxrss: the latter survives exec, so a process started
    from a large one (a benchmark's parent that imported PyTorch) reports the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        return kb / 1024
    except (OSError, StopIteration, ValueError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    scale = 2**20 if sys.platform == "darwin" else 2**10  # bytes on macOS, kB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
