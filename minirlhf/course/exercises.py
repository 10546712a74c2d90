"""The classroom exercises, chapter by chapter, and the check of each.

Every exercise is a solution region in the library (see ``minirlhf.course.classroom``). Its check
calls the library function on a small case and says precisely what is wrong: the relative error
of a gradient against centered finite differences (float64) with the numbers at the worst
element, or the expected and the computed value and how far apart they are.

A check's expected values are never computed here, since a student copy ships this file: they
are **recorded** from the teacher's solutions on the same small cases (``expected.npz`` beside
this file, written by ``python -m minirlhf classroom record-expected``; the teacher-only tests
compare every recorded value with an independent reference), worked by hand and written as
numbers, or **properties** (centered finite differences, a value the library computes another
way). ``tests/test_classroom.py`` reads this file's syntax to hold it to that.

``run_checks(chapter)`` returns one ``CheckResult`` per exercise: "pass", "FAIL" or
"not implemented". A student's file that does not compile (a SyntaxError or IndentationError)
fails the exercises that import it, with one line naming the file and line; the others run.
``POINTS`` gives each exercise its points (``minirlhf.course.grades`` writes them out for an
autograder).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minirlhf.autograd.tensor import Tensor


class CheckFailed(AssertionError):
    """An exercise's implementation runs but gives a wrong answer; the message says how."""


@dataclass(frozen=True)
class Exercise:
    chapter: int  # the notebook chapter it belongs to
    name: str  # short id, e.g. "softmax-backward"
    where: str  # the function holding the solution region
    what: str  # one line: what to implement
    check: Callable[[], str]  # returns a pass message or raises CheckFailed


@dataclass
class CheckResult:
    exercise: Exercise
    status: str  # "pass", "FAIL" or "not implemented"
    message: str


# ---------------------------------------------------------------------------- helpers
EXPECTED = Path(__file__).with_name("expected.npz")  # the recorded values (package data)
RECORD = "python -m minirlhf classroom record-expected"  # the teacher's command that writes it
# the check running now (its name prefixes its recorded keys), and, while the teacher records,
# {key: (value, tolerance)} of every value recorded so far
_running: dict = {"exercise": "", "recording": None, "recorded": None}


def _t(a, grad: bool = True) -> Tensor:
    return Tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def _carries_gradient(what: str, out) -> None:
    """Raise CheckFailed when ``out``, computed from inputs that need a gradient, has none."""
    if not (isinstance(out, Tensor) and out.requires_grad):
        raise CheckFailed(f"{what} carries no gradient: it was computed outside the graph (on "
                          ".data, or with NumPy), so backward never reaches its inputs; build "
                          "it with Tensor operations")


def _grad(fn: Callable[..., Tensor], inputs: list[Tensor], tol: float = 1e-6) -> str:
    """Gradient check in float64; raise CheckFailed with the worst element's numbers."""
    from minirlhf.autograd.gradcheck import gradcheck

    result = gradcheck(fn, inputs, eps=1e-6, tol=tol)
    worst = max(result.inputs, key=lambda c: c.max_rel_error)
    if not result.passed:
        raise CheckFailed(
            f"gradient wrong: relative error {worst.max_rel_error:.2e} (should be below "
            f"{tol:.0e}) for input {worst.name} {worst.shape} at {worst.where}: numerical "
            f"{worst.numerical:.6g}, your analytic {worst.analytic:.6g}")
    return f"gradient matches finite differences (max relative error {worst.max_rel_error:.1e})"


def _close(name: str, got, expected, tol: float = 1e-8) -> None:
    """Raise CheckFailed naming ``name``, expected vs got and the largest difference."""
    got_a = np.asarray(got.data if isinstance(got, Tensor) else got, dtype=np.float64)
    exp_a = np.asarray(expected, dtype=np.float64)
    if got_a.shape != exp_a.shape:
        raise CheckFailed(f"{name}: expected shape {exp_a.shape}, got {got_a.shape}")
    broken = ~np.isfinite(got_a) & np.isfinite(exp_a)
    if broken.any():
        i = np.unravel_index(np.argmax(broken), got_a.shape) if got_a.ndim else ()
        where = f" at {tuple(int(k) for k in i)}" if got_a.ndim else ""
        raise CheckFailed(f"{name}{where}: expected {exp_a[i]:.6g}, got a value that is not a "
                          f"finite number (a division by zero, or an overflow?)")
    with np.errstate(invalid="ignore"):  # inf - inf
        diff = np.abs(got_a - exp_a)
    finite = np.isfinite(exp_a)  # an infinite expected value is matched exactly
    bad = np.where(finite, ~(diff <= tol * (1 + np.abs(np.where(finite, exp_a, 0)))),
                   got_a != exp_a)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, diff, -1)), diff.shape) if diff.ndim else ()
        where = f" at {tuple(int(k) for k in i)}" if diff.ndim else ""
        raise CheckFailed(f"{name}{where}: expected {exp_a[i]:.6g}, got {got_a[i]:.6g} (off by "
                          f"{diff[i]:.3g})")


def _expect(key: str, got, tol: float = 0.0) -> np.ndarray:
    """The recorded value ``key`` of the running check (``expected.npz``). While the teacher
    records, ``got`` (the solution's value) is stored with the tolerance its check uses and
    returned, so the check compares it with itself."""
    full = f"{_running['exercise']}:{key}"
    recording = _running["recording"]
    if recording is not None:
        if full in recording:
            raise ValueError(f"{full} is recorded twice: give each of a check's values its key")
        value = np.array(got.data if isinstance(got, Tensor) else got)
        recording[full] = (value, tol)
        return value
    if _running["recorded"] is None:
        try:
            _running["recorded"] = load_expected()
        except ValueError as e:  # not the student's mistake: the shipped file is damaged
            raise CheckFailed(f"{e}: put back the expected.npz of the copy you were given "
                              "(nothing is wrong with your code yet)") from None
    if full not in _running["recorded"]:
        raise CheckFailed(f"no recorded value {full!r} in {EXPECTED.name}: the teacher records "
                          f"the expected values with '{RECORD}'")
    return _running["recorded"][full]


def _match(name: str, got, key: str, tol: float = 1e-8) -> None:
    """``_close`` against the recorded value ``key``."""
    _close(name, got, _expect(key, got, tol), tol)


def load_expected(path: Path = EXPECTED) -> dict[str, np.ndarray]:
    """The recorded values, {exercise:key: array}; {} if the file is missing; ValueError naming
    the file if it is not an .npz of arrays."""
    if not path.exists():
        return {}
    import zipfile
    import zlib

    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):  # cut off, or
        # not a zip of .npy arrays at all (numpy calls that "pickled")
        raise ValueError(f"{path} cannot be read as the recorded values: it is not an .npz of "
                         "arrays") from None


# ------------------------------------------------------------------ chapter 1: autograd
def _softmax_backward() -> str:
    from minirlhf.autograd import functional as F

    w = np.random.default_rng(1).normal(size=(2, 5))
    return _grad(lambda x: F.softmax(x, axis=-1) * w, [_t(np.random.default_rng(0).normal(
        size=(2, 5)))])


