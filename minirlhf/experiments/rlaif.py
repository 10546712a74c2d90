"""RLAIF: a small human budget, the same budget plus AI labels, and AI labels alone; each
labeler's agreement with gold, the constitution's split by whether the prompt ends in "not" (its
blind spot: it never reads the prompt); the reward model and the DPO policy of each, with the
policy's gold after "not" prompts and after the others. The human budget also trains for as
many steps as the human + AI labels do (more passes over the same pairs), so that more data is
not confused with more steps. That human-labelled policy gains less after "not" prompts too
("not" prompts are harder whoever labels), so the blind spot's own cost in a policy is only its
gap beyond that policy's."""


from __future__ import annotations

from typing import Any

import numpy as np

from minirlhf.experiments.common import Context, bars
from minirlhf.lm.checkpoint import load_model
from minirlhf.lm.reward_model import RewardModel
from minirlhf.lm.sampling import generate_text
from minirlhf.stages.best_of_n import best_of_n_table
from minirlhf.stages.reward import pair_metrics
from minirlhf.streams import stream
from minirlhf.world import get_task
from minirlhf.world.ai_labelers import Constitution, ai_label, gold_agreement
from minirlhf.world.preference_data import PreferencePair

# Three seeds by default (``default_seeds``): the only experiment whose three seeds fit in a
# few minutes (the README lists the experiments' times).
SEEDS = 3
MATCHED = "human, steps matched"  # the human pairs for as many steps as human + AI


# ------------------------------------------------------------------------------- RLAIF
def _negated_prompt_gold(rep) -> dict[str, float]:
    """Mean gold of a policy's samples on prompts ending in "not" and on the others: the
    constitution never reads the prompt, so this is where its blind spot would show (beside a
    policy trained on human labels, for which "not" prompts are hard too)."""
    neg = [g for p, _, g in rep.samples if p.endswith(" not")]
    pos = [g for p, _, g in rep.samples if not p.endswith(" not")]
    return {"gold_on_not_prompts": float(np.mean(neg)), "gold_on_other_prompts":
            float(np.mean(pos))}


def run(ctx: Context) -> tuple[dict[str, Any], list[str]]:
    n_human, n_ai = ctx.n(500, 64), ctx.n(4000, 128)
    human = ctx.prefs("human", n_human)
    pool = ctx.prefs("pool", n_ai)  # the raters' labels here are never used
    test = ctx.prefs("test", ctx.n(1000, 64))  # held out, for gold accuracy
    judge = ctx.reward("human", human, epochs=3)
    ai_pairs, stats = ai_label(pool, judge)
    rule = Constitution()
    decided = [p for p in test if rule.prefers_first(p.chosen, p.rejected) is not None]
    numbers: dict[str, Any] = {
        "human_pairs": len(human), "ai_pairs": len(ai_pairs),
        "labelers": {"human raters": gold_agreement(human),
                     "judge (RM on the human budget)": stats["judge_gold_agreement"],
                     "constitution (where it decides)": stats["constitution_gold_agreement"],
                     "AI labeler (constitution, else judge)": stats["ai_gold_agreement"]},
        "constitution_coverage": stats["constitution_coverage"],
        "constitution_on_not_prompts": gold_agreement(
            [_as_rule(rule, p) for p in decided if p.prompt.endswith(" not")]),
        "constitution_on_other_prompts": gold_agreement(
            [_as_rule(rule, p) for p in decided if not p.prompt.endswith(" not")]),
        "conditions": {},
    }
    conditions = {"human": human, "human+AI": human + ai_pairs, "AI only": ai_pairs,
                  MATCHED: human}
    # as many optimizer steps on the human pairs as one pass over the human + AI pairs takes
    passes = max(1, round((len(human) + len(ai_pairs)) / len(human)))
    numbers["matched_steps_epochs"] = passes
    sft, tokenizer, _ = load_model(ctx.sft)
    task = get_task("reviews")
    for name, pairs in conditions.items():
        key = name.replace("+", "_").replace(" ", "_").replace(",", "")
        if name == "human":
            rm = judge  # 3 passes: the judge of the AI labels
        else:
            rm = ctx.reward(key, pairs, epochs=passes if name == MATCHED else 1)
        gold_acc = pair_metrics(rm, test).get("gold_accuracy")
        bon = _best_of_n_gold(rm, sft, tokenizer, task, ctx.n(16, 4), ctx.config.seed,
                              ctx.n(80, 60))
        policy = ctx.dpo(key, pairs, **({"epochs": passes} if name == MATCHED else {}))
        numbers["conditions"][name] = {
            "pairs": len(pairs), "rm_gold_accuracy": gold_acc, "best_of_16_gold": bon,
            "rm_epochs": 3 if name == "human" else passes if name == MATCHED else 1,
            "dpo_steps": policy.metrics[-1]["step"] if policy.metrics else None,
            "dpo": {**policy.report.to_dict(), **_negated_prompt_gold(policy.report)}}
        one_each = policy.report.samples[::ctx.n(4, 1)]  # one sample per evaluation prompt
        numbers["conditions"][name]["dpo_samples"] = (
            [list(s) for s in one_each if not s[0].endswith(" not")][:4]
            + [list(s) for s in one_each if s[0].endswith(" not")][:4])
    numbers["sft_gold"] = policy.report.reference_gold
    c = numbers["conditions"]
    plots = [bars(ctx.out / "rlaif.png",
                   {k: {"RM gold accuracy": v["rm_gold_accuracy"] or 0.0,
                        "DPO win-rate vs SFT": v["dpo"]["win_rate_vs_sft"]}
                    for k, v in c.items()}, "share",
                   "human budget, plus AI labels, AI labels alone"),
             bars(ctx.out / "rlaif_blind_spot.png",
                   {k: {"gold on 'not' prompts": v["dpo"]["gold_on_not_prompts"],
                        "gold on other prompts": v["dpo"]["gold_on_other_prompts"]}
                    for k, v in c.items()}, "mean gold reward of the DPO policy",
                   "the constitution's blind spot: negation in the prompt")]
    return numbers, plots


def _as_rule(rule: Constitution, p: PreferencePair) -> PreferencePair:
    """The pair as the constitution would label it."""
    if rule.prefers_first(p.chosen, p.rejected):
        return p
    return PreferencePair(p.prompt, p.rejected, p.chosen, p.rejected_gold, p.chosen_gold)


def _best_of_n_gold(rm: RewardModel, policy, tokenizer, task, n: int, seed: int,
                    max_new_tokens: int) -> float:
    """Mean gold of the RM's favourite among n samples, over the evaluation prompts."""
    rng = stream(seed, "rlaif/best_of_n")
    prompts = [p for p in task.eval_prompts for _ in range(n)]
    outs = generate_text(policy, tokenizer, prompts, max_new_tokens, rng)
    proxy = rm.score(prompts, [r for r, _ in outs], [f for _, f in outs]).reshape(-1, n)
    gold = np.array([task.gold(p, r, f) for p, (r, f) in zip(prompts, outs, strict=True)])
    return best_of_n_table(proxy, gold.reshape(-1, n), [n])[n][0]


