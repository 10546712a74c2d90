"""Both cores for NumPy: the engine's own threads, and the one call that turns them on.

Why. On a 2-core laptop, NumPy's matrix products run on two cores (the BLAS has its own
threads), but every elementwise op (GELU, softmax, layer norm, the residual adds) runs on one.
Worse, the BLAS's threads keep spinning for a while after each product, so a second Python
thread that tries to work beside them finds its core taken. With the BLAS told to use one
thread, and the rows of each op split between two threads of our own, both cores do every op.

How. ``configure(threads=2)`` tells the BLAS to use one thread and starts ``threads - 1``
worker threads. An op then splits its rows: ``parallel_rows(n, fn)`` calls ``fn(lo, hi)`` on
contiguous row ranges, one per thread, and returns when all are done. NumPy releases the
interpreter lock inside a matrix product and inside a ufunc loop over a large array, so the
ranges really run at once. Each range is computed by the same code as the whole, so a row's
result never depends on timing; the split depends only on the thread count, so the same thread
count gives the same numbers, run after run.

The ops themselves are plain functions on arrays (``F.layer_norm_forward``,
``F.attention_forward``, ``ops.gelu_forward``, ...): ``rowwise`` runs one over row ranges,
and over cache-sized blocks of attention's scores, writing the ranges' results into whole
arrays. Every split, block and buffer of the engine is made here.

Nothing happens at ``import minirlhf``: the command-line entry points call ``configure()``, and
a notebook may call it once (``minirlhf.configure_runtime()``). Without it every op runs its rows
in one call, exactly as plain NumPy would.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from minirlhf.autograd.memory import reuse_freed_memory
from minirlhf.machine import blas_threads

#: Below this much work (array elements; multiply-adds for a product) an op runs in one call:
#: handing a range to a thread costs about as much as a GELU over some 50,000 float32 values.
MIN_PARALLEL_ELEMENTS = 1 << 16

#: Attention works through a thread's scores in blocks of about ATTENTION_BLOCK_BYTES (whole
#: sequences while one sequence's scores, n_head x T x Tk, fit, else groups of heads of one
#: sequence) once they exceed ATTENTION_UNBLOCKED_BYTES: the softmax makes five passes over the
#: scores and the backward three over their gradient, and a block that stays in the cache spares
#: each pass a trip to memory. A block is the same products and row-wise steps as the whole, so
#: the numbers do not change.
ATTENTION_BLOCK_BYTES = 1 << 21
ATTENTION_UNBLOCKED_BYTES = 1 << 23


class _Worker:
    """One thread that runs ranges handed to it, by two raw locks: ``go`` is released when a
    range is ready, ``done`` when it has run (about half the cost of a ``ThreadPoolExecutor``
    submit and result, paid by every split op)."""

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
    hand-off costs more than the second core saves, such as generation's one token per row
    (``GPT.decode``)."""
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


# ------------------------------------------------------------ plain functions over row ranges
class Blocks(dict):
    """A result ``rowwise`` kept as the function returned it, one piece per block:
    {(first row, first head): array}. Given back to ``rowwise`` as an input, each block gets its
    own piece (attention's probabilities, from the forward to the backward)."""


