"""The loss options mapped to TRL, checked in float64 against TRL 1.16's formulas written out
here (not against our own code): ``grpo`` (the mean over sequences), ``bnpo`` (each minibatch
over its own tokens), ``dapo`` (over the batch's tokens per optimizer step, TRL's
``num_items_in_batch`` rescaled) and ``rloo`` (RLOOTrainer: one clipped ratio per sequence, the
mean over sequences), with the one deliberate difference docs/trl.md states (rows left out of
the loss are left out of the mean); and the GRPO stage hands ``dapo`` its count."""

import dataclasses

import numpy as np
import pytest

from minirlhf.autograd.gradcheck import gradcheck
from minirlhf.autograd.tensor import Tensor
from minirlhf.config import ConfigError
from minirlhf.objectives.group import (
    aggregate,
    clipped_sequence_losses,
    sequence_mean,
)

RNG = np.random.default_rng(7)
B, T = 8, 6
LOSSES = RNG.normal(size=(B, T))  # per-token losses of one generation batch
MASK = (np.arange(T)[None, :] < RNG.integers(1, T + 1, size=(B, 1))).astype(float)
MINIBATCHES = [np.arange(0, 4), np.arange(4, 8)]


def test_grpo_is_the_mean_over_sequences_of_their_token_means():
    trl = ((LOSSES * MASK).sum(-1) / np.maximum(MASK.sum(-1), 1.0)).mean()  # TRL's grpo
    assert aggregate(Tensor(LOSSES), MASK, "grpo").item() == pytest.approx(trl, rel=1e-14)
    left_out = MASK.copy()
    left_out[2] = 0.0  # a row out of the loss (dynamic sampling, a masked truncation)
    trl = ((LOSSES * left_out).sum(-1) / np.maximum(left_out.sum(-1), 1.0)).mean()  # over B
    ours = aggregate(Tensor(LOSSES), left_out, "grpo").item()  # over the B - 1 rows with tokens
    assert ours == pytest.approx(trl * B / (B - 1), rel=1e-14)


def trl_dapo(l, m, num_items_in_batch, gradient_accumulation_steps, steps_per_generation):
    """TRL 1.16's dapo for one minibatch: its sum over the generation batch's response tokens
    rescaled to one accumulation window."""
    return (l * m).sum() / (num_items_in_batch * gradient_accumulation_steps
                            / steps_per_generation)


def test_bnpo_is_each_minibatch_over_its_own_tokens():
    for mb in MINIBATCHES:
        l, m = LOSSES[mb], MASK[mb]
        trl = (l * m).sum() / max(m.sum(), 1.0)  # TRL's bnpo
        ours = aggregate(Tensor(l), m, "bnpo", dapo_tokens=MASK.sum()).item()
        assert ours == pytest.approx(trl, rel=1e-14, abs=0)  # bnpo ignores dapo's count


def test_dapo_weighs_every_token_of_the_generation_batch_alike():
    """One optimizer step per minibatch (ours): TRL's gradient_accumulation_steps 1 and
    steps_per_generation 2; and one step over the whole batch (TRL's default, where the two
    are equal): ours with the batch as its one minibatch."""
    k, n_items = len(MINIBATCHES), MASK.sum()
    for mb in MINIBATCHES:
        x = Tensor(LOSSES[mb].copy(), requires_grad=True)
        ours = aggregate(x, MASK[mb], "dapo", dapo_tokens=n_items / k)  # the stage's count
        assert ours.item() == pytest.approx(trl_dapo(LOSSES[mb], MASK[mb], n_items, 1, k),
                                            rel=1e-14, abs=0)
        ours.backward()  # every token of either minibatch weighs k / n_items
        np.testing.assert_allclose(x.grad, MASK[mb] * k / n_items, rtol=1e-15)
        bnpo = Tensor(LOSSES[mb].copy(), requires_grad=True)
        aggregate(bnpo, MASK[mb], "bnpo").backward()  # bnpo: 1 / this minibatch's tokens
        np.testing.assert_allclose(bnpo.grad, MASK[mb] / MASK[mb].sum(), rtol=1e-15)
    assert MASK[MINIBATCHES[0]].sum() != MASK[MINIBATCHES[1]].sum()  # so the two differ here
    whole = aggregate(Tensor(LOSSES), MASK, "dapo", dapo_tokens=n_items / 1).item()
    assert whole == pytest.approx(trl_dapo(LOSSES, MASK, n_items, 4, 4), rel=1e-14, abs=0)
    assert whole == aggregate(Tensor(LOSSES), MASK, "bnpo").item()


def _rloo_trl(logp, old, adv, mask, eps_low, eps_high):
    """RLOOTrainer's loss and its gradient, written out: one log-ratio per sequence (summed over
    its tokens), a clipped surrogate per sequence, the mean over sequences."""
    log_ratio = (logp * mask).sum(1) - (old * mask).sum(1)
    coef_1 = np.exp(log_ratio)
    coef_2 = np.clip(coef_1, 1 - eps_low, 1 + eps_high)
    loss = -np.minimum(coef_1 * adv, coef_2 * adv)
    grad = np.where((coef_1 * adv <= coef_2 * adv)[:, None],
                    -(adv * coef_1)[:, None] * mask, 0.0) / len(adv)
    return loss.mean(), grad


