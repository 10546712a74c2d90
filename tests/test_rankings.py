"""Rankings: the Plackett-Luce rater, the JSON Lines form, the reward stage on rankings, and the
equal-effort experiment."""

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from minirlhf import Tensor
from minirlhf.autograd.gradcheck import gradcheck
from minirlhf.config import ConfigError
from minirlhf.evaluation import seed_interval
from minirlhf.objectives.reward import bradley_terry_loss, plackett_luce_loss, ranking_loss
from minirlhf.stages.dpo import DPOConfig
from minirlhf.stages.preferences import PreferenceConfig, build_preference_data
from minirlhf.stages.reward import RewardConfig, train_reward
from minirlhf.world import get_task
from minirlhf.world.preference_data import (
    PreferenceDataError,
    PreferencePair,
    Ranking,
    label_rankings,
    length_buckets,
    load_jsonl,
    pair_key,
    rankings_to_pairs,
    save_jsonl,
)
from minirlhf.world.raters import Panel, Rater

RATER = Rater(temperature=0.7, flip=0.1, position_bias=0.4)


# ----------------------------------------------------------------------------- the rater
def test_ranking_probabilities_sum_to_one_and_reduce_to_the_pairwise_label():
    u = np.array([0.3, -1.2, 2.0, 0.5])
    total = sum(RATER.p_ranking(u, list(p)) for p in itertools.permutations(range(4)))
    assert total == pytest.approx(1.0, abs=1e-12)
    for a, b in ((1.0, -0.5), (-2.0, 0.3)):  # K = 2 is the pairwise label, bias and flip too
        assert RATER.p_ranking(np.array([a, b]), [0, 1]) == pytest.approx(RATER.p_first(a, b),
                                                                          abs=1e-12)


def test_plackett_luce_by_hand_without_noise():
    rater = Rater(temperature=2.0)
    u = np.array([2.0, 0.0, -2.0])
    e = np.exp(u / 2.0)
    expected = e[1] / e.sum() * e[0] / (e[0] + e[2])  # 1 first, then 0 among {0, 2}
    assert rater.p_ranking(u, [1, 0, 2]) == pytest.approx(expected, rel=1e-12)


def test_drawn_rankings_follow_their_probabilities():
    rng = np.random.default_rng(0)
    u = np.array([1.0, 0.0, -0.5])
    n = 6000
    counts: dict[tuple, int] = {}
    for _ in range(n):
        order = tuple(RATER.draw_ranking(u, rng))
        counts[order] = counts.get(order, 0) + 1
    for perm in itertools.permutations(range(3)):
        p = RATER.p_ranking(u, list(perm))
        assert counts.get(perm, 0) / n == pytest.approx(p, abs=4 * np.sqrt(p * (1 - p) / n))


def test_panel_rankings_at_k2_match_the_pairwise_probability():
    """Shown in a random order: at K = 2 a ranking is a pairwise label, with the same
    probability the pairwise labels have (``prob_prefers``)."""
    task, panel = get_task("reviews"), Panel([RATER])
    prompt, a, b = "the plot was", " good.", " dull and slow."
    rng = np.random.default_rng(1)
    n = 4000
    first = np.mean([panel.rank(task, prompt, [a, b], rng)[0] == 0 for _ in range(n)])
    p = panel.prob_prefers(task, prompt, a, b)
    assert first == pytest.approx(p, abs=4 * np.sqrt(p * (1 - p) / n))


def test_label_rankings_carries_gold_in_ranked_order():
    task = get_task("reviews")
    texts = [" good.", " bad.", " great and fun.", " slow."]
    (r,) = label_rankings(task, Panel([Rater(temperature=0.01)]), ["the plot was"], [texts],
                          np.random.default_rng(0))
    assert sorted(r.ranked) == sorted(texts)
    assert r.ranked_gold == [task.gold("the plot was", t, True) for t in r.ranked]
    assert r.ranked_gold == sorted(r.ranked_gold, reverse=True)  # a nearly noiseless rater