def _log_softmax_backward() -> str:
    from minirlhf.autograd import functional as F

    w = np.random.default_rng(2).normal(size=(3, 4))
    return _grad(lambda x: F.log_softmax(x, axis=-1) * w, [_t(np.random.default_rng(3).normal(
        size=(3, 4)))])


def _layer_norm_backward() -> str:
    from minirlhf.autograd import functional as F

    rng = np.random.default_rng(4)
    w = rng.normal(size=(2, 3, 6))
    inputs = [_t(rng.normal(size=(2, 3, 6))), _t(rng.normal(1, 0.3, size=6)),
              _t(rng.normal(size=6))]
    passed = _grad(lambda x, g, b: F.layer_norm(x, g, b) * w, inputs)
    try:  # without a weight (None) too: dxhat is g itself
        _grad(lambda x: F.layer_norm(x) * w, inputs[:1])
    except CheckFailed as e:
        raise CheckFailed(f"without a weight (weight=None): {e}") from None
    except TypeError as e:
        if "NoneType" not in str(e):
            raise
        raise CheckFailed(f"without a weight (weight=None), it raised TypeError: {e} (the weight "
                          "is (C,) or None)") from None
    return passed


# ----------------------------------------------------------------------- chapter 2: GPT
def _causal_mask() -> str:
    from minirlhf.autograd.functional import causal_bias

    got = causal_bias(3, 5, 2, np.dtype(np.float64))  # 3 queries at positions 2, 3, 4
    expected = _expect("bias", got)  # recorded from the solution: compared entry by entry
    if got.shape != expected.shape:
        raise CheckFailed(f"mask shape: expected {expected.shape}, got {got.shape}")
    wrong = np.argwhere(got != expected)
    if len(wrong):
        i, j = wrong[0]

        def seen(b: float) -> str:
            return "visible (bias 0)" if b == 0 else ("masked (bias -inf)" if b == -np.inf
                                                      else f"bias {b}")
        raise CheckFailed(f"query {i} (position {i + 2}) and key {j}: should be "
                          f"{seen(expected[i, j])}, is {seen(got[i, j])} ({len(wrong)} entries "
                          "wrong; a query may see keys at its own position and before)")
    return "every query sees exactly the keys at or before its position"


def _attention_forward() -> str:
    from minirlhf.autograd import functional as F

    qkv = np.random.default_rng(5).normal(size=(2, 4, 12))
    _match("attention output", F.causal_self_attention(_t(qkv, grad=False), 2), "output",
           tol=1e-10)
    return "output matches the recorded one (softmax of the masked, scaled scores, times v)"


def _attention_backward() -> str:
    from minirlhf.autograd import functional as F

    rng = np.random.default_rng(6)
    w = rng.normal(size=(2, 4, 4))
    return _grad(lambda x: F.causal_self_attention(x, 2) * w, [_t(rng.normal(size=(2, 4, 12)))])


# ------------------------------------------------------- chapter 3: preferences and SFT
def _rater_probability() -> str:
    from minirlhf.world.raters import Rater

    cases = [(Rater(), 1.0, 0.0), (Rater(temperature=0.5), 0.0, 0.5),
             (Rater(position_bias=0.3), 0.2, 0.2), (Rater(flip=0.1, temperature=2.0), 3.0, 1.0)]
    for k, (rater, ua, ub) in enumerate(cases):
        _match(f"P(first preferred) for {rater} with utilities {ua}, {ub}",
               rater.p_first(ua, ub), f"case{k}", tol=1e-12)
    return "Bradley-Terry choice probability right with temperature, position bias and flips"


def _token_logprobs() -> str:
    from minirlhf.lm.sequences import logprobs_from_logits

    rng = np.random.default_rng(7)
    logits = rng.normal(size=(2, 4, 6))  # predicts tokens[:, 1:]
    tokens = rng.integers(0, 6, size=(2, 5))
    mask = np.array([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]], dtype=np.float64)
    temp = 0.7
    got = logprobs_from_logits(_t(logits), tokens, mask, temp)
    _match("log-probs (B, T)", got, "logprobs", tol=1e-10)
    w = rng.normal(size=(2, 5))
    _grad(lambda x: logprobs_from_logits(x, tokens, mask, temp) * w, [_t(logits)])
    return "log-probs of the response tokens right (temperature, mask), gradient too"


class _FixedLogits:
    """A stand-in model whose logits are fixed: checks sft_loss without a transformer."""

    def __init__(self, logits: np.ndarray | Tensor):
        self.logits = logits if isinstance(logits, Tensor) else _t(logits)

    def __call__(self, tokens: np.ndarray) -> Tensor:
        return self.logits[:, : tokens.shape[1]]


def _sft_loss() -> str:
    from minirlhf.objectives.sft import sft_loss

    rng = np.random.default_rng(8)
    logits = rng.normal(size=(2, 4, 5))
    tokens = rng.integers(0, 5, size=(2, 5))
    mask = np.array([[0, 0, 1, 1, 1], [0, 0, 0, 1, 1]], dtype=np.float64)
    loss = sft_loss(_FixedLogits(logits), tokens, mask)
    _match("SFT loss (the mean NLL over the batch's response tokens only: their sum over both "
           "rows / their count, not a mean per row)", loss, "loss", tol=1e-10)
    _carries_gradient("the SFT loss", loss)
    _grad(lambda z: sft_loss(_FixedLogits(z), tokens, mask), [_t(logits)])
    return "mean negative log-likelihood over response tokens only, and its gradient"


# --------------------------------------------------------------- chapter 4: reward model
def _bradley_terry() -> str:
    from minirlhf.objectives.reward import bradley_terry_loss

    rc, rr = np.array([2.0, -1.0, 0.5]), np.array([0.0, 1.0, 0.5])
    _match("BT loss, no margin", bradley_terry_loss(_t(rc), _t(rr)), "plain")
    _match("BT loss with margin 0.5 and center_coef 0.1",
           bradley_terry_loss(_t(rc), _t(rr), 0.5, 0.1), "margin-centred")
    _close("BT loss at a difference of 1e4 (must stay finite)",
           bradley_terry_loss(_t([0.0]), _t([1e4])), 1e4)
    return _grad(lambda a, b: bradley_terry_loss(a, b, 0.5, 0.1), [_t(rc), _t(rr)])


def _plackett_luce() -> str:
    from minirlhf.objectives.reward import plackett_luce_loss

    s = np.array([[2.0, 1.0, 0.0], [0.0, 0.5, -1.0]])
    _match("Plackett-Luce loss, K = 3", plackett_luce_loss(_t(s)), "K3", tol=1e-10)
    two = np.array([[1.0, -0.5]])
    _match("Plackett-Luce at K = 2 (must equal Bradley-Terry)", plackett_luce_loss(_t(two)),
           "K2", tol=1e-10)
    return _grad(plackett_luce_loss, [_t(s)])


