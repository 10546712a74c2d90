"""The scratchpad world: sums worked step by step, with an answer a program can verify.

A prompt asks for a sum of 2 to 5 terms (the number of terms is the difficulty)::

    7+12+5=?

A response works it out left to right, one step per addition, then gives the answer::

     7+12=19, 19+5=24. answer 24.

or skips the work and answers at once (`` answer 24.``), which a small model can do for two
terms (one addition, as a step) but seldom for four or five.

The **verifier** (the reward of RL with verifiable rewards) gives 1 for a response in this form
whose answer is the true sum, and 0 otherwise, whatever its steps say. The simulation knows more
than the verifier: the truth of each step (for process rewards) and the length.

Pretraining: a corpus of sums (``make_corpus``), a third answered at once and the rest worked
step by step, a third of the scratchpads with a slip (one step off by 1 to 3, carried on to the
answer), so a base model knows both right and wrong habits. SFT demonstrations are always right,
but their demonstrators answer at once half the time (``P_DIRECT_DEMO``), as people do: the SFT
policy inherits the habit, and with it wrong answers on long sums that only using the scratchpad
avoids. That is the room RL with the verifier has: it can learn *when to show the work*.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from minirlhf.config import command_hint

MIN_TERMS, MAX_TERMS = 2, 5  # the difficulty range
MAX_OPERAND = 20  # terms are 1..MAX_OPERAND
P_SLIP = 1 / 3  # share of corpus scratchpads with one wrong step
P_DIRECT = 1 / 3  # share of corpus lines answered at once, without a scratchpad
P_DIRECT_DEMO = 1 / 2  # share of SFT demonstrations answered at once
N_EVAL_PER_DIFFICULTY = 32  # held-out evaluation prompts per number of terms
_PROMPT = re.compile(r"^(\d+(?:\+\d+)+)=\?$")
_STEP = re.compile(r"^(\d+)\+(\d+)=(\d+)$")
_RESPONSE = re.compile(r"^ (?:(.+)\. )?answer (\d+)\.$")


def make_prompt(rng: np.random.Generator, terms: int | None = None) -> str:
    """A sum of ``terms`` terms (2 to 5, drawn uniformly when None), e.g. ``"7+12+5=?"``."""
    n = int(rng.integers(MIN_TERMS, MAX_TERMS + 1)) if terms is None else terms
    values = rng.integers(1, MAX_OPERAND + 1, size=n)
    return "+".join(str(int(v)) for v in values) + "=?"


def parse_prompt(prompt: str) -> list[int]:
    """The terms of a prompt; a malformed prompt is an error naming it."""
    m = _PROMPT.match(prompt)
    if not m:
        raise ValueError(f"scratchpad: not a prompt: {prompt!r}")
    return [int(t) for t in m.group(1).split("+")]


def difficulty(prompt: str) -> int:
    """The number of terms of a prompt (2 to 5)."""
    return len(parse_prompt(prompt))


def worked(terms: list[int], slip_at: int | None = None, slip: int = 0) -> str:
    """The scratchpad for ``terms``; with ``slip_at = k`` the k-th step's result is off by
    ``slip`` and the error is carried on to the answer (the later steps add correctly).

    >>> worked([7, 12, 5])
    ' 7+12=19, 19+5=24. answer 24.'
    >>> worked([7, 12, 5], slip_at=0, slip=1)
    ' 7+12=20, 20+5=25. answer 25.'
    """
    steps, total = [], terms[0]
    for k, term in enumerate(terms[1:]):
        result = total + term + (slip if k == slip_at else 0)
        steps.append(f"{total}+{term}={result}")
        total = result
    return " " + ", ".join(steps) + f". answer {total}."


def direct(terms: list[int]) -> str:
    """The answer without the work.

    >>> direct([7, 12, 5])
    ' answer 24.'
    """
    return f" answer {sum(terms)}."


def parse_response(response: str) -> tuple[list[tuple[int, int, int]], int] | None:
    """([(a, b, c) per step], answer) of a response in the valid form (no steps for a direct
    answer), or None."""
    m = _RESPONSE.match(response)
    if not m:
        return None
    steps: list[tuple[int, int, int]] = []
    for text in (m.group(1).split(", ") if m.group(1) is not None else []):
        s = _STEP.match(text)
        if not s:
            return None
        steps.append((int(s.group(1)), int(s.group(2)), int(s.group(3))))
    return steps, int(m.group(2))


def verify(prompt: str, response: str, finished: bool = True) -> float:
    """The verifier: 1.0 for a finished response in the valid form whose answer is the sum of
    the prompt's terms, else 0.0. It reads the answer only, not the steps.

    >>> verify("7+12+5=?", " 7+12=19, 19+5=24. answer 24.")
    1.0
    >>> verify("7+12+5=?", " 7+12=20, 20+5=25. answer 25.")
    0.0
    >>> verify("7+12+5=?", " answer 24.")
    1.0
    >>> verify("7+12+5=?", " answer 23.")
    0.0
    """
    parsed = parse_response(response) if finished else None
    return float(parsed is not None and parsed[1] == sum(parse_prompt(prompt)))


def step_truths(prompt: str, response: str) -> list[bool] | None:
    """For each step of a valid response, whether it is right and follows the prompt (its first
    operands are the running total the previous step reached, its second the next term): what a
    process reward would know; [] for a direct answer. None for a response that does not
    parse."""
    parsed = parse_response(response)
    if parsed is None:
        return None
    terms, (steps, _) = parse_prompt(prompt), parsed
    truths, total = [], terms[0]
    for k, (a, b, c) in enumerate(steps):
        term = terms[k + 1] if k + 1 < len(terms) else None
        truths.append(a == total and b == term and c == a + b)
        total = c
    return truths


def well_formed(text: str) -> bool:
    """A whole line (prompt + response), as the corpus writes them, parses."""
    head, mark, tail = text.partition("?")
    return bool(mark) and _PROMPT.match(head + mark) is not None and \
        parse_response(tail) is not None


def demonstration(prompt: str, rng: np.random.Generator) -> str:
    """A demonstrator that is always right and shows the work half the time (P_DIRECT_DEMO)."""
    terms = parse_prompt(prompt)
    return direct(terms) if rng.random() < P_DIRECT_DEMO else worked(terms)


def uses_scratchpad(response: str) -> bool:
    """The response works the sum out in steps (not a direct answer, and valid)."""
    parsed = parse_response(response)
    return parsed is not None and len(parsed[0]) > 0


def eval_prompts() -> tuple[str, ...]:
    """The fixed held-out evaluation prompts: N_EVAL_PER_DIFFICULTY of each difficulty, from a
    seed of their own; ``sample_prompt`` never draws one of them."""
    rng = np.random.default_rng(4242)
    out: list[str] = []
    for terms in range(MIN_TERMS, MAX_TERMS + 1):
        seen: set[str] = set()
        while len(seen) < N_EVAL_PER_DIFFICULTY:
            seen.add(make_prompt(rng, terms))
        out += sorted(seen)
    return tuple(out)


_HELD_OUT = frozenset(eval_prompts())


def sample_prompt(rng: np.random.Generator) -> str:
    """A training prompt: any sum but the held-out evaluation prompts."""
    while True:
        prompt = make_prompt(rng)
        if prompt not in _HELD_OUT:
            return prompt


def make_corpus(n: int, seed: int) -> list[str]:
    """``n`` prompt + response lines for pretraining (never a held-out prompt): a third
    (P_DIRECT) answered at once, rightly; the others worked, right except that a third of them
    (P_SLIP) hold one slip of 1 to 3 at a random step, carried on to the answer."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        prompt = sample_prompt(rng)
        terms = parse_prompt(prompt)
        if rng.random() < P_DIRECT:
            lines.append(prompt + direct(terms))
        elif rng.random() < P_SLIP:
            slip = int(rng.integers(1, 4)) * (1 if rng.random() < 0.5 else -1)
            k = int(rng.integers(len(terms) - 1))
            if sum(terms[: k + 2]) + slip < 0:  # sums stay natural numbers
                slip = -slip
            lines.append(prompt + worked(terms, k, slip))
        else:
            lines.append(prompt + worked(terms))
    return lines