# ------------------------------------------------------------------------- the data
def test_rankings_round_trip_and_imply_their_pairs(tmp_path):
    ranks = [Ranking("the plot was", [" great.", " good.", " bad."], [3.0, 1.0, -1.0])]
    assert load_jsonl(save_jsonl(tmp_path / "r.jsonl", ranks)) == ranks
    pairs = rankings_to_pairs(ranks)
    assert [(p.chosen, p.rejected, p.chosen_gold, p.rejected_gold) for p in pairs] == [
        (" great.", " good.", 3.0, 1.0), (" great.", " bad.", 3.0, -1.0),
        (" good.", " bad.", 1.0, -1.0)]
    assert all(p.p_chosen is None for p in pairs)
    assert pair_key(ranks[0]) == pair_key(Ranking("the plot was", [" bad.", " great.", " good."]))
    assert pair_key(PreferencePair("a", " x.", " y.")) == ("a", " x.", " y.")


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "the plot was", "ranked": [" a.", " b.", " c."], "ranked_gold": [1, 2]}',
     ":2: field 'ranked_gold' must list 3 numbers"),
    ('{"prompt": "the plot was", "ranked": [" a.", " b.", " c."], "ranked_gold": [1, NaN, 2]}',
     ":2: field 'ranked_gold' holds nan"),
    ('{"prompt": "the plot was", "ranked": [" a.", " b."]}',
     ":2: field 'ranked' lists 2 responses, the file's first ranking 3"),
])
def test_bad_ranking_lines_name_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "the plot was", "ranked": [" x.", " y.", " z."]}\n' + line + "\n")
    with pytest.raises(PreferenceDataError, match=re.escape(f"bad.jsonl{message}")):
        load_jsonl(path)


def test_length_buckets_sort_rankings_by_their_longest_response():
    ranks = [Ranking("p", [" a.", " " + "o" * n + "."]) for n in range(10)]
    batches = length_buckets(ranks, 4, np.random.default_rng(0))
    assert set(batches[-1].tolist()) == {8, 9}


# ------------------------------------------------------------------------- the losses
def test_ranking_loss_with_centering_is_bradley_terry_at_k2():
    s = np.random.default_rng(2).normal(size=(5, 2))
    t = Tensor(s, requires_grad=True)
    bt = bradley_terry_loss(Tensor(s[:, 0]), Tensor(s[:, 1]), center_coef=0.3).item()
    for kind in ("plackett_luce", "all_pairs"):
        assert ranking_loss(t, kind, 0.3).item() == pytest.approx(bt, rel=1e-12)
    assert ranking_loss(t, "plackett_luce").item() == pytest.approx(
        plackett_luce_loss(t).item(), rel=1e-15)


@pytest.mark.parametrize("kind", ["plackett_luce", "all_pairs"])
def test_ranking_loss_gradcheck(kind):
    x = Tensor(np.random.default_rng(3).normal(size=(3, 4)), requires_grad=True)
    r = gradcheck(lambda s: ranking_loss(s, kind, 0.2), [x])
    assert r.passed, r.report()


def test_seed_interval_is_students_t():
    m, lo, hi = seed_interval(np.array([1.0, 2.0, 3.0]))
    assert m == 2.0 and hi - m == pytest.approx(4.303 * 1.0 / np.sqrt(3), rel=1e-12)
    with pytest.raises(ValueError, match="n >= 2"):
        seed_interval(np.array([1.0]))


# -------------------------------------------------------------------------- the stages
def test_reward_stage_trains_on_rankings(tiny_pretrained, tmp_path):
    prefs = build_preference_data(PreferenceConfig(
        policy=tiny_pretrained, n_pairs=40, ranking_size=3, max_new_tokens=60,
        out_dir=str(tmp_path / "p"), progress=False))
    ranks = load_jsonl(prefs.path)
    assert len(ranks) == 40 and all(len(set(r.ranked)) == 3 for r in ranks)
    assert prefs.stats["rankings"] == 40 and prefs.stats["implied_pairs"] == 120
    base = dict(preferences=prefs.path, init=tiny_pretrained, epochs=1, batch_size=8,
                norm_samples=16, corr_samples=16, progress=False)
    losses = {}
    for kind in ("plackett_luce", "all_pairs"):
        r = train_reward(RewardConfig(out_dir=str(tmp_path / kind), ranking_loss=kind, **base))
        assert r.ranking_size == 3 and r.train_pairs == 36  # 4 rankings held out
        assert "ceiling" not in r.val_metrics and 0 <= r.val_metrics["accuracy"] <= 1
        losses[kind] = [v for _, v in r.loss_curve]
    assert losses["plackett_luce"] != losses["all_pairs"]  # the setting reaches the loss
    with pytest.raises(ConfigError, match="margin = 0.5 is a pairwise setting"):
        train_reward(RewardConfig(out_dir=str(tmp_path / "m"), margin=0.5, **base))
    with pytest.raises(ConfigError, match="offline DPO trains on chosen/rejected pairs"):
        DPOConfig().check({"preferences": PreferenceConfig(ranking_size=4)})


def test_rankings_experiment_runs_quick(quick_experiment):
    r = quick_experiment("rankings")
    saved = json.loads((Path(r.out_dir) / "results.json").read_text())
    assert saved["pairs"] * 2 == saved["rankings"] * saved["ranking_size"]  # equal effort
    assert set(saved["arms"]) == {"pairs, Bradley-Terry", "rankings, Plackett-Luce",
                                  "rankings, all pairs"}
    assert "equal effort" in r.numbers["table"] and open(r.plots[0], "rb").read(4) == b"\x89PNG"
