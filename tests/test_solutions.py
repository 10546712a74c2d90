"""Tests written like an exercise's answer, kept out of the student copy (see
``minirlhf.course.classroom.TEACHER_ONLY``): the DPO bandit computes the expected loss exactly as
chapter 6's exercise does; the wrong-solution test plants a right answer beside a wrong one."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minirlhf.autograd import functional as F
from minirlhf.course.classroom import STUB, make_student
from minirlhf.lm.nn import Parameter
from minirlhf.lm.optim import AdamW
from minirlhf.objectives.preference import dpo_loss

ROOT = Path(__file__).resolve().parent.parent


def test_one_token_bandit_reaches_the_closed_form_optimum():
    """K actions, a reference policy, a true reward r. With exact Bradley-Terry preferences
    (each pair's label probability p_ij = sigmoid(r_i - r_j), used as a soft label), DPO's
    minimiser is pi* = pi_ref exp(r / beta) / Z."""
    K, beta = 5, 0.5
    rng = np.random.default_rng(1)
    r = rng.normal(size=K)
    ref_logits = rng.normal(size=K)
    ref_logp = ref_logits - np.log(np.exp(ref_logits).sum())
    target = np.exp(ref_logp + r / beta)
    target /= target.sum()
    i, j = np.triu_indices(K, k=1)
    p = 1 / (1 + np.exp(-(r[i] - r[j])))  # P(i preferred to j)

    theta = Parameter(np.zeros(K))
    opt = AdamW([("theta", theta)], lr=0.05)
    for _ in range(3000):
        logp = F.log_softmax(theta)
        li, lj = logp[i], logp[j]
        win = dpo_loss(li, lj, ref_logp[i], ref_logp[j], beta)[0]  # i labelled the winner
        lose = dpo_loss(lj, li, ref_logp[j], ref_logp[i], beta)[0]  # j labelled the winner
        loss = (win * p + lose * (1 - p)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    pi = np.exp(F.log_softmax(theta).data)
    tv = 0.5 * np.abs(pi - target).sum()
    assert tv < 0.01, (pi, target)




@pytest.fixture(scope="module")
def student(tmp_path_factory):
    out = tmp_path_factory.mktemp("class") / "student"
    make_student(ROOT, out)
    return out, None


def _check(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minirlhf", "classroom", "check", *args],
                          cwd=folder, capture_output=True, text=True, timeout=300)


def test_a_wrong_solution_fails_with_its_relative_error(student, tmp_path):
    """Put a transposed attention gradient into a student copy: the check names the relative
    error; a right solution of another exercise passes beside it."""
    folder, _ = student
    work = tmp_path / "wrong"
    shutil.copytree(folder, work)
    path = work / "minirlhf" / "autograd" / "functional.py"
    text = path.read_text()
    right = "        return (y * (g - np.sum(g * y, axis=axis, keepdims=True)),)\n"
    text = text.replace(f"        {STUB}\n", right, 1)  # the softmax backward, done right
    # the layer norm backward, done wrong: forgets the xhat term of the input gradient
    start = text.index(STUB, text.index("def layer_norm_backward("))
    indent = "    "  # the region sits in the plain function's body
    wrong = (f"dxhat = g * weight if weight is not None else g\n"
             f"{indent}dx = (dxhat - _mean_last(dxhat)) * rstd")
    text = text[:start] + wrong + text[start + len(STUB):]
    path.write_text(text)
    run = _check(work, "1")
    out = run.stdout
    assert "softmax-backward       pass" in out, out
    assert "layer-norm-backward    FAIL" in out, out
    assert "relative error" in out and "should be below 1e-06" in out and "numerical" in out
    assert run.returncode == 1

