"""Student versions: solution regions stripped out, and checks that say precisely what is wrong.

A solution region is marked as nbgrader marks it, in library code and in notebook code cells:

    def square(x):  # x squared, elementwise
        ### BEGIN SOLUTION
        return x * x
        ### END SOLUTION

``make_student(outdir)`` copies the project, leaves out what is the teacher's only
(``TEACHER_ONLY``: the model answers, the tests that spell solutions out), and replaces each
region by ``raise NotImplementedError`` at the BEGIN marker's indentation, changing nothing
else; markers that do not pair up (an END without a BEGIN, a BEGIN inside a region, a BEGIN
never closed) are an error naming the file and line. The stripped text holds no markers, so
stripping twice gives what stripping once gave.

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
STUB = "raise NotImplementedError  # your code here"

# What a student copy holds, relative to the project root. Runs, caches and git stay behind.
COPIED = ("minirlhf", "notebooks", "tests", "data", "benchmarks", "docs", "setup.cfg",
          "pyproject.toml", "README.md", "ruff.toml", ".ci")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints", "*.egg-info")
# the teacher's only, left out of a student copy (a file, or a folder and all it holds): tests
# that spell out solutions (the mutants quote the right code they replace; test_solutions holds
# tests written like an exercise's answer), and docs/teaching/, the teacher's folder, with the
# model answers to the written questions (docs/teaching/answers.md)
TEACHER_ONLY = ("tests/mutants.py", "tests/test_mutation.py", "tests/test_solutions.py",
                "docs/teaching")
ANSWERS = "docs/teaching/answers.md"  # the model answers: in TEACHER_ONLY's folder


class MarkerError(ValueError):
    """Solution markers do not pair up; the message names file and line."""


def strip_text(text: str, where: str = "<text>") -> str:
    """Replace every solution region of ``text`` by the stub, indented like its BEGIN marker.
    ``where`` names the file in errors."""
    out: list[str] = []
    open_line = 0
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        stripped = line.strip()
        if stripped == BEGIN:
            if open_line:
                raise MarkerError(f"{where}:{number}: {BEGIN} inside the region opened at line "
                                  f"{open_line} (regions cannot nest)")
            open_line = number
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}{STUB}\n")
        elif stripped == END:
            if not open_line:
                raise MarkerError(f"{where}:{number}: {END} without a {BEGIN} before it")
            open_line = 0
        elif BEGIN in line or END in line:
            raise MarkerError(f"{where}:{number}: a solution marker must stand alone on its line")
        elif not open_line:
            out.append(line)
    if open_line:
        raise MarkerError(f"{where}:{open_line}: {BEGIN} is never closed by {END}")
    result = "".join(out)
    if text and not text.endswith("\n") and result.endswith("\n"):
        result = result[:-1]  # keep a missing final newline missing (notebook cells)
    return result


def count_regions(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip() == BEGIN)


def strip_notebook(path: Path) -> int:
    """Strip the code cells of a notebook in place; a stripped cell loses its outputs (they came
    from the solution), and so does a cell whose outputs print a solution region (the source of
    a solved function, markers and all). Returns the number of regions stripped."""
    nb = json.loads(path.read_text())
    n = 0
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        k = count_regions(source)
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
    """Copy the project at ``root`` to ``outdir`` with every solution region stripped.
    Returns {relative file: regions stripped}. ``outdir`` must not exist yet, nor lie inside a
    folder the copy takes (it would copy itself into itself). The copy is made under a
    temporary name beside ``outdir`` and renamed when it is whole: a copy that fails (a full
    disk, Ctrl-C) leaves no ``outdir`` behind."""
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
            stripped[rel] = count_regions(text)
            path.write_text(strip_text(text, rel))
        else:
            stripped[rel] = strip_notebook(path)
    return {k: v for k, v in stripped.items() if v}


def _marked_files(root: Path) -> list[Path]:
    """Library modules and notebooks (the places solutions live), in a stable order."""
    files = sorted((root / "minirlhf").rglob("*.py")) + sorted((root / "notebooks").glob("*.ipynb"))
    return [f for f in files if "__pycache__" not in f.parts and f.name != "classroom.py"]
