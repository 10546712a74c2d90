"""The DPO loss family: values, gradients, minimisers, and the closed-form optimum on a bandit."""

import numpy as np
import pytest

from minirlhf import Tensor
from minirlhf.autograd.gradcheck import gradcheck
from minirlhf.objectives.preference import dpo_loss

RNG = np.random.default_rng(0)


def _t(x):
    return Tensor(np.asarray(x, dtype=np.float64), requires_grad=True)


def test_loss_is_log2_when_policy_equals_reference():
    lp_c, lp_r = RNG.normal(size=4) - 5, RNG.normal(size=4) - 5
    losses, rc, rr = dpo_loss(_t(lp_c), _t(lp_r), lp_c, lp_r, beta=0.1)
    np.testing.assert_allclose(losses.data, np.log(2.0), rtol=1e-12)
    np.testing.assert_array_equal(rc, 0.0)
    np.testing.assert_array_equal(rr, 0.0)


@pytest.mark.parametrize("loss_type,smoothing", [("sigmoid", 0.0), ("sigmoid", 0.2),
                                                 ("ipo", 0.0), ("hinge", 0.0)])
def test_every_loss_type_gradchecks(loss_type, smoothing):
    ref_c, ref_r = RNG.normal(size=6), RNG.normal(size=6)
    pc, pr = _t(ref_c + RNG.normal(size=6)), _t(ref_r + RNG.normal(size=6))
    beta = 0.5
    if loss_type == "hinge":  # keep beta h away from the kink at 1 (the gradient jumps there)
        h = (pc.data - ref_c) - (pr.data - ref_r)
        pc.data[np.abs(beta * h - 1) < 0.05] += 0.5
    r = gradcheck(lambda a, b: dpo_loss(a, b, ref_c, ref_r, beta, loss_type, smoothing)[0],
                  [pc, pr])
    assert r.passed, r.report()


### BEGIN TEACHER
def test_dpo_gradient_formula():
    """d L / d log pi(y_w) = -beta sigmoid(-beta h), and the opposite for y_l."""
    beta = 0.3
    ref_c, ref_r = RNG.normal(size=5), RNG.normal(size=5)
    pc, pr = _t(RNG.normal(size=5)), _t(RNG.normal(size=5))
    losses, _, _ = dpo_loss(pc, pr, ref_c, ref_r, beta)
    losses.sum().backward()
    h = (pc.data - ref_c) - (pr.data - ref_r)
    weight = beta / (1 + np.exp(beta * h))  # beta sigmoid(-beta h)
    np.testing.assert_allclose(pc.grad, -weight, rtol=1e-12)
    np.testing.assert_allclose(pr.grad, weight, rtol=1e-12)
### END TEACHER


def test_ipo_minimiser_is_half_over_beta():
    beta = 0.25
    hs = np.linspace(-5, 10, 30001)
    losses, _, _ = dpo_loss(_t(hs), _t(np.zeros_like(hs)), np.zeros_like(hs),
                            np.zeros_like(hs), beta, "ipo")
    assert hs[np.argmin(losses.data)] == pytest.approx(1 / (2 * beta), abs=1e-3)


def test_label_smoothing_zero_equals_dpo_and_smoothing_is_symmetric_mix():
    ref_c, ref_r = RNG.normal(size=5), RNG.normal(size=5)
    pc, pr = RNG.normal(size=5), RNG.normal(size=5)
    a = dpo_loss(_t(pc), _t(pr), ref_c, ref_r, 0.2, "sigmoid", 0.0)[0].data
    b = dpo_loss(_t(pc), _t(pr), ref_c, ref_r, 0.2)[0].data
    np.testing.assert_array_equal(a, b)
    eps = 0.3
    c = dpo_loss(_t(pc), _t(pr), ref_c, ref_r, 0.2, "sigmoid", eps)[0].data
    swapped = dpo_loss(_t(pr), _t(pc), ref_r, ref_c, 0.2)[0].data
    np.testing.assert_allclose(c, (1 - eps) * b + eps * swapped, rtol=1e-12)


def test_bad_arguments_are_named():
    x = _t([0.0])
    with pytest.raises(ValueError, match="loss_type must be one of"):
        dpo_loss(x, x, [0.0], [0.0], 0.1, "kto")
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_loss(x, x, [0.0], [0.0], -0.1)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 0.5\)"):
        dpo_loss(x, x, [0.0], [0.0], 0.1, "sigmoid", 0.5)


def test_dpo_stage_runs_reproducibly_and_logs_trl_metrics(tiny_pretrained, tmp_path):
    from minirlhf.stages.dpo import DPOConfig, train_dpo
    from minirlhf.stages.preferences import PreferenceConfig, build_preference_data

    prefs = build_preference_data(PreferenceConfig(
        policy=tiny_pretrained, n_pairs=48, max_new_tokens=60, out_dir=str(tmp_path / "p"),
        progress=False))
    cfg = dict(preferences=prefs.path, init=tiny_pretrained, batch_size=16,
               eval_samples_per_prompt=1, max_new_tokens=40, progress=False)
    a = train_dpo(DPOConfig(out_dir=str(tmp_path / "a"), **cfg))
    b = train_dpo(DPOConfig(out_dir=str(tmp_path / "b"), **cfg))
    assert [m["loss"] for m in a.metrics] == [m["loss"] for m in b.metrics]
    assert len(a.metrics) == 3
    first = a.metrics[0]
    for key in ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                "logps/chosen", "logps/rejected"]:
        assert key in first
    # before the first update the policy is the reference: loss log 2, rewards 0
    assert first["loss"] == pytest.approx(np.log(2), abs=1e-5)
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-5)
    assert (tmp_path / "a" / "metrics.jsonl").exists()
    assert 0.0 <= a.report.win_rate <= 1.0
    with pytest.raises(ValueError, match=r"beta = 0.0 is outside its allowed range \(0, inf\)"):
        train_dpo(DPOConfig(beta=0.0, **cfg))


def test_chosen_logp_warning():
    from minirlhf.stages.dpo import chosen_logp_warning

    rising = [{"logps/chosen": -10 - i, "rewards/margins": 0.1 * i} for i in range(20)]
    assert "chosen log-probs fell" in chosen_logp_warning(rising)[0]
    healthy = [{"logps/chosen": -10 + 0.1 * i, "rewards/margins": 0.1 * i} for i in range(20)]
    assert chosen_logp_warning(healthy) == []


def test_comparison_rows_read_the_stage_summaries(tmp_path):
    from minirlhf.evaluation import write_summary
    from minirlhf.registry import comparison_rows

    assert comparison_rows(tmp_path) == []
    policy = {"gold_reward": 3.0, "win_rate_vs_sft": 0.8, "kl_to_ref": 1.8}
    write_summary(tmp_path / "best_of_n", {"table": {"16": {"gold": 3.0, "kl": 1.8}},
                                           "policy": {"n": 16, **policy}})
    write_summary(tmp_path / "dpo", {"gold_reward": 3.5, "win_rate_vs_sft": 0.88,
                                     "kl_to_ref": 2.3})
    rows = comparison_rows(tmp_path)
    assert rows == [("best-of-n", 3.0, 0.8, 1.8), ("DPO", 3.5, 0.88, 2.3)]