def score_blocks(lo: int, hi: int, n_head: int, seq_bytes: int):
    """(b0, b1, h0, h1): blocks of batch rows [lo, hi) and heads [0, n_head) for attention to
    work through; ``seq_bytes``: the scores of one sequence, all heads (ATTENTION_BLOCK_BYTES)."""
    if (hi - lo) * seq_bytes <= ATTENTION_UNBLOCKED_BYTES:  # they fit in cache as they are
        yield lo, hi, 0, n_head
    elif seq_bytes <= ATTENTION_BLOCK_BYTES:  # whole sequences per block
        step = ATTENTION_BLOCK_BYTES // seq_bytes
        for b0 in range(lo, hi, step):
            yield b0, min(hi, b0 + step), 0, n_head
    else:  # groups of heads of one sequence
        heads = max(1, n_head * ATTENTION_BLOCK_BYTES // seq_bytes)
        for b in range(lo, hi):
            for h0 in range(0, n_head, heads):
                yield b, b + 1, h0, min(n_head, h0 + heads)


def rowwise(fn: Callable[..., Any], rows: Sequence[Any], *args: Any,
            out: Sequence[np.ndarray | tuple[int, ...] | None], copy: bool = False,
            dtype: Any = None, elements: int | None = None, blocks: int | None = None,
            here: bool = False) -> Any:
    """``fn(*rows, *args)``, a plain function on arrays, computed a range of rows per thread;
    returns its results whole (one, or a tuple).

    fn: each row of its results depends only on the same row of ``rows`` (a token's layer norm,
        a sequence's attention). Called on each range as ``fn(*(a[lo:hi] for a in rows), *args,
        out=...)``, it writes its results into ``out`` and returns them, as NumPy's ``out=``
        does: the ranges of the arrays for its results that are not kept, one array or a
        tuple.
    rows: arrays with rows first (the first one an array), or ``Blocks`` kept by an earlier
        call over the same rows.
    out: one entry per result of fn: an array (rows first) to hold it; the trailing shape of
        one to allocate here (a tuple: (C,) for an (N, C) array); or, with ``blocks``, None:
        keep the result as fn returned it, block by block (a ``Blocks``).
    copy: fn has no ``out=``: its results are copied into their arrays.
    dtype: of the arrays allocated here (default rows[0]'s).
    elements: the work (default rows[0].size; multiply-adds for a product), which decides
        whether splitting pays (``parallel_rows``).
    blocks: the bytes of one row's attention scores: the arrays are (B, nh, ...), and each
        range is worked through in cache-sized blocks of rows and heads (``score_blocks``).
    here: the ranges one after another on this thread (``parallel_rows``).
    """
    n = len(rows[0])
    work = rows[0].size if elements is None else elements
    dtype = rows[0].dtype if dtype is None else dtype
    bufs = [np.empty((n, *o), dtype) if type(o) is tuple else o for o in out]
    one = len(bufs) == 1
    if blocks is not None:
        kept = _blocks(fn, rows, args, bufs, copy, n, work, blocks, here)
        results = [k if b is None else b for b, k in zip(bufs, kept, strict=True)]
        return results[0] if one else tuple(results)
    if copy:
        def run(lo: int, hi: int) -> None:
            res = fn(*[a[lo:hi] for a in rows], *args)
            for b, r in zip(bufs, (res,) if one else res, strict=True):
                b[lo:hi] = r
    elif one:
        (b,) = bufs

        def run(lo: int, hi: int) -> None:
            fn(*[a[lo:hi] for a in rows], *args, out=b[lo:hi])
    else:
        def run(lo: int, hi: int) -> None:
            fn(*[a[lo:hi] for a in rows], *args, out=tuple([b[lo:hi] for b in bufs]))

    parallel_rows(n, run, work, here)
    return bufs[0] if one else tuple(bufs)


def _blocks(fn: Callable[..., Any], rows: Sequence[Any], args: tuple, bufs: list,
            copy: bool, n: int, work: int, seq_bytes: int, here: bool) -> list:
    """``rowwise`` with blocks: each range in blocks of rows and heads (``score_blocks``).
    Returns a Blocks for each result kept (a None in bufs), None for the others."""
    n_head = rows[0].shape[1]
    kept = [Blocks() if b is None else None for b in bufs]
    given = [b for b in bufs if b is not None]  # fn's out=, unless copy
    from_blocks = [type(a) is Blocks for a in rows]

    def run(lo: int, hi: int) -> None:
        for b0, b1, h0, h1 in score_blocks(lo, hi, n_head, seq_bytes):
            at = (slice(b0, b1), slice(h0, h1))
            ins = [a[b0, h0] if k else a[at] for a, k in zip(rows, from_blocks, strict=True)]
            if copy:
                res = fn(*ins, *args)
            elif len(given) == 1:
                res = fn(*ins, *args, out=given[0][at])
            else:
                res = fn(*ins, *args, out=tuple([b[at] for b in given]))
            for r, b, keep in zip(res if len(bufs) > 1 else (res,), bufs, kept, strict=True):
                if keep is not None:
                    keep[b0, h0] = r
                elif copy:
                    b[at] = r

    parallel_rows(n, run, work, here)
    return kept


# ----------------------------------------------------- the three products every layer makes
def matmul_rows(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None,
                here: bool = False) -> np.ndarray:
    """a @ b with a's rows split over the threads. a: (N, k), b: (k, m) -> (N, m)

    A product with a weight shared by every row (x W) and a linear layer's input gradient
    (g W^T). ``out``: an (N, m)
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


def sum_rows(a: np.ndarray) -> np.ndarray:
    """The sum of a's rows, as a vector-matrix product, a's columns split over the threads (each
    sums all its rows at once). a: (N, C) -> (C,)

    The bias gradient of a linear layer, and layer norm's weight and bias gradients."""
    ones = np.ones(len(a), dtype=a.dtype)
    out = np.empty(a.shape[1], dtype=a.dtype)
    parallel_rows(len(out), lambda lo, hi: np.matmul(ones, a[:, lo:hi], out=out[lo:hi]), a.size)
    return out
