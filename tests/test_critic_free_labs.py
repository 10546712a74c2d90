"""Chapter 9's small labs: GRPO's length normalisation on a tabular policy, and how the group
std reweights prompts by difficulty."""

import numpy as np
import pytest

from minirlhf.experiments.critic_free import expected_length, length_lab, std_weights
from minirlhf.objectives.group import STD_EPS


def test_expected_length_matches_sampling():
    rng = np.random.default_rng(0)
    s, max_len = 0.2, 20
    L = np.minimum(rng.geometric(s, size=400_000), max_len)
    assert expected_length(np.log(s / (1 - s)), max_len) == pytest.approx(L.mean(), abs=0.02)
    assert expected_length(50.0, max_len) == pytest.approx(1.0)  # always stops at once
    assert expected_length(-50.0, max_len) == pytest.approx(max_len)  # never stops early


def test_grpo_length_normalisation_lengthens_wrong_answers_and_dr_grpo_does_not():
    """The reward ignores length. Under loss_type grpo (1/|o| per response) a wrong response's
    negative advantage is spread thinner the longer it is, so wrong responses grow and right
    ones shrink; under dr_grpo and dapo (one normaliser for all) length has zero expected
    gradient and stays put. Both predictions can fail: each is measured."""
    grpo = length_lab("grpo", steps=300, seed=0)
    assert grpo["length_wrong"][-1] > grpo["length_wrong"][0] + 5.0
    assert grpo["length_right"][-1] < grpo["length_right"][0] - 2.0
    for loss_type in ("dr_grpo", "dapo"):
        other = length_lab(loss_type, steps=300, seed=0)
        assert abs(other["length_wrong"][-1] - other["length_wrong"][0]) < 0.5, loss_type
        assert abs(other["length_right"][-1] - other["length_right"][0]) < 0.5, loss_type
        assert other["p_right"][-1] > 0.85, loss_type  # it still learns to answer right
    assert grpo["p_right"][-1] > 0.85


def test_length_lab_draws_from_its_seed():
    """Another seed is another draw, and the same seed the same one. (That the critic-free
    experiment passes its own seed shows in the committed claims table, which
    test_claims.test_no_claim_is_judged_on_one_draw_in_every_seed reads.)"""
    assert length_lab("grpo", steps=3, seed=0) != length_lab("grpo", steps=3, seed=1)
    assert length_lab("grpo", steps=3, seed=1) == length_lab("grpo", steps=3, seed=1)


def test_length_lab_rejects_unknown_loss_type():
    with pytest.raises(ValueError, match="loss_type"):
        length_lab("mean")


def test_std_weights_hand_worked():
    """Two groups of 8: 7 right (an easy prompt) and 4 right (a hard one). Sum of |A| per group:
    without the std 1.75 and 4; with it (ddof 1) 1.75 / sqrt(1/8) = 4.95 and 4 / sqrt(2/7) =
    7.48: dividing by the std moves weight towards the nearly-always-right prompt."""
    rewards = np.array([[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0, 0, 0],
                        [1, 1, 1, 1, 1, 1, 1, 1]], dtype=float)
    w = std_weights(rewards, np.array([2, 5, 2]))
    assert w["none"][2] == pytest.approx(1.75 / 5.75)
    assert w["none"][5] == pytest.approx(4.0 / 5.75)
    easy, hard = 1.75 / (np.sqrt(1 / 8) + STD_EPS), 4.0 / (np.sqrt(2 / 7) + STD_EPS)
    assert w["group"][2] == pytest.approx(easy / (easy + hard), rel=1e-9)
    assert w["group"][2] > w["none"][2]
    assert w["zero_std"] == {2: 0.5, 5: 0.0}
    assert w["accuracy"][5] == 0.5
    with pytest.raises(ValueError, match="rewards"):
        std_weights(rewards, np.array([2, 5]))