@pytest.mark.parametrize("spread", [0.02, 0.15])  # inside the clip band, and across it
def test_rloo_is_rloo_trainers_loss(spread):
    rng = np.random.default_rng(3)
    old = rng.normal(-1.5, 0.3, size=(B, T))
    logp = old + rng.uniform(-spread, spread, size=(B, T))
    adv = rng.normal(size=B)
    per_token_adv = adv[:, None] * MASK  # as the stage's step 4 hands them
    trl, trl_grad = _rloo_trl(logp, old, adv, MASK, 0.2, 0.28)
    x = Tensor(logp.copy(), requires_grad=True)
    losses, stats = clipped_sequence_losses(x, old, per_token_adv, MASK, 0.2, 0.28)
    loss = sequence_mean(losses, MASK)
    assert loss.item() == pytest.approx(trl, rel=1e-12)
    loss.backward()
    np.testing.assert_allclose(x.grad, trl_grad, rtol=1e-12, atol=1e-15)
    ratio = np.exp(((logp - old) * MASK).sum(1))
    clipped = ((ratio < 0.8) & (adv < 0)) | ((ratio > 1.28) & (adv > 0))
    assert stats["clip_ratio/region_mean"] == pytest.approx(clipped.mean())
    if spread > 0.1:
        assert clipped.any()  # the case exercises the clip


def test_rloo_with_a_row_left_out_is_rloo_trainers_gradient_over_the_rows_kept():
    """RLOOTrainer keeps a masked row in its mean (ratio 1, its advantage kept, no gradient);
    ours leaves it out: the same gradient, times B over the rows kept."""
    rng = np.random.default_rng(4)
    old = rng.normal(-1.5, 0.3, size=(B, T))
    logp = old + rng.uniform(-0.15, 0.15, size=(B, T))
    adv = rng.normal(size=B)
    mask = MASK.copy()
    mask[5] = 0.0
    _, trl_grad = _rloo_trl(logp, old, adv, mask, 0.2, 0.28)
    x = Tensor(logp.copy(), requires_grad=True)
    sequence_mean(clipped_sequence_losses(x, old, adv[:, None] * MASK, mask, 0.2, 0.28)[0],
                  mask).backward()
    np.testing.assert_allclose(x.grad, trl_grad * B / (B - 1), rtol=1e-12, atol=1e-15)


def test_rloo_gradcheck_float64():
    rng = np.random.default_rng(5)
    old = rng.normal(-1.0, 0.1, size=(3, 4))
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], float)  # the last row dropped
    adv = rng.normal(size=(3, 1)) * mask
    lp = Tensor(old + rng.uniform(-0.03, 0.03, size=(3, 4)), requires_grad=True)
    r = gradcheck(lambda x: sequence_mean(clipped_sequence_losses(x, old, adv, mask)[0], mask),
                  [lp])
    assert r.passed, r.report()
    losses, _ = clipped_sequence_losses(Tensor(lp.data), old, adv, mask)
    assert losses.data[2] == 0.0  # a row with no token counts for nothing


@pytest.mark.parametrize("options", [{}, dict(mask_truncated_completions=True)])
def test_the_stage_hands_dapo_the_batch_tokens_per_step(tiny_scratchpad_sft, monkeypatch,
                                                       options):
    """Two minibatches, one optimizer step each: both are divided by the same count, the
    response tokens the loss sees in the whole batch over 2 (TRL's num_items_in_batch, counted
    after mask_truncated_completions, rescaled to one step)."""
    from minirlhf.stages import grpo

    seen = []
    real = grpo.aggregate

    def spy(losses, mask, loss_type, max_len, dapo_tokens=None):
        seen.append((loss_type, float(mask.sum()), dapo_tokens))
        return real(losses, mask, loss_type, max_len, dapo_tokens)

    monkeypatch.setattr(grpo, "aggregate", spy)
    config = grpo.GRPOConfig(init=tiny_scratchpad_sft, iterations=1, prompts_per_iteration=4,
                             num_generations=4, minibatch_size=8, max_new_tokens=20,
                             progress=False, loss_type="dapo", **options)
    actors = grpo.make_actors(config)
    rng = np.random.default_rng(0)
    prompts = [p for p in actors.task.sample_prompts(4, rng) for _ in range(4)]
    batch = grpo.score(actors, prompts, grpo.rollout(actors.policy, actors.tokenizer, prompts,
                                                     20, rng), config, rng)
    batch.scores = np.array([[1.0, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]])
    batch.rewards, batch.kl = grpo.rewards(batch, config)
    batch.advantages = grpo.advantages(batch, config)
    grpo.update(actors, batch, config, rng, 0)
    finished = batch.roll.generation.finished
    seen_tokens = (batch.mask * (finished[:, None] if options else 1.0)).sum()
    if options:
        assert not finished.all()  # some responses are truncated at 20 tokens, and left out
    assert [t for t, _, _ in seen] == ["dapo"] * len(seen) and len(seen) >= 1
    assert all(n == pytest.approx(seen_tokens / 2, rel=1e-15) for _, _, n in seen)
    assert sum(own for _, own, _ in seen) == seen_tokens


def test_rloo_loss_type_refuses_what_rloo_trainer_cannot_mean(tiny_scratchpad_sft):
    base = grpo_config(tiny_scratchpad_sft)
    with pytest.raises(ConfigError, match="kl_in=reward"):
        dataclasses.replace(base, loss_type="rloo").check()
    with pytest.raises(ConfigError, match="one advantage per response"):
        dataclasses.replace(base, loss_type="rloo", advantage="reinforce_pp",
                            kl_in="reward").check()
    dataclasses.replace(base, loss_type="rloo", advantage="rloo", kl_in="reward").check()


def grpo_config(init):
    from minirlhf.stages.grpo import GRPOConfig

    return GRPOConfig(init=init, iterations=1, prompts_per_iteration=4, num_generations=4,
                      minibatch_size=8, progress=False)
