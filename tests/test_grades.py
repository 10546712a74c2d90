"""Grades an autograder reads: ``classroom check --format json|gradescope|junit`` on the
teacher's copy (full points) and on a student copy (0 points), the points table, the help's
listing, the text table's columns, and a student's file that does not compile."""

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from minirlhf.course.classroom import make_student
from minirlhf.course.exercises import CHAPTERS, EXERCISES, POINTS, run_checks, select
from minirlhf.course.grades import render

ROOT = Path(__file__).resolve().parent.parent
TOTAL = sum(POINTS.values())


def _check(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """``classroom check`` run against the minirlhf in ``folder``."""
    return subprocess.run([sys.executable, "-m", "minirlhf", "classroom", "check", *args],
                          cwd=folder, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(folder)})


@pytest.fixture(scope="module")
def teacher():
    return run_checks()


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    out = tmp_path_factory.mktemp("grades") / "student"
    make_student(ROOT, out)
    return out


def _json_fields(report: dict, n: int) -> None:
    assert set(report) == {"points", "max_points", "counts", "exercises"}
    assert isinstance(report["points"], (int, float)) and report["max_points"] == TOTAL
    assert set(report["counts"]) == {"pass", "fail", "not implemented"}
    assert sum(report["counts"].values()) == len(report["exercises"]) == n
    for e in report["exercises"]:
        assert set(e) == {"id", "chapter", "status", "points", "max_points", "message"}
        assert isinstance(e["id"], str) and isinstance(e["chapter"], int)
        assert e["status"] in ("pass", "fail", "not implemented")
        assert isinstance(e["points"], (int, float)) and e["max_points"] == POINTS[e["id"]]
        assert e["points"] == (e["max_points"] if e["status"] == "pass" else 0)
        assert isinstance(e["message"], str) and e["message"]
    assert report["points"] == sum(e["points"] for e in report["exercises"])


def _gradescope_fields(results: dict, n: int) -> None:
    """Gradescope's results.json: a numeric top-level score, and each test a name, a numeric
    score and max_score, a status "passed" or "failed" and a string output."""
    assert isinstance(results["score"], (int, float)) and isinstance(results["output"], str)
    assert len(results["tests"]) == n
    for t in results["tests"]:
        assert set(t) <= {"name", "score", "max_score", "status", "output", "visibility",
                          "output_format", "number", "tags", "name_format", "extra_data"}
        assert isinstance(t["name"], str) and isinstance(t["output"], str)
        assert isinstance(t["score"], (int, float)) and isinstance(t["max_score"], (int, float))
        assert 0 <= t["score"] <= t["max_score"]
        assert t["status"] == ("passed" if t["score"] == t["max_score"] else "failed")
    assert results["score"] == sum(t["score"] for t in results["tests"])
    assert sum(t["max_score"] for t in results["tests"]) == TOTAL


def _junit_counts(xml: str) -> tuple[int, int]:
    """(tests, failures), parsed back with the standard library; the counts in the attributes
    agree with the elements, and nothing is skipped (not implemented is a failure)."""
    root = ET.fromstring(xml)
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    failures = [c for c in cases if c.find("failure") is not None]
    assert not suite.findall(".//skipped") and not suite.findall(".//error")
    for node in (root, suite):
        assert int(node.get("tests")) == len(cases)
        assert int(node.get("failures")) == len(failures)
    for c in failures:
        assert c.find("failure").get("message")
    assert all(c.get("name") and c.get("classname") for c in cases)
    return len(cases), len(failures)


def test_every_exercise_has_points_and_no_other_name_does():
    assert sorted(POINTS) == sorted(e.name for e in EXERCISES)
    assert all(isinstance(p, (int, float)) and p > 0 for p in POINTS.values())