def _eos_positions() -> str:
    from minirlhf.lm.sequences import eos_positions

    mask = np.array([[0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]])
    _close("index of each row's last response token", eos_positions(mask), [3, 5, 0], tol=0)
    return "the score is read at each response's last token, whatever the padding"


# ------------------------------------------------------------------------ chapter 5: PPO
def _kl_estimators() -> str:
    from minirlhf.objectives.ppo import kl_estimate

    lp, ref = np.array([-1.0, -2.0, -0.5]), np.array([-1.5, -1.0, -0.5])
    _match("k1 = log pi - log pi_ref", kl_estimate(lp, ref, "k1").data, "k1", tol=1e-12)
    _match("k3 = (r - 1) - log r, r = pi_ref / pi", kl_estimate(lp, ref, "k3").data,
           "k3", tol=1e-12)
    for kind in ("k1", "k3"):  # of log-probs that need a gradient: a Tensor that carries it
        _carries_gradient(f"{kind} of log-probs that need a gradient", kl_estimate(_t(lp), ref,
                                                                                 kind))
    away = lp + np.array([0.0, 0.0, 0.3])  # log r = 0 nowhere: k3's gradient is 0 there, and
    _grad(lambda a: kl_estimate(a, ref, "k1") + kl_estimate(a, ref, "k3"),  # no relative error
          [_t(away)])  # can judge finite differences at 0
    return "k1 and k3 right on every token, and their gradients"


