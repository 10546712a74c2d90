"""Gradient checking: compare backward() against centered finite differences in float64.

For a function f of Tensors, we reduce its output to a scalar L = sum(f(x) * R) with a fixed
random R (so every output element matters, with a different weight), then compare, for each
input x,

    analytic  dL/dx_i  from backward()
    numerical (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)

The centered difference has error O(eps^2) from truncation plus O(1e-16 |L| / eps) from
rounding; with eps = 1e-6 in float64 both are around 1e-10, so a correct backward shows a
relative error near 1e-8 or below, and a wrong one shows 1e-2 or more. In float32 rounding alone
would be ~1e-7 / 1e-6 = 0.1: that is why checks run in float64.

Relative error is cs231n's: max_i |a_i - n_i| / max(|a_i| + |n_i|, 1e-8).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from minirlhf.autograd.tensor import Tensor


def rel_error(analytic: np.ndarray, numerical: np.ndarray) -> np.ndarray:
    """Elementwise relative error, |a - n| / max(|a| + |n|, 1e-8). Same shape as the inputs."""
    a, n = np.asarray(analytic, np.float64), np.asarray(numerical, np.float64)
    return np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), 1e-8)


@dataclass
class InputCheck:
    """The check of one input: where the worst disagreement is and how large it is."""

    name: str  # "x0", "x1", ... or a name given by the caller
    shape: tuple[int, ...]
    max_rel_error: float
    analytic: float  # analytic gradient at the worst element (or along the direction)
    numerical: float  # numerical gradient there
    where: tuple[int, ...] | str  # index of the worst element, or "direction"
    max_abs_error: float = 0.0  # largest |analytic - numerical|
    passed: bool = True  # every element within tol (relative) or atol (absolute)


@dataclass
class GradcheckResult:
    """All inputs' checks of one function; ``passed`` when every element of every input is
    within ``tol`` relative error (or, if ``atol`` > 0, within ``atol`` absolute error)."""

    inputs: list[InputCheck] = field(default_factory=list)
    tol: float = 1e-6
    atol: float = 0.0

    @property
    def max_rel_error(self) -> float:
        return max((c.max_rel_error for c in self.inputs), default=0.0)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.inputs)

    def report(self) -> str:
        """A cs231n-style table: numerical vs analytic vs relative error, per input."""
        width = max([8] + [len(c.name) for c in self.inputs])
        lines = [f"{'input':<{width}} {'shape':<14} {'worst at':<12} {'numerical':>14} "
                 f"{'analytic':>14} {'rel. error':>10} {'abs. error':>10}"]
        for c in self.inputs:
            lines.append(
                f"{c.name:<{width}} {str(c.shape):<14} {str(c.where):<12} {c.numerical:>14.8g} "
                f"{c.analytic:>14.8g} {c.max_rel_error:>10.2e} {c.max_abs_error:>10.2e}"
                + ("" if c.passed else "  <- FAIL")
            )
        verdict = "PASS" if self.passed else "FAIL"
        within = f"tolerance {self.tol:.0e}" + (f", or absolute {self.atol:.0e}" if self.atol
                                                 else "")
        lines.append(f"{verdict}: max relative error {self.max_rel_error:.2e} ({within})")
        return "\n".join(lines)


def gradcheck(
    fn: Callable[..., Tensor],
    inputs: Sequence[Tensor],
    eps: float = 1e-6,
    tol: float = 1e-6,
    atol: float = 0.0,
    mode: str = "full",
    n_samples: int = 20,
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> GradcheckResult:
    """Check backward() of ``fn(*inputs)`` against centered finite differences.

    fn: a function of the inputs returning a Tensor of any shape.
    inputs: float64 Tensors with requires_grad=True (others are passed through unchecked).
    mode: "full" (every element), "sparse" (``n_samples`` random elements per input) or
        "direction" (the derivative along one random unit direction per input: a single
        number that catches almost any error, for inputs too large to check element by element).
    atol: an element also passes if its absolute error is at most ``atol``. Leave it 0 unless
        some gradients are at the finite differences' noise floor (about 1e-16 |L| / eps):
        an exactly-zero gradient compared with noise has relative error ~1 however right it is.
    Returns a GradcheckResult; ``.report()`` prints the table.
    """
    if mode not in ("full", "sparse", "direction"):
        raise ValueError(f"gradcheck: mode must be full, sparse or direction, got {mode!r}")
    checked = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    for x in checked:
        if x.dtype != np.float64:
            raise TypeError(
                f"gradcheck: inputs must be float64 (got {x.dtype} for shape {x.shape}); in "
                "float32, rounding alone makes finite differences wrong by ~1e-2"
            )
    rng = np.random.default_rng(seed)

    out = fn(*inputs)
    weights = rng.standard_normal(out.shape)  # the fixed projection R

    def output() -> np.ndarray:
        return np.array(fn(*inputs).data, dtype=np.float64)  # a copy: views follow x

    def difference(plus: np.ndarray, minus: np.ndarray) -> float:
        # Subtract the outputs before weighting: elements the nudge did not change cancel
        # exactly, so large unrelated outputs (a -1e9 mask fill) add no rounding noise.
        return float(np.sum((plus - minus) * weights)) / (2 * eps)

    for x in checked:
        x.grad = None
    (out * Tensor(weights)).sum().backward()

    result = GradcheckResult(tol=tol, atol=atol)
    names = list(names) if names is not None else [f"x{i}" for i in range(len(checked))]
    for name, x in zip(names, checked, strict=True):
        analytic = x.grad if x.grad is not None else np.zeros_like(x.data)
        if mode == "direction":
            v = rng.standard_normal(x.shape)
            v /= np.linalg.norm(v)
            x.data += eps * v
            plus = output()
            x.data -= 2 * eps * v
            minus = output()
            x.data += eps * v
            num = difference(plus, minus)
            ana = float(np.sum(analytic * v))
            err, abs_err = float(rel_error(ana, num)), abs(ana - num)
            ok = err <= tol or abs_err <= atol
            result.inputs.append(InputCheck(name, x.shape, err, ana, num, "direction", abs_err, ok))
            continue
        if mode == "sparse" and x.size > n_samples:
            flat = rng.choice(x.size, size=n_samples, replace=False)
        else:
            flat = np.arange(x.size)
        numerical = np.empty(len(flat))
        for k, i in enumerate(flat):
            idx = np.unravel_index(i, x.shape)
            old = x.data[idx]
            x.data[idx] = old + eps
            plus = output()
            x.data[idx] = old - eps
            minus = output()
            x.data[idx] = old
            numerical[k] = difference(plus, minus)
        ana = analytic.reshape(-1)[flat]
        errs = rel_error(ana, numerical)
        abs_errs = np.abs(ana - numerical)
        ok = bool(np.all((errs <= tol) | (abs_errs <= atol)))
        if len(errs) == 0:
            result.inputs.append(InputCheck(name, x.shape, 0.0, 0.0, 0.0, (), 0.0, True))
            continue
        worst = int(np.argmax(errs))
        where = tuple(int(j) for j in np.unravel_index(flat[worst], x.shape))
        result.inputs.append(InputCheck(
            name, x.shape, float(errs.max()), float(ana[worst]), float(numerical[worst]), where,
            float(abs_errs.max()), ok,
        ))
    return result


# ------------------------------------------------------------------ the op catalogue
@dataclass
class Case:
    """One gradient-check case: a function, the shapes of its inputs, and how to fill them."""

    name: str  # what is checked, e.g. "mul"
    fn: Callable[..., Tensor]  # a function of float64 Tensors
    shapes: tuple[tuple[int, ...], ...]  # one shape per input
    low: float = -2.0  # inputs are drawn uniformly from [low, high] ...
    high: float = 2.0
    away_from: float | None = None  # ... and kept at least 1e-3 from this kink
    note: str = ""  # why this case is built the way it is

    def make_inputs(self, seed: int = 0, dtype: type = np.float64) -> list[Tensor]:
        """Fresh inputs requiring grad (float64 for checks), reproducible from the seed."""
        rng = np.random.default_rng(seed)
        xs = []
        for shape in self.shapes:
            x = rng.uniform(self.low, self.high, size=shape)
            if self.away_from is not None:
                near = np.abs(x - self.away_from) < 1e-3
                x[near] = self.away_from + 0.5
            xs.append(Tensor(x, requires_grad=True, dtype=dtype))
        return xs

    def check(self, seed: int = 0, tol: float = 1e-6, mode: str = "full") -> GradcheckResult:
        return gradcheck(self.fn, self.make_inputs(seed), tol=tol, mode=mode, seed=seed)


def op_cases() -> list[Case]:
    """Every autograd op and fused function, on shapes including broadcast cases."""
    from minirlhf.autograd import functional as F
    from minirlhf.autograd import ops

    ids = np.array([[0, 3, 3], [1, 0, 4]])  # repeated ids: gradients must accumulate
    targets = np.array([[1, 0, 4, 4], [2, 2, 0, 3]])
    mask = np.array([[1, 1, 0, 1], [0, 1, 1, 1]])
    kink = "inputs kept >= 1e-3 from the kink at 0, where the derivative jumps"
    return [
        Case("add", ops.add, ((2, 3), (2, 3))),
        Case("add", ops.add, ((1, 3), (2, 3)), note="broadcast (1,3) with (2,3)"),
        Case("add", ops.add, ((3,), (2, 3)), note="broadcast (3,) with (2,3)"),
        Case("add", ops.add, ((), (2, 3)), note="scalar with (2,3)"),
        Case("sub", ops.sub, ((2, 1), (1, 3)), note="broadcast both sides"),
        Case("mul", ops.mul, ((1, 3), (2, 3))),
        Case("mul", ops.mul, ((2, 3), ())),
        Case("div", ops.div, ((2, 3), (3,)), low=0.5, high=2.0),
        Case("neg", ops.neg, ((2, 3),)),
        Case("pow", lambda x: ops.pow(x, 3), ((2, 3),)),
        Case("pow", lambda x: ops.pow(x, -1.5), ((2, 3),), low=0.5, high=2.0),
        Case("exp", ops.exp, ((2, 3),)),
        Case("expm1", ops.expm1, ((2, 3),)),
        Case("log", ops.log, ((2, 3),), low=0.2, high=3.0),
        Case("sqrt", ops.sqrt, ((2, 3),), low=0.2, high=3.0),
        Case("tanh", ops.tanh, ((2, 3),)),
        Case("sigmoid", ops.sigmoid, ((2, 3),)),
        Case("relu", ops.relu, ((3, 4),), away_from=0.0, note=kink),
        Case("gelu", ops.gelu, ((3, 4),), low=-4, high=4),
        Case("matmul", ops.matmul, ((3, 4), (4, 2))),
        Case("matmul", ops.matmul, ((2, 3, 4), (2, 4, 5)), note="batched"),
        Case("matmul", ops.matmul, ((2, 1, 3, 4), (3, 4, 2)), note="broadcast batch dims"),
        Case("matmul", ops.matmul, ((2, 3, 4), (4, 5)), note="batch @ shared matrix"),
        Case("sum", lambda x: ops.sum(x), ((2, 3),)),
        Case("sum", lambda x: ops.sum(x, axis=1, keepdims=True), ((2, 3, 4),)),
        Case("sum", lambda x: ops.sum(x, axis=(0, 2)), ((2, 3, 4),)),
        Case("mean", lambda x: ops.mean(x, axis=-1), ((2, 3, 4),)),
        Case("mean", lambda x: ops.mean(x), ((2, 3),)),
        Case("max", lambda x: ops.max(x, axis=1), ((3, 5),),
             note="random inputs have no ties (a tie is a kink)"),
        Case("max", lambda x: ops.max(x, axis=-1, keepdims=True), ((2, 3, 4),)),
        Case("reshape", lambda x: ops.reshape(x, (3, 2, 2)), ((2, 6),)),
        Case("transpose", lambda x: ops.transpose(x, (1, 0, 2)), ((2, 3, 4),)),
        Case("transpose", lambda x: ops.transpose(x), ((2, 3),)),
        Case("getitem", lambda x: x[1:, ::2], ((3, 5),), note="slices"),
        Case("getitem", lambda x: x[np.array([0, 2, 2, 1])], ((3, 4),),
             note="integer array, repeated index"),
        Case("getitem", lambda x: x[:, np.array([1, 1]), 0], ((2, 3, 4),), note="mixed"),
        Case("embedding", lambda w: ops.embedding(w, ids), ((5, 3),), note="repeated ids"),
        Case("concatenate", lambda a, b: ops.concatenate([a, b], axis=1), ((2, 3), (2, 2))),
        Case("stack", lambda a, b: ops.stack([a, b], axis=1), ((2, 3), (2, 3))),
        Case("split", lambda x: ops.split(x, [1, 3], axis=1)[2] * ops.split(x, 2, axis=0)[0],
             ((2, 4),), note="uses two of the parts"),
        Case("where", lambda a, b: ops.where(np.array([[True, False, True]]), a, b),
             ((2, 3), (3,))),
        Case("masked_fill", lambda x: ops.masked_fill(x, np.triu(np.ones((3, 3)), 1) > 0, -1e9),
             ((2, 3, 3),), note="causal mask"),
        Case("softmax", lambda x: F.softmax(x, axis=-1), ((2, 3, 5),)),
        Case("softmax", lambda x: F.softmax(x, axis=0), ((4, 3),)),
        Case("log_softmax", lambda x: F.log_softmax(x, axis=-1), ((2, 3, 5),)),
        Case("cross_entropy", lambda x: F.cross_entropy(x, targets), ((2, 4, 5),)),
        Case("cross_entropy", lambda x: F.cross_entropy(x, targets, mask=mask), ((2, 4, 5),),
             note="with a mask"),
        Case("cross_entropy", lambda x: F.cross_entropy(x, targets, ignore_index=4,
                                                        reduction="sum"), ((2, 4, 5),),
             note="ignore_index, sum"),
        Case("cross_entropy", lambda x: F.cross_entropy(x, targets, reduction="none"),
             ((2, 4, 5),), note="per position"),
        Case("linear", F.linear, ((2, 3, 4), (4, 5), (5,))),
        Case("linear", F.linear, ((3, 4), (4, 2)), note="no bias"),
        Case("causal_self_attention", lambda qkv: F.causal_self_attention(qkv, 2),
             ((2, 5, 12),), note="2 heads of size 2"),
        Case("layer_norm", F.layer_norm, ((2, 3, 6), (6,), (6,))),
        Case("layer_norm", F.layer_norm, ((4, 5),), note="no affine"),
        Case("logsigmoid", F.logsigmoid, ((2, 3),), low=-5, high=5),
        Case("log1mexp", F.log1mexp, ((2, 3),), low=-4, high=-0.05),
        Case("gelu (F)", F.gelu, ((2, 3),)),
    ]