def test_the_teachers_copy_gets_full_points_in_every_format(teacher):
    n = len(EXERCISES)
    report = json.loads(render(teacher, "json"))
    _json_fields(report, n)
    assert report["points"] == TOTAL and report["counts"]["pass"] == n
    results = json.loads(render(teacher, "gradescope"))
    _gradescope_fields(results, n)
    assert results["score"] == TOTAL
    assert _junit_counts(render(teacher, "junit")) == (n, 0)
    assert render(teacher, "text", "here").endswith(
        f"\n\n{n} pass, 0 fail, 0 not implemented: {TOTAL:g} of {TOTAL:g} points\n")


def test_classroom_check_gives_the_teachers_copy_every_point_and_a_student_copy_none(student):
    """The command an autograder runs, `classroom check --format gradescope`, on each copy: the
    full total on the teacher's, 0 of the same total on a fresh student copy."""
    for folder, score in ((ROOT, TOTAL), (student, 0)):
        run = _check(folder, "--format", "gradescope")
        assert run.returncode == (0 if score else 1), run.stderr
        results = json.loads(run.stdout)
        _gradescope_fields(results, len(EXERCISES))
        assert results["score"] == score


def test_a_student_copy_gets_no_points_in_every_format(student):
    n = len(EXERCISES)
    run = _check(student, "--format", "json")
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    _json_fields(report, n)
    assert report["points"] == 0 and report["counts"]["not implemented"] == n
    run = _check(student, "--format", "gradescope")
    results = json.loads(run.stdout)
    _gradescope_fields(results, n)
    assert results["score"] == 0 and {t["status"] for t in results["tests"]} == {"failed"}
    assert _junit_counts(_check(student, "--format", "junit").stdout) == (n, n)
    assert _check(student).stdout.endswith(f"0 pass, 0 fail, {n} not implemented: 0 of "
                                           f"{TOTAL:g} points\n")