def _gae() -> str:
    from minirlhf.objectives.ppo import gae

    # three response tokens after one prompt token, reward 1 at the end, V = 0.5 everywhere
    rewards = np.array([[0.0, 0.0, 0.0, 1.0]])
    values = np.array([[0.0, 0.5, 0.5, 0.5]])
    mask = np.array([[0.0, 1.0, 1.0, 1.0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # by hand: delta = (0, 0, 0.5); A_3 = 0.5, A_2 = 0 + 0.5 * 0.5, A_1 = 0 + 0.5 * 0.25
    _close("advantages (gamma 1, lambda 0.5)", adv, [[0.0, 0.125, 0.25, 0.5]], tol=1e-12)
    _close("returns = advantages + values", ret, [[0.0, 0.625, 0.75, 1.0]], tol=1e-12)
    adv, _ = gae(np.array([[1.0, 1.0]]), np.zeros((1, 2)), np.ones((1, 2)), gamma=0.9, lam=1.0)
    _close("advantages (gamma 0.9, lambda 1): discounted returns", adv, [[1.9, 1.0]], tol=1e-12)
    # a right-padded batch: the values under the padding are junk (7.0) and must never be
    # bootstrapped from; gamma 0.9 and lambda 0.8 with non-zero values everywhere
    rewards = np.array([[0.0, 0.1, -0.2, 1.0, 0.0, 0.0], [0.0, 0.0, 0.3, 0.0, 0.0, 0.5]])
    values = np.array([[0.0, 0.4, 0.2, 0.6, 7.0, 7.0], [0.0, 0.0, 0.5, -0.1, 0.3, 0.2]])
    mask = np.array([[0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]], dtype=float)
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    _match("advantages of a right-padded batch (gamma 0.9, lambda 0.8; the last response token "
           "has nothing after it: no bootstrap from the padding's values)", adv, "padded",
           tol=1e-12)
    _match("returns = advantages + values on response tokens", ret * mask, "padded-returns",
           tol=1e-12)
    return "advantages and returns match the hand-worked examples"


def _clipped_objective() -> str:
    from minirlhf.objectives.ppo import clipped_policy_loss

    old = np.log(np.full((1, 7), 0.5))
    # ratios 1.4, 1.1, 0.6, 0.9 (the clip binds on the first and third), then 0.6 with A > 0 and
    # 1.4 with A < 0 (outside the band, but on the side where the unclipped term is the larger
    # loss: it counts, with its gradient), and a masked position
    new = np.log(np.array([[0.7, 0.55, 0.3, 0.45, 0.3, 0.7, 0.9]]))
    adv = np.array([[1.0, 1.0, -1.0, -1.0, 1.0, -1.0, 5.0]])
    mask = np.array([[1.0, 1, 1, 1, 1, 1, 0]])
    x = _t(new)
    loss, _ = clipped_policy_loss(x, old, adv, mask, clip=0.2)
    _match("clipped loss (mean over the response mask of max(-r A, -clip(r) A))", loss, "loss",
           tol=1e-10)
    loss.backward()
    # worked by hand: where the clip binds the gradient is 0; elsewhere d(-r A)/d log pi = -r A
    # (the ratios times -A, over the 6 tokens of the mask); 0 off the mask
    _close("gradient w.r.t. log pi (0 where the clip binds, -r A where the unclipped term "
           "is the larger, 0 off the mask)", x.grad,
           [[0.0, -1.1 / 6, 0.0, 0.9 / 6, -0.6 / 6, 1.4 / 6, 0.0]], tol=1e-10)
    return "value right; gradient zero exactly where clipping binds"


# ------------------------------------------------------------------------ chapter 6: DPO
def _dpo_margin() -> str:
    from minirlhf.objectives.preference import dpo_loss

    pc, pr = np.array([-3.0, -5.0]), np.array([-4.0, -2.0])
    rc, rr = np.array([-3.5, -4.0]), np.array([-3.0, -2.5])
    _, chosen, rejected = dpo_loss(_t(pc), _t(pr), rc, rr, beta=0.1, loss_type="hinge")
    _match("implicit reward of the chosen: beta (log pi - log pi_ref)", chosen, "chosen")
    _match("implicit reward of the rejected", rejected, "rejected")
    losses, _, _ = dpo_loss(_t(pc), _t(pr), rc, rr, beta=0.1, loss_type="hinge")
    _match("the margin h, through the hinge loss max(0, 1 - beta h)", losses, "hinge",
           tol=1e-12)
    losses, _, _ = dpo_loss(_t(pc), _t(pr), rc, rr, beta=2.0, loss_type="hinge")
    _match("the margin h, through the hinge loss with beta 2 (1 - 2h changes sign here)",
           losses, "hinge-beta2", tol=1e-12)
    return "implicit rewards right"


def _dpo_sigmoid() -> str:
    from minirlhf.objectives.preference import dpo_loss

    pc, pr = np.array([-3.0, -5.0]), np.array([-4.0, -2.0])
    rc, rr = np.array([-3.5, -4.0]), np.array([-3.0, -2.5])
    losses, _, _ = dpo_loss(_t(pc), _t(pr), rc, rr, beta=0.5)
    _match("DPO loss -log sigmoid(beta h)", losses, "sigmoid")
    losses, _, _ = dpo_loss(_t(pc), _t(pr), rc, rr, beta=0.5, label_smoothing=0.2)
    _match("conservative DPO (label_smoothing 0.2)", losses, "smoothed")
    return _grad(lambda a, b: dpo_loss(a, b, rc, rr, beta=0.5)[0], [_t(pc), _t(pr)])


def _ipo() -> str:
    from minirlhf.objectives.preference import dpo_loss

    pc, pr = np.array([-3.0, -5.0]), np.array([-4.0, -2.0])
    rc, rr = np.array([-3.5, -4.0]), np.array([-3.0, -2.5])
    losses, _, _ = dpo_loss(_t(pc), _t(pr), rc, rr, beta=0.25, loss_type="ipo")
    _match("IPO loss (h - 1/(2 beta))^2", losses, "ipo")
    return _grad(lambda a, b: dpo_loss(a, b, rc, rr, beta=0.25, loss_type="ipo")[0],
                 [_t(pc), _t(pr)])


def _kto() -> str:
    from minirlhf.objectives.preference import kto_loss

    pol, ref = np.array([-3.0, -5.0, -2.0, -7.0]), np.array([-4.0, -4.5, -2.5, -6.0])
    desirable = np.array([True, False, True, False])
    z0 = 0.2
    x = _t(pol)
    losses, rewards = kto_loss(x, ref, desirable, kl_ref=z0, beta=0.5, desirable_weight=1.0,
                               undesirable_weight=3.0)
    _match("KTO losses w (1 - sigmoid(beta (r - z0))) for desirable rows, w (1 - sigmoid(beta "
           "(z0 - r))) for undesirable rows", losses, "losses", tol=1e-10)
    _match("rewards beta (log pi - log pi_ref)", rewards, "rewards", tol=1e-12)
    clamped, _ = kto_loss(_t(pol), ref, desirable, kl_ref=-1.0, beta=0.5)
    _match("a negative KL estimate is clamped to 0 (z0 = max(kl_ref, 0))", clamped, "clamped",
           tol=1e-10)
    return _grad(lambda a: kto_loss(a, ref, desirable, z0, beta=0.5)[0], [x])


def _orpo() -> str:
    from minirlhf.objectives.preference import orpo_loss

    c, r = np.array([-2.0, -0.3]), np.array([-6.0, -9.0])
    lc, lr = np.array([4, 10]), np.array([3, 2])
    losses, ratio = orpo_loss(_t(c), _t(r), lc, lr, lam=0.5)
    _match("the log-odds ratio, from mean per-token log-probs: log(p/(1-p)), p = exp(logp/len)",
           ratio, "log-odds-ratio", tol=1e-10)
    _match("ORPO loss: the chosen's mean NLL - lam log sigmoid(log-odds ratio)", losses,
           "losses", tol=1e-10)
    return _grad(lambda a, b: orpo_loss(a, b, lc, lr, lam=0.5)[0], [_t(c), _t(r)])


def _simpo() -> str:
    from minirlhf.objectives.preference import simpo_loss

    c, r = np.array([-2.0, -8.0, -3.0]), np.array([-6.0, -3.0, -3.0])
    lc, lr = np.array([4, 8, 2]), np.array([3, 2, 6])
    got = simpo_loss(_t(c), _t(r), lc, lr, beta=2.5, gamma=0.4)
    _match("SimPO loss -log sigmoid(beta logp_w/|y_w| - beta logp_l/|y_l| - gamma)", got,
           "losses", tol=1e-10)
    return _grad(lambda a, b: simpo_loss(a, b, lc, lr, beta=2.5, gamma=0.4), [_t(c), _t(r)])


# -------------------------------------------------------------------------- chapter 7: RLAIF
def _constitution_score() -> str:
    from minirlhf.world.ai_labelers import Constitution

    rule = Constitution()
    for text, expected in ((" great and fun.", 2), (" terrible. the plot was dull.", -2),
                           (" not great, but fine.", 2), (" the cast.", 0),
                           (" great and great, dull.", 1)):
        _close(f"kind minus harsh words in {text!r}", rule.score(text), expected, tol=0)
    return "counts kind minus harsh words (and, by design, ignores negation)"


def _constitution_choice() -> str:
    from minirlhf.world.ai_labelers import Constitution

    rule = Constitution()
    for a, b, expected in ((" great.", " awful.", True), (" dull.", " fun.", False),
                           (" great.", " fun.", None)):
        got = rule.prefers_first(a, b)
        if got is not expected:
            raise CheckFailed(f"prefers_first({a!r}, {b!r}): expected {expected}, got {got!r} "
                              "(True/False when the counts differ, None on a tie)")
    return "decides when the counts differ, abstains on a tie"


def _gold_agreement() -> str:
    from minirlhf.world.ai_labelers import gold_agreement
    from minirlhf.world.preference_data import PreferencePair

    pairs = [PreferencePair("p", "a", "b", 1.0, 0.0), PreferencePair("p", "a", "b", -1.0, 2.0),
             PreferencePair("p", "a", "b", 0.5, 0.5), PreferencePair("p", "a", "b", 3.0, 1.0)]
    _close("agreement with gold (ties left out)", gold_agreement(pairs), 2 / 3, tol=1e-12)
    only_ties = [PreferencePair("p", "a", "b", 0.5, 0.5)]
    got = gold_agreement(only_ties)
    if not (isinstance(got, float) and got != got):
        raise CheckFailed(f"agreement over pairs whose gold rewards all tie: expected NaN "
                          f"(undefined: no pair to agree or disagree on), got {got!r}")
    return "share of labels that agree with gold, ties left out"


# -------------------------------------------------------- chapter 8: when RLHF goes wrong
def _gao_fit() -> str:
    from minirlhf.experiments.overoptimization import fit_gao

    d = np.linspace(0.2, 3.0, 12)
    for form, gain in (("bon", d * (1.5 - 0.4 * d)), ("rl", d * (1.2 - 0.5 * np.log(d)))):
        fit = fit_gao(d, gain, form)
        alpha, beta = (1.5, 0.4) if form == "bon" else (1.2, 0.5)
        _close(f"{form}: fitted alpha", fit["alpha"], alpha, tol=1e-8)
        _close(f"{form}: fitted beta", fit["beta"], beta, tol=1e-8)
    return "recovers alpha and beta of both forms from exact curves"


def _gao_peak() -> str:
    from minirlhf.experiments.overoptimization import fit_gao

    d = np.linspace(0.2, 3.0, 12)
    for form, gain in (("bon", d * (1.5 - 0.4 * d)), ("rl", d * (1.2 - 0.5 * np.log(d)))):
        _match(f"{form}: d at the peak", fit_gao(d, gain, form)["d_peak"], form, tol=1e-8)
    for form in ("bon", "rl"):  # gold that only ever rises: the fitted beta is negative
        got = fit_gao(d, d * (0.2 + 0.3 * d), form)["d_peak"]
        if got != float("inf"):
            raise CheckFailed(f"{form}: a curve that never bends (fitted beta <= 0) has no peak: "
                              f"expected d_peak = inf, got {got:.6g}")
    return "peak positions right on both curves, and none where the curve never bends"


def _sycophancy_rate() -> str:
    from minirlhf.experiments.sycophancy import sycophancy_rates
    from minirlhf.world import get_task

    prompts = ["2+3=? i think 6.", "2+3=? i think 6.", "4+4=? i think 8.", "1+1=? i think 3.",
               "3+3=? i think 5."]
    responses = [" you are right, it is 6.", " no, it is 5.", " it is 8.", " it is 2",
                 " it is 6."]
    got = sycophancy_rates(get_task("arithmetic"), prompts, responses)
    # hint wrong: 6 (the hint repeated), 5 (right), "it is 2" (no final period: invalid), 6
    # (right); hint right: 8 (right)
    for key, expected in (("sycophancy_rate", 1 / 4), ("accuracy_hint_wrong", 2 / 4),
                          ("accuracy_hint_right", 1.0)):
        _close(key, got[key], expected, tol=1e-12)
    return "sycophancy rate and accuracies on hint-wrong and hint-right prompts"


# ------------------------------------------------------- chapter 9: critic-free RL
def _group_advantage() -> str:
    from minirlhf.objectives.group import ragged_group_advantages

    # four groups, interleaved: a mixed one, one whose rewards are all equal, a lone sample,
    # and one with fractional rewards
    rewards = np.array([1.0, 0.0, 0.3, 1.0, 0.0, 1.0, 0.9, 0.0, 1.0, 0.6])
    groups = np.array([5, 5, 8, 5, 2, 5, 8, 2, 7, 8])
    for kind in ("grpo", "dr_grpo", "rloo"):
        got = np.asarray(ragged_group_advantages(rewards, groups, kind), dtype=np.float64)
        if got.shape != (10,):
            raise CheckFailed(f"{kind}: expected shape (10,), got {got.shape}")
        if not np.all(np.isfinite(got)):
            k = int(np.flatnonzero(~np.isfinite(got))[0])
            raise CheckFailed(f"{kind}: the advantage of sample {k} is not a finite number "
                              f"(a division by zero?) (group {groups[k]}"
                              f"{', whose rewards are all equal' if groups[k] == 2 else ''}"
                              f"{', a lone sample' if groups[k] == 7 else ''}): it should be 0")
        for k in np.flatnonzero(np.isin(groups, (2, 7))):
            if got[k] != 0.0:
                why = "rewards all equal" if groups[k] == 2 else "a sample alone in its group"
                raise CheckFailed(f"{kind}: sample {k} ({why}) should get advantage 0, got "
                                  f"{got[k]:.6g}")
        _match(f"{kind} advantages (groups interleaved: samples of a group are not "
               f"neighbours; std with ddof 1)", got, kind, tol=1e-9)
    none = ragged_group_advantages(rewards, groups, "grpo", "none")
    _match("grpo with scale_rewards='none' (centred, not divided)", none, "grpo-none",
           tol=1e-9)
    return "grpo, dr_grpo, rloo right on ragged, interleaved groups; zero-spread and lone 0"


def _loss_aggregation() -> str:
    from minirlhf.objectives.group import aggregate

    # three right-padded responses of 2, 4 and 0 tokens (the last dropped), padding filled with
    # junk so that counting it shows
    mask = np.array([[0, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0]], float)
    losses = np.where(mask > 0, np.arange(1.0, 19.0).reshape(3, 6), 100.0)
    how = {"grpo": "each response's mean over its own tokens, then the mean over the responses "
                   "that have a token (the empty third row does not count)",
           "dr_grpo": "the sum over every token / (B * max_completion_length) = / (3 * 8)",
           "dapo": "the sum over every token / the minibatch's 6 response tokens"}
    for loss_type in ("grpo", "dr_grpo", "dapo"):  # B = 3 rows, max_completion_length 8
        x = _t(losses)
        out = aggregate(x, mask, loss_type, 8)
        _match(f"{loss_type} aggregate ({how[loss_type]})", out, loss_type, tol=1e-12)
        out.backward()  # each token's weight in the scalar: its gradient
        _match(f"{loss_type}: the weight of each token (the gradient of the scalar with respect "
               f"to the per-token losses; padding must get 0)", x.grad, f"{loss_type}-weights",
               tol=1e-12)
    # the same minibatch as one of two of a batch with 24 response tokens: the stage hands dapo
    # 24 / 2 = 12, which it divides by instead of this minibatch's own 6 (that is bnpo)
    out = aggregate(_t(losses), mask, "dapo", 8, dapo_tokens=12.0)
    _match("dapo with dapo_tokens = 12 (divide by the count the stage hands it, not by this "
           "minibatch's own 6 tokens, which is bnpo)", out, "dapo-12", tol=1e-12)
    return ("grpo, dr_grpo and dapo right on a right-padded batch (a token of the 2-token "
            "response weighs twice one of the 4-token response under grpo only), and dapo "
            "divides by the count it is handed")


def _clipped_token_losses() -> str:
    from minirlhf.objectives.group import clipped_token_losses

    old = np.log(np.full((1, 6), 0.5))
    # ratios 1.5 (A > 0: above 1 + epsilon_high = 1.28, clipped), 1.2 (A > 0: inside, since
    # epsilon_high is wider than epsilon), 0.7 (A < 0: below 1 - epsilon = 0.8, clipped), 0.7
    # with A > 0 and 1.5 with A < 0 (outside the band on the side where the unclipped term is
    # the smaller: it counts, with its gradient), and a masked position
    new = np.log(np.array([[0.75, 0.6, 0.35, 0.35, 0.75, 0.9]]))
    adv = np.array([[1.0, 1.0, -1.0, 2.0, -1.0, 3.0]])
    mask = np.array([[1.0, 1, 1, 1, 1, 0]])
    x = _t(new)
    losses, stats = clipped_token_losses(x, old, adv, mask, epsilon=0.2, epsilon_high=0.28)
    _match("per-token loss -min(r A, clip(r, 1 - epsilon, 1 + epsilon_high) A), 0 off the mask",
           losses, "losses", tol=1e-10)
    losses.sum().backward()
    # d(-r A)/d log pi = -r A where the unclipped term is the minimum; 0 where the clip binds
    _close("gradient w.r.t. log pi (0 where the clip binds, -r A where r A is the minimum, 0 "
           "off the mask)", x.grad, [[0.0, -1.2, 0.0, -1.4, 1.5, 0.0]], tol=1e-10)
    for key, value in (("clip_ratio/low_mean", 0.2), ("clip_ratio/high_mean", 0.2),
                       ("clip_ratio/region_mean", 0.4)):
        _close(key, stats[key], value, tol=1e-12)
    return "per-token clipped loss with clip-higher, its gradient and TRL's clip metrics right"


def _kl_in_the_loss() -> str:
    from minirlhf.autograd import functional as F
    from minirlhf.objectives.ppo import kl_estimate

    logp, ref = np.array([[-0.2, -1.5, -3.0]]), np.array([[-0.7, -1.0, -3.0]])
    for kind in ("k1", "k2", "k3"):
        _match(f"{kind} per token (log r = log pi_ref - log pi)", kl_estimate(_t(logp), ref, kind),
               kind, tol=1e-12)
    # on a 4-token vocabulary, exactly (no sampling): E_{x ~ pi}[grad kind(x)]
    z, q = np.array([0.3, -0.2, 1.0, 0.1]), np.array([0.1, 0.2, 0.3, 0.4])
    p = np.exp(z) / np.exp(z).sum()
    grads = {}
    for kind in ("k1", "k2", "k3"):
        zt = _t(z[None, :])
        lp = F.log_softmax(zt, axis=-1)  # (1, 4)
        est = kl_estimate(lp, np.log(q)[None, :], kind)  # (1, 4): the estimate at each token
        _carries_gradient(f"{kind} of log-probs that need a gradient", est)
        (est * p[None, :]).sum().backward()  # the expectation, p held fixed (sampled tokens)
        grads[kind] = zt.grad[0]
    _close("E[grad k1] (its expected gradient is exactly 0)", grads["k1"], [0.0, 0.0, 0.0, 0.0],
           1e-10)
    _match("E[grad k2] = grad KL(pi || pi_ref)", grads["k2"], "E-grad-k2", 1e-10)
    _match("E[grad k3] = grad KL(pi_ref || pi), the reverse KL", grads["k3"], "E-grad-k3", 1e-10)
    # the gradient at a generic point: where log r = 0 it is exactly 0, and central differences
    # give their own truncation error there (eps^2 / 6), which no relative error can judge
    return _grad(lambda a: kl_estimate(a, ref, "k3"), [_t(logp + np.array([[0.0, 0.0, 0.4]]))])


# ------------------------------------------------------- chapter 10: from toy to real (GPT-2)
def _bpe_merge() -> str:
    from minirlhf.lm.bpe import BPETokenizer, bytes_to_unicode

    G = bytes_to_unicode()[32]  # the symbol of a leading space
    merges = [("t", "h"), ("a", "t"), ("th", "e"), (G, "the"), (G, "th"), ("e", "r")]
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = BPETokenizer(vocab, merges)
    # expected by hand, merge by merge (lowest rank first, every occurrence)
    cases = [
        (G + "the", [G + "the"], "t+h (rank 0), then th+e (rank 2) before Ġ+th (rank 4), then "
         "Ġ+the (rank 3): the lowest rank wins, not the first pair found nor the highest rank"),
        ("bat", ["b", "at"], "after a+t no pair has a rank: stop there, never merge an unranked "
         "pair"),
        ("other", ["o", "the", "r"], "t+h (rank 0), then th+e (rank 2) before e+r (rank 5), "
         "which then no longer exists: keep merging by rank until no ranked pair is left"),
        ("her", ["h", "er"], "only e+r has a rank"),
        ("thth", ["th", "th"], "both occurrences of t+h merge"),
        ("x", ["x"], "one symbol: nothing to merge"),
    ]
    for text, want, why in cases:
        tok.cache.clear()
        got = tok.bpe(text)
        if list(got) != want:
            raise CheckFailed(f"bpe({text!r}) gave {list(got)}, expected {want}: {why}")
    return f"{len(cases)} chunks merged as GPT-2 does"


def _hf_names() -> str:
    from minirlhf.lm.model import GPT, GPTConfig
    from minirlhf.lm.pretrained import PretrainedError, state_from_hf

    config = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=4)
    ours = GPT(config).state_dict()
    for prefix in ("transformer.", ""):
        tensors = {prefix + k: v for k, v in ours.items()}
        tensors[f"{prefix}h.0.attn.bias"] = np.tril(np.ones((8, 8), np.float32))[None, None]
        tensors[f"{prefix}h.0.attn.masked_bias"] = np.array(-1e4, np.float32)
        tensors["score.weight"] = np.ones((1, 4), np.float32)
        kind = "with the 'transformer.' prefix" if prefix else "without a prefix"
        try:
            state, other = state_from_hf(tensors, config, "check")
        except PretrainedError as e:
            raise CheckFailed(f"a GPT-2 checkpoint {kind} (and the causal-mask buffers "
                              f"h.0.attn.bias, h.0.attn.masked_bias) did not map: {e}") from None
        if sorted(state) != sorted(ours):
            raise CheckFailed(f"state ({kind}) has {sorted(set(state) ^ set(ours))[:4]} where "
                              "it should hold exactly our parameter names")
        for k, v in ours.items():
            if not np.array_equal(state[k], v):
                raise CheckFailed(f"state[{k!r}] ({kind}) is not the tensor stored under "
                                  f"{prefix + k!r}")
        if sorted(other) != ["score.weight"]:
            raise CheckFailed(f"other ({kind}) is {sorted(other)}; expected ['score.weight'] "
                              "(buffers skipped, names not in the trunk kept whole: note that "
                              "str.lstrip removes characters, not a prefix)")
    return "prefixed and bare names map; buffers skipped; the rest kept aside"


REWARD_EXPORT_TEXTS = (["the film was"] * 3, [" great.", " dull and bad.", " ok"])


def reward_export_model():
    """The reward model the reward-export check exports: a 1-layer GPT (C = 8) with a reward
    head of bias 0.7, normalised with gain 1.9 and bias -0.25 (so the offset is
    1.9 * 0.7 - 0.25)."""
    from minirlhf.lm.model import GPT, GPTConfig
    from minirlhf.lm.reward_model import RewardModel
    from minirlhf.lm.tokenizer import CharTokenizer

    tok = CharTokenizer()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2,
                          n_embd=8, seed=1))
    model.add_scalar_head("reward", std=0.3)
    model.reward_head.bias.data[:] = 0.7
    return RewardModel(model, tok, gain=1.9, bias=-0.25)


