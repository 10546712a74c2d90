"""The engine's threads (minirlhf/autograd/runtime.py): split ops give the unsplit results,
their gradients check, errors in a worker surface, and ``import minirlhf`` changes nothing."""

import os
import subprocess
import sys

import numpy as np
import pytest

from minirlhf.autograd import functional as F
from minirlhf.autograd import ops, runtime
from minirlhf.autograd.gradcheck import gradcheck
from minirlhf.autograd.tensor import Tensor


@pytest.fixture
def split_everything(monkeypatch):
    """Two threads, and every array split however small (so that tiny float64 inputs, which
    gradient checks can afford, go through the split code)."""
    before = runtime.threads()
    monkeypatch.setattr(runtime, "MIN_PARALLEL_ELEMENTS", 0)
    if runtime.set_threads(2) != 2:
        pytest.skip("the BLAS's thread count cannot be set here (not OpenBLAS)")
    yield
    runtime.set_threads(before)


def _outputs(threads, rng_seed=0):
    """Forward values and input gradients of the split ops, in float32, at a thread count."""
    runtime.set_threads(threads)
    rng = np.random.default_rng(rng_seed)
    x = Tensor(rng.standard_normal((6, 40, 48)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((48, 144)).astype(np.float32) * 0.1, requires_grad=True)
    b = Tensor(rng.standard_normal(144).astype(np.float32), requires_grad=True)
    gain = Tensor(rng.standard_normal(48).astype(np.float32), requires_grad=True)
    h = F.layer_norm(x, gain, b[:48])
    qkv = F.linear(h, w, b)  # (6, 40, 144)
    y = F.causal_self_attention(qkv, n_head=4)  # (6, 40, 48)
    out = ops.gelu(y) @ w[:, :48]
    out.backward(rng.standard_normal(out.shape).astype(np.float32))
    return [out.data, x.grad, w.grad, b.grad, gain.grad]


def test_split_ops_match_one_thread(monkeypatch):
    monkeypatch.setattr(runtime, "MIN_PARALLEL_ELEMENTS", 0)
    before = runtime.threads()
    try:
        one = _outputs(1)
        if runtime.set_threads(2) != 2:
            pytest.skip("the BLAS's thread count cannot be set here (not OpenBLAS)")
        two = _outputs(2)
        again = _outputs(2)
    finally:
        runtime.set_threads(before)
    names = ["output", "dx", "dW", "db", "d gain"]
    for name, a, b, c in zip(names, one, two, again, strict=True):
        # the same thread count: the same bits; another count: the same up to float32 rounding
        # (a matrix product on one BLAS thread adds in another order than on two)
        np.testing.assert_array_equal(b, c, err_msg=f"{name} differs between two 2-thread runs")
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6 * np.abs(a).max(),
                                   err_msg=f"{name}: 1 thread vs 2")


@pytest.mark.parametrize("name", ["linear", "layer_norm", "gelu", "attention", "matmul"])
def test_split_ops_gradcheck(split_everything, name):
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((3, 5, 12)), requires_grad=True)  # float64
    w = Tensor(rng.standard_normal((12, 12)) * 0.3, requires_grad=True)
    b = Tensor(rng.standard_normal(12), requires_grad=True)
    fns = {
        "linear": (lambda x, w, b: F.linear(x, w, b), (x, w, b)),
        "layer_norm": (lambda x, g: F.layer_norm(x, g, g * 0.5), (x, b)),
        "gelu": (lambda x: ops.gelu(x * 3.0), (x,)),
        "attention": (lambda x: F.causal_self_attention(x, n_head=2), (x,)),  # 12 = 3 x 2 x 2
        "matmul": (lambda x, w: x @ w, (x, w)),
    }
    fn, inputs = fns[name]
    result = gradcheck(fn, inputs)
    assert result.passed, result.report()