def accuracy_by_difficulty(prompts: list[str], rewards: list[float]) -> dict[int, float]:
    """{number of terms: mean verifier reward} over the given prompts."""
    out: dict[int, list[float]] = {}
    for p, r in zip(prompts, rewards, strict=True):
        out.setdefault(difficulty(p), []).append(r)
    return {k: float(np.mean(v)) for k, v in sorted(out.items())}


# The two commands that make the scratchpad world's SFT policy (GRPO's default start point): a
# base model pretrained on worked sums, a third with a slip, and SFT on right ones.
def scratchpad_route(sft: str | Path, absolute: bool = True) -> str:
    """The two commands (``command_hint``) that make the scratchpad world's SFT policy at
    ``sft`` (``<run>/sft/model.npz``, its base model in ``<run>/pretrain/``), in a sentence:
    "make it with `...`" (when ``sft`` is not named model.npz, "make one with `...` (it writes
    <run>/sft/model.npz)")."""
    sft = Path(sft).absolute() if absolute else Path(sft)
    made = sft.parent / "model.npz"
    pre = sft.parent.parent / "pretrain"
    command = command_hint(
        ["python", "-m", "minirlhf", "pretrain", "--set", "task=scratchpad",
         "corpus=scratchpad", f"out_dir={pre}"],
        ["python", "-m", "minirlhf", "sft", "--set", "task=scratchpad",
         f"init={pre / 'model.npz'}", "steps=600", "n_demos=8000", f"out_dir={sft.parent}"])
    return f"make it with {command}" if sft == made else \
        f"make one with {command} (it writes {made})"
