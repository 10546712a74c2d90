"""Layers, AdamW, clipping and the schedule."""

import math

import numpy as np
import pytest

from minirlhf import Tensor
from minirlhf.autograd.gradcheck import gradcheck
from minirlhf.lm.model import GPT, GPTConfig
from minirlhf.lm.nn import Dropout, Embedding, LayerNorm, Linear, Parameter
from minirlhf.lm.optim import AdamW, clip_grad_norm, cosine_lr, decayed_parameter_names


@pytest.mark.parametrize("layer,shape", [
    (Linear(4, 3, rng=np.random.default_rng(0)), (2, 5, 4)),
    (LayerNorm(4), (2, 5, 4)),
])
def test_layers_gradcheck(layer, shape):
    layer.to(np.float64)
    for p in layer.parameters():  # move off the identity init so every gradient is informative
        p.data = p.data + np.random.default_rng(1).normal(0, 0.5, p.shape)
    x = Tensor(np.random.default_rng(2).normal(size=shape), requires_grad=True)
    result = gradcheck(lambda x, *ps: layer(x), [x, *layer.parameters()])
    assert result.passed, result.report()


def test_embedding_gradcheck():
    emb = Embedding(6, 3).to(np.float64)
    ids = np.array([[0, 5, 5, 2]])
    result = gradcheck(lambda w: emb(ids), [emb.weight])
    assert result.passed, result.report()


def test_dropout_train_and_eval():
    d = Dropout(0.5, rng=np.random.default_rng(0))
    x = Tensor(np.ones((100, 100), np.float32))
    y = d(x).data
    assert 0.45 < (y == 0).mean() < 0.55 and set(np.unique(y)) == {0.0, 2.0}
    assert d(x).dtype == np.float32
    d.eval()
    assert d(x) is x
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        Dropout(1.0)


def test_adamw_one_step_by_hand():
    p = Parameter(np.array([1.0, -2.0], np.float32))
    opt = AdamW([("w", p)], lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.5, decay={"w"})
    p.grad = np.array([0.5, 0.25], np.float32)
    opt.step()
    # step 1: m_hat = g, v_hat = g^2, so the Adam step is lr * sign(g); decay adds lr * wd * p
    expected = np.array([1.0, -2.0]) * (1 - 0.1 * 0.5) - 0.1 * np.sign([0.5, 0.25])
    np.testing.assert_allclose(p.data, expected, rtol=1e-6)
    assert p.data.dtype == np.float32


def test_adamw_matches_reference_over_steps():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=5)
    grads = rng.normal(size=(4, 5))
    p = Parameter(w0.copy())
    opt = AdamW([("w", p)], lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, decay={"w"})
    w, m, v = w0.copy(), np.zeros(5), np.zeros(5)
    for t, g in enumerate(grads, 1):
        p.grad = g.copy()
        opt.step()
        m = 0.9 * m + 0.1 * g
        v = 0.95 * v + 0.05 * g * g
        w = w * (1 - 0.01 * 0.1) - 0.01 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.95**t)) + 1e-8)
    np.testing.assert_allclose(p.data, w, rtol=1e-12)


def test_weight_decay_skips_biases_layernorm_and_embeddings():
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8))
    decayed = decayed_parameter_names(model)
    assert "h.0.attn.c_attn.weight" in decayed and "h.0.mlp.c_proj.weight" in decayed
    for name in ["wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.0.attn.c_attn.bias",
                 "ln_f.weight"]:
        assert name not in decayed
    with pytest.raises(KeyError, match="not among the parameters"):
        AdamW(model.named_parameters(), decay={"nope"})


def test_clip_grad_norm():
    a, b = Parameter(np.zeros(2)), Parameter(np.zeros(1))
    a.grad, b.grad = np.array([3.0, 0.0]), np.array([4.0])
    norm = clip_grad_norm([a, b], 1.0)
    assert norm == pytest.approx(5.0)
    assert math.sqrt((a.grad**2).sum() + (b.grad**2).sum()) == pytest.approx(1.0, rel=1e-5)
    a.grad, b.grad = np.array([0.3, 0.0]), np.array([0.4])
    clip_grad_norm([a, b], 1.0)
    np.testing.assert_allclose(a.grad, [0.3, 0.0])  # under the limit: untouched


def test_cosine_schedule():
    assert cosine_lr(0, 100, 1.0, warmup_steps=10) == pytest.approx(0.1)
    assert cosine_lr(9, 100, 1.0, warmup_steps=10) == pytest.approx(1.0)
    assert cosine_lr(10, 100, 1.0, warmup_steps=10, min_lr=0.1) == pytest.approx(1.0)
    assert cosine_lr(55, 100, 1.0, warmup_steps=10, min_lr=0.1) == pytest.approx(0.55)
    assert cosine_lr(100, 100, 1.0, warmup_steps=10, min_lr=0.1) == pytest.approx(0.1)
