"""The results of ``classroom check`` as a report: the text table people read, or a grade an
autograder reads.

- ``text``: one line per exercise and the counts (the default);
- ``json``: per exercise its id, chapter, status ("pass", "fail" or "not implemented"), points,
  max_points and message, and the totals;
- ``gradescope``: Gradescope's ``results.json`` (https://gradescope-autograders.readthedocs.io/en/
  latest/specs/): the total ``score`` and one test per exercise with ``name``, ``score``,
  ``max_score``, ``status`` ("passed" or "failed") and ``output``;
- ``junit``: JUnit XML, one ``testcase`` per exercise in one ``testsuite``; an exercise that
  does not pass (not implemented included: it earns nothing) holds a ``failure`` with the
  message.

A pass earns the exercise's points (``minirlhf.course.exercises.POINTS``), anything else 0.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from minirlhf.course.exercises import CHAPTERS, POINTS, CheckResult

FORMATS = ("text", "json", "gradescope", "junit")
STATUS = {"pass": "pass", "FAIL": "fail", "not implemented": "not implemented"}


def graded(results: list[CheckResult]) -> dict:
    """The report as data: each exercise's status and points, and the totals."""
    exercises = [{"id": r.exercise.name, "chapter": r.exercise.chapter,
                  "status": STATUS[r.status],
                  "points": POINTS[r.exercise.name] if r.status == "pass" else 0,
                  "max_points": POINTS[r.exercise.name], "message": r.message}
                 for r in results]
    return {"points": sum(e["points"] for e in exercises),
            "max_points": sum(e["max_points"] for e in exercises),
            "counts": {s: sum(e["status"] == s for e in exercises) for s in STATUS.values()},
            "exercises": exercises}


def _counts(report: dict) -> str:
    c = report["counts"]
    return (f"{c['pass']} pass, {c['fail']} fail, {c['not implemented']} not implemented: "
            f"{report['points']:g} of {report['max_points']:g} points")


def render(results: list[CheckResult], fmt: str = "text", folder: str = "") -> str:
    """The report in format ``fmt`` (one of ``FORMATS``); ``folder`` heads the text table."""
    report = graded(results)
    if fmt == "text":
        lines = [f"checking the exercises in {folder}"]
        for r in results:
            ex = r.exercise
            lines.append(f"{'ch' + str(ex.chapter):<4} {ex.name:<22} {r.status:<16} {ex.where}: "
                         f"{r.message}")
        return "\n".join(lines) + f"\n\n{_counts(report)}\n"
    if fmt == "json":
        return json.dumps(report, indent=1) + "\n"
    if fmt == "gradescope":
        tests = [{"name": f"chapter {e['chapter']}: {e['id']}", "score": e["points"],
                  "max_score": e["max_points"],
                  "status": "passed" if e["status"] == "pass" else "failed",
                  "output": f"{e['status']}: {e['message']}"} for e in report["exercises"]]
        return json.dumps({"score": report["points"], "output": _counts(report),
                           "tests": tests}, indent=1) + "\n"
    if fmt == "junit":
        n, failed = len(results), len(results) - report["counts"]["pass"]
        root = ET.Element("testsuites", name="minirlhf classroom check", tests=str(n),
                          failures=str(failed), errors="0")
        suite = ET.SubElement(root, "testsuite", name="minirlhf exercises", tests=str(n),
                              failures=str(failed), errors="0", skipped="0")
        for e in report["exercises"]:
            case = ET.SubElement(suite, "testcase", name=e["id"],
                                 classname=f"ch{e['chapter']}.{CHAPTERS[e['chapter']]}")
            if e["status"] != "pass":  # not implemented is a failure too: it earns nothing
                failure = ET.SubElement(case, "failure", type=e["status"], message=e["message"])
                failure.text = f"{e['status']} (0 of {e['max_points']} points): {e['message']}"
        ET.indent(root)
        return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
    raise ValueError(f"no report format {fmt!r}: one of {', '.join(FORMATS)}")
