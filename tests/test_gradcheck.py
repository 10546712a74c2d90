"""Every op and fused function against centered finite differences in float64.

The tolerance is 1e-6 for every case: no op here is checked at a kink (relu and max inputs
are drawn away from 0 and from ties), so none needs a looser one.
"""

import numpy as np
import pytest

from minirlhf import Tensor, ops
from minirlhf.autograd.gradcheck import gradcheck, op_cases, rel_error

CASES = op_cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.name}-{c.shapes}" for c in CASES])
@pytest.mark.parametrize("seed", [0, 1])
def test_op_gradient(case, seed):
    result = case.check(seed=seed, tol=1e-6)
    assert result.passed, f"{case.name}:\n{result.report()}"


def test_every_op_has_a_case():
    names = {c.name for c in CASES}
    for op in ["add", "sub", "mul", "div", "neg", "pow", "exp", "expm1", "log", "sqrt", "tanh",
               "sigmoid", "relu", "gelu", "matmul", "sum", "mean", "max", "reshape", "transpose",
               "getitem", "embedding", "concatenate", "stack", "split", "where", "masked_fill",
               "softmax", "log_softmax", "cross_entropy", "layer_norm", "logsigmoid"]:
        assert op in names, f"no gradient check for {op}"


def _wrong_transpose_op(a, b):
    """A matmul whose backward forgets to transpose b: the bug gradcheck must catch."""
    out = a.data @ b.data

    def backward(g):
        return g @ b.data.reshape(b.shape[1], b.shape[0]), a.data.T @ g

    return Tensor._make(out, (a, b), "bad_matmul", backward)


def test_gradcheck_catches_a_wrong_backward():
    rng = np.random.default_rng(0)
    a = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    b = Tensor(rng.standard_normal((4, 4)), requires_grad=True)
    result = gradcheck(_wrong_transpose_op, [a, b])
    assert not result.passed
    assert result.inputs[0].max_rel_error > 1e-2  # input a is wrong ...
    assert result.inputs[1].max_rel_error < 1e-6  # ... input b is right
    assert "FAIL" in result.report() and "x0" in result.report()


@pytest.mark.parametrize("mode", ["sparse", "direction"])
def test_gradcheck_modes_for_large_inputs(mode):
    rng = np.random.default_rng(1)
    a = Tensor(rng.standard_normal((40, 30)), requires_grad=True)
    b = Tensor(rng.standard_normal((30, 20)), requires_grad=True)
    good = gradcheck(ops.matmul, [a, b], mode=mode, n_samples=15)
    assert good.passed, good.report()
    bad = gradcheck(lambda x, y: _wrong_scale(ops.matmul(x, y)), [a, b], mode=mode, n_samples=15)
    assert not bad.passed


def _wrong_scale(x):
    """Identity forward, but backward doubles the gradient."""
    return Tensor._make(x.data, (x,), "bad_scale", lambda g: (2 * g,))


def test_gradcheck_rejects_float32():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="float64"):
        gradcheck(ops.exp, [x])


def test_rel_error_is_cs231n():
    assert rel_error(1.0, 1.0) == 0.0
    assert rel_error(1.0, 3.0) == pytest.approx(0.5)
    assert rel_error(0.0, 0.0) == 0.0
