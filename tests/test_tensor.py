"""The engine: Tensor attributes, graph traversal, accumulation, no_grad, and clear errors."""

import numpy as np
import pytest

import minirlhf
from minirlhf import Tensor, no_grad, unbroadcast


def test_tensor_attributes():
    a = Tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    assert a.shape == (2, 2) and a.dtype == np.float32 and a.requires_grad
    assert isinstance(a.data, np.ndarray) and a.numpy() is a.data
    assert a.grad is None
    s = a.sum()
    assert s.item() == 10.0
    s.backward()
    np.testing.assert_array_equal(a.grad, np.ones((2, 2), np.float32))
    d = a.detach()
    assert not d.requires_grad and d.data is a.data
    assert minirlhf.Tensor is Tensor


def test_float_arrays_keep_dtype_and_lists_become_float32():
    assert Tensor(np.zeros(3)).dtype == np.float64
    assert Tensor([1, 2, 3]).dtype == np.float32
    assert Tensor(np.zeros(2, np.float32)).dtype == np.float32


def test_reuse_accumulates():
    a = Tensor(3.0, requires_grad=True)
    b = a + a
    b.backward()
    assert a.grad == 2.0
    a.grad = None
    (a * a * a).backward()  # d(a^3) = 3a^2 = 27
    assert a.grad == pytest.approx(27.0)


def test_diamond_graph():
    x = Tensor(2.0, requires_grad=True, dtype=np.float64)
    y = x * 3.0
    z = y * y + y  # dz/dx = (2y + 1) * 3 = 39
    z.backward()
    assert x.grad == pytest.approx(39.0)


def test_grads_accumulate_across_backward_calls():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * 2.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad, [5.0, 5.0])


def test_deep_chain_has_no_recursion_limit():
    x = Tensor(1.0, requires_grad=True, dtype=np.float64)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    assert x.grad == pytest.approx(1.0001**10_000, rel=1e-9)


def test_non_leaf_grad_freed_unless_retained():
    x = Tensor(np.ones(3), requires_grad=True)
    h = (x * 2.0).retain_grad()
    k = x * 3.0
    (h.sum() + k.sum()).backward()
    np.testing.assert_allclose(h.grad, np.ones(3))
    assert k.grad is None
    np.testing.assert_allclose(x.grad, 5 * np.ones(3))


def test_retain_graph_allows_second_backward():
    x = Tensor(2.0, requires_grad=True, dtype=np.float64)
    y = x * x
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad == pytest.approx(8.0)


def test_no_grad_records_nothing():
    x = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = x * 2.0
        assert not minirlhf.is_grad_enabled()
    assert minirlhf.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_backward_on_non_scalar_needs_gradient():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"non-scalar Tensor of shape \(2, 3\)"):
        (x * 2.0).backward()
    (x * 2.0).backward(np.ones((2, 3)))
    np.testing.assert_allclose(x.grad, 2 * np.ones((2, 3)))


def test_shape_mismatch_names_op_and_shapes():
    a = Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4,\)"):
        a + Tensor(np.ones(4))
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(2, 3\)"):
        a @ a
    with pytest.raises(ValueError, match=r"reshape: cannot reshape \(2, 3\)"):
        a.reshape(4, 2)


def test_mixed_dtypes_are_an_error_not_an_upcast():
    a = Tensor(np.ones(3, np.float32))
    with pytest.raises(TypeError, match="mul: dtypes differ"):
        a * Tensor(np.ones(3, np.float64))
    with pytest.raises(TypeError, match="float64 array"):
        a + np.ones(3, np.float64)


def test_inplace_misuse_names_op_and_shapes():
    w = Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"in-place \+= on a Tensor of shape \(2, 3\)"):
        w += Tensor(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match="item assignment"):
        w[0] = 5.0
    with pytest.raises(ValueError, match=r"new array is float64\[3\]"):
        w.data = np.ones(3)
    with no_grad():  # an optimizer step: allowed
        w -= 0.5
    np.testing.assert_allclose(w.data, 0.5)


def test_unbroadcast():
    g = np.ones((4, 2, 3))
    assert unbroadcast(g, (4, 2, 3)) is g
    np.testing.assert_array_equal(unbroadcast(g, (3,)), np.full(3, 8.0))
    np.testing.assert_array_equal(unbroadcast(g, (1, 3)), np.full((1, 3), 8.0))
    np.testing.assert_array_equal(unbroadcast(g, (2, 1)), np.full((2, 1), 12.0))
    np.testing.assert_array_equal(unbroadcast(g, ()), np.array(24.0))


def test_broadcast_gradient_shapes():
    a = Tensor(np.ones((1, 3)), requires_grad=True)
    b = Tensor(np.ones((2, 3)), requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.shape == (1, 3) and b.grad.shape == (2, 3)
    np.testing.assert_allclose(a.grad, [[2.0, 2.0, 2.0]])


def test_embedding_accumulates_repeated_ids():
    w = Tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    ids = np.array([[0, 2, 2], [2, 1, 0]])
    out = minirlhf.autograd.ops.embedding(w, ids)
    assert out.shape == (2, 3, 2)
    out.sum().backward()
    np.testing.assert_allclose(w.grad, [[2, 2], [1, 1], [3, 3]])
    with pytest.raises(IndexError, match=r"ids must be in \[0, 3\)"):
        minirlhf.autograd.ops.embedding(w, np.array([3]))
