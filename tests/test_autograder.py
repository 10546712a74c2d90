"""One real autograder end to end: nbgrader grades a solved copy, an unsolved one, one with a
single file solved, one without its minirlhf/ folder and an unsolved one whose own checks pass
everything, from the course ``python -m minirlhf classroom nbgrader`` writes. nbgrader is
the teaching extra (``pip install -e ".[teaching]"``); without it the test is skipped, and it
installs nothing. Marked ``notebooks`` (nbgrader runs the grading notebook in a Jupyter kernel,
once per submission; about 30 s): ``pytest -m notebooks``."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minirlhf.course.autograder import ASSIGNMENT, NOTEBOOK, write_course
from minirlhf.course.classroom import make_student
from minirlhf.course.exercises import EXERCISES, POINTS

ROOT = Path(__file__).resolve().parent.parent
SOLVED_FILE = "world/ai_labelers.py"  # the partial submission: the student copy with this solved


def _nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    """``nbgrader ARGS`` run in the course folder by this interpreter (its scripts, alembic among
    them, on the PATH)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)  # each submission imports its own minirlhf, from its folder
    run = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return run


@pytest.mark.notebooks
def test_nbgrader_grades_a_solved_an_unsolved_and_a_partly_solved_copy(tmp_path):
    pytest.importorskip("nbgrader", reason="nbgrader is the teaching extra: pip install -e "
                                           "'.[teaching]'")
    from nbgrader.api import Gradebook

    course = tmp_path / "course"
    write_course(course)
    _nbgrader(course, "generate_assignment", ASSIGNMENT)
    released = course / "release" / ASSIGNMENT / NOTEBOOK
    assert released.exists()
    student = tmp_path / "student"
    make_student(ROOT, student)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    packages = {"solved": ROOT / "minirlhf", "unsolved": student / "minirlhf",
                "partial": student / "minirlhf"}
    for name, package in packages.items():
        folder = course / "submitted" / name / ASSIGNMENT
        folder.mkdir(parents=True)
        shutil.copy(released, folder / NOTEBOOK)
        shutil.copytree(package, folder / "minirlhf", ignore=ignore)
    shutil.copy(ROOT / "minirlhf" / SOLVED_FILE,
                course / "submitted" / "partial" / ASSIGNMENT / "minirlhf" / SOLVED_FILE)
    # a submission without its minirlhf/ (an installed copy, the teacher's here, must not be
    # graded in its place), and an unsolved one whose checks pass everything: nbgrader puts the
    # course's own grading files (its master versions) over the submission's
    missing = course / "submitted" / "missing" / ASSIGNMENT
    missing.mkdir(parents=True)
    shutil.copy(released, missing / NOTEBOOK)
    edited = course / "submitted" / "edited" / ASSIGNMENT
    edited.mkdir(parents=True)
    shutil.copy(released, edited / NOTEBOOK)
    shutil.copytree(student / "minirlhf", edited / "minirlhf", ignore=ignore)
    checks = edited / "minirlhf" / "course" / "exercises.py"
    text = checks.read_text().replace('CheckResult(ex, "pass", ex.check())',
                                      'CheckResult(ex, "pass", "edited")')
    assert '"edited"' in text
    checks.write_text(text)
    _nbgrader(course, "autograde", ASSIGNMENT, "--create")

    module = SOLVED_FILE.removesuffix(".py").replace("/", ".") + "."
    in_file = {e.name for e in EXERCISES if e.where.startswith(module)}
    assert in_file  # the exercises that file holds: the partial submission earns exactly those
    expected = {"solved": set(POINTS), "unsolved": set(), "partial": in_file, "missing": set(),
                "edited": set()}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        assert gb.find_assignment(ASSIGNMENT).max_score == sum(POINTS.values())
        for name, passing in expected.items():
            sub = gb.find_submission(ASSIGNMENT, name)
            assert sub.score == sum(POINTS[e] for e in passing), name
            for ex in EXERCISES:
                grade = gb.find_grade(f"check-{ex.name}", NOTEBOOK.removesuffix(".ipynb"),
                                      ASSIGNMENT, name)
                assert grade.max_score == POINTS[ex.name]
                assert grade.score == (POINTS[ex.name] if ex.name in passing else 0), \
                    (name, ex.name)
    graded = (course / "autograded" / "unsolved" / ASSIGNMENT / NOTEBOOK).read_text()
    assert str(course / "autograded" / "unsolved" / ASSIGNMENT / "minirlhf") in graded
    assert "not implemented yet (raised at" in graded  # the check's own one line, as feedback
    graded = (course / "autograded" / "missing" / ASSIGNMENT / NOTEBOOK).read_text()
    assert "nothing to grade: no minirlhf/ folder beside grade.ipynb" in graded
