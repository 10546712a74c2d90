"""The bootstrap over prompts that every compared figure of chapter 9 carries."""

import numpy as np
import pytest

from minirlhf.evaluation import (
    PolicyReport,
    bootstrap_interval,
    by_prompt,
    paired_bootstrap_interval,
    per_prompt_gold,
    with_interval,
)


def test_bootstrap_matches_the_normal_approximation_for_a_mean():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=400)
    lo, hi = bootstrap_interval(x)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    assert lo < x.mean() < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)


def test_samples_of_one_prompt_move_together():
    """Eight identical samples per prompt carry no more information than one: the interval
    of (P, 8) copies equals that of the (P,) values, not one sqrt(8) times narrower."""
    rng = np.random.default_rng(1)
    x = (rng.random(128) < 0.8).astype(float)
    assert bootstrap_interval(np.repeat(x[:, None], 8, axis=1)) == bootstrap_interval(x)


def test_per_prompt_gold_and_bad_input():
    rows = [("a", "x", 1.0), ("a", "y", 0.0), ("b", "x", 1.0), ("b", "z", 1.0)]
    assert per_prompt_gold(rows).tolist() == [[1.0, 0.0], [1.0, 1.0]]
    with pytest.raises(ValueError, match="consecutive"):
        per_prompt_gold([("a", "x", 1.0), ("b", "y", 0.0), ("a", "z", 1.0), ("b", "w", 1.0)])
    with pytest.raises(ValueError, match="P >= 2"):
        bootstrap_interval(np.array([1.0]))
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(np.ones(5), level=95)


def test_paired_bootstrap_cancels_what_the_prompts_share():
    """Prompt difficulty varies a lot; policy y is policy x plus 0.05 on every prompt. Unpaired
    intervals overlap; the paired interval of the difference is tight around 0.05 and excludes
    0. The ratio statistic is computed on the same resamples."""
    rng = np.random.default_rng(2)
    x = rng.random(200)
    y = x + 0.05
    lo, hi = paired_bootstrap_interval(y, x)
    assert lo == pytest.approx(0.05) and hi == pytest.approx(0.05)
    assert bootstrap_interval(y)[0] < bootstrap_interval(x)[1]  # unpaired, they overlap
    noisy = y + rng.normal(0, 0.02, size=200)
    lo, hi = paired_bootstrap_interval(noisy, x)
    assert 0.0 < lo < 0.05 < hi
    lo, hi = paired_bootstrap_interval(1 - y, 1 - x, lambda p, q: p / q)
    assert hi < 1.0
    with pytest.raises(ValueError, match="same P"):
        paired_bootstrap_interval(x, x[:10])


def test_by_prompt_means_whatever_the_layout():
    prompts = ["a", "b", "a", "c", "b", "a"]
    values = np.array([1.0, 2.0, 3.0, 4.0, 6.0, 5.0])
    assert by_prompt(prompts, values).tolist() == [3.0, 4.0, 4.0]  # a, b, c in first order


def test_policy_figures_carry_their_intervals():
    rep = PolicyReport(1.5, 0.2, 0.75, 2.0, 1.0, 30.0,
                       intervals={"gold_reward": [1.2, 1.8], "win_rate_vs_sft": [0.7, 0.8]})
    d = rep.to_dict()
    assert d["gold_reward"] == 1.5 and d["ci95"]["gold_reward"] == [1.2, 1.8]
    assert "ci95" not in PolicyReport(1.5, 0.2, 0.75, 2.0, 1.0, 30.0).to_dict()
    text = rep.describe("PPO", 1)
    assert "gold 1.500 ± 0.300" in text and "win-rate vs SFT 75.0% ± 5.0" in text
    assert "KL to SFT 2.00 nats" in text  # no interval given, none printed
    assert with_interval(0.5, None, ".1%") == "50.0%"
