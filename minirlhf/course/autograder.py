"""The exercises as an nbgrader assignment: one autograder test cell per exercise, worth its points.

nbgrader (https://nbgrader.readthedocs.io) marks solutions with the markers minirlhf uses (see
``minirlhf.course.classroom``) and grades a notebook by running it: a test cell that runs without
an error earns its points. Our exercises live in the library, not in a
notebook, so the assignment is one notebook, ``grade.ipynb``, whose test cells each run one
exercise's check (``check("gae")``) against the ``minirlhf`` package beside it, which is the
student's: a submission is the student copy's ``minirlhf/`` folder with ``grade.ipynb``.

``write_course(folder)`` writes an nbgrader course: ``nbgrader_config.py`` and
``source/exercises/grade.ipynb`` (``python -m minirlhf classroom nbgrader FOLDER``); nbgrader
itself (``pip install -e ".[teaching]"``) releases, collects and grades it (docs/teaching.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from minirlhf.course.exercises import CHAPTERS, EXERCISES, POINTS, run_checks

ASSIGNMENT = "exercises"  # the assignment's name in the course
NOTEBOOK = "grade.ipynb"


def check(name: str) -> str:
    """Run one exercise's check; raise AssertionError with its one-line message unless it
    passes (an nbgrader test cell that raises earns 0 points)."""
    (result,) = run_checks(name)
    if result.status != "pass":
        raise AssertionError(f"{name}: {result.status}: {result.message}")
    return f"{name}: pass: {result.message}"


def _cell(kind: str, source: str, grade_id: str, points: float | None = None) -> dict:
    meta = {"grade": points is not None, "grade_id": grade_id, "locked": True,
            "schema_version": 3, "solution": False}
    if points is not None:
        meta["points"] = points
    cell = {"cell_type": kind, "id": grade_id, "metadata": {"nbgrader": meta, "editable": False,
                                                            "deletable": False},
            "source": source}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def notebook() -> dict:
    """grade.ipynb: a read-only notebook, one autograder test cell per exercise of the registry,
    with its points from ``POINTS``."""
    total = sum(POINTS.values())
    cells = [
        _cell("markdown", "# minirlhf: the exercises, graded\n\nEach cell below runs one "
              "exercise's check (`python -m minirlhf classroom check NAME`) on the `minirlhf` "
              "folder beside this notebook, and earns the exercise's points when it passes "
              f"({len(EXERCISES)} exercises, {total:g} points). Nothing here is yours to edit: "
              "the exercises are in the library.", "intro"),
        _cell("code", "import minirlhf\n\nfrom minirlhf.course.autograder import check\n\n"
              "print('graded:', minirlhf.__file__)", "setup"),
    ]
    for ex in EXERCISES:
        k = [e.name for e in EXERCISES if e.chapter == ex.chapter].index(ex.name) + 1
        points = POINTS[ex.name]
        cells.append(_cell("code", f"# exercise {ex.chapter}.{k} ({CHAPTERS[ex.chapter]}): "
                           f"{ex.what}; {points:g} point{'s' * (points != 1)}\n"
                           f"print(check({ex.name!r}))", f"check-{ex.name}", points))
    return {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3",
                                                        "language": "python", "name": "python3"},
                                         "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def write_course(folder: str | Path) -> list[Path]:
    """Write an nbgrader course in ``folder`` (made if needed): its ``nbgrader_config.py``
    (unless one is there) and ``source/exercises/grade.ipynb`` (rewritten). Returns the files
    written."""
    folder = Path(folder)
    source = folder / "source" / ASSIGNMENT / NOTEBOOK
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(json.dumps(notebook(), indent=1, ensure_ascii=False) + "\n")
    written = [source]
    config = folder / "nbgrader_config.py"
    if not config.exists():
        config.write_text(
            "# nbgrader's configuration for the minirlhf exercises "
            "(python -m minirlhf classroom nbgrader)\n"
            "# (run nbgrader from this folder: it is the course's root)\n"
            "c = get_config()  # noqa: F821\n"
            "# a check builds a small GPT at most: a few seconds each\n"
            "c.ExecutePreprocessor.timeout = 300\n")
        written.append(config)
    return written