def test_out_writes_the_report_to_a_file(tmp_path):
    out = tmp_path / "results" / "results.json"
    run = _check(ROOT, "4", "--format", "gradescope", "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert "3 of 3 points" in run.stdout and "tests" not in run.stdout
    assert json.loads(out.read_text())["score"] == 3
    assert [p.name for p in out.parent.iterdir()] == ["results.json"]  # no temporary file left


def test_the_text_table_keeps_its_columns_for_every_chapter(teacher):
    rows = render(teacher, "text", "here").splitlines()[1:len(teacher) + 1]
    for r, row in zip(teacher, rows, strict=True):
        assert row[5:].startswith(r.exercise.name) and row[28:].startswith(r.status), row


def test_the_help_lists_chapters_and_exercises_and_a_chapter_takes_one_exercise():
    run = subprocess.run([sys.executable, "-m", "minirlhf", "classroom", "check", "--help"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    for name in [*CHAPTERS.values(), *(e.name for e in EXERCISES)]:
        assert name in run.stdout, name
    assert [e.name for e in select("1", "softmax-backward")] == ["softmax-backward"]
    with pytest.raises(ValueError, match="'gae' is not an exercise of '1'"):
        select("1", "gae")


@pytest.mark.parametrize("rel, bad, error, names", [
    ("objectives/reward.py", "      x = 1\n", "IndentationError",
     ["bradley-terry", "plackett-luce"]),
    ("world/ai_labelers.py", "def broken(:\n", "SyntaxError",
     ["constitution-score", "constitution-choice", "gold-agreement"]),
])
def test_a_file_that_does_not_compile_fails_its_exercises_in_one_line(student, tmp_path, rel,
                                                                      bad, error, names):
    """A student's file with an IndentationError or a SyntaxError: one line naming the file and
    line for each exercise in it (no traceback), which count as failed; the others still run."""
    work = tmp_path / "work"
    shutil.copytree(student / "minirlhf", work / "minirlhf")
    path = work / "minirlhf" / rel
    text = path.read_text()
    line = text.count("\n") + 2  # after a blank line at the end
    path.write_text(text + "\n" + bad)
    run = _check(work, "--format", "json")
    assert run.returncode == 1 and "Traceback" not in run.stdout + run.stderr, run.stderr
    by_id = {e["id"]: e for e in json.loads(run.stdout)["exercises"]}
    for name in names:
        assert by_id[name]["status"] == "fail" and by_id[name]["points"] == 0
        assert by_id[name]["message"].startswith(f"minirlhf/{rel}:{line}: {error}: "), \
            by_id[name]["message"]
        assert "\n" not in by_id[name]["message"]
    assert by_id["softmax-backward"]["status"] == "not implemented"  # the others ran


# ------------------------------------------------------------- grading a submission
def _grade(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """``classroom grade FOLDER`` run from the teacher's copy."""
    return subprocess.run([sys.executable, "-m", "minirlhf", "classroom", "grade", str(folder),
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def _submission(student: Path, tmp_path: Path, solved: str | None = None) -> Path:
    """A submission: the student copy's minirlhf/ folder, with one file solved if asked."""
    folder = tmp_path / "submitted"
    shutil.copytree(student / "minirlhf", folder / "minirlhf",
                    ignore=shutil.ignore_patterns("__pycache__"))
    if solved:
        shutil.copy(ROOT / "minirlhf" / solved, folder / "minirlhf" / solved)
    return folder


def test_grade_uses_the_teachers_checks_and_points_not_the_submissions(student, tmp_path):
    """A submission whose own checks pass everything, whose recorded values are gone and whose
    points are doubled is graded by the teacher's: the one file it solved earns exactly its
    exercises' points."""
    folder = _submission(student, tmp_path, solved="world/ai_labelers.py")
    course = folder / "minirlhf" / "course"
    exercises = course / "exercises.py"
    text = exercises.read_text()
    text = text.replace("results.append(CheckResult(ex, \"pass\", ex.check()))",
                        "results.append(CheckResult(ex, \"pass\", \"edited\"))")
    assert "\"edited\"" in text
    exercises.write_text(text.replace(": 1,", ": 2,"))
    (course / "expected.npz").unlink()
    assert json.loads(_check(folder, "--format", "json").stdout)["points"] == 2 * TOTAL

    run = _grade(folder, "--format", "json")
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    _json_fields(report, len(EXERCISES))
    passing = {e["id"] for e in report["exercises"] if e["status"] == "pass"}
    assert passing == {e.name for e in EXERCISES if e.where.startswith("world.ai_labelers.")}
    assert report["points"] == sum(POINTS[e] for e in passing)
    assert exercises.read_text() == text.replace(": 1,", ": 2,")  # the submission is left as
    assert not (course / "expected.npz").exists()  # it was: its edits stay, nothing put back


def test_grade_gives_the_teachers_copy_every_point(tmp_path):
    out = tmp_path / "results.json"
    run = _grade(ROOT, "--format", "gradescope", "--out", str(out))
    assert run.returncode == 0, run.stderr
    results = json.loads(out.read_text())
    _gradescope_fields(results, len(EXERCISES))
    assert results["score"] == TOTAL


def test_grade_refuses_a_folder_without_minirlhf_in_one_line(student, tmp_path):
    """No package beside it: nothing is graded (an installed copy would be the teacher's); one
    a level down (an unpacked upload) is graded; two a level down are named. With --out, an
    autograder still gets its report: 0 points and the reason."""
    ignore = shutil.ignore_patterns("__pycache__")
    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(student / "minirlhf", one / "minirlhf-student" / "minirlhf", ignore=ignore)
    for name in ("a", "b"):
        shutil.copytree(student / "minirlhf", two / name / "minirlhf", ignore=ignore)
    (tmp_path / "empty").mkdir()
    for folder, said in (
            (tmp_path / "nobody", "nobody: no such folder"),
            (tmp_path / "empty", "empty has no minirlhf/ folder (a submission is a student "
                                 "copy's minirlhf/ folder)\n"),
            (two, f"; 2 a level down: grade one of {two / 'a'}, {two / 'b'}")):
        run = _grade(folder)
        assert run.returncode == 2 and not run.stdout
        assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: "), run.stderr
        assert said in run.stderr, run.stderr
    graded = _grade(one)  # the one a level down
    assert graded.returncode == 1, graded.stderr
    assert graded.stdout.startswith(f"checking the exercises in {one / 'minirlhf-student'}")
    hinted = _grade(two / "a", "--format", "json")  # the hint, followed
    assert hinted.returncode == 1 and json.loads(hinted.stdout)["points"] == 0, hinted.stderr
    out = tmp_path / "results.json"
    assert _grade(tmp_path / "empty", "--format", "gradescope", "--out", str(out)).returncode == 2
    results = json.loads(out.read_text())
    _gradescope_fields(results, len(EXERCISES))
    assert results["score"] == 0 and "has no minirlhf/ folder" in results["tests"][0]["output"]


def test_a_submission_that_does_not_import_fails_every_exercise_in_one_line(student, tmp_path):
    from minirlhf.course.autograder import grade

    folder = _submission(student, tmp_path)
    init = folder / "minirlhf" / "__init__.py"
    init.write_text("raise RuntimeError('broken on purpose')\n" + init.read_text())
    results = grade(folder)
    assert [r.exercise.name for r in results] == [e.name for e in EXERCISES]
    assert {r.status for r in results} == {"FAIL"}
    assert results[0].message == ("the submission's minirlhf does not run (RuntimeError: broken "
                                  "on purpose)")


def test_a_submission_that_never_finishes_fails_every_exercise_in_one_line(student, tmp_path):
    from minirlhf.course.autograder import grade

    folder = _submission(student, tmp_path)
    init = folder / "minirlhf" / "__init__.py"
    init.write_text("import time\ntime.sleep(60)\n" + init.read_text())
    results = grade(folder, timeout=2)
    assert {r.status for r in results} == {"FAIL"}
    assert results[-1].message == ("the submission's minirlhf did not load within 2 s (a loop "
                                   "that never ends?)")


def test_a_check_that_hangs_or_exits_fails_alone(student, tmp_path):
    """One exercise's endless loop, another's sys.exit: each fails with its own line, and the
    exercises after them are still graded (a solved one passes)."""
    from minirlhf.course.autograder import grade

    folder = _submission(student, tmp_path, solved="world/ai_labelers.py")
    labelers = folder / "minirlhf" / "world" / "ai_labelers.py"
    text = labelers.read_text()
    text = text.replace("def gold_agreement(", "def gold_agreement(*a, **k):\n    while True:\n"
                        "        pass\n\n\ndef _solved_gold_agreement(", 1)
    labelers.write_text(text)
    ppo = folder / "minirlhf" / "objectives" / "ppo.py"
    ppo.write_text(ppo.read_text().replace("def gae(", "def gae(*a, **k):\n    import sys\n"
                                           "    sys.exit(3)\n\n\ndef _gae(", 1))
    reward = folder / "minirlhf" / "objectives" / "reward.py"
    reward.write_text(reward.read_text().replace(
        "def plackett_luce_loss(", "def plackett_luce_loss(*a, **k):\n    import sys\n"
        "    print('a warning first', file=sys.stderr)\n    sys.exit(4)\n\n\n"
        "def _plackett_luce_loss(", 1))
    by_name = {r.exercise.name: r for r in grade(folder, timeout=3)}
    assert by_name["plackett-luce"].message == ("the process ended during this check (exit "
                                                "code 4: a warning first)")
    assert by_name["gold-agreement"].message == ("the check did not finish within 3 s (a loop "
                                                 "that never ends?)")
    assert by_name["gae"].message == ("the process ended during this check (exit code 3, no "
                                      "message: a sys.exit() or os._exit() in the submission?)")
    assert by_name["constitution-score"].status == by_name["constitution-choice"].status == "pass"
    assert by_name["kto"].status == "not implemented"  # after both: still graded


def test_a_damaged_expected_file_is_named_not_blamed_on_the_student(tmp_path, monkeypatch,
                                                                    capsys):
    """expected.npz that is not an .npz: record-expected keeps it and says so in one line; a
    check that needs it fails saying the file is damaged, not that the answer is wrong."""
    from minirlhf.cli import main
    from minirlhf.course import exercises

    bad = tmp_path / "bad.npz"
    bad.write_text("hello\n")
    cut = tmp_path / "cut.npz"  # a real one, cut off half way
    cut.write_bytes(exercises.EXPECTED.read_bytes()[:2000])
    for damaged in (bad, cut):
        with pytest.raises(ValueError, match="cannot be read as the recorded values: it is not "
                                             "an .npz of arrays"):
            exercises.load_expected(damaged)
    assert main(["classroom", "record-expected", "--out", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {bad} cannot be read as the recorded values: it is not an .npz of "
                   "arrays; give another --out (it is kept as it is)\n")
    assert bad.read_text() == "hello\n"
    monkeypatch.setattr(exercises, "EXPECTED", cut)  # the package's own file, damaged
    assert main(["classroom", "record-expected"]) == 0
    assert "recording it afresh" in capsys.readouterr().out
    assert exercises.load_expected(cut).keys() == exercises.load_expected().keys()

    load = exercises.load_expected
    monkeypatch.setattr(exercises, "load_expected", lambda path=bad: load(bad))
    monkeypatch.setitem(exercises._running, "recorded", None)
    (result,) = run_checks("gae")
    assert result.status == "FAIL" and result.message.endswith(
        "put back the expected.npz of the copy you were given (nothing is wrong with your code "
        "yet)")


def test_an_exercise_that_waits_for_another_names_it(student):
    """attention-scores calls causal-mask's stub first: the line names the exercise to do first,
    not only where the stub raised."""
    run = _check(student, "2")
    lines = {line.split()[1]: line for line in run.stdout.splitlines()[1:] if line.strip()[:3]
             == "ch2"}
    assert "not implemented yet (raised at functional.py" in lines["causal-mask"]
    assert ("needs exercise 2.1 (causal-mask: minirlhf/autograd/functional.py, causal_bias) "
            "first" in lines["attention-scores"]), run.stdout


def test_record_expected_keeps_the_file_when_values_move_within_their_tolerance(tmp_path):
    """Another machine rounds the last bits differently: values within their check's tolerance
    leave expected.npz as it is; one beyond it, or any change of an exact value, is rewritten."""
    import shutil

    from minirlhf.course import exercises

    path = tmp_path / "expected.npz"
    shutil.copy(exercises.EXPECTED, path)
    before = path.read_bytes()
    recorded = {k: (v, tol) for k, (v, tol) in exercises.record_expected().items()}
    key, (value, tol) = next((k, vt) for k, vt in recorded.items()
                             if vt[1] > 0 and vt[0].dtype == np.float64 and vt[0].size > 1)
    nudged = dict(recorded, **{key: (value + 0.01 * tol * (1 + np.abs(value)), tol)})
    assert exercises.write_expected(nudged, path) == [] and path.read_bytes() == before
    moved = dict(recorded, **{key: (value + 3 * tol * (1 + np.abs(value)), tol)})
    assert exercises.write_expected(moved, path) == [key]
    assert np.array_equal(exercises.load_expected(path)[key], moved[key][0])
    exact = next(k for k, (v, tol) in recorded.items() if tol == 0 and v.dtype.kind == "f")
    v = recorded[exact][0]
    changed = dict(moved, **{exact: (np.nextafter(v, np.inf), 0.0)})
    assert exercises.write_expected(changed, path) == [exact]
    # an infinite value is matched exactly, whatever the tolerance (tol (1 + inf) is no bound)
    inf = np.array([-np.inf, 1.0])
    assert exercises._same_value(inf, inf + [0, 1e-12], 1e-8)
    assert not exercises._same_value(inf, np.array([-1e30, 1.0]), 1e-8)
    exercises._close("a mask", inf, inf, 1e-8)
    with pytest.raises(exercises.CheckFailed,
                       match=r"a mask at \(0,\): expected -inf, got -1e\+30"):
        exercises._close("a mask", np.array([-1e30, 1.0]), inf, 1e-8)
