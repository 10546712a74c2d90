"""The checks' recorded values (minirlhf/course/expected.npz): up to date with the solutions,
and each equal to an independent reference, computed here by another route than the solution's
(a closed form, a loop by hand, a grid search). The teacher's only (``TEACHER_ONLY``): these
references spell the exercises out, which is why the checks shipped to students read recorded
values instead."""

import numpy as np
import pytest

from minirlhf.course.exercises import EXERCISES, load_expected, record_expected

GRID = np.linspace(1e-3, 20, 400_001)  # the Gao peaks' reference: a grid search


@pytest.fixture(scope="module")
def recorded():
    return record_expected()


def _within(got, want, tol) -> bool:
    """The checks' own criterion (``exercises._close``): |got - want| <= tol (1 + |want|)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return got.shape == want.shape and bool(np.all(np.abs(got - want) <= tol * (1 + np.abs(want))))


def test_expected_npz_is_up_to_date_with_the_solutions(recorded):
    """Recorded again from the solutions, every value equals the shipped one within its check's
    tolerance (exactly, for the causal mask), and no key is missing or left over: otherwise
    'python -m minirlhf classroom record-expected' was not run after a check or a solution
    changed."""
    shipped = load_expected()
    assert sorted(shipped) == sorted(recorded)
    stale = [k for k, (v, tol) in recorded.items()
             if shipped[k].shape != v.shape or not (np.array_equal(shipped[k], v) if tol == 0
                                                    else _within(v, shipped[k], tol))]
    assert stale == [], f"run 'python -m minirlhf classroom record-expected': {stale} changed"
    assert {k.split(":")[0] for k in recorded} <= {e.name for e in EXERCISES}


def _logsig(x):
    return -np.logaddexp(0.0, -np.asarray(x, dtype=np.float64))


def _attention(qkv: np.ndarray, n_head: int) -> np.ndarray:
    """Attention written out with a boolean mask."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // n_head
    q, k, v = (qkv[..., i * C:(i + 1) * C].reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)
               for i in range(3))
    s = np.einsum("bhid,bhjd->bhij", q, k) / np.sqrt(hs)
    s[..., np.triu(np.ones((T, T), dtype=bool), k=1)] = -np.inf
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhij,bhjd->bhid", p, v).transpose(0, 2, 1, 3).reshape(B, T, C)


