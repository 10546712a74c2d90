"""Both cores for NumPy: the engine's own threads, and the one call that turns them on.

Why. On a 2-core laptop, NumPy's matrix products run on two cores (the BLAS has its own
threads), but every elementwise op (GELU, softmax, layer norm, the residual adds) runs on one.
Worse, the BLAS's threads keep spinning for a while after each product, so a second Python
thread that tries to work beside them finds its core taken. Measured here on a (4096, 128) @
(128, 512) product followed by a GELU of its output: 17.3 ms as NumPy does it by default, 7.9 ms
with the BLAS told to use one thread and both halves of the rows run at once in two threads.

How. ``configure(threads=2)`` tells the BLAS to use one thread and starts ``threads - 1``
worker threads. An op then splits its rows: ``parallel_rows(n, fn)`` calls ``fn(lo, hi)`` on
contiguous row ranges, one per thread, and returns when all are done. NumPy releases the
interpreter lock inside a matrix product and inside a ufunc loop over a large array, so the
ranges really run at once. Each range is computed by the same code as the whole, so a row's
result never depends on timing; the split depends only on the thread count, so the same thread
count gives the same numbers, run after run.

Nothing happens at ``import minirlhf``: the command-line entry points call ``configure()``, and
a notebook may call it once (``minirlhf.configure_runtime()``). Without it every op runs its rows
in one call, exactly as plain NumPy would.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable

import numpy as np

from minirlhf.autograd.memory import reuse_freed_memory
from minirlhf.machine import blas_threads

#: Below this much work (array elements; multiply-adds for a product) an op runs in one call:
#: handing work to a thread costs about 15-30 microseconds (``_Worker``), the time of a GELU
#: over some 30,000-60,000 float32 values. Tried against 2^13, 2^15 and 2^18 (with the earlier,
#: slower hand-off) on training steps of the default model and on sampling
#: (benchmarks/README.md): 2^18 slowed small training steps, 2^13 and 2^15 slowed sampling;
#: 2^13 was faster on a 16 x 90-token step in one of two runs.
MIN_PARALLEL_ELEMENTS = 1 << 16


class _Worker:
    """One thread that runs ranges handed to it, by two raw locks: ``go`` is released when a
    range is ready, ``done`` when it has run. A lock hand-off costs about half of a
    ``ThreadPoolExecutor`` submit and result (measured here: 17-24 vs 36-42 microseconds),
    which the reward stage pays about 70 times a step (60,771 hand-offs in its 846 steps and
    its evaluation)."""

    def __init__(self, name: str):
        self.go, self.done = threading.Lock(), threading.Lock()
        self.go.acquire()
        self.done.acquire()
        self.task: tuple[Callable[[int, int], object], int, int] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        _inside.worker = True
        while True:
            self.go.acquire()
            if self.task is None:  # stop
                self.done.release()
                return
            fn, lo, hi = self.task
            try:
                fn(lo, hi)
            except BaseException as e:  # noqa: BLE001 -- handed back to the caller by wait()
                self.error = e
            self.done.release()

    def start(self, fn: Callable[[int, int], object], lo: int, hi: int) -> None:
        self.task = (fn, lo, hi)
        self.go.release()

    def wait(self) -> None:
        """Block until the range has run; re-raise its error here."""
        self.done.acquire()
        error, self.error = self.error, None
        if error is not None:
            raise error

    def stop(self) -> None:
        self.task = None
        self.go.release()
        self.thread.join()


_pool: list[_Worker] | None = None
_threads = 1
_blas_set: Callable[[int], None] | None = None
_blas_before: int | None = None
_inside = threading.local()  # set in worker threads: a split inside a split runs inline
_splitting = threading.Lock()  # held while the workers run one caller's ranges


def _blas_thread_setter() -> tuple[Callable[[int], None], Callable[[], int]] | None:
    """(set, get) for the thread count of the OpenBLAS that NumPy loaded, or None.

    NumPy's wheels bundle OpenBLAS under a prefixed name; we find the loaded library in this
    process's memory map (as threadpoolctl does) and look up the known spellings of
    openblas_set_num_threads. Another BLAS (MKL, Accelerate) is left alone: then the engine
    keeps one thread of its own, as before."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f
                            if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return None
    names = [("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
             ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
             ("openblas_set_num_threads", "openblas_get_num_threads")]
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in names:
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                setter.argtypes, getter.restype = [ctypes.c_int], ctypes.c_int
                return setter, getter
    return None


def threads() -> int:
    """How many threads the engine's ops split their rows over (1: no splitting)."""
    return _threads


def set_threads(n: int) -> int:
    """Split ops over ``n`` threads (the BLAS set to one thread) or, with n = 1, stop splitting
    and give the BLAS back its own thread count. Returns the count in effect: 1 when the BLAS's
    thread count cannot be set (its threads would compete with ours)."""
    global _pool, _threads, _blas_set, _blas_before
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"set_threads: n must be a positive integer, got {n!r}")
    if _pool is not None:
        for worker in _pool:
            worker.stop()
        _pool, _threads = None, 1
    if n == 1:
        if _blas_set is not None and _blas_before is not None:
            _blas_set(_blas_before)
        return 1
    found = _blas_thread_setter()
    if found is None:
        return 1
    _blas_set, getter = found
    if _blas_before is None:
        _blas_before = int(getter())
    _blas_set(1)
    _pool = [_Worker(f"minirlhf_{i}") for i in range(n - 1)]
    _threads = n
    return n


