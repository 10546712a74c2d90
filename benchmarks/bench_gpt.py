"""Speed and memory of the GPT: training tokens/s, sampling tokens/s, model FLOPs, peak memory.

    python benchmarks/bench_gpt.py            # all rows; PyTorch rows when torch is installed
    python benchmarks/bench_gpt.py --quick    # fewer repetitions (3 instead of 5)
    python benchmarks/bench_gpt.py --threads 1  # both implementations on one thread each
    python benchmarks/bench_gpt.py --scaling    # what a second thread gives each (PyTorch needed)

Training rows time forward + backward + AdamW in float32 for three model sizes. Sampling rows
time 64 prompts of 16 tokens, 64 new tokens each, on config B, with and without the KV cache.
minirlhf runs as its command line does (``runtime.configure()``: the engine's own threads, one
per core, and freed memory kept for reuse).

When PyTorch is importable, the same run times an equivalent PyTorch eager model and prints
the speed ratio minirlhf / PyTorch for each row; without it, those columns say "skipped". The
PyTorch model is a fair one: the same shapes, float32, 2 threads (``--threads N``: N for
both), GPT-2's layout with the head tied to the token embedding, tanh GELU,
torch.optim.AdamW (its default implementation). It writes attention out (q k^T, masked
softmax, times v) as minirlhf does; it does not use torch.compile,
scaled_dot_product_attention (fused, FlashAttention-style kernels) or fused
optimizers, which would be another comparison.

The machines this runs on are shared and noisy, so the two implementations are timed in
alternating repetitions, row by row: each repetition times one block of ours and one of
theirs, and each ratio printed is the median of the repetitions' ratios, with their range.

Training rows also print model FLOPs per second (6 per parameter per token for the weight
products, plus 12 L T^2 d per sequence for attention's two products, forward and backward; the
count of PaLM's MFU) and their fraction of NumPy's own float32 matrix-product peak, measured in
the same run on a (2048, 1024) @ (1024, 1024) product: how close to this machine's limit the
step runs, beside how it compares with PyTorch. Peak resident memory (RSS) of a config-B
training step is measured in a fresh process that does nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np

from minirlhf.autograd import functional as F
from minirlhf.autograd import runtime
from minirlhf.lm.model import GPT, GPTConfig
from minirlhf.lm.optim import AdamW
from minirlhf.lm.sampling import generate
from minirlhf.machine import cores, peak_rss_mb


@dataclass
class Shape:
    name: str
    vocab: int
    T: int
    d: int
    L: int
    H: int
    batch: int

    def train_flops(self) -> float:
        """Model FLOPs of one training step (forward + backward): 6 per weight per token for
        the 12 d^2 weights of each block and the d V tied head, plus attention's q k^T and
        P v, 4 T^2 d per sequence and layer forward, twice that backward."""
        weights = 12 * self.L * self.d**2 + self.d * self.vocab
        return 6.0 * weights * self.batch * self.T + 12.0 * self.L * self.T**2 * self.d * self.batch


SHAPES = [
    Shape("A", 64, 64, 64, 2, 4, 32),
    Shape("B", 96, 128, 128, 4, 4, 32),
    Shape("C", 96, 256, 256, 6, 8, 16),
]


def _median_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def matmul_peak_gflops(repeats: int = 7) -> float:
    """NumPy's float32 matrix-product speed on this machine, now: the median GFLOP/s of a
    (2048, 1024) @ (1024, 1024) product, as plain NumPy runs it (the BLAS's own threads)."""
    before = runtime.threads()
    runtime.set_threads(1)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2048, 1024), dtype=np.float32)
    b = rng.standard_normal((1024, 1024), dtype=np.float32)
    seconds = _median_time(lambda: a @ b, repeats)
    runtime.set_threads(before)
    return 2 * 2048 * 1024 * 1024 / seconds / 1e9