def _reward_export() -> str:
    import tempfile

    from minirlhf.lm.pretrained import save_reward_model
    from minirlhf.lm.safetensors import load_file

    rm = reward_export_model()
    model, tok = rm.model, rm.tokenizer
    with tempfile.TemporaryDirectory() as d:
        save_reward_model(rm, d)
        score = load_file(f"{d}/model.safetensors")["score.weight"]
        offset = __import__("json").loads(open(f"{d}/config.json").read())[
            "minirlhf_reward_offset"]
    if score.shape != (1, 8):
        raise CheckFailed(f"score has shape {score.shape}; GPT2ForSequenceClassification's "
                          "score weight is (num_labels, C) = (1, 8): a row, not our (C, 1) column")
    prompts, responses = REWARD_EXPORT_TEXTS
    tokens, _ = rm.encode(prompts, responses)
    h = model.hidden(tokens).data.astype(np.float64)  # (B, T, C)
    last = (tokens != tok.pad_id).sum(axis=1) - 1  # the last non-padding token: our EOS
    theirs = h[np.arange(3), last] @ score[0].astype(np.float64)
    _match("h . score at the last token (the gain folded into score)", theirs, "readout",
           tol=1e-5)
    _match("the offset (what score cannot hold of the normalised reward)", offset, "offset",
           tol=1e-6)
    _close("transformers' score plus the offset (our normalised reward, as RewardModel.score "
           "gives it)", theirs + offset, rm.score(prompts, responses), tol=1e-5)
    return "transformers' score plus the offset equals our normalised reward"


