"""Simulated humans (and AI labelers) who compare two responses and say which is better.

A rater has a utility for each response: the task's gold reward plus whatever it is biased
towards. It prefers response A to B with the Bradley-Terry probability

    P(A > B) = sigmoid((u_A - u_B + b_pos) / tau)        (b_pos if A is shown first)

and then its recorded label is flipped with probability eps. tau is the rater's temperature
(small: decisive; large: nearly random), b_pos a bias for whichever response it sees first.

A ranking of K responses (as InstructGPT's labelers ranked 4 to 9) comes from the same
utilities by Plackett-Luce: the rater picks its favourite among all K with probability
softmax(u / tau) (the first-shown response's utility raised by b_pos), then its favourite among
the rest, and so on; at each pick, with probability 2 eps it picks uniformly instead (its noise).
At K = 2 this is exactly the pairwise label above: eps + (1 - 2 eps) sigmoid((u_A - u_B + b_pos)
/ tau).

Because we know every rater's exact choice probability, we know the best accuracy any reward
model can reach against its labels: for each pair, the best guess is the likelier label, right
with probability max(p, 1 - p). Averaged over pairs, that is the ceiling reported beside every
accuracy. (The reward model never sees which response was shown first, so p averages over the
two presentation orders.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from minirlhf.world import Task


def _sigmoid(x: float) -> float:
    return float(0.5 * (1.0 + np.tanh(0.5 * x)))


@dataclass(frozen=True)
class Rater:
    temperature: float = 1.0  # tau: Bradley-Terry temperature, > 0
    flip: float = 0.0  # eps: probability that the recorded label is flipped, in [0, 0.5]
    length_bias: float = 0.0  # utility per character of response (> 0 likes longer answers)
    agreement_bias: float = 0.0  # utility for agreeing with the user's hint (sycophancy)
    position_bias: float = 0.0  # utility for the response shown first
    weight: float = 1.0  # this rater's share of the labels within a panel

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"Rater.temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.flip <= 0.5:
            raise ValueError(f"Rater.flip must be in [0, 0.5], got {self.flip}")
        if not self.weight > 0:
            raise ValueError(f"Rater.weight must be > 0, got {self.weight}")

    def utility(self, task: Task, prompt: str, response: str) -> float:
        u = task.gold(prompt, response, True) + self.length_bias * len(response)
        if self.agreement_bias and task.agrees_with_hint is not None:
            u += self.agreement_bias * task.agrees_with_hint(prompt, response)
        return u

    def p_first(self, u_first: float, u_second: float) -> float:
        """P(the label says the first-shown response is better)."""
        # exercise rater-probability: return a float in [0, 1]
        ### BEGIN SOLUTION
        p = _sigmoid((u_first - u_second + self.position_bias) / self.temperature)
        return self.flip + (1.0 - 2.0 * self.flip) * p
        ### END SOLUTION


    def p_thumbs_up(self, u: float, threshold: float = 0.0) -> float:
        """P(a thumbs-up for one response of utility u), the unpaired label KTO learns from: the
        response against a neutral one of utility ``threshold`` (Bradley-Terry with the rater's
        temperature), then flipped with probability eps. No position: one response is shown."""
        return self.flip + (1.0 - 2.0 * self.flip) * _sigmoid((u - threshold) / self.temperature)

    def _pick_probs(self, u_left: np.ndarray) -> np.ndarray:
        """P(each remaining response is picked next), u_left: (M,) utilities of the M responses
        left (position bias already added) -> (M,): Plackett-Luce's softmax(u / tau), mixed
        with a uniform pick with probability 2 eps."""
        z = u_left / self.temperature
        soft = np.exp(z - z.max())
        soft /= soft.sum()
        return 2.0 * self.flip / len(u_left) + (1.0 - 2.0 * self.flip) * soft

    def draw_ranking(self, u_shown: np.ndarray, rng: np.random.Generator) -> list[int]:
        """A ranking of K responses, u_shown: (K,) utilities in the order shown (the first gets
        the position bias) -> positions in u_shown, best first."""
        u = np.asarray(u_shown, dtype=np.float64).copy()
        u[0] += self.position_bias
        left = list(range(len(u)))
        order = []
        while len(left) > 1:
            k = int(rng.choice(len(left), p=self._pick_probs(u[left])))
            order.append(left.pop(k))
        return order + left

    def p_ranking(self, u_shown: np.ndarray, order: Sequence[int]) -> float:
        """P(``draw_ranking`` returns ``order``), the product of each pick's probability among
        the responses still left. At K = 2, ``p_ranking(u, [0, 1]) == p_first(u[0], u[1])``."""
        u = np.asarray(u_shown, dtype=np.float64).copy()
        u[0] += self.position_bias
        left, p = list(range(len(u))), 1.0
        for pos in order[:-1]:
            p *= float(self._pick_probs(u[left])[left.index(pos)])
            left.remove(pos)
        return p


class Panel:
    """Several raters; each label comes from one of them, drawn in proportion to weight."""

    def __init__(self, raters: Sequence[Rater]):
        if not raters:
            raise ValueError("Panel: needs at least one rater")
        self.raters = list(raters)
        w = np.array([r.weight for r in raters], dtype=np.float64)
        self.weights = w / w.sum()

    def prob_prefers(self, task: Task, prompt: str, a: str, b: str) -> float:
        """P(a label says a > b), averaged over raters and over the two presentation orders."""
        total = 0.0
        for rater, w in zip(self.raters, self.weights, strict=True):
            ua, ub = rater.utility(task, prompt, a), rater.utility(task, prompt, b)
            p = 0.5 * (rater.p_first(ua, ub) + 1.0 - rater.p_first(ub, ua))
            total += w * p
        return total

    def label(self, task: Task, prompt: str, a: str, b: str, rng: np.random.Generator
              ) -> tuple[bool, float]:
        """One label: (True if a is chosen, P(a chosen)). The rater and the order are random."""
        rater = self.raters[int(rng.choice(len(self.raters), p=self.weights))]
        ua, ub = rater.utility(task, prompt, a), rater.utility(task, prompt, b)
        if rng.random() < 0.5:  # a is shown first
            a_chosen = rng.random() < rater.p_first(ua, ub)
        else:
            a_chosen = rng.random() >= rater.p_first(ub, ua)
        return bool(a_chosen), self.prob_prefers(task, prompt, a, b)

    def rank(self, task: Task, prompt: str, responses: Sequence[str], rng: np.random.Generator
             ) -> list[int]:
        """One ranking of K responses -> their indices, best first. The rater is drawn in
        proportion to weight, the order the responses are shown in uniformly (the first shown
        gets the rater's position bias), and the ranking by ``Rater.draw_ranking``."""
        rater = self.raters[int(rng.choice(len(self.raters), p=self.weights))]
        shown = rng.permutation(len(responses))
        u = np.array([rater.utility(task, prompt, responses[i]) for i in shown])
        return [int(shown[k]) for k in rater.draw_ranking(u, rng)]


    def thumbs(self, task: Task, prompt: str, response: str, rng: np.random.Generator,
               threshold: float = 0.0) -> tuple[bool, float]:
        """One unpaired label: (True for a thumbs-up, P(thumbs-up) averaged over raters). The
        rater is drawn in proportion to weight."""
        rater = self.raters[int(rng.choice(len(self.raters), p=self.weights))]
        up = rng.random() < rater.p_thumbs_up(rater.utility(task, prompt, response), threshold)
        p = sum(w * r.p_thumbs_up(r.utility(task, prompt, response), threshold)
                for r, w in zip(self.raters, self.weights, strict=True))
        return bool(up), float(p)


def ceiling(p_chosen: Sequence[float]) -> float:
    """The best expected accuracy against labels whose probabilities are ``p_chosen``:
    mean over pairs of max(p, 1 - p). Labels are random; no model can do better on average."""
    p = np.asarray(p_chosen, dtype=np.float64)
    return float(np.mean(np.maximum(p, 1.0 - p))) if len(p) else float("nan")


def expected_gold_agreement(p_chosen: Sequence[float], gold_chosen: Sequence[float],
                            gold_rejected: Sequence[float]) -> float:
    """The expected share of labels that agree with the gold order (ties count one half),
    where ``p_chosen`` is each recorded label's probability of having come out as it did."""
    p = np.asarray(p_chosen, dtype=np.float64)
    d = np.sign(np.asarray(gold_chosen) - np.asarray(gold_rejected))
    # P(the label orders the pair as gold does) = p if gold agrees with the label, else 1 - p
    agree = np.where(d > 0, p, np.where(d < 0, 1.0 - p, 0.5))
    return float(agree.mean()) if len(p) else float("nan")


PRESETS = {
    "default": [Rater(temperature=1.0)],
    "noisy": [Rater(temperature=1.0, flip=0.15)],
    "length": [Rater(temperature=1.0, length_bias=0.1)],
    "sycophantic": [Rater(temperature=0.5, agreement_bias=2.5)],
    "panel": [Rater(temperature=0.7, weight=2.0), Rater(temperature=2.0, flip=0.1),
              Rater(temperature=1.0, length_bias=0.05, position_bias=0.5)],
}


def get_panel(name: str) -> Panel:
    if name not in PRESETS:
        raise ValueError(f"unknown rater preset {name!r}; presets: {', '.join(PRESETS)}")
    return Panel(PRESETS[name])
