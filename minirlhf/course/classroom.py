"""Student versions: solution regions stripped out, and checks that say precisely what is wrong.

A solution region is marked as nbgrader marks it, in library code and in notebook code cells:

    def square(x):  # x squared, elementwise
        ### BEGIN SOLUTION
        return x * x
        ### END SOLUTION

A teacher-only region (``### BEGIN TEACHER`` ... ``### END TEACHER``) holds what the teacher's
notebook writes out and a student's must not: an exercise's formula, worked by hand beside the
library's result; or, in a test, a reference computation of an exercise's value. Its lines
``# student: CODE`` are comments in the teacher's notebook and the student's code in its place:

    y = square(x)  # the library's, an exercise
    ### BEGIN TEACHER
    print("by hand:", x * x, " library:", y)
    # student: print("library:", y)
    ### END TEACHER

``make_student(outdir)`` copies the project, leaves out what is the teacher's only
(``TEACHER_ONLY``: the model answers, the tests that spell solutions out), replaces each
solution region by ``raise NotImplementedError`` at the BEGIN marker's indentation and drops
each teacher-only region, changing nothing else; markers that do not pair up (an END without a
BEGIN, a BEGIN inside a region, a BEGIN never closed) are an error naming the file and line.
The stripped text holds no markers, so stripping twice gives what stripping once gave.

The exercises and their checks live in ``minirlhf.course.exercises``; ``python -m minirlhf classroom
check [CHAPTER]`` runs them against whichever ``minirlhf`` is imported (the student copy, when
run from its folder).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from minirlhf.config import require_writable

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
# a teacher-only region in a notebook's code cell: what the teacher's notebook writes out and a
# student's must not (an exercise's formula, worked by hand beside the library's result); a
# student copy drops it, markers and all
TEACHER_BEGIN = "### BEGIN TEACHER"
TEACHER_END = "### END TEACHER"
STUDENT = "# student: "  # inside a teacher region: a line the student copy holds instead (as code)
STUB = "raise NotImplementedError  # your code here"

# What a student copy holds, relative to the project root. Runs, caches, git and the teacher's CI
# (.ci: it runs the mutation tests, which stay behind) stay behind.
COPIED = ("minirlhf", "notebooks", "tests", "data", "benchmarks", "docs", "setup.cfg",
          "pyproject.toml", "README.md", "ruff.toml", ".gitignore")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints", "*.egg-info")
# the teacher's only, left out of a student copy (a file, or a folder and all it holds): tests
# that spell out solutions (the mutants quote the right code they replace; test_solutions holds
# tests written like an exercise's answer; test_expected computes every recorded value of the
# checks by an independent reference; test_trl_parity writes out TRL's loss aggregations and
# clipped surrogate, exercises 9.2 and 9.3), and docs/teaching/, the teacher's folder, with the
# model answers to the written questions (docs/teaching/answers.md)
TEACHER_ONLY = ("tests/mutants.py", "tests/test_mutation.py", "tests/test_solutions.py",
                "tests/test_expected.py", "tests/test_trl_parity.py", "docs/teaching")
ANSWERS = "docs/teaching/answers.md"  # the model answers: in TEACHER_ONLY's folder


class MarkerError(ValueError):
    """Solution markers do not pair up; the message names file and line."""


def strip_text(text: str, where: str = "<text>") -> str:
    """Replace every solution region of ``text`` by the stub, indented like its BEGIN marker,
    and every teacher-only region by its student lines (``# student: CODE`` becomes ``CODE`` at
    the comment's indentation; the rest, markers and all, is dropped). ``where`` names the file
    in errors."""
    out: list[str] = []
    open_line, kind = 0, ""
    markers = {BEGIN: ("solution", True), END: ("solution", False),
               TEACHER_BEGIN: ("teacher", True), TEACHER_END: ("teacher", False)}
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        stripped = line.strip()
        if stripped in markers:
            what, opens = markers[stripped]
            begin, end = (BEGIN, END) if what == "solution" else (TEACHER_BEGIN, TEACHER_END)
            if opens:
                if open_line:
                    raise MarkerError(f"{where}:{number}: {stripped} inside the region opened "
                                      f"at line {open_line} (regions cannot nest)")
                open_line, kind = number, what
                if what == "solution":
                    indent = line[: len(line) - len(line.lstrip())]
                    out.append(f"{indent}{STUB}\n")
            elif not open_line or kind != what:
                raise MarkerError(f"{where}:{number}: {end} without a {begin} before it")
            else:
                open_line = 0
        elif any(m in line for m in markers):
            raise MarkerError(f"{where}:{number}: a solution or teacher marker must stand alone "
                              "on its line")
        elif not open_line:
            out.append(line)
        elif kind == "teacher" and stripped.startswith(STUDENT):  # the student's line instead
            indent = line[: len(line) - len(line.lstrip())]
            out.append(indent + line.lstrip()[len(STUDENT):])
    if open_line:
        begin, end = (BEGIN, END) if kind == "solution" else (TEACHER_BEGIN, TEACHER_END)
        raise MarkerError(f"{where}:{open_line}: {begin} is never closed by {end}")
    result = "".join(out)
    if text and not text.endswith("\n") and result.endswith("\n"):
        result = result[:-1]  # keep a missing final newline missing (notebook cells)
    return result


def count_regions(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip() == BEGIN)


def count_teacher_regions(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip() == TEACHER_BEGIN)


def strip_notebook(path: Path) -> int:
    """Strip the code cells of a notebook in place; a stripped cell loses its outputs (they came
    from the solution, or from the teacher-only lines), and so does a cell whose outputs print a
    solution region (the source of a solved function, markers and all). Returns the number of
    regions stripped (solution and teacher-only)."""
    nb = json.loads(path.read_text())
    n = 0
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        k = count_regions(source) + count_teacher_regions(source)
        if not k:
            strip_text(source, f"{path} cell {i}")  # stray END markers are errors too
            if BEGIN in json.dumps(cell.get("outputs", [])):  # it printed a solution's source
                cell["outputs"], cell["execution_count"] = [], None
            continue
        cell["source"] = strip_text(source, f"{path} cell {i}")
        cell["outputs"], cell["execution_count"] = [], None
        n += k
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return n


def make_student(root: str | Path, outdir: str | Path) -> dict[str, int]:
    """Copy the project at ``root`` to ``outdir`` with every solution region stripped and every
    teacher-only region dropped. Returns {relative file: regions stripped}. ``outdir`` must not
    exist yet, nor lie inside a folder the copy takes (it would copy itself into itself). The
    copy is made under a temporary name beside ``outdir`` and renamed when it is whole: a copy
    that fails (a full disk, Ctrl-C) leaves no ``outdir`` behind."""
    root, outdir = Path(root), Path(outdir).absolute()
    if outdir.exists():
        raise FileExistsError(f"{outdir} already exists; choose a new folder")
    for name in COPIED:
        if outdir.resolve().is_relative_to((root / name).resolve()):
            raise ValueError(f"{outdir} is inside {root / name}, which the student copy takes "
                             "(it would copy itself into itself); choose a folder outside "
                             f"{root / name}")
    # check every file first, so a marker error leaves nothing half-written behind
    for path in _marked_files(root):
        if path.suffix == ".py":
            strip_text(path.read_text(), str(path))
        else:
            for i, cell in enumerate(json.loads(path.read_text())["cells"]):
                src = cell["source"]
                strip_text("".join(src) if isinstance(src, list) else src, f"{path} cell {i}")
    require_writable(outdir.parent)  # a file in the way: one line naming it
    work = Path(tempfile.mkdtemp(dir=outdir.parent, prefix=f".{outdir.name}.",
                                 suffix=".tmp"))
    try:
        stripped = _copy_stripped(root, work)
        work.chmod(0o777 & ~_umask())  # mkdtemp's folder is the owner's only
        os.rename(work, outdir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return stripped


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _copy_stripped(root: Path, outdir: Path) -> dict[str, int]:
    """The copy itself, into the (empty) folder ``outdir``: {relative file: regions stripped},
    the files with none left out."""
    for name in COPIED:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, outdir / name, ignore=IGNORED)
        elif src.exists():
            shutil.copy2(src, outdir / name)
    for name in TEACHER_ONLY:
        if (outdir / name).is_dir():
            shutil.rmtree(outdir / name)
        else:
            (outdir / name).unlink(missing_ok=True)
    stripped = {}
    for path in _marked_files(outdir):
        rel = str(path.relative_to(outdir))
        if path.suffix == ".py":
            text = path.read_text()
            stripped[rel] = count_regions(text) + count_teacher_regions(text)
            path.write_text(strip_text(text, rel))
        else:
            stripped[rel] = strip_notebook(path)
    return {k: v for k, v in stripped.items() if v}


def _marked_files(root: Path) -> list[Path]:
    """Library modules and notebooks (the places solutions live), and the tests that hold a
    teacher-only region (a reference computation of an exercise), in a stable order."""
    files = sorted((root / "minirlhf").rglob("*.py")) + sorted((root / "notebooks").glob("*.ipynb"))
    tests = [f for f in sorted((root / "tests").glob("*.py"))
             if any(line.strip() == TEACHER_BEGIN for line in f.read_text().splitlines())]
    return [f for f in files + tests if "__pycache__" not in f.parts and f.name != "classroom.py"]
