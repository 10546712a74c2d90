"""The reward model: losses (value, gradient, invariances), padding, metrics, best-of-n."""

import itertools

import numpy as np
import pytest

from minirlhf import Tensor
from minirlhf.autograd.gradcheck import gradcheck
from minirlhf.lm.checkpoint import load_model
from minirlhf.lm.reward_model import RewardModel
from minirlhf.objectives.reward import all_pairs_loss, bradley_terry_loss, plackett_luce_loss
from minirlhf.stages.best_of_n import (
    BestOfNConfig,
    analytic_kl,
    best_of_n_expected,
    best_of_n_table,
    run_best_of_n,
)
from minirlhf.stages.preferences import PreferenceConfig, build_preference_data
from minirlhf.stages.reward import (
    RewardConfig,
    pair_metrics,
    split_pairs,
    train_reward,
    warn_if_at_chance,
)
from minirlhf.world.preference_data import PreferencePair, load_jsonl, pair_key

RNG = np.random.default_rng(0)


def _t(x):
    return Tensor(np.asarray(x, dtype=np.float64), requires_grad=True)


### BEGIN TEACHER
def test_bt_loss_value_and_gradient():
    rc, rr = _t([2.0, 0.0, -1.0]), _t([1.0, 0.0, 1.0])
    loss = bradley_terry_loss(rc, rr)
    d = np.array([1.0, 0.0, -2.0])
    expected = np.mean(np.log1p(np.exp(-d)))
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    sig = 1 / (1 + np.exp(-d))
    np.testing.assert_allclose(rc.grad, -(1 - sig) / 3, rtol=1e-12)  # d/dr_c
    np.testing.assert_allclose(rr.grad, (1 - sig) / 3, rtol=1e-12)
### END TEACHER


@pytest.mark.parametrize("kwargs", [{}, {"margin": 0.5}, {"center_coef": 0.1}])
def test_bt_loss_gradcheck(kwargs):
    r = gradcheck(lambda a, b: bradley_terry_loss(a, b, **kwargs),
                  [_t(RNG.normal(size=5)), _t(RNG.normal(size=5))])
    assert r.passed, r.report()


@pytest.mark.parametrize("loss", [plackett_luce_loss, all_pairs_loss])
def test_ranking_losses_gradcheck(loss):
    r = gradcheck(loss, [_t(RNG.normal(size=(3, 4)))])
    assert r.passed, r.report()


def test_bt_is_shift_invariant_without_centering():
    rc, rr = RNG.normal(size=6), RNG.normal(size=6)
    a = bradley_terry_loss(_t(rc), _t(rr)).item()
    b = bradley_terry_loss(_t(rc + 7.5), _t(rr + 7.5)).item()
    assert a == pytest.approx(b, rel=1e-12)
    c = bradley_terry_loss(_t(rc + 7.5), _t(rr + 7.5), center_coef=0.1).item()
    assert c > b  # centering penalises the shift


def test_ranking_losses_equal_bt_at_k2():
    s = RNG.normal(size=(5, 2))
    bt = bradley_terry_loss(_t(s[:, 0]), _t(s[:, 1])).item()
    assert plackett_luce_loss(_t(s)).item() == pytest.approx(bt, rel=1e-12)
    assert all_pairs_loss(_t(s)).item() == pytest.approx(bt, rel=1e-12)


### BEGIN TEACHER
def test_plackett_luce_value():
    s = np.array([[3.0, 1.0, 0.0]])
    e = np.exp(s[0])
    expected = -(np.log(e[0] / e.sum()) + np.log(e[1] / (e[1] + e[2])))
    assert plackett_luce_loss(_t(s)).item() == pytest.approx(expected, rel=1e-12)
### END TEACHER


@pytest.mark.parametrize("readout", ["eos", "sum"])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_right_padding_never_changes_a_score(tiny_pretrained, dtype, tol, readout):
    """Causal attention never lets a token see the PAD after it, so the score is the same up to
    rounding (BLAS may sum in a different order for a longer matrix)."""
    model, tok, _ = load_model(tiny_pretrained)
    rm = RewardModel(model, tok, readout=readout)
    rm.model.reward_head.weight.data = RNG.normal(size=(32, 1)).astype(np.float32)
    rm.model.to(dtype)
    prompts, responses = ["the plot was", "the cast is not"], [" good.", " bad and really dull."]
    tokens, mask = rm.encode(prompts, responses)
    padded = np.concatenate([tokens, np.zeros((2, 9), np.int64)], axis=1)
    pmask = np.concatenate([mask, np.zeros((2, 9), np.float32)], axis=1)
    a, b = rm.raw(tokens, mask).data, rm.raw(padded, pmask).data
    np.testing.assert_allclose(a, b, rtol=tol, atol=0)
    single = rm.raw(*rm.encode(prompts[:1], responses[:1])).data  # no padding at all
    np.testing.assert_allclose(single[0], a[0], rtol=tol, atol=0)
    assert abs(a[0] - a[1]) > 1e-3  # the scores do depend on the text