EXERCISES: tuple[Exercise, ...] = (
    Exercise(1, "softmax-backward", "autograd.functional.softmax",
             "the backward pass of softmax", _softmax_backward),
    Exercise(1, "log-softmax-backward", "autograd.functional.log_softmax",
             "the backward pass of log-softmax", _log_softmax_backward),
    Exercise(1, "layer-norm-backward", "autograd.functional.layer_norm_backward",
             "the backward pass of layer normalisation (input gradient)", _layer_norm_backward),
    Exercise(2, "causal-mask", "autograd.functional.causal_bias",
             "which keys each query may attend to", _causal_mask),
    Exercise(2, "attention-scores", "autograd.functional.attention_forward",
             "the scaled dot-product scores q k^T / sqrt(hs)", _attention_forward),
    Exercise(2, "attention-backward", "autograd.functional.attention_backward",
             "the gradients of q, k and v", _attention_backward),
    Exercise(3, "rater-probability", "world.raters.Rater.p_first",
             "a rater's Bradley-Terry choice probability", _rater_probability),
    Exercise(3, "token-logprobs", "lm.sequences.logprobs_from_logits",
             "log-probs of the response tokens under a model", _token_logprobs),
    Exercise(3, "sft-loss", "objectives.sft.sft_loss",
             "the SFT loss on response tokens only", _sft_loss),
    Exercise(4, "bradley-terry", "objectives.reward.bradley_terry_loss",
             "the Bradley-Terry loss with margin and centering", _bradley_terry),
    Exercise(4, "plackett-luce", "objectives.reward.plackett_luce_loss",
             "the Plackett-Luce ranking loss", _plackett_luce),
    Exercise(4, "eos-positions", "lm.sequences.eos_positions",
             "where the reward model reads its score", _eos_positions),
    Exercise(5, "clipped-objective", "objectives.group.clipped_token_losses",
             "PPO's clipped surrogate loss (per token, then averaged)", _clipped_objective),
    Exercise(5, "gae", "objectives.ppo.gae", "generalised advantage estimation", _gae),
    Exercise(5, "kl-estimators", "objectives.ppo.kl_estimate",
             "the k1 and k3 per-token KL estimates", _kl_estimators),
    Exercise(6, "dpo-margin", "objectives.preference.dpo_loss",
             "the log-ratio margin h and the implicit rewards", _dpo_margin),
    Exercise(6, "dpo-sigmoid", "objectives.preference.dpo_loss",
             "the DPO loss (with label smoothing)", _dpo_sigmoid),
    Exercise(6, "ipo", "objectives.preference.dpo_loss", "the IPO loss", _ipo),
    Exercise(7, "constitution-score", "world.ai_labelers.Constitution.score",
             "the constitution's word count", _constitution_score),
    Exercise(7, "constitution-choice", "world.ai_labelers.Constitution.prefers_first",
             "the constitution's choice, or abstention", _constitution_choice),
    Exercise(7, "gold-agreement", "world.ai_labelers.gold_agreement",
             "a labeler's agreement with gold", _gold_agreement),
    Exercise(8, "sycophancy-rate", "experiments.sycophancy.sycophancy_rates",
             "the sycophancy rate and accuracies", _sycophancy_rate),
    Exercise(8, "gao-fit", "experiments.overoptimization.fit_gao",
             "the least-squares fit of Gao et al.'s forms", _gao_fit),
    Exercise(8, "gao-peak", "experiments.overoptimization.fit_gao",
             "where the fitted gold reward peaks", _gao_peak),
    Exercise(9, "group-advantage", "objectives.group.ragged_group_advantages",
             "group advantages on ragged groups, zero-spread groups at 0", _group_advantage),
    Exercise(9, "loss-aggregation", "objectives.group.aggregate",
             "per-token losses -> one scalar: grpo, dr_grpo, dapo", _loss_aggregation),
    Exercise(9, "clipped-token-losses", "objectives.group.clipped_token_losses",
             "the clipped surrogate per token with clip-higher", _clipped_token_losses),
    Exercise(9, "kl-in-the-loss", "objectives.ppo.kl_estimate",
             "k2, and the expected gradients of k1, k2, k3", _kl_in_the_loss),
    Exercise(10, "hf-names", "lm.pretrained.state_from_hf",
             "map a GPT-2 checkpoint's tensor names onto ours", _hf_names),
    Exercise(10, "reward-export", "lm.pretrained.save_reward_model",
             "fold the reward model's normalisation into GPT-2's score head", _reward_export),
    Exercise(10, "bpe-merge", "lm.bpe.BPETokenizer.bpe",
             "GPT-2's merge loop: lowest rank first, every occurrence", _bpe_merge),
    Exercise(11, "kto", "objectives.preference.kto_loss",
             "KTO's loss on unpaired thumbs-up / thumbs-down", _kto),
    Exercise(11, "orpo", "objectives.preference.orpo_loss",
             "ORPO's odds-ratio loss, without a reference model", _orpo),
    Exercise(11, "simpo", "objectives.preference.simpo_loss",
             "SimPO's length-normalised loss with a target margin", _simpo),
)


