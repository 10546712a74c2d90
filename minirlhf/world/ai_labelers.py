"""AI feedback in place of (some) human labels: two AI labelers built from the project's pieces.

- The **judge**: a reward model trained on a small human-labelled set, used as a pairwise judge
  (it prefers the response it scores higher). It knows what the humans taught it, and no more.
- The **constitution**: a rule written down once, applied everywhere it has something to say.
  Ours reads the review for words from a list of kind and harsh words and prefers the response
  with more kind words than harsh ones; when the counts tie it abstains. It covers many pairs
  cheaply, and it has a blind spot a policy can find: it never reads the words around an
  adjective, so negation, repetition and rambling all look as good as a fresh kind word.

An AI labeler here labels every pair: the constitution where it decides, the judge elsewhere.
Agreement with gold is measured on pairs whose gold rewards differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minirlhf.lm.reward_model import RewardModel
from minirlhf.world.preference_data import PreferencePair
from minirlhf.world.reviews import NEGATIVE, POSITIVE


@dataclass
class Constitution:
    """Prefer the response with more kind than harsh words; abstain on a tie."""

    kind: frozenset[str] = frozenset(POSITIVE)  # the reviews task's positive adjectives
    harsh: frozenset[str] = frozenset(NEGATIVE)  # and its negative ones

    def score(self, response: str) -> int:
        # exercise constitution-score: return an int, kind words minus harsh words
        ### BEGIN SOLUTION
        words = response.replace(".", " ").replace(",", " ").split()
        return sum(w in self.kind for w in words) - sum(w in self.harsh for w in words)
        ### END SOLUTION

    def prefers_first(self, first: str, second: str) -> bool | None:
        """True/False when the rule decides, None when it abstains."""
        # exercise constitution-choice: return True, False or None
        ### BEGIN SOLUTION
        a, b = self.score(first), self.score(second)
        return None if a == b else a > b
        ### END SOLUTION


def ai_label(pairs: list[PreferencePair], judge: RewardModel,
             constitution: Constitution | None = None
             ) -> tuple[list[PreferencePair], dict[str, float]]:
    """Relabel ``pairs`` (their chosen/rejected order is ignored) with the constitution where it
    decides and the judge elsewhere. Returns the relabelled pairs and the labelers' agreement
    with gold (on pairs whose gold differs), with the constitution's coverage."""
    constitution = constitution or Constitution()
    firsts = [p.chosen for p in pairs]
    seconds = [p.rejected for p in pairs]
    prompts = [p.prompt for p in pairs]
    s1 = judge.score(prompts, firsts)
    s2 = judge.score(prompts, seconds)
    out, judge_right, rule_right, both_right = [], [], [], []
    for p, a, b, ja, jb in zip(pairs, firsts, seconds, s1, s2, strict=True):
        rule = constitution.prefers_first(a, b)
        judge_first = bool(ja > jb)
        first = judge_first if rule is None else rule
        gold_a, gold_b = p.chosen_gold, p.rejected_gold
        if gold_a is not None and gold_b is not None and gold_a != gold_b:
            truth = gold_a > gold_b
            judge_right.append(judge_first == truth)
            both_right.append(first == truth)
            if rule is not None:
                rule_right.append(rule == truth)
        chosen, rejected = (a, b) if first else (b, a)
        cg, rg = (gold_a, gold_b) if first else (gold_b, gold_a)
        out.append(PreferencePair(p.prompt, chosen, rejected, cg, rg))
    coverage = float(np.mean([constitution.prefers_first(a, b) is not None
                              for a, b in zip(firsts, seconds, strict=True)]))
    stats = {"judge_gold_agreement": float(np.mean(judge_right)),
             "constitution_gold_agreement": float(np.mean(rule_right)) if rule_right else None,
             "constitution_coverage": coverage,
             "ai_gold_agreement": float(np.mean(both_right))}
    return out, stats


def gold_agreement(pairs: list[PreferencePair]) -> float:
    """Share of pairs (with differing gold) whose label agrees with gold."""
    # exercise gold-agreement: return a float in [0, 1], or nan when no pair counts
    ### BEGIN SOLUTION
    right = [p.chosen_gold > p.rejected_gold for p in pairs
             if p.chosen_gold is not None and p.chosen_gold != p.rejected_gold]
    return float(np.mean(right)) if right else float("nan")
    ### END SOLUTION
