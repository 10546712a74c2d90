"""The scratchpad world: prompts by difficulty, the verifier, step truths, the corpus."""

import doctest

import numpy as np
import pytest

from minirlhf.lm.tokenizer import CharTokenizer
from minirlhf.world import get_task, scratchpad
from minirlhf.world.scratchpad import (
    accuracy_by_difficulty,
    difficulty,
    eval_prompts,
    make_corpus,
    parse_response,
    sample_prompt,
    step_truths,
    uses_scratchpad,
    verify,
    worked,
)


def test_docstring_examples():
    assert doctest.testmod(scratchpad).failed == 0


@pytest.mark.parametrize("response, reward", [
    (" 7+12=19, 19+5=24. answer 24.", 1.0),
    (" 7+12=20, 20+5=25. answer 25.", 0.0),  # a slip carried to the answer
    (" 7+12=20, 20+5=25. answer 24.", 1.0),  # right answer, wrong steps: the verifier
    # reads only the answer (step_truths knows better)
    (" 7+12=19, 19+5=24. answer 24", 0.0),  # unfinished form
    (" answer 24.", 1.0),  # a direct answer, right
    (" answer 23.", 0.0),  # a direct answer, wrong
    (" 7+12=19 19+5=24. answer 24.", 0.0),
    (" the answer is 24.", 0.0),
])
def test_the_verifier(response, reward):
    assert verify("7+12+5=?", response) == reward


def test_an_unfinished_response_scores_zero():
    assert verify("7+12+5=?", " 7+12=19, 19+5=24. answer 24.", finished=False) == 0.0


def test_step_truths():
    assert step_truths("7+12+5=?", " 7+12=19, 19+5=24. answer 24.") == [True, True]
    assert step_truths("7+12+5=?", " 7+12=20, 20+5=25. answer 25.") == [False, True]
    assert step_truths("7+12+5=?", " 7+12=20, 20+5=24. answer 24.") == [False, False]
    assert step_truths("7+12+5=?", " 7+11=18, 18+5=23. answer 23.") == [False, True]
    assert step_truths("7+12+5=?", " 7+12=19. answer 19.") == [True]  # a step missing
    assert step_truths("7+12+5=?", " answer 24.") == []  # no steps to judge
    assert step_truths("7+12+5=?", " answer: 24.") is None


def test_prompts_by_difficulty_and_held_out():
    held = eval_prompts()
    assert len(held) == 4 * 32 and len(set(held)) == len(held)
    assert [difficulty(p) for p in held[::32]] == [2, 3, 4, 5]
    rng = np.random.default_rng(0)
    drawn = [sample_prompt(rng) for _ in range(5000)]
    assert not set(drawn) & set(held)  # never a held-out prompt
    assert set(difficulty(p) for p in drawn) == {2, 3, 4, 5}


def test_corpus_is_reproducible_well_formed_and_holds_slips():
    a, b = make_corpus(3000, seed=7), make_corpus(3000, seed=7)
    assert a == b
    tok = CharTokenizer()
    assert all(scratchpad.well_formed(line) for line in a)
    assert max(len(line) for line in a) + 2 <= 128  # fits the block size with BOS and EOS
    for line in a[:50]:
        tok.encode(line)  # every character in the alphabet
    right = np.array([verify(line.split("?")[0] + "?", line.split("?", 1)[1]) for line in a])
    shown = np.array([uses_scratchpad(line.split("?", 1)[1]) for line in a])
    assert 0.30 < 1 - shown.mean() < 0.37  # a third answered at once ...
    assert right[~shown].all()  # ... and rightly
    assert 0.6 < right[shown].mean() < 0.72  # a third of the scratchpads slip
    held = set(eval_prompts())
    assert not {line.split("?")[0] + "?" for line in a} & held
    assert not any("-" in line for line in a)  # a slip never makes a sum negative


def test_demonstrations_are_right_and_a_slip_can_reach_zero():
    rng = np.random.default_rng(1)
    task = get_task("scratchpad")
    shown = []
    for _ in range(200):
        p = task.sample_prompt(rng)
        demo = task.demonstration(p, rng)
        assert task.gold(p, demo, True) == 1.0 and task.valid(p, demo, True)
        assert all(step_truths(p, demo))
        shown.append(uses_scratchpad(demo))
    assert 0.4 < np.mean(shown) < 0.6  # the demonstrators show their work half the time
    assert parse_response(worked([1, 1], slip_at=0, slip=-2)) is not None  # 1+1=0 parses


def test_accuracy_by_difficulty():
    prompts = ["1+2=?", "3+4=?", "1+2+3=?"]
    assert accuracy_by_difficulty(prompts, [1.0, 0.0, 1.0]) == {2: 0.5, 3: 1.0}
