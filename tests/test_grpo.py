"""The critic-free stage (GRPO and its family) on the scratchpad world's verifier and on the
reward model: it runs, logs TRL's metric names, and its steps do what they say (every
advantage option updates the policy, the first pass has ratio 1, groups without spread and
truncated responses are left out of the loss)."""

import dataclasses
import json

import numpy as np
import pytest

from minirlhf.config import ConfigError
from minirlhf.lm.sampling import rollout
from minirlhf.stages.grpo import (
    GRPOConfig,
    advantages,
    make_actors,
    rewards,
    score,
    show,
    train_grpo,
    update,
)
from minirlhf.streams import stream

TINY = dict(iterations=2, prompts_per_iteration=4, num_generations=4, minibatch_size=8,
            max_new_tokens=60, eval_samples_per_prompt=2, progress=False)
TRL_NAMES = ("reward", "reward_std", "frac_reward_zero_std", "completions/mean_length",
             "completions/clipped_ratio", "kl", "entropy", "clip_ratio/low_mean",
             "clip_ratio/high_mean", "clip_ratio/region_mean", "loss")


def test_the_stage_on_the_verifier(tiny_scratchpad_sft, tmp_path):
    r = train_grpo(GRPOConfig(init=tiny_scratchpad_sft, out_dir=str(tmp_path), **TINY))
    assert len(r.metrics) == 2
    for name in TRL_NAMES:
        assert np.isfinite(r.metrics[-1][name]), name
    last = r.metrics[-1]  # TRL's kl is per token; ours per response is kl_sequence
    assert last["kl_sequence"] == pytest.approx(last["kl"] * last["completions/mean_length"])
    per_iteration = TINY["prompts_per_iteration"] * TINY["num_generations"] // TINY[
        "minibatch_size"]
    assert last["step"] == 2 * per_iteration  # optimizer steps taken, counted from 1
    for row in r.metrics:  # no gradient exactly when every group ties and the policy is still
        # the reference (k3's gradient is 0 there)
        no_signal = row["frac_reward_zero_std"] == 1.0 and row["kl"] == 0
        assert (row["grad_norm"] == 0) == no_signal, row
    assert 0.0 <= r.report.gold <= 1.0  # the verifier's accuracy on held-out prompts
    assert set(r.accuracy) == {2, 3, 4, 5} and set(r.sft_accuracy) == {2, 3, 4, 5}
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["iteration"] == 0 and "accuracy/5_terms" in rows[0]
    assert 0.0 <= rows[0]["completions/scratchpad_share"] <= 1.0
    lo, hi = r.interval
    assert lo <= r.report.gold <= hi and r.sft_interval[0] <= r.report.reference_gold
    e, lo, hi = r.error_ratio  # the policy's error rate over SFT's, paired over prompts
    assert e == pytest.approx((1 - r.report.gold) / (1 - r.report.reference_gold))
    assert lo <= e <= hi
    assert "error rate x" in show(r, r.config) and "95% bootstrap" in show(r, r.config)


@pytest.fixture(scope="module")
def one_batch(tiny_scratchpad_sft):
    """One rollout of 4 groups of 4 on the scratchpad world, scored (the ReMax baseline too).
    The tiny model is nearly always wrong, so its rewards are replaced by a fixed pattern with
    one group of each kind: mixed, all right, all wrong, one right."""
    config = GRPOConfig(init=tiny_scratchpad_sft, advantage="remax", **TINY)
    actors = make_actors(config)
    rng = stream(0, "train")
    prompts = [p for p in actors.task.sample_prompts(4, rng) for _ in range(4)]
    roll = rollout(actors.policy, actors.tokenizer, prompts, 60, rng)
    batch = score(actors, prompts, roll, config, rng)
    batch.scores = np.array([[1.0, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 1, 0]])
    batch.greedy = np.array([1.0, 1.0, 0.0, 0.0])
    return config, batch


@pytest.mark.parametrize("options", [
    dict(advantage="grpo"), dict(advantage="dr_grpo", loss_type="dr_grpo"),
    dict(advantage="rloo", loss_type="dapo"), dict(advantage="rloo", loss_type="bnpo"),
    dict(advantage="rloo", loss_type="rloo", kl_in="reward"), dict(advantage="reinforce"),
    dict(advantage="reinforce_pp", kl_in="reward", beta=0.1), dict(advantage="remax"),
    dict(epsilon_high=0.28, num_iterations=2, kl_estimator="k2"),
    dict(dynamic_sampling=True, mask_truncated_completions=True, scale_rewards="batch"),
])
def test_every_option_updates_the_policy(tiny_scratchpad_sft, one_batch, options):
    config, batch = one_batch
    config = dataclasses.replace(config, minibatch_size=16, **options)  # one step per pass
    actors = make_actors(dataclasses.replace(config, lr=1e-3))
    policy = actors.policy
    before = {k: v.copy() for k, v in policy.state_dict().items()}
    batch = dataclasses.replace(batch)
    batch.rewards, batch.kl = rewards(batch, config)
    batch.advantages = advantages(batch, config)
    mask = batch.mask
    assert batch.advantages.shape == mask.shape and np.all(batch.advantages[mask == 0] == 0)
    stats = update(actors, batch, config, np.random.default_rng(0), 0)
    if config.num_iterations == 1:  # the first step sees the very log-probs it sampled
        assert stats["clip_ratio/region_mean"] == 0.0
    after = policy.state_dict()
    assert any(not np.array_equal(after[k], before[k]) for k in before)