def test_readouts_read_the_eos_or_sum_the_response(tiny_pretrained, tmp_path):
    model, tok, _ = load_model(tiny_pretrained)
    rm = RewardModel(model, tok)
    rm.model.reward_head.weight.data = RNG.normal(size=(32, 1)).astype(np.float32)
    tokens, mask = rm.encode(["the plot was", "the cast is not"], [" good.", " bad and dull."])
    per_token = rm.model.scalar("reward", rm.model.hidden(tokens)).data  # (B, T)
    last = [np.flatnonzero(row)[-1] for row in mask]  # each response's EOS
    np.testing.assert_array_equal(rm.raw(tokens, mask).data, per_token[[0, 1], last])
    rm.readout = "sum"
    np.testing.assert_allclose(rm.raw(tokens, mask).data, (per_token * mask).sum(axis=1),
                               rtol=1e-6)
    rm.save(tmp_path / "rm.npz")
    assert RewardModel.load(tmp_path / "rm.npz").readout == "sum"  # its users read it the same
    with pytest.raises(ValueError, match="readout 'mean' is not one of eos, sum"):
        RewardModel(model, tok, readout="mean")


class _StubRM:
    """Scores a response by its length: a stand-in to check the metric arithmetic."""

    gain = 1.0

    def score(self, prompts, responses, finished=None):
        return np.array([float(len(r)) for r in responses])


def test_accuracy_metrics_on_a_hand_made_case():
    pairs = [PreferencePair("p", "longer one", "short", 1.0, 0.0, 0.9),  # RM right, gold agrees
             PreferencePair("p", "tiny", "much longer", 1.0, 0.0, 0.6),  # RM wrong
             PreferencePair("p", "abcdefg", "abc", 0.0, 2.0, 0.3),  # RM right; gold disagrees
             PreferencePair("p", "xy", "xyz", 1.0, 1.0, 0.5)]  # RM wrong; gold tie
    m = pair_metrics(_StubRM(), pairs)
    assert m["accuracy"] == 0.5
    assert m["ceiling"] == pytest.approx((0.9 + 0.6 + 0.7 + 0.5) / 4)
    # a fresh label agrees with the RM with probability p where it is right, 1 - p where wrong
    assert m["expected_accuracy"] == pytest.approx((0.9 + 0.4 + 0.3 + 0.5) / 4)
    assert m["gold_accuracy"] == pytest.approx(1 / 3)  # ties excluded: right on 1 of 3
    # the likelier label (p > 0.5) orders all three decided pairs as gold does
    assert m["gold_accuracy_ceiling"] == pytest.approx(1.0)
    assert m["mean_margin"] == pytest.approx((5 - 7 + 4 - 1) / 4)


def test_best_of_n_with_a_perfect_reward_never_lowers_gold():
    gold = RNG.normal(size=(50, 32))
    table = best_of_n_table(gold, gold, [1, 2, 4, 8, 16, 32])
    golds = [table[n][0] for n in (1, 2, 4, 8, 16, 32)]
    assert all(b >= a for a, b in zip(golds, golds[1:], strict=False))
    assert golds[0] == pytest.approx(gold.mean())
    with pytest.raises(ValueError, match="does not divide"):
        best_of_n_table(gold, gold, [3])


