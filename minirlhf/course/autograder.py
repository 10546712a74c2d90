"""Grading submissions with the teacher's checks: a plain command, or an nbgrader assignment.

A submission is a student copy's ``minirlhf/`` folder (with ``grade.ipynb`` beside it, for
nbgrader). It is graded by the checks, recorded values and points of the **teacher's** copy, the
``minirlhf/course/`` folder this file lives in (``GRADING``), never by those the submission holds:
a student who edits a check, ``expected.npz`` or ``POINTS`` changes nothing, and points the
teacher reweights after handing out count.

- ``grade(folder)`` (``python -m minirlhf classroom grade FOLDER``): copies the submission's
  ``minirlhf/`` aside, puts this copy's ``course/`` in place of its own, runs every check there in
  fresh Python processes (which import the submission's package; a check that hangs or ends the
  process fails alone), and renders the results with this copy's points.
- ``write_course(folder)`` (``python -m minirlhf classroom nbgrader FOLDER``) writes an nbgrader
  course (https://nbgrader.readthedocs.io): ``nbgrader_config.py``,
  ``source/exercises/grade.ipynb``, one read-only test cell per exercise that runs its check
  (``check("gae")``) and earns its points, and ``source/exercises/minirlhf/course/``, this copy's
  grading files, which nbgrader copies over each submission's before grading it (its "master
  versions"). nbgrader itself (``pip install -e ".[teaching]"``) releases, collects and grades
  (docs/teaching.md).

Either way the student's code runs in the grading process, as in any autograder that imports it:
these guard against a missing or misplaced folder and against edited grading files, not against
a student who sets out to subvert the grader from the library's own code.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from minirlhf.course.classroom import IGNORED
from minirlhf.course.exercises import CHAPTERS, EXERCISES, POINTS, CheckResult, run_checks
from minirlhf.course.grades import STATUS

ASSIGNMENT = "exercises"  # the assignment's name in the course
NOTEBOOK = "grade.ipynb"
GRADING = Path(__file__).resolve().parent  # this copy's checks, recorded values and points
TIMEOUT = 60  # seconds for one exercise's check (a check takes a few at most)


class SubmissionError(ValueError):
    """A submission that cannot be graded: the message names the folder and what is missing."""


def graded_package(folder: str | Path) -> Path:
    """The submission's package: ``folder/minirlhf``, or the one ``*/minirlhf`` a level down
    when there is exactly one (an unpacked upload, say); one line naming the problem if not."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SubmissionError(f"{folder}: no such folder")
    package = folder / "minirlhf"
    if (package / "__init__.py").is_file():
        return package
    below = sorted(p.parent for p in folder.glob("*/minirlhf/__init__.py"))
    if len(below) == 1:
        return below[0]
    raise SubmissionError(f"{folder} has no minirlhf/ folder (a submission is a student copy's "
                          "minirlhf/ folder)" + (f"; {len(below)} a level down: grade one of "
                                                 f"{', '.join(str(b.parent) for b in below)}"
                                                 if below else ""))


