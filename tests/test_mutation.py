"""Mutation test of the exercises: every check must catch plausible wrong solutions, not only
pass the right one. Each mutant of ``tests/mutants.py`` rewrites one solution region in a scratch
copy of the package; the exercise's check, run there in a fresh interpreter, must FAIL with a
message that says what is wrong. Marked ``mutation`` (about a minute): ``pytest -m mutation``,
which CI runs too."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minirlhf.course.classroom import BEGIN, END
from minirlhf.course.exercises import EXERCISES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutants import MUTANTS, Mutant  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = {ex.name: ex.chapter for ex in EXERCISES}
RUN = """
import json, sys
import minirlhf
from minirlhf.course.exercises import run_checks
(r,) = run_checks(sys.argv[1])  # the one exercise
print(json.dumps({"status": r.status, "message": r.message, "package": minirlhf.__file__}))
"""


def test_every_exercise_has_three_mutants_and_every_mutant_names_an_exercise():
    for ex in EXERCISES:
        assert sum(m.exercise == ex.name for m in MUTANTS) >= 3, ex.name
    assert {m.exercise for m in MUTANTS} <= set(CHAPTER)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    root = tmp_path_factory.mktemp("mutants")
    shutil.copytree(ROOT / "minirlhf", root / "minirlhf",
                    ignore=shutil.ignore_patterns("__pycache__", "corpora"))
    return root


def _in_a_region(text: str, start: int) -> bool:
    before = text[:start]
    return before.rfind(BEGIN) > before.rfind(END)


@pytest.mark.mutation
@pytest.mark.parametrize("mutant", MUTANTS, ids=[f"{m.exercise}: {m.why}" for m in MUTANTS])
def test_the_check_catches_the_mutant(scratch, mutant: Mutant):
    path = scratch / "minirlhf" / mutant.path
    original = path.read_text()
    assert original.count(mutant.old) == 1, f"{mutant.path}: {mutant.old!r} is not unique"
    assert _in_a_region(original, original.index(mutant.old)), "not in a solution region"
    path.write_text(original.replace(mutant.old, mutant.new))
    try:
        run = subprocess.run([sys.executable, "-c", RUN, mutant.exercise], cwd=scratch,
                             capture_output=True, text=True, timeout=300)
    finally:
        path.write_text(original)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(result["package"]).resolve().is_relative_to(scratch.resolve())
    assert result["status"] == "FAIL", f"{mutant.why}: the check says {result['message']!r}"
    assert mutant.says in result["message"], result["message"]
    assert not re.search(r"(got|off by) -?(nan|inf)\b", result["message"]), \
        f"a NaN or an infinity should be reported in words: {result['message']!r}"
