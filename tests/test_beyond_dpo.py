"""The stages beyond DPO (KTO, ORPO, SimPO) and rejection-sampling fine-tuning, on the tiny
pipeline's run: each trains, evaluates and logs TRL's names; their data paths and selection
rules are checked on hand-made cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from minirlhf.lm.checkpoint import load_model
from minirlhf.stages.kto import KTOConfig, reference_point, train_kto
from minirlhf.stages.orpo import ORPOConfig, train_orpo
from minirlhf.stages.rft import RFTConfig, select, train_rft
from minirlhf.stages.simpo import SimPOConfig, train_simpo
from minirlhf.world.preference_data import UnpairedExample, load_jsonl, save_jsonl

FAST = dict(eval_samples_per_prompt=1, max_new_tokens=60, progress=False)


def _paths(tiny_run):
    runs, _ = tiny_run
    run = runs / "tiny"
    return (str(run / "sft" / "model.npz"), str(run / "preferences" / "preferences.jsonl"),
            str(run / "reward" / "model.npz"))


def _check_rows(metrics, names):
    assert [m["step"] for m in metrics] == list(range(1, len(metrics) + 1))
    for m in metrics:
        for k in names:
            assert np.isfinite(m[k]), (k, m)


def test_orpo_and_simpo_train_without_a_reference_and_report_their_kl(tiny_run, tmp_path):
    sft, prefs, _ = _paths(tiny_run)
    o = train_orpo(ORPOConfig(init=sft, preferences=prefs, out_dir=str(tmp_path / "orpo"),
                              max_pairs=128, batch_size=32, **FAST))
    _check_rows(o.metrics, ["loss", "nll_loss", "log_odds_ratio", "logps/chosen",
                            "rewards/margins", "grad_norm", "learning_rate"])
    assert len(o.metrics) == 4 and np.isfinite(o.report.kl)  # a sampled estimate: may be < 0
    first = o.metrics[0]  # the SFT term is the chosen responses' mean per-token NLL
    assert first["nll_loss"] == pytest.approx(-first["logps/chosen"])
    s = train_simpo(SimPOConfig(init=sft, preferences=prefs, out_dir=str(tmp_path / "simpo"),
                                max_pairs=96, batch_size=32, **FAST))
    _check_rows(s.metrics, ["loss", "rewards/chosen", "rewards/margins", "logps/rejected"])
    assert len(s.metrics) == 3
    m = s.metrics[0]  # rewards are beta times the per-token mean log-probs
    assert m["rewards/chosen"] == pytest.approx(2.0 * m["logps/chosen"], rel=1e-5)
    for name in ("orpo", "simpo"):
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert 0.0 <= summary["win_rate_vs_sft"] <= 1.0 and np.isfinite(summary["kl_to_ref"])


def test_kto_splits_pairs_and_starts_at_a_zero_reference_point(tiny_run, tmp_path):
    sft, prefs, _ = _paths(tiny_run)
    r = train_kto(KTOConfig(init=sft, preferences=prefs, out_dir=str(tmp_path / "kto"),
                            max_examples=256, batch_size=64, **FAST))
    assert r.data["examples"] == 256 and 0.3 < r.data["desirable_share"] < 0.7
    _check_rows(r.metrics, ["loss", "kl", "rewards/chosen", "rewards/rejected"])
    assert r.metrics[0]["kl"] == 0.0  # the policy is the reference before its first step
    assert r.metrics[0]["rewards/chosen"] == 0.0
    assert r.metrics[0]["loss"] == pytest.approx(0.5)  # 1 - sigmoid(0) on every row


def test_kto_reads_unpaired_files_and_makes_thumbs(tiny_run, tmp_path):
    sft, prefs, _ = _paths(tiny_run)
    pairs = load_jsonl(prefs)[:40]
    unpaired = [UnpairedExample(p.prompt, p.chosen, True) for p in pairs[:30]] + \
        [UnpairedExample(p.prompt, p.rejected, False) for p in pairs[30:]]
    save_jsonl(tmp_path / "thumbs.jsonl", unpaired)
    r = train_kto(KTOConfig(init=sft, preferences=str(tmp_path / "thumbs.jsonl"),
                            out_dir=str(tmp_path / "a"), batch_size=16, **FAST))
    assert r.data["examples"] == 40 and r.data["desirable_share"] == pytest.approx(0.75)
    t = train_kto(KTOConfig(init=sft, preferences="/nonexistent.jsonl", thumbs=48,
                            out_dir=str(tmp_path / "b"), batch_size=16, **FAST))
    assert 0 < t.data["examples"] <= 48 and t.data["source"] == "48 thumbs"


def test_the_reference_point_is_the_mismatched_log_ratio(tiny_run):
    sft, prefs, _ = _paths(tiny_run)
    policy, tok, _ = load_model(sft)
    reference, _, _ = load_model(sft)
    batch = [UnpairedExample(p.prompt, p.chosen, True) for p in load_jsonl(prefs)[:6]]
    assert reference_point(policy, reference, tok, batch) == 0.0
    reference.wte.weight.data *= 0.5  # a different reference: the estimate moves
    assert reference_point(policy, reference, tok, batch) != 0.0


def test_select_keeps_the_best_finished_sample_or_a_random_finished_one():
    scores = np.array([0.1, 0.9, 0.5, 0.0,   # prompt 0: the 0.9 sample
                       2.0, 1.0, 3.0, -1.0,  # prompt 1: 3.0 is unfinished, so 2.0
                       5.0, 6.0, 7.0, 8.0])  # prompt 2: nothing finished: dropped
    finished = [True, True, True, True, True, True, False, True, False, False, False, False]
    best = select(scores, finished, 4, "best", np.random.default_rng(0))
    assert best.tolist() == [1, 4]
    rng = np.random.default_rng(0)
    picks = np.array([select(scores, finished, 4, "random", rng) for _ in range(400)])
    assert set(picks[:, 0]) == {0, 1, 2, 3} and set(picks[:, 1]) == {4, 5, 7}


def test_rft_runs_its_rounds_and_its_control(tiny_run, tmp_path):
    sft, _, rm = _paths(tiny_run)
    cfg = dict(init=sft, reward_model=rm, rounds=2, prompts_per_round=16, n=4, batch_size=8,
               epochs=1, **FAST)
    best = train_rft(RFTConfig(out_dir=str(tmp_path / "best"), **cfg))
    rand = train_rft(RFTConfig(out_dir=str(tmp_path / "random"), select="random", **cfg))
    assert [r["round"] for r in best.rounds] == [1, 2]
    for a, b in zip(best.rounds, rand.rounds, strict=True):
        assert a["score_kept"] >= a["score_all"]  # the best of each prompt beats the average
        assert 0 < a["kept"] <= 16 and 0 < b["kept"] <= 16
    # the first round samples the same policy with the same seed: the same samples, so the
    # selection alone separates the two arms there
    assert best.rounds[0]["score_all"] == pytest.approx(rand.rounds[0]["score_all"])
    assert best.rounds[0]["score_kept"] > rand.rounds[0]["score_kept"]
    _check_rows(best.metrics, ["loss", "grad_norm"])
    assert (tmp_path / "best" / "reward_vs_kl.png").exists()


def test_online_dpo_can_be_labelled_by_the_reward_model(tiny_run, tmp_path):
    from minirlhf.lm.reward_model import RewardModel
    from minirlhf.stages.dpo import DPOConfig, rm_label_pairs, train_dpo
    from minirlhf.world import get_task

    sft, _, rm_path = _paths(tiny_run)
    rm = RewardModel.load(rm_path)
    task = get_task("reviews")
    prompts = ["the movie was"] * 3
    first, second = [" great and fun.", " dull.", " ok."], [" dull.", " great and fun.", " ok."]
    pairs = rm_label_pairs(rm, task, prompts, first, second)
    s1, s2 = rm.score(prompts, first), rm.score(prompts, second)
    for pair, a, b, x, y in zip(pairs, first, second, s1, s2, strict=True):
        assert pair.chosen == (a if x >= y else b)  # the higher score wins; a tie: the first
        assert pair.p_chosen == pytest.approx(1 / (1 + np.exp(-abs(x - y))))
        assert pair.chosen_gold == task.gold(pair.prompt, pair.chosen, True)
    r = train_dpo(DPOConfig(init=sft, preferences="/nonexistent.jsonl", online_rounds=2,
                            online_pairs=64, labeler="reward_model", reward_model=rm_path,
                            out_dir=str(tmp_path / "dpo"), **FAST))
    assert len(r.metrics) == 2  # 32 fresh pairs a round, one batch of 32 each, 2 rounds
    with pytest.raises(Exception, match="labeler = reward_model needs reward_model"):
        DPOConfig(online_rounds=1, online_pairs=32, labeler="reward_model").check()
    with pytest.raises(Exception, match="missing.npz"):
        train_dpo(DPOConfig(init=sft, online_rounds=1, online_pairs=32,
                            labeler="reward_model", reward_model=str(tmp_path / "missing.npz"),
                            out_dir=str(tmp_path / "x"), **FAST))