def test_best_of_n_expected_averages_over_every_subset():
    # brute force: the RM's favourite (first on ties, as argmax) in each of the C(7, n) subsets
    proxy = np.round(RNG.normal(size=(3, 7)))  # rounded, so that ties occur
    gold = RNG.normal(size=(3, 7))
    for n in range(1, 8):
        want = [np.mean([gold[k, list(c)][np.argmax(proxy[k, list(c)])]
                         for c in itertools.combinations(range(7), n)]) for k in range(3)]
        got_gold, got_proxy = best_of_n_expected(proxy, gold, n)
        np.testing.assert_allclose(got_gold, want, rtol=1e-12, atol=1e-12)
    # at n = n_max the favourite itself; at n = 1 the mean; finite where C(256, n) overflows
    big = RNG.normal(size=(4, 256))
    np.testing.assert_allclose(best_of_n_expected(big, big, 256)[0], big.max(axis=1))
    np.testing.assert_allclose(best_of_n_expected(big, -big, 1)[0], -big.mean(axis=1))
    assert np.all(np.isfinite(best_of_n_expected(big, big, 128)[0]))
    # disjoint groups (the table) estimate the same expectation: equal at n = 1 and n = n_max
    table = best_of_n_table(big, -big, [1, 256])
    assert table[256][0] == pytest.approx(best_of_n_expected(big, -big, 256)[0].mean())
    with pytest.raises(ValueError, match=r"n must be in \[1, 256\]"):
        best_of_n_expected(big, big, 257)


def test_split_keeps_every_copy_of_a_comparison_on_one_side():
    # 12 comparisons, each 3 times (one copy labelled the other way round), in file order
    base = [PreferencePair("the plot was", " " + "o" * (k + 1) + ".", " bad.") for k in range(12)]
    flipped = [PreferencePair(p.prompt, p.rejected, p.chosen) for p in base]
    pairs = base + base + flipped
    cfg = RewardConfig(val_fraction=0.25)
    train, val = split_pairs(pairs, cfg)
    assert len(train) + len(val) == len(pairs)  # nothing dropped
    assert not {pair_key(p) for p in train} & {pair_key(p) for p in val}  # no leak
    assert len(val) % 3 == 0 and len(val) >= 9  # whole comparisons, at least the 25% asked


def test_reward_model_at_chance_is_reported_loudly(caplog):
    with caplog.at_level("WARNING"):
        assert warn_if_at_chance(0.52, 500)  # 2 s.e. on 500 pairs is 4.5 points
    assert "reward model at CHANCE: held-out accuracy 52.0% on 500 pairs" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert warn_if_at_chance(0.60, 500) == ""
    assert caplog.text == ""
    with caplog.at_level("INFO", logger="minirlhf.stages.reward"):
        # 2 pairs: not even 100% can be told from a coin flip; said as such, not as CHANCE
        assert warn_if_at_chance(1.0, 2) == ""
    assert "2 held-out pairs cannot tell any accuracy from a coin flip (two standard errors: " \
        "70.7 points)" in caplog.text and "CHANCE" not in caplog.text


def test_analytic_kl():
    assert analytic_kl(1) == 0.0
    assert analytic_kl(2) == pytest.approx(np.log(2) - 0.5)


def test_reward_and_best_of_n_stages_run(tiny_pretrained, tmp_path):
    prefs = build_preference_data(PreferenceConfig(
        policy=tiny_pretrained, n_pairs=64, max_new_tokens=60, out_dir=str(tmp_path / "p"),
        progress=False))
    cfg = RewardConfig(preferences=prefs.path, init=tiny_pretrained, out_dir=str(tmp_path / "rm"),
                       epochs=1, batch_size=16, norm_samples=32, corr_samples=32, progress=False)
    r = train_reward(cfg)
    assert r.train_pairs == 58 and len(r.loss_curve) == 4  # 3 batches of 16, one of 10
    assert 0.0 <= r.val_metrics["accuracy"] <= 1.0 and "ceiling" in r.val_metrics
    # split_pairs gives the held-out pairs train_reward measured on (for notebooks and probes)
    train, val = split_pairs(load_jsonl(prefs.path), cfg)
    assert len(train) == r.train_pairs and len(val) == 6
    assert pair_metrics(RewardModel.load(r.checkpoint), val)["accuracy"] == \
        r.val_metrics["accuracy"]
    assert not {id(p) for p in train} & {id(p) for p in val}
    rm = RewardModel.load(r.checkpoint)
    assert rm.gain == pytest.approx(r.gain) and rm.bias == pytest.approx(r.bias)
    bon = run_best_of_n(BestOfNConfig(policy=tiny_pretrained, reward_model=r.checkpoint,
                                      ns="1,2,4", samples_per_prompt=4, prompts_per_eval=1,
                                      max_new_tokens=40, out_dir=str(tmp_path / "bon")))
    assert set(bon.table) == {1, 2, 4}
    assert bon.table[4]["proxy"] >= bon.table[1]["proxy"]  # the RM's own score can only rise
    with pytest.raises(FileNotFoundError, match="python -m minirlhf preferences"):
        train_reward(RewardConfig(preferences=str(tmp_path / "none.jsonl")))