def configure(threads: int | None = None) -> int:
    """What the command-line entry points do before any work, and what a notebook may call
    once: keep freed memory for reuse (``memory.reuse_freed_memory``) and split ops over
    ``threads`` threads (default ``machine.blas_threads()``: MINIRLHF_THREADS, else the BLAS's
    variables, else the cores). Returns the thread count in effect."""
    reuse_freed_memory()
    return set_threads(blas_threads() if threads is None else threads)


def parallel_rows(n_rows: int, fn: Callable[[int, int], object], elements: int,
                  here: bool = False) -> None:
    """Call ``fn(lo, hi)`` on contiguous row ranges covering [0, n_rows), one range per
    thread, and wait for all of them. ``fn`` writes its rows of preallocated outputs (it
    returns nothing), so ranges never touch the same memory. ``elements``, the size of the
    work (multiply-adds for a product), decides whether splitting pays
    (``MIN_PARALLEL_ELEMENTS``); small work, one thread, calls from inside a worker, and a
    call made while another thread is splitting (the workers are busy; the engine itself never
    does this) run as one ``fn(0, n_rows)``.

    ``here=True``: the same ranges, run one after another on this thread. Each range is the
    same call either way, so the numbers are those of the split; it is for work so small that a
    hand-off (13-36 microseconds measured) costs more than the second core saves, such as
    generation's one token per row (``GPT.decode``)."""
    p = min(_threads, n_rows)
    if p <= 1 or _pool is None or elements < MIN_PARALLEL_ELEMENTS or getattr(
            _inside, "worker", False):
        fn(0, n_rows)
        return
    if here:
        for i in range(p):
            fn(n_rows * i // p, n_rows * (i + 1) // p)
        return
    if not _splitting.acquire(blocking=False):  # another thread of the caller's is splitting
        fn(0, n_rows)
        return
    try:
        _split(p, n_rows, fn)
    finally:
        _splitting.release()


def _split(p: int, n_rows: int, fn: Callable[[int, int], object]) -> None:
    """``parallel_rows``'s ranges over this thread and ``p - 1`` workers."""
    bounds = [n_rows * i // p for i in range(p + 1)]
    workers = _pool[: p - 1]
    for i, worker in enumerate(workers, start=1):
        worker.start(fn, bounds[i], bounds[i + 1])
    try:
        fn(bounds[0], bounds[1])  # this thread takes the first range
    finally:  # every worker is waited for, even when this range raised
        errors = []
        for worker in workers:
            try:
                worker.wait()  # re-raises an error from a worker
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
    if errors:
        raise errors[0]


# ------------------------------------------------------- the two products every layer makes
def matmul_rows(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None,
                here: bool = False) -> np.ndarray:
    """a @ b with a's rows split over the threads. a: (N, k), b: (k, m) -> (N, m)

    The forward of a linear layer (x W) and its input gradient (g W^T). ``out``: an (N, m)
    array to write into; ``here``: the same row ranges, all on this thread (``parallel_rows``)."""
    N, m = a.shape[0], b.shape[1]
    out = np.empty((N, m), np.result_type(a, b)) if out is None else out
    parallel_rows(N, lambda lo, hi: np.matmul(a[lo:hi], b, out=out[lo:hi]), N * a.shape[1] * m,
                  here)
    return out


def matmul_tn(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """a^T @ g, a sum over all N rows. a: (N, k), g: (N, m) -> (k, m)

    The weight gradient of a linear layer (x^T g). Splitting the N rows would leave partial
    sums to add; instead each thread computes its own rows of the result, a^T's rows being
    columns of a (a strided view the BLAS reads in place), each over all N rows at once."""
    k, m = a.shape[1], g.shape[1]
    out = np.empty((k, m), np.result_type(a, g))
    parallel_rows(k, lambda lo, hi: np.matmul(a[:, lo:hi].T, g, out=out[lo:hi]),
                  a.shape[0] * k * m)
    return out