def test_rowwise_gives_the_plain_functions_results_whole(split_everything, monkeypatch):
    """``rowwise`` over row ranges, and over blocks of rows and heads, returns what one call of
    the plain function on all rows returns: written in place (``out=``), copied in, or kept
    block by block and given back to a second call."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((7, 5))
    w, b = rng.standard_normal(5), rng.standard_normal(5)
    whole = F.layer_norm_forward(x, w, b, 1e-5)
    split = runtime.rowwise(F.layer_norm_forward, [x], w, b, 1e-5, out=[(5,), (5,), (1,)])
    for a, c in zip(whole, split, strict=True):
        np.testing.assert_array_equal(a, c)
    g = rng.standard_normal((7, 5))
    np.testing.assert_array_equal(
        runtime.rowwise(F.layer_norm_backward, [g, whole[1], whole[2]], w, out=[(5,)], copy=True),
        F.layer_norm_backward(g, whole[1], whole[2], w))

    monkeypatch.setattr(runtime, "ATTENTION_UNBLOCKED_BYTES", 0)
    monkeypatch.setattr(runtime, "ATTENTION_BLOCK_BYTES", 8)  # one head of one row per block
    q, k, v, dy = (rng.standard_normal((3, 2, 4, 6)) for _ in range(4))
    bias = F.causal_bias(4, 4, 0, q.dtype)
    y, att = F.attention_forward(q, k, v, 0.5, bias)
    y2, kept = runtime.rowwise(F.attention_forward, [q, k, v], 0.5, bias,
                               out=[(2, 4, 6), None], blocks=2 * 4 * 4 * 8)
    assert isinstance(kept, runtime.Blocks) and len(kept) == 6  # 3 rows x 2 heads
    np.testing.assert_array_equal(y2, y)
    grads = runtime.rowwise(F.attention_backward, [dy, kept, y2, q, k, v], 0.5,
                            out=[(2, 4, 6)] * 3, copy=True, blocks=2 * 4 * 4 * 8)
    for a, c in zip(F.attention_backward(dy, att, y, q, k, v, 0.5), grads, strict=True):
        np.testing.assert_array_equal(a, c)


def test_worker_error_surfaces(split_everything):
    def fn(lo, hi):
        if lo > 0:
            raise ValueError(f"rows {lo}:{hi}")

    with pytest.raises(ValueError, match="rows"):
        runtime.parallel_rows(10, fn, 10)


def test_an_error_in_any_range_leaves_the_workers_in_step(split_everything):
    """After an error in this thread's range or in a worker's, the next split still runs
    every range exactly once and waits for all of them: no hand-off is left over."""
    import time

    def fails_first(lo, hi):
        if lo == 0:
            raise KeyError("first range")
        time.sleep(0.05)  # the worker is still busy when this thread's range fails

    def fails_later(lo, hi):
        if lo > 0:
            raise KeyError("a worker's range")

    for bad in (fails_first, fails_later):
        with pytest.raises(KeyError):
            runtime.parallel_rows(10, bad, 10)
        seen: list[tuple[int, int]] = []

        def record(lo, hi, seen=seen):
            time.sleep(0.02 * (lo > 0))
            seen.append((lo, hi))

        runtime.parallel_rows(10, record, 10)
        assert sorted(seen) == [(0, 5), (5, 10)]  # both ranges, and only after both ran


def test_two_callers_at_once_each_cover_their_rows_once(split_everything):
    """Two threads of the caller's splitting at the same time: one hands ranges to the
    workers, the other runs its rows inline; neither loses nor repeats a range."""
    import threading

    results: dict[int, list[list[tuple[int, int]]]] = {0: [], 1: []}

    def caller(k):
        for _ in range(300):
            seen: list[tuple[int, int]] = []
            runtime.parallel_rows(8, lambda lo, hi, seen=seen: seen.append((lo, hi)), 8)
            results[k].append(sorted(seen))

    threads = [threading.Thread(target=caller, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in (0, 1):
        assert len(results[k]) == 300
        for seen in results[k]:
            assert seen in ([(0, 4), (4, 8)], [(0, 8)]), seen


def test_set_threads_validates():
    with pytest.raises(ValueError, match="positive integer"):
        runtime.set_threads(0)


def test_import_changes_nothing():
    """``import minirlhf`` applies neither the threads nor the allocator setting; the CLI does."""
    code = ("import minirlhf, minirlhf.autograd.memory as m, minirlhf.autograd.runtime as r; "
            "print(r.threads(), m._applied)")
    env = dict(os.environ, MINIRLHF_THREADS="2")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    assert out == ["1", "False"], out


def test_the_thread_count_reads_its_variables_in_order_and_never_exceeds_the_cores(monkeypatch):
    from minirlhf import machine

    assert machine.cores() >= 1
    monkeypatch.setattr(machine, "cores", lambda: 2)
    for name in ("MINIRLHF_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                 "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    assert machine.blas_threads() == 2  # no variable: the cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert machine.blas_threads() == 1
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "8")  # before OMP's, capped at the cores
    assert machine.blas_threads() == 2
    monkeypatch.setenv("MINIRLHF_THREADS", "1")  # first of all
    assert machine.blas_threads() == 1
    monkeypatch.setenv("MINIRLHF_THREADS", "two")  # not a count: the next variable decides
    assert machine.blas_threads() == 2