def test_dropped_groups_and_truncated_responses_get_no_gradient(one_batch):
    from minirlhf.stages.grpo import _kept

    config, batch = one_batch
    keep = _kept(batch, dataclasses.replace(config, dynamic_sampling=True,
                                            mask_truncated_completions=True))
    zero_spread = np.all(batch.scores == batch.scores[:, :1], axis=1)
    expected = np.repeat(~zero_spread, 4) & batch.roll.generation.finished
    assert keep.astype(bool).tolist() == expected.tolist()


def test_on_the_reward_model(tiny_run, tmp_path):
    runs, _ = tiny_run
    r = train_grpo(GRPOConfig(task="reviews", reward="reward_model",
                              init=str(runs / "tiny" / "sft" / "model.npz"),
                              reward_model=str(runs / "tiny" / "reward" / "model.npz"),
                              out_dir=str(tmp_path), **{**TINY, "iterations": 1}))
    assert np.isfinite(r.report.gold) and r.accuracy == {}


def test_an_sft_policy_of_another_world_is_refused(tiny_run, tmp_path):
    runs, _ = tiny_run
    with pytest.raises(ConfigError, match="was trained for the 'reviews' world, and task = "
                                          "'scratchpad'"):
        train_grpo(GRPOConfig(init=str(runs / "tiny" / "sft" / "model.npz"),
                              out_dir=str(tmp_path), **TINY))
    with pytest.raises(FileNotFoundError, match="python -m minirlhf pretrain --set "
                                                "task=scratchpad corpus=scratchpad"):
        train_grpo(GRPOConfig(init=str(tmp_path / "none.npz"), out_dir=str(tmp_path), **TINY))


def test_config_checks():
    with pytest.raises(ConfigError, match="advantage = 'rloo' needs num_generations >= 2"):
        GRPOConfig(advantage="rloo", num_generations=1).check()
    with pytest.raises(ConfigError, match="minibatch_size = 24 must divide"):
        GRPOConfig(minibatch_size=24).check()


def test_ppo_with_a_critic_on_the_verifier(tiny_scratchpad_sft, tmp_path):
    """PPO (the critic baseline of chapter 9's comparison) scores with the verifier when asked:
    no reward model is read, the critic is a copy of the SFT trunk, and the logged score is the
    verifier's 0/1 (minus the missing-EOS penalty)."""
    from minirlhf.stages.ppo import PPOConfig, train_ppo

    config = PPOConfig(task="scratchpad", reward="verifier", critic="policy",
                       init=tiny_scratchpad_sft, reward_model=str(tmp_path / "absent.npz"),
                       out_dir=str(tmp_path), iterations=2, rollout_size=8, minibatch_size=8,
                       ppo_epochs=1, max_new_tokens=60, eval_samples_per_prompt=1,
                       table_every=0, progress=False)
    r = train_ppo(config)
    assert len(r.metrics) == 2 and 0.0 <= r.report.gold <= 1.0
    for m in r.metrics:
        assert -1.0 <= m["objective/scores"] <= 1.0
    with pytest.raises(ConfigError, match="critic = 'reward_model' needs a reward model"):
        dataclasses.replace(config, critic="reward_model").check()


def test_the_metrics_table_spreads_rows_and_ends_with_the_last():
    from minirlhf.evaluation import metrics_table

    rows = [{"iteration": i, "reward": i / 100} for i in range(25)]
    lines = metrics_table(rows, [("iter", "iteration", ">5d"), ("reward", "reward", ">8.3f"),
                                 ("clip", "absent", ">7.3f")]).splitlines()
    assert lines[0] == " iter  reward   clip"
    assert [int(line.split()[0]) for line in lines[1:]] == list(range(0, 25, 2))  # 24 is last
    assert lines[-1].split() == ["24", "0.240", "0.000"]  # a missing key prints as 0
    lines = metrics_table(rows[:24], [("iter", "iteration", ">5d")]).splitlines()
    assert [int(x) for x in lines[1:]] == [*range(0, 24, 2), 23]  # the last row, once