def check(name: str) -> str:
    """Run one exercise's check; raise AssertionError with its one-line message unless it
    passes (an nbgrader test cell that raises earns 0 points). The ``minirlhf`` graded must be
    the folder beside the notebook: without one, Python would import an installed copy (the
    teacher's, solutions and all) and grade that."""
    graded = Path(__file__).resolve().parents[1]  # the package this file was imported from
    if graded != (Path.cwd() / "minirlhf").resolve():
        raise AssertionError(f"{name}: not graded: there is no minirlhf/ folder beside "
                             f"{NOTEBOOK} in {Path.cwd()} (Python found the one at {graded}); "
                             "a submission is a student copy's minirlhf/ folder and "
                             f"{NOTEBOOK}")
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
        _cell("code", "from pathlib import Path\n\n"
              "# the submission's own minirlhf/, beside this notebook, not an installed copy\n"
              "assert (Path.cwd() / 'minirlhf' / '__init__.py').is_file(), (\n"
              f"    'nothing to grade: no minirlhf/ folder beside {NOTEBOOK} (a submission is a '\n"
              f"    \"student copy's minirlhf/ folder and {NOTEBOOK})\")\n"
              "import minirlhf\n"
              "from minirlhf.course.autograder import check\n\n"
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


# run in the submission's copy by a fresh interpreter: for each exercise named, a line when its
# check starts and one with its result, flushed as they come (a check that hangs or kills the
# process is then known by name)
_RUN = """import json, sys
from pathlib import Path
import minirlhf
if Path(minirlhf.__file__).resolve().parent != (Path.cwd() / "minirlhf").resolve():
    sys.exit("graded " + minirlhf.__file__ + ", not the submission")
from minirlhf.course.exercises import run_checks
with open(sys.argv[1], "a") as out:
    for name in sys.argv[2:]:
        out.write(json.dumps([name]) + "\\n")
        out.flush()
        (r,) = run_checks(name)
        out.write(json.dumps([name, r.status, r.message]) + "\\n")
        out.flush()
"""


def grade(folder: str | Path, timeout: float = TIMEOUT) -> list[CheckResult]:
    """Every exercise's check on the submission in ``folder`` (its ``minirlhf/``), with this
    copy's checks and recorded values, in fresh Python processes; one result per exercise of this
    copy's registry. A check that runs longer than ``timeout`` seconds, or ends the process,
    fails that exercise with one line saying so, and the others run on in a new process; a
    package that does not import fails every exercise, with its error."""
    package = graded_package(folder)
    reported: dict[str, tuple[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="minirlhf-grade-") as tmp:
        work = Path(tmp)
        shutil.copytree(package, work / "minirlhf", ignore=IGNORED)
        shutil.rmtree(work / "minirlhf" / "course", ignore_errors=True)
        shutil.copytree(GRADING, work / "minirlhf" / "course", ignore=IGNORED)
        todo = [ex.name for ex in EXERCISES]
        while todo:
            running, why = _run_checks(work, todo, timeout, reported)
            if running is not None:  # this check hung, or ended the process: it fails alone
                reported[running] = ("FAIL", why)
            else:  # the package does not import, or the process ended between two checks
                reported.update((n, ("FAIL", why or "not reported by the checks"))
                                for n in todo if n not in reported)
            todo = [n for n in todo if n not in reported]
    results = []
    for ex in EXERCISES:
        status, message = reported.get(ex.name, ("FAIL", "not reported by the checks"))
        if status not in STATUS:
            status, message = "FAIL", f"an unknown status {status!r}"
        results.append(CheckResult(ex, status, message))
    return results


def _run_checks(work: Path, names: list[str], timeout: float,
                reported: dict[str, tuple[str, str]]) -> tuple[str | None, str]:
    """One process running the checks ``names`` in ``work``, each result added to ``reported``
    as it comes, stopped when a check runs past ``timeout`` seconds. Returns the exercise whose
    check was running when the process ended (None if none was) and why it ended early ("" if
    it ran every check)."""
    out, err = work / "results.jsonl", work / "stderr.txt"
    out.write_text("")
    with open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", _RUN, str(out), *names], cwd=work,
                                stdout=subprocess.DEVNULL, stderr=stderr)
        running, since, read = None, time.monotonic(), 0
        while True:
            ended = proc.poll() is not None
            text = out.read_text()
            for line in text[: text.rfind("\n") + 1].splitlines()[read:]:  # whole lines only
                read += 1
                row = json.loads(line)
                if len(row) == 1:  # a check starts
                    running = row[0]
                else:
                    reported[row[0]], running = (row[1], row[2]), None
                since = time.monotonic()
            if ended:
                break
            if time.monotonic() - since > timeout:
                proc.kill()
                proc.wait()
                if running is None:  # the import, or between two checks
                    return None, (f"the submission's minirlhf did not load within {timeout:g} s "
                                  "(a loop that never ends?)")
                return running, (f"the check did not finish within {timeout:g} s (a loop that "
                                 "never ends?)")
            time.sleep(0.02)
    why = _why_it_ended(proc.returncode, err.read_text())
    if running is not None:
        return running, f"the process ended during this check ({why})"
    if read == 0:
        return None, f"the submission's minirlhf does not run ({why})"
    return None, "" if all(n in reported for n in names) else f"the process ended ({why})"


def _why_it_ended(code: int, stderr: str) -> str:
    """The last line the process wrote to stderr (its uncaught exception, say), and how it
    ended unless that was such an exception's exit code 1: another exit code, or the signal
    that killed it."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    if lines:
        return lines[-1].strip() if code == 1 else f"{how}: {lines[-1].strip()}"
    return how + ("" if code < 0 else ", no message: a sys.exit() or os._exit() in the "
                  "submission?")


def write_course(folder: str | Path) -> list[Path]:
    """Write an nbgrader course in ``folder`` (made if needed): its ``nbgrader_config.py``
    (unless one is there), ``source/exercises/grade.ipynb`` and ``source/exercises/minirlhf/
    course/``, this copy's grading files (both rewritten). Returns the files written."""
    folder = Path(folder)
    source = folder / "source" / ASSIGNMENT / NOTEBOOK
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(json.dumps(notebook(), indent=1, ensure_ascii=False) + "\n")
    written = [source]
    master = source.parent / "minirlhf" / "course"  # nbgrader's master versions of these files
    shutil.rmtree(master, ignore_errors=True)
    shutil.copytree(GRADING, master, ignore=IGNORED)
    written += sorted(p for p in master.iterdir() if p.is_file())
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