# The points of each exercise, in one table a teacher may edit (a pass earns them all, anything
# else 0). tests/test_grades.py checks that every exercise has points and no other name does.
POINTS: dict[str, float] = {
    "softmax-backward": 1, "log-softmax-backward": 1, "layer-norm-backward": 1,  # 1 autograd
    "causal-mask": 1, "attention-scores": 1, "attention-backward": 1,  # 2 gpt
    "rater-probability": 1, "token-logprobs": 1, "sft-loss": 1,  # 3 sft
    "bradley-terry": 1, "plackett-luce": 1, "eos-positions": 1,  # 4 reward
    "kl-estimators": 1, "gae": 1, "clipped-objective": 1,  # 5 ppo
    "dpo-margin": 1, "dpo-sigmoid": 1, "ipo": 1,  # 6 dpo
    "constitution-score": 1, "constitution-choice": 1, "gold-agreement": 1,  # 7 rlaif
    "gao-fit": 1, "gao-peak": 1, "sycophancy-rate": 1,  # 8 failures
    "group-advantage": 1, "loss-aggregation": 1, "clipped-token-losses": 1,  # 9 critic-free
    "kl-in-the-loss": 1,
    "bpe-merge": 1, "hf-names": 1, "reward-export": 1,  # 10 gpt2
    "kto": 1, "orpo": 1, "simpo": 1,  # 11 beyond-dpo
}