def _references() -> dict[str, np.ndarray]:
    """Every recorded value, computed by another route, on the inputs its check uses."""
    from minirlhf.objectives.group import STD_EPS
    from minirlhf.world.raters import Rater

    ref = {"causal-mask:bias": np.where(np.arange(5)[None, :] > np.arange(2, 5)[:, None],
                                        -np.inf, 0.0),
           "attention-scores:output": _attention(np.random.default_rng(5).normal(
               size=(2, 4, 12)), 2)}
    cases = [(Rater(), 1.0, 0.0), (Rater(temperature=0.5), 0.0, 0.5),
             (Rater(position_bias=0.3), 0.2, 0.2), (Rater(flip=0.1, temperature=2.0), 3.0, 1.0)]
    for k, (rater, ua, ub) in enumerate(cases):
        p = 1 / (1 + np.exp(-(ua - ub + rater.position_bias) / rater.temperature))
        ref[f"rater-probability:case{k}"] = rater.flip + (1 - 2 * rater.flip) * p

    rng = np.random.default_rng(7)
    logits, tokens = rng.normal(size=(2, 4, 6)), rng.integers(0, 6, size=(2, 5))
    mask = np.array([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]], dtype=np.float64)
    z = logits / 0.7
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    want = np.zeros((2, 5))
    want[:, 1:] = np.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0] * mask[:, 1:]
    ref["token-logprobs:logprobs"] = want

    rng = np.random.default_rng(8)
    logits, tokens = rng.normal(size=(2, 4, 5)), rng.integers(0, 5, size=(2, 5))
    mask = np.array([[0, 0, 1, 1, 1], [0, 0, 0, 1, 1]], dtype=np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]
    ref["sft-loss:loss"] = -(picked * mask[:, 1:]).sum() / mask.sum()

    rc, rr = np.array([2.0, -1.0, 0.5]), np.array([0.0, 1.0, 0.5])
    ref["bradley-terry:plain"] = -_logsig(rc - rr).mean()
    ref["bradley-terry:margin-centred"] = (-_logsig(rc - rr - 0.5).mean()
                                           + 0.1 * ((rc + rr) ** 2).mean())
    s = np.array([[2.0, 1.0, 0.0], [0.0, 0.5, -1.0]])
    ref["plackett-luce:K3"] = np.mean([-sum(row[k] - np.log(np.exp(row[k:]).sum())
                                            for k in range(len(row) - 1)) for row in s])
    ref["plackett-luce:K2"] = -_logsig(1.5)

    lp, lref = np.array([-1.0, -2.0, -0.5]), np.array([-1.5, -1.0, -0.5])
    rho = np.exp(lref - lp)
    ref["kl-estimators:k1"], ref["kl-estimators:k3"] = lp - lref, rho - 1 - np.log(rho)

    rewards = np.array([[0.0, 0.1, -0.2, 1.0, 0.0, 0.0], [0.0, 0.0, 0.3, 0.0, 0.0, 0.5]])
    values = np.array([[0.0, 0.4, 0.2, 0.6, 7.0, 7.0], [0.0, 0.0, 0.5, -0.1, 0.3, 0.2]])
    mask = np.array([[0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]], dtype=float)
    want = np.zeros_like(rewards)
    for b in range(2):  # one response at a time, with nothing after its last token
        at = np.flatnonzero(mask[b])
        following = 0.0
        for k in reversed(range(len(at))):
            v_next = values[b, at[k + 1]] if k + 1 < len(at) else 0.0
            following = rewards[b, at[k]] + 0.9 * v_next - values[b, at[k]] \
                + 0.9 * 0.8 * following
            want[b, at[k]] = following
    ref["gae:padded"], ref["gae:padded-returns"] = want, (want + values) * mask

    old = np.log(np.full((1, 7), 0.5))
    new = np.log(np.array([[0.7, 0.55, 0.3, 0.45, 0.3, 0.7, 0.9]]))
    adv = np.array([[1.0, 1.0, -1.0, -1.0, 1.0, -1.0, 5.0]])
    mask = np.array([[1.0, 1, 1, 1, 1, 1, 0]])
    ratio = np.exp(new - old)
    per_token = np.maximum(-adv * ratio, -adv * np.clip(ratio, 0.8, 1.2))
    ref["clipped-objective:loss"] = (per_token * mask).sum() / mask.sum()

    pc, pr = np.array([-3.0, -5.0]), np.array([-4.0, -2.0])
    rc, rr = np.array([-3.5, -4.0]), np.array([-3.0, -2.5])
    h = (pc - rc) - (pr - rr)
    ref.update({"dpo-margin:chosen": 0.1 * (pc - rc), "dpo-margin:rejected": 0.1 * (pr - rr),
                "dpo-margin:hinge": np.maximum(0.0, 1.0 - 0.1 * h),
                "dpo-margin:hinge-beta2": np.maximum(0.0, 1.0 - 2.0 * h),
                "dpo-sigmoid:sigmoid": -_logsig(0.5 * h),
                "dpo-sigmoid:smoothed": -0.8 * _logsig(0.5 * h) - 0.2 * _logsig(-0.5 * h),
                "ipo:ipo": (h - 1 / (2 * 0.25)) ** 2})

    pol, lref = np.array([-3.0, -5.0, -2.0, -7.0]), np.array([-4.0, -4.5, -2.5, -6.0])
    desirable = np.array([True, False, True, False])
    r = pol - lref
    sig = 1 / (1 + np.exp(-0.5 * np.where(desirable, r - 0.2, 0.2 - r)))
    ref["kto:losses"] = np.where(desirable, 1.0, 3.0) * (1 - sig)
    ref["kto:rewards"] = 0.5 * r
    ref["kto:clamped"] = 1 - 1 / (1 + np.exp(-0.5 * np.where(desirable, r, -r)))

    c, r = np.array([-2.0, -0.3]), np.array([-6.0, -9.0])
    mc, mr = c / np.array([4, 10]), r / np.array([3, 2])
    odds = (mc - np.log(1 - np.exp(mc))) - (mr - np.log(1 - np.exp(mr)))
    ref["orpo:log-odds-ratio"], ref["orpo:losses"] = odds, -mc + 0.5 * np.log1p(np.exp(-odds))
    c, r = np.array([-2.0, -8.0, -3.0]), np.array([-6.0, -3.0, -3.0])
    h = 2.5 * c / np.array([4, 8, 2]) - 2.5 * r / np.array([3, 2, 6]) - 0.4
    ref["simpo:losses"] = np.log1p(np.exp(-h))

    ref["gao-peak:bon"] = GRID[np.argmax(GRID * (1.5 - 0.4 * GRID))]  # the exact curves
    ref["gao-peak:rl"] = GRID[np.argmax(GRID * (1.2 - 0.5 * np.log(GRID)))]

    rewards = np.array([1.0, 0.0, 0.3, 1.0, 0.0, 1.0, 0.9, 0.0, 1.0, 0.6])
    groups = np.array([5, 5, 8, 5, 2, 5, 8, 2, 7, 8])
    adv = {"grpo": np.zeros(10), "dr_grpo": np.zeros(10), "rloo": np.zeros(10)}
    for gid in (5, 8):  # one group at a time (the all-equal and the lone one stay 0)
        at = np.flatnonzero(groups == gid)
        r = rewards[at]
        centred = r - r.mean()
        adv["dr_grpo"][at] = centred
        adv["grpo"][at] = centred / (np.sqrt((centred ** 2).sum() / (len(r) - 1)) + STD_EPS)
        adv["rloo"][at] = [r[k] - np.delete(r, k).mean() for k in range(len(r))]
    ref.update({f"group-advantage:{k}": v for k, v in adv.items()})
    ref["group-advantage:grpo-none"] = adv["dr_grpo"]

    mask = np.array([[0, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0]], float)
    tokens = np.arange(1.0, 19.0).reshape(3, 6) * mask
    ref.update({"loss-aggregation:grpo": (tokens[0].sum() / 2 + tokens[1].sum() / 4) / 2,
                "loss-aggregation:dr_grpo": tokens.sum() / (3 * 8),
                "loss-aggregation:dapo": tokens.sum() / 6,
                "loss-aggregation:grpo-weights": mask * np.array([[1 / 4], [1 / 8], [0.0]]),
                "loss-aggregation:dr_grpo-weights": mask / 24,
                "loss-aggregation:dapo-weights": mask / 6,
                "loss-aggregation:dapo-12": tokens.sum() / 12})

    old = np.log(np.full((1, 6), 0.5))
    r = np.exp(np.log(np.array([[0.75, 0.6, 0.35, 0.35, 0.75, 0.9]])) - old)
    adv = np.array([[1.0, 1.0, -1.0, 2.0, -1.0, 3.0]])
    ref["clipped-token-losses:losses"] = -np.minimum(r * adv, np.clip(r, 0.8, 1.28) * adv) \
        * np.array([[1.0, 1, 1, 1, 1, 0]])

    log_r = np.array([[-0.7, -1.0, -3.0]]) - np.array([[-0.2, -1.5, -3.0]])
    ref.update({"kl-in-the-loss:k1": -log_r, "kl-in-the-loss:k2": 0.5 * log_r ** 2,
                "kl-in-the-loss:k3": np.exp(log_r) - 1 - log_r})
    z, q = np.array([0.3, -0.2, 1.0, 0.1]), np.array([0.1, 0.2, 0.3, 0.4])
    p = np.exp(z) / np.exp(z).sum()
    # closed forms: d/dz KL(p || q) = p (log(p/q) - KL(p||q)); d/dz KL(q || p) = p - q
    ref["kl-in-the-loss:E-grad-k2"] = p * (np.log(p / q) - (p * np.log(p / q)).sum())
    ref["kl-in-the-loss:E-grad-k3"] = p - q
    ref.update(_reward_export())
    return ref


def _reward_export() -> dict[str, np.ndarray]:
    """The reward model of the reward-export check, read through our own RewardModel.score: the
    exported score is the normalised reward less the offset gain * head bias + bias."""
    from minirlhf.course.exercises import REWARD_EXPORT_TEXTS, reward_export_model

    score = reward_export_model().score(*REWARD_EXPORT_TEXTS)
    return {"reward-export:readout": score - 1.9 * 0.7 + 0.25,
            "reward-export:offset": 1.9 * 0.7 - 0.25}


def test_every_recorded_value_equals_an_independent_reference(recorded):
    """Each value the checks compare with, as the solutions give it, equals its reference within
    its check's tolerance (the grid search's to its step); every recorded value has a
    reference."""
    refs = _references()
    assert sorted(refs) == sorted(recorded)
    wrong = []
    for key, (value, tol) in recorded.items():
        tol = max(tol, GRID[1] - GRID[0]) if key.startswith("gao-peak:") else tol
        if tol == 0:
            ok = np.array_equal(value, refs[key])
        else:
            ok = _within(value, refs[key], tol)
        if not ok:
            wrong.append((key, value, refs[key]))
    assert wrong == []