# ------------------------------------------------------------------------------ minirlhf
def ours_train_step(s: Shape):
    model = GPT(GPTConfig(vocab_size=s.vocab, block_size=s.T, n_layer=s.L, n_head=s.H,
                          n_embd=s.d))
    opt = AdamW(model.named_parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    x = rng.integers(0, s.vocab, (s.batch, s.T))
    y = rng.integers(0, s.vocab, (s.batch, s.T))

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def ours_peak_memory_mb(s: Shape) -> float:
    step = ours_train_step(s)
    step()
    tracemalloc.start()
    tracemalloc.reset_peak()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def ours_peak_rss_mb(name: str) -> float:
    """Peak resident memory (MB) of a fresh process that imports minirlhf, configures it as
    the command line does and runs three training steps of one shape: the whole process,
    interpreter and NumPy included, not only the arrays tracemalloc sees."""
    out = subprocess.run([sys.executable, __file__, "--rss-of", name], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_mb"]


def _rss_child(name: str) -> None:
    runtime.configure()
    step = ours_train_step(next(s for s in SHAPES if s.name == name))
    for _ in range(3):
        step()
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def ours_sampler(s: Shape, use_cache: bool):
    model = GPT(GPTConfig(vocab_size=s.vocab, block_size=s.T, n_layer=s.L, n_head=s.H,
                          n_embd=s.d))
    prompts = np.random.default_rng(0).integers(3, s.vocab, (64, 16))
    # Rows that emit EOS stop, but the batch runs until the last row is done: with 64 rows of
    # an untrained model that is all 64 steps, as in the PyTorch loop, which never stops early.

    def run():
        generate(model, prompts, 64, rng=np.random.default_rng(0), use_cache=use_cache)

    return run


# --------------------------------------------------------------- one thread against several
#: The speed-up over PyTorch eager on all cores that issue 19 asks of each row.
TARGETS = {"A": 1.3, "B": 1.2, "C": 1.1, "cache": 1.5}


def scaling(n_cores: int, repetitions: int) -> None:
    """Each implementation on one thread and on one per core, alternating in this process (the
    BLAS started with one thread; ``runtime.set_threads`` switches ours, ``set_num_threads``
    PyTorch's), and what the targets ask of the extra threads: a row whose target is R needs
    ours on n threads at R x PyTorch's on n, i.e. a gain of R x (PyTorch on n) / (ours on 1)
    over our own one-thread speed. Ratios are medians over the repetitions, ranges beside."""
    import torch

    runtime.configure(n_cores)
    B = SHAPES[1]
    rows = [(s.name, ours_train_step(s), s.batch * s.T) for s in SHAPES]
    rows.append(("cache", ours_sampler(B, True), 64 * 64))
    theirs = torch_jobs(SHAPES, B, n_cores)
    print(f"one thread against {n_cores}, {repetitions} alternating repetitions per row "
          f"(tokens/s; gains and ratios: median (range) over the repetitions)")
    print(f"{'row':<6} {'ours 1':>8} {f'ours {n_cores}':>8} {'gain':>16} {'PyTorch 1':>10} "
          f"{f'PyTorch {n_cores}':>10} {'gain':>16} {'1 thread':>17} {f'{n_cores} threads':>17} "
          f"{'gain needed':>16}")
    for name, ours, tokens in rows:
        their = theirs[("train", name) if name != "cache" else ("sample", "cache")]
        speed: dict[tuple[str, int], list[float]] = {}
        per_block = 1 if name == "C" else 3
        for _ in range(repetitions):
            for who, job in (("ours", ours), ("torch", their)):
                for n in (1, n_cores):
                    if who == "ours":
                        runtime.set_threads(n)
                    else:
                        torch.set_num_threads(n)
                    time.sleep(0.5)  # as in main(): no spinning threads left from the last block
                    speed.setdefault((who, n), []).append(
                        tokens / _median_time(job, per_block, warmup=1))
        o1, on = np.array(speed["ours", 1]), np.array(speed["ours", n_cores])
        t1, tn = np.array(speed["torch", 1]), np.array(speed["torch", n_cores])

        def fmt(r):
            return f"{np.median(r):.2f}x ({r.min():.2f}-{r.max():.2f})"

        print(f"{name:<6} {np.median(o1):>8,.0f} {np.median(on):>8,.0f} {fmt(on / o1):>16} "
              f"{np.median(t1):>10,.0f} {np.median(tn):>10,.0f} {fmt(tn / t1):>16} "
              f"{fmt(o1 / t1):>17} {fmt(on / tn):>17} {fmt(TARGETS[name] * tn / o1):>16}")
    runtime.set_threads(n_cores)


# ------------------------------------------------------------------------------- PyTorch
def torch_jobs(shapes, sample_shape, threads: int = 2):
    """The same rows for an equivalent PyTorch eager model on ``threads`` threads: {row key:
    callable}."""
    import torch
    import torch.nn as tnn

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    class Block(tnn.Module):
        def __init__(self, d, H):
            super().__init__()
            self.H = H
            self.ln_1, self.ln_2 = tnn.LayerNorm(d), tnn.LayerNorm(d)
            self.c_attn, self.c_proj = tnn.Linear(d, 3 * d), tnn.Linear(d, d)
            self.c_fc, self.mlp_proj = tnn.Linear(d, 4 * d), tnn.Linear(4 * d, d)

        def attn(self, x, cache=None, pos=0):
            B, T, C = x.shape
            q, k, v = self.c_attn(x).split(C, dim=2)
            q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
            if cache is not None:
                cache[0][:, :, pos:pos + T] = k
                cache[1][:, :, pos:pos + T] = v
                k, v = cache[0][:, :, :pos + T], cache[1][:, :, :pos + T]
            att = (q @ k.transpose(-2, -1)) * (1.0 / (k.size(-1) ** 0.5))
            if T > 1:
                Tk = k.size(2)
                mask = torch.ones(T, Tk, dtype=torch.bool).tril(diagonal=Tk - T)
                att = att.masked_fill(~mask, float("-inf"))
            y = torch.softmax(att, dim=-1) @ v
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

        def forward(self, x, cache=None, pos=0):
            x = x + self.attn(self.ln_1(x), cache, pos)
            return x + self.mlp_proj(tnn.functional.gelu(self.c_fc(self.ln_2(x)),
                                                         approximate="tanh"))

    class TorchGPT(tnn.Module):
        def __init__(self, s):
            super().__init__()
            self.s = s
            self.wte, self.wpe = tnn.Embedding(s.vocab, s.d), tnn.Embedding(s.T, s.d)
            self.h = tnn.ModuleList([Block(s.d, s.H) for _ in range(s.L)])
            self.ln_f = tnn.LayerNorm(s.d)

        def forward(self, idx, caches=None, pos=0):
            T = idx.shape[1]
            x = self.wte(idx) + self.wpe(torch.arange(pos, pos + T))
            for i, b in enumerate(self.h):
                x = b(x, caches[i] if caches else None, pos)
            return self.ln_f(x) @ self.wte.weight.T

    jobs = {}
    for s in shapes:
        model = TorchGPT(s)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, s.vocab, (s.batch, s.T), generator=g)
        y = torch.randint(0, s.vocab, (s.batch, s.T), generator=g)

        def step(model=model, opt=opt, x=x, y=y, s=s):
            loss = tnn.functional.cross_entropy(model(x).view(-1, s.vocab), y.view(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()

        jobs[("train", s.name)] = step

    s = sample_shape
    model = TorchGPT(s).eval()
    prompts = torch.randint(3, s.vocab, (64, 16), generator=torch.Generator().manual_seed(0))

    @torch.no_grad()
    def sample(use_cache):
        idx = prompts
        hs = s.d // s.H
        caches = [(torch.zeros(64, s.H, s.T, hs), torch.zeros(64, s.H, s.T, hs))
                  for _ in range(s.L)] if use_cache else None
        logits = model(idx, caches, 0)[:, -1]
        for t in range(16, 16 + 64):
            nxt = torch.multinomial(torch.softmax(logits, -1), 1)
            idx = torch.cat([idx, nxt], 1)
            if t + 1 < 16 + 64:
                logits = (model(nxt, caches, t) if use_cache else model(idx))[:, -1]
        return idx

    jobs[("sample", "cache")] = lambda: sample(True)
    jobs[("sample", "no cache")] = lambda: sample(False)
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="3 repetitions instead of 5")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--threads", type=int, default=None,
                        help="run both implementations on this many threads (default: one per "
                             "core, as the command line runs minirlhf, and PyTorch on 2); "
                             "--threads 1 compares one core with one core")
    mode.add_argument("--scaling", action="store_true",
                        help="each implementation on one thread and on one per core, "
                             "alternating, and the gain from the extra threads that each "
                             "row's target would need (needs PyTorch)")
    parser.add_argument("--rss-of", help=argparse.SUPPRESS)  # the child of ours_peak_rss_mb
    args = parser.parse_args()
    if args.rss_of:
        _rss_child(args.rss_of)
        return
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be a positive integer, got {args.threads}")
    if args.threads is not None and os.environ.get("OPENBLAS_NUM_THREADS") != str(args.threads):
        # The BLAS reads its thread count when NumPy is imported, and the engine's count comes
        # from the same variable (machine.blas_threads): start again with it set.
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads),
                   MINIRLHF_THREADS=str(args.threads))
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    repetitions = 3 if args.quick else 5
    if args.scaling:
        if os.environ.get("OPENBLAS_NUM_THREADS") != "1":  # ours on one thread needs it
            os.execve(sys.executable, [sys.executable, *sys.argv],
                      dict(os.environ, OPENBLAS_NUM_THREADS="1"))
        try:
            import torch  # noqa: F401
        except ImportError:
            print("--scaling compares with PyTorch, which is not installed: nothing to do.")
            return
        scaling(cores(), repetitions)
        return
    threads = runtime.configure()
    torch_threads = 2 if args.threads is None else args.threads

    B = SHAPES[1]
    jobs = {("train", s.name): ours_train_step(s) for s in SHAPES}
    jobs[("sample", "cache")] = ours_sampler(B, True)
    jobs[("sample", "no cache")] = ours_sampler(B, False)

    their_jobs = None
    if not args.no_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("PyTorch is not installed: its rows are skipped.")
        else:
            their_jobs = torch_jobs(SHAPES, B, torch_threads)

    peak = matmul_peak_gflops()
    # Alternating repetitions, row by row, so that the machine's drift (these machines are
    # shared) affects both alike. Before each block we pause: worker threads (ours, the BLAS's,
    # PyTorch's) spin for a while after their last task and would otherwise steal the cores
    # from the next block. A block is one warm-up step and the median of a few timed steps.
    ours: dict[tuple[str, str], list[float]] = {}
    theirs: dict[tuple[str, str], list[float]] = {}
    for key, job in jobs.items():
        slow = key[1] in ("C", "no cache")
        per_block = 1 if slow else 3
        reps = repetitions if key[1] != "no cache" else min(repetitions, 3)
        other = their_jobs[key] if their_jobs is not None else None
        for _ in range(reps):
            for f, store in ((job, ours), (other, theirs)):
                if f is None:
                    continue
                time.sleep(0.5)
                store.setdefault(key, []).append(_median_time(f, per_block, warmup=1))

    def tokens(key):
        if key[0] == "train":
            s = next(x for x in SHAPES if x.name == key[1])
            return s.batch * s.T
        return 64 * 64

    print(f"\nminirlhf on {threads} thread(s), PyTorch on {torch_threads}; NumPy float32 matmul "
          f"peak {peak:.1f} GFLOP/s (2048x1024 @ 1024x1024); {repetitions} alternating "
          f"repetitions per row")
    print(f"{'row':<22} {'minirlhf tok/s':>15} {'PyTorch tok/s':>14} {'ratio (range)':>20} "
          f"{'GFLOP/s':>8} {'of peak':>8}")
    for key, times in ours.items():
        rate = tokens(key) / float(np.median(times))
        label = f"{key[0]} {key[1]}" + (" (config B)" if key[0] == "sample" else "")
        if their_jobs is not None:
            t_rate = tokens(key) / float(np.median(theirs[key]))
            ratios = np.array(theirs[key]) / np.array(times)  # per repetition
            ratio = f"{np.median(ratios):.2f}x ({ratios.min():.2f}-{ratios.max():.2f})"
            line = f"{label:<22} {rate:>15,.0f} {t_rate:>14,.0f} {ratio:>20}"
        else:
            line = f"{label:<22} {rate:>15,.0f} {'skipped':>14} {'':>20}"
        if key[0] == "train":
            s = next(x for x in SHAPES if x.name == key[1])
            gflops = s.train_flops() / float(np.median(times)) / 1e9
            line += f" {gflops:>8.1f} {gflops / peak:>7.0%}"
        print(line)
    print(f"\npeak memory of one config-B training step: NumPy arrays (tracemalloc) "
          f"{ours_peak_memory_mb(B):.0f} MB; whole process (RSS, fresh process) "
          f"{ours_peak_rss_mb(B.name):.0f} MB")


if __name__ == "__main__":
    main()