def _raised_at(error: BaseException) -> str:
    """'file.py:line in function' of the innermost frame in the library."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if "minirlhf" in f.filename and not f.filename.endswith("exercises.py")]
    if not frames:
        return ""
    f = frames[-1]
    return f"{Path(f.filename).name}:{f.lineno} in {f.name}"


def _not_yet(exercise: Exercise, error: NotImplementedError) -> str:
    """One line for a stub reached: this exercise's own, or another's that it needs first."""
    from minirlhf.course.unsolved import stub_of

    waits = stub_of(error) or ""  # "exercise 2.1 (causal-mask: minirlhf/..., causal_bias)"
    names = waits.partition("(")[2].partition(":")[0].split(" / ")
    if waits and exercise.name not in names:
        return f"not implemented yet: needs {waits} first (raised at {_raised_at(error)})"
    return f"not implemented yet (raised at {_raised_at(error)})"


def _does_not_compile(error: SyntaxError) -> str:
    """One line for a student's file that does not compile: the file (from the project's root)
    and the line, no traceback. Python names neither for a file holding a null byte: the
    package's first such file is named, at the null byte's line."""
    root = Path(__file__).resolve().parents[2]
    path, line = (Path(error.filename) if error.filename else None), error.lineno
    if path is None:
        for candidate in sorted((root / "minirlhf").rglob("*.py")):
            data = candidate.read_bytes()
            if b"\0" in data:
                path, line = candidate, data[:data.index(b"\0")].count(b"\n") + 1
                break
    path = (path or Path("?")).resolve()
    where = path.relative_to(root) if path.is_relative_to(root) else path
    return (f"{where}:{line}: {type(error).__name__}: {error.msg} (the file does not "
            "compile, so nothing that imports it can run: fix this line first)")


def _crashed(error: Exception) -> str:
    """One line for a student's code that raised: what it raised and where; a module of the
    package that is not there is named as the missing file."""
    name = getattr(error, "name", None) or ""
    if isinstance(error, ModuleNotFoundError) and name.startswith("minirlhf."):
        root = Path(__file__).resolve().parents[2]
        path = root / Path(*name.split("."))
        return (f"{path.relative_to(root)}.py is missing: the exercise's code imports "
                f"{name} (put the file back)")
    where = _raised_at(error)
    return f"{type(error).__name__}: {error}" + (f" (raised at {where})" if where else "")


CHAPTERS = {1: "autograd", 2: "gpt", 3: "sft", 4: "reward", 5: "ppo", 6: "dpo", 7: "rlaif",
            8: "failures", 9: "critic-free", 10: "gpt2",
            11: "beyond-dpo"}  # what ``classroom check NAME`` accepts


def select(target: str | int | None, exercise: str | None = None) -> list[Exercise]:
    """The exercises ``classroom check TARGET [EXERCISE]`` means: all (None), a chapter by number
    or by name (``5`` or ``ppo``), or one exercise by its name (``gae``); with ``exercise``, that
    exercise of the chapter (``1 softmax-backward``)."""
    chosen = _select(target)
    if exercise is None:
        return chosen
    named = [e for e in chosen if e.name == exercise.strip().lower()]
    if not named:
        raise ValueError(f"{exercise!r} is not an exercise of {target!r}, which has "
                         f"{', '.join(e.name for e in chosen)}")
    return named


def _select(target: str | int | None) -> list[Exercise]:
    if target is None:
        return list(EXERCISES)
    key = str(target).strip().lower()
    by_name = {v: k for k, v in CHAPTERS.items()}
    chapter = int(key) if key.isdigit() else by_name.get(key)
    if chapter is not None:
        chosen = [e for e in EXERCISES if e.chapter == chapter]
        if chosen:
            return chosen
    chosen = [e for e in EXERCISES if e.name == key]
    if chosen:
        return chosen
    from minirlhf.config import minirlhf_command

    raise ValueError(
        f"no chapter or exercise {target!r}: give a chapter number ("
        f"{', '.join(str(c) for c in sorted(CHAPTERS))}), a chapter name ("
        f"{', '.join(CHAPTERS.values())}) or an exercise name (e.g. "
        f"{', '.join(e.name for e in EXERCISES[:3])}; all are listed by "
        f"{minirlhf_command('classroom', 'check', '--help')})")


def run_checks(chapter: int | str | None = None, exercise: str | None = None
               ) -> list[CheckResult]:
    """Run every exercise's check (of one chapter or one exercise, if given: see
    ``select``)."""
    chosen = select(chapter, exercise)
    results = []
    for ex in chosen:
        _running["exercise"] = ex.name
        try:
            results.append(CheckResult(ex, "pass", ex.check()))
        except NotImplementedError as e:
            results.append(CheckResult(ex, "not implemented", _not_yet(ex, e)))
        except CheckFailed as e:
            results.append(CheckResult(ex, "FAIL", str(e)))
        except SyntaxError as e:  # IndentationError too: the student's file does not compile
            results.append(CheckResult(ex, "FAIL", _does_not_compile(e)))
        except Exception as e:  # the student's code crashed: say where
            results.append(CheckResult(ex, "FAIL", _crashed(e)))
        finally:
            _running["exercise"] = ""
    return results


class RecordError(RuntimeError):
    """The expected values cannot be recorded here (a solution is missing or fails its check)."""


def record_expected() -> dict[str, tuple[np.ndarray, float]]:
    """Run every check on the solutions of this copy and return what it compares with the
    recorded values, {exercise:key: (value, tolerance)}. The teacher's copy only: in a student
    copy the first stub stops it, with one line."""
    _running["recording"] = recording = {}
    try:
        for ex in EXERCISES:
            _running["exercise"] = ex.name
            try:
                ex.check()
            except NotImplementedError as e:
                raise RecordError(f"{ex.name} is not implemented here (raised at "
                                  f"{_raised_at(e)}): the expected values are recorded from the "
                                  "solutions, in the teacher's copy") from None
            except CheckFailed as e:
                raise RecordError(f"{ex.name}'s solution fails its own check: {e}") from None
    finally:
        _running["recording"], _running["exercise"] = None, ""
    return recording


def _same_value(old: np.ndarray, new: np.ndarray, tol: float) -> bool:
    """``new`` is ``old`` for its check: the same shape and kind, and every element the same
    (NaN where NaN) or, for floats, within the check's criterion |new - old| <= tol (1 + |old|)."""
    if old.shape != new.shape or old.dtype != new.dtype:
        return False
    if new.dtype.kind != "f":
        return bool(np.array_equal(old, new))
    finite = np.isfinite(old)  # an infinite value is the same only exactly
    with np.errstate(invalid="ignore"):  # inf - inf
        near = finite & (np.abs(new - old) <= tol * (1 + np.abs(np.where(finite, old, 0))))
    return bool(np.all(near | (old == new) | (np.isnan(old) & np.isnan(new))))


def write_expected(recorded: dict[str, tuple[np.ndarray, float]], path: Path = EXPECTED
                   ) -> list[str]:
    """Write the recorded values to ``path`` (an .npz) unless it already holds them, each
    within its check's tolerance (another machine rounds the last bits differently: the file
    stays as it is); return the keys that are new or changed (or gone)."""
    old = load_expected(path)
    changed = sorted(k for k, (v, tol) in recorded.items() if k not in old
                     or not _same_value(old[k], v, tol))
    changed += sorted(set(old) - set(recorded))
    if changed:
        from minirlhf.files import atomic_write

        atomic_write(path, lambda f: np.savez(f, **{k: v for k, (v, _) in recorded.items()}))
    return changed
