"""Chapter 9's exercise checks catch plausible wrong solutions, not only the right one: each
mutant below is a mistake a student could make; its check must FAIL and say what is wrong."""

import numpy as np
import pytest

from minirlhf.autograd import ops
from minirlhf.course.exercises import EXERCISES, run_checks
from minirlhf.lm import policy_gradient as pg

RIGHT_RAGGED, RIGHT_AGGREGATE, RIGHT_KL = (pg.ragged_group_advantages, pg.aggregate,
                                           pg.kl_estimate)


def _ragged(ddof=1, eps=pg.STD_EPS, rloo_self=False):
    def wrong(rewards, groups, kind="grpo", scale_rewards="group"):
        r, g = np.asarray(rewards, float), np.asarray(groups)
        out = np.zeros_like(r)
        for gid in np.unique(g):
            at = g == gid
            x = r[at]
            if len(x) == 1:  # each mutant makes one mistake only
                continue
            if kind == "rloo" and not rloo_self:
                out[at] = x - (x.sum() - x) / (len(x) - 1)
            else:
                out[at] = x - x.mean()
            if kind == "grpo" and scale_rewards == "group":
                with np.errstate(all="ignore"):
                    out[at] /= x.std(ddof=ddof) + eps
        return out
    return wrong


def _aggregate(mistake):
    def wrong(losses, mask, loss_type="grpo", max_completion_length=None):
        m = mask.astype(float)
        if loss_type == "grpo" and mistake == "token-mean":
            return (losses * m).sum() * (1.0 / m.sum())
        if loss_type == "grpo" and mistake == "count-empty-rows":
            per_seq = (losses * m).sum(axis=1) * (1.0 / np.maximum(m.sum(axis=1), 1.0))
            return per_seq.sum() * (1.0 / m.shape[0])
        if loss_type == "dr_grpo" and mistake == "longest-response":
            return (losses * m).sum() * (1.0 / (m.shape[0] * m.sum(axis=1).max()))
        if mistake == "padding":
            return losses.sum() * (1.0 / max(m.sum(), 1.0))
        return RIGHT_AGGREGATE(losses, mask, loss_type, max_completion_length)
    return wrong


def _kl(mistake):
    def wrong(logp, ref_logp, kind="k3"):
        d = logp - ref_logp  # log pi - log pi_ref
        if kind == "k3" and mistake == "reversed-k3":
            return ops.exp(d) - 1.0 - d
        if kind == "k2" and mistake == "no-half":
            return d * d
        if kind == "k1" and mistake == "k1-sign":
            return ops.neg(d)
        return RIGHT_KL(logp, ref_logp, kind)
    return wrong


@pytest.mark.parametrize("name, attr, mutant, says", [
    ("group-advantage", "ragged_group_advantages", _ragged(ddof=0), "ddof 1"),
    ("group-advantage", "ragged_group_advantages", _ragged(eps=0.0), "should be 0"),
    ("group-advantage", "ragged_group_advantages", _ragged(rloo_self=True), "rloo advantages"),
    ("loss-aggregation", "aggregate", _aggregate("token-mean"), "grpo aggregate"),
    ("loss-aggregation", "aggregate", _aggregate("count-empty-rows"), "grpo aggregate"),
    ("loss-aggregation", "aggregate", _aggregate("longest-response"), "dr_grpo aggregate"),
    ("loss-aggregation", "aggregate", _aggregate("padding"), "aggregate"),
    ("kl-in-the-loss", "kl_estimate", _kl("reversed-k3"), "k3 per token"),
    ("kl-in-the-loss", "kl_estimate", _kl("no-half"), "k2 per token"),
    ("kl-in-the-loss", "kl_estimate", _kl("k1-sign"), "k1 per token"),
])
def test_a_plausible_wrong_solution_fails_and_says_where(monkeypatch, name, attr, mutant, says):
    monkeypatch.setattr(pg, attr, mutant)
    result = {r.exercise.name: r for r in run_checks(9)}[name]
    assert result.status == "FAIL", (name, result.message)
    assert says in result.message, result.message


def test_chapter_9_has_three_exercises_and_they_pass():
    assert [e.name for e in EXERCISES if e.chapter == 9] == [
        "group-advantage", "loss-aggregation", "kl-in-the-loss"]
    assert all(r.status == "pass" for r in run_checks(9))
