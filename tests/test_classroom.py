"""Student copies: stripping, marker errors, and the exercise checks (on the full project, on a
student copy, and on a deliberately wrong solution)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from minirlhf.course.classroom import (
    BEGIN,
    END,
    STUB,
    TEACHER_BEGIN,
    TEACHER_END,
    MarkerError,
    make_student,
    strip_text,
)
from minirlhf.course.exercises import EXERCISES, run_checks

ROOT = Path(__file__).resolve().parent.parent


def test_strip_keeps_indentation_and_everything_else():
    text = (f"def f(x):\n    y = 1\n    {BEGIN}\n    return x * y\n    {END}\n\n"
            f"def g():\n    if True:\n        {BEGIN}\n        pass\n        {END}\n    return 2\n")
    out = strip_text(text)
    assert out == (f"def f(x):\n    y = 1\n    {STUB}\n\ndef g():\n    if True:\n"
                   f"        {STUB}\n    return 2\n")
    assert strip_text(out) == out  # stripping twice equals stripping once
    assert strip_text("no regions here\n") == "no regions here\n"


def test_a_teacher_region_gives_way_to_its_student_lines():
    """A teacher-only region is dropped, markers and all; its ``# student: CODE`` lines (comments
    in the teacher's copy) become the student's code, at their indentation."""
    text = (f"x = 1\n{TEACHER_BEGIN}\nby_hand = x * 2\nprint(by_hand)\n"
            f"# student: print('library', x)\n{TEACHER_END}\nprint(x)\nif x:\n"
            f"    {TEACHER_BEGIN}\n    y = 3\n    {TEACHER_END}\n    z = 4")
    out = strip_text(text)
    assert out == "x = 1\nprint('library', x)\nprint(x)\nif x:\n    z = 4"
    assert strip_text(out) == out
    assert strip_text("# student: y = 1\n") == "# student: y = 1\n"  # outside a region: a comment


@pytest.mark.parametrize("text, needle", [
    (f"a\n{BEGIN}\nb\n", "f.py:2: ### BEGIN SOLUTION is never closed"),
    (f"a\n{END}\n", "f.py:2: ### END SOLUTION without a ### BEGIN SOLUTION"),
    (f"{BEGIN}\n{BEGIN}\n{END}\n", "f.py:2: ### BEGIN SOLUTION inside the region opened at line 1"),
    (f"x = 1  {BEGIN}\n", "f.py:1: a solution or teacher marker must stand alone"),
    (f"a\n{TEACHER_BEGIN}\nb\n", "f.py:2: ### BEGIN TEACHER is never closed by ### END TEACHER"),
    (f"{TEACHER_BEGIN}\n{END}\n", "f.py:2: ### END SOLUTION without a ### BEGIN SOLUTION"),
    (f"{BEGIN}\n{TEACHER_BEGIN}\n", "f.py:2: ### BEGIN TEACHER inside the region opened at line 1"),
])
def test_marker_errors_name_file_and_line(text, needle):
    with pytest.raises(MarkerError) as err:
        strip_text(text, "f.py")
    assert needle in str(err.value)


def test_every_chapter_has_at_least_three_exercises_and_each_has_a_region():
    chapters = {}
    for ex in EXERCISES:
        chapters.setdefault(ex.chapter, []).append(ex)
    assert sorted(chapters) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert all(len(v) >= 3 for v in chapters.values())
    for ex in EXERCISES:  # the function named by each exercise holds a solution region
        file, name = _file_and_function(ex)
        source = (ROOT / file).read_text()
        start = source.index(f"def {name.split('.')[-1]}(")
        nxt = source.find("\ndef ", start + 1)
        assert BEGIN in source[start: nxt if nxt > 0 else None], ex.where


def _file_and_function(ex) -> tuple[str, str]:
    """The file (from the project's root) and the function an exercise's ``where`` names:
    autograd.functional.softmax -> minirlhf/autograd/functional.py, softmax (the longest prefix
    that is a file)."""
    parts = ex.where.split(".")
    k = max(i for i in range(1, len(parts))
            if (ROOT / "minirlhf" / Path(*parts[:i])).with_suffix(".py").exists())
    return "/".join(["minirlhf", *parts[:k]]) + ".py", ".".join(parts[k:])


def test_the_full_project_passes_every_check():
    results = run_checks()
    assert [r.status for r in results] == ["pass"] * len(EXERCISES), \
        [(r.exercise.name, r.message) for r in results if r.status != "pass"]


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    out = tmp_path_factory.mktemp("class") / "student"
    stripped = make_student(ROOT, out)
    return out, stripped


def _check(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minirlhf", "classroom", "check", *args],
                          cwd=folder, capture_output=True, text=True, timeout=300)


def test_the_student_copy_imports_and_reports_not_implemented(student):
    folder, stripped = student
    assert stripped["minirlhf/autograd/functional.py"] >= 3
    assert any(k.startswith("notebooks/") for k in stripped)  # notebooks are stripped too
    text = (folder / "minirlhf" / "autograd" / "functional.py").read_text()
    assert BEGIN not in text and STUB in text
    run = _check(folder)
    assert run.returncode == 1
    assert f"checking the exercises in {folder / 'minirlhf'}" in run.stdout
    assert f"0 pass, 0 fail, {len(EXERCISES)} not implemented" in run.stdout, run.stdout
    for ex in EXERCISES:
        assert ex.name in run.stdout
    # apart from the regions, nothing changed: the stripped original equals the copy
    for rel in stripped:
        if rel.endswith(".py"):
            assert strip_text((ROOT / rel).read_text()) == (folder / rel).read_text()
    assert not (folder / "tests" / "mutants.py").exists()  # it quotes every solution
    assert not (folder / "tests" / "test_mutation.py").exists()
    corpus = Path("minirlhf") / "world" / "corpora" / "reviews.txt"
    assert (ROOT / corpus).read_bytes() == (folder / corpus).read_bytes()


def test_stripped_notebooks_are_valid_and_lose_only_the_solution_outputs(student):
    """A stripped cell (a solution region, or a teacher-only one) loses its outputs, and so does a
    cell that printed a solution's source (chapter 1 prints solved functions); every other cell is
    unchanged."""
    folder, stripped = student
    for rel in (k for k in stripped if k.endswith(".ipynb")):
        original = json.loads((ROOT / rel).read_text())
        copy = json.loads((folder / rel).read_text())
        assert len(original["cells"]) == len(copy["cells"])
        for a, b in zip(original["cells"], copy["cells"], strict=True):
            src = "".join(a["source"]) if isinstance(a["source"], list) else a["source"]
            if BEGIN in src or TEACHER_BEGIN in src:  # stripped: the outputs were the teacher's
                assert b["source"] == strip_text(src) and b["outputs"] == []
                assert (STUB in b["source"]) == (BEGIN in src)
            elif BEGIN in json.dumps(a.get("outputs", [])):  # it printed a solution's source
                assert b["source"] == a["source"] and b["outputs"] == []
            else:
                assert a == b


def test_stripping_a_student_copy_again_changes_nothing(student, tmp_path):
    folder, _ = student
    again = make_student(folder, tmp_path / "again")
    assert again == {}
    for path in (folder / "minirlhf").rglob("*.py"):
        rel = path.relative_to(folder)
        assert (tmp_path / "again" / rel).read_text() == path.read_text()


def test_make_student_refuses_bad_markers_and_existing_folders(tmp_path):
    (tmp_path / "proj" / "minirlhf").mkdir(parents=True)
    (tmp_path / "proj" / "notebooks").mkdir()
    (tmp_path / "proj" / "minirlhf" / "bad.py").write_text(f"x = 1\n{BEGIN}\ny = 2\n")
    with pytest.raises(MarkerError, match="bad.py:2"):
        make_student(tmp_path / "proj", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError):
        make_student(tmp_path / "proj", tmp_path / "exists")


def test_exercise_names_are_unique_and_each_check_is_its_own_function():
    names = [ex.name for ex in EXERCISES]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    checks = [ex.check for ex in EXERCISES]
    assert len({id(c) for c in checks}) == len(checks)  # no check shadowed by a namesake


def test_check_accepts_a_chapter_number_or_name_or_an_exercise_and_says_what_it_accepts():
    from minirlhf.course.exercises import select

    assert [e.name for e in select("ppo")] == [e.name for e in select("5")] == \
        ["clipped-objective", "gae", "kl-estimators"]
    assert [e.name for e in select("gae")] == ["gae"]
    assert len(select(None)) == len(EXERCISES)
    for bad in ("xyz", "12", "0"):
        with pytest.raises(ValueError, match="a chapter number .* a chapter name .*ppo.* or an "
                                             "exercise name"):
            select(bad)
    run = subprocess.run([sys.executable, "-m", "minirlhf", "classroom", "check", "nope"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "no chapter or exercise 'nope'" in run.stderr


def _solution_lines(root: Path) -> set[str]:
    """The distinctive lines of every solution region (code of 16 characters or more, comments
    cut, block headers such as ``if loss_type == "grpo":`` left out) in the library and the
    notebooks."""
    lines: set[str] = set()
    files = [p for p in (root / "minirlhf").rglob("*.py") if p.name != "classroom.py"]
    for path in files + sorted((root / "notebooks").glob("*.ipynb")):
        text = path.read_text()
        if path.suffix == ".ipynb":
            text = "\n".join("".join(c["source"]) for c in json.loads(text)["cells"])
        inside = False
        for line in text.splitlines():
            s = line.strip()
            if s in (BEGIN, END):
                inside = s == BEGIN
            elif inside and len(code := s.split("#")[0].strip()) >= 16 and \
                    not code.endswith(":"):
                lines.add(code)
    return lines


def test_nothing_in_the_student_copy_gives_a_solution_away(student):
    """Every file of the student copy (library, notebooks with their outputs, tests, docs) is
    searched for every distinctive line of every solution; a line that the project also writes
    outside the solutions (a common idiom) is not distinctive."""
    folder, _ = student
    solutions = _solution_lines(ROOT)
    assert len(solutions) > 80
    texts = _texts(folder)
    common = {line for line in solutions
              if any(line in t for t in _outside_regions(ROOT).values())}
    leaks = [(name, line) for line in sorted(solutions - common) for name, t in texts.items()
             if line in t]
    assert leaks == [], leaks


def _texts(folder: Path) -> dict[str, str]:
    """Every text file a student copy of the project folder holds (library, notebooks with their
    outputs, tests, docs), by its path relative to the folder."""
    from minirlhf.course.classroom import COPIED

    texts = {}
    for path in (p for name in COPIED for p in [folder / name, *(folder / name).rglob("*")]):
        rel = str(path.relative_to(folder))
        if path.is_file() and path.suffix in (".py", ".ipynb", ".md", ".cfg", ".toml") \
                and "corpora" not in path.parts:
            text = path.read_text()
            if path.suffix == ".ipynb":  # the sources and the outputs, as printed
                text = json.loads(text)
                text = "\n".join("".join(c["source"]) + "\n" + json.dumps(c.get("outputs", []))
                                 .replace("\\n", "\n").replace('\\"', '"') for c in text["cells"])
            texts[rel] = text
    return texts


def test_the_student_copy_holds_no_model_answer_and_points_to_none(student):
    """The model answers to the written questions are the teacher's (docs/teaching/answers.md):
    the student copy leaves their folder out, holds none of their sentences anywhere else, and
    no notebook or document in it links to them; a notebook that mentions model answers says
    that the teacher has them, nothing more."""
    import re

    from minirlhf.course.classroom import ANSWERS

    folder, _ = student
    answers = (ROOT / ANSWERS).read_text()
    assert answers.count("**Chapter") >= 15  # every chapter's, moved out of docs/teaching.md
    assert "**Chapter" not in (ROOT / "docs" / "teaching.md").read_text()
    assert not (folder / ANSWERS).exists() and not (folder / ANSWERS).parent.exists()
    # the answers' sentences (60 characters or more), each found nowhere in the copy
    flat = lambda text: " ".join(text.split())  # noqa: E731  (line breaks fall anywhere)
    sentences = {s for p in answers.split("\n\n") if p.startswith("**Chapter")
                 for s in re.split(r"(?<=[.:;])\s", flat(p.split("**", 2)[2])) if len(s) >= 60}
    assert len(sentences) > 40
    texts = _texts(folder)
    leaks = [(name, s) for s in sorted(sentences) for name, t in texts.items() if s in flat(t)]
    assert leaks == [], leaks
    # no link to the answers' folder, and no notebook that tells students where answers are
    for name, text in texts.items():
        for target in re.findall(r"\]\(\s*<?([^)\s>]+)", text):
            assert "answers.md" not in target and "teaching/" not in target, (name, target)
        if name.endswith(".ipynb"):
            assert "answers.md" not in text and "docs/teaching" not in text \
                and "teaching.md" not in text, name
            said = flat(text).lower()
            for m in re.finditer("model answer", said):
                assert said[:m.start()].endswith("your teacher has the "), \
                    (name, said[m.start() - 60:m.end() + 20])


def _outside_regions(root: Path) -> dict[str, str]:
    """The project's library code with the solution regions cut out (what stays the same in a
    student copy): a solution line found here is an idiom, not a give-away."""
    out = {}
    for path in (root / "minirlhf").rglob("*.py"):
        if path.name != "classroom.py":
            out[str(path)] = strip_text(path.read_text(), str(path))
    return out


def test_every_chapter_ends_with_its_exercises_and_the_check_command():
    for k in sorted({ex.chapter for ex in EXERCISES}):
        (path,) = (ROOT / "notebooks").glob(f"{k:02d}_*.ipynb")
        cells = json.loads(path.read_text())["cells"]
        text = "".join(cells[-1]["source"])
        assert cells[-1]["cell_type"] == "markdown" and "## " in text and "Exercises" in text, \
            path.name
        assert f"classroom check {k}" in text, path.name
        for ex in EXERCISES:
            if ex.chapter == k:
                assert ex.where.split(".")[-1] in text, (path.name, ex.name)


def test_every_exercise_is_announced_where_its_chapter_teaches_it():
    """Each exercise of the registry has one callout in a markdown cell of its chapter's notebook,
    before the closing Exercises cell: a blockquote that gives its number (as the Exercises cell
    numbers it) and id, the file and function to write, and the check command, which selects
    that exercise; no callout names an exercise the registry does not have."""
    import re

    from minirlhf.course.exercises import select

    found: dict[str, list[tuple[str, int, int, str]]] = {}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        for cell in cells[:-1]:  # the last cell lists the exercises; a callout sits before it
            if cell["cell_type"] != "markdown":
                continue
            for block in re.split(r"\n\s*\n", "".join(cell["source"])):
                said = " ".join(line.removeprefix(">").strip() for line in block.splitlines())
                if m := re.match(r"\*\*Exercise (\d+)\.(\d+) \(`([a-z0-9-]+)`\)\*\*", said):
                    assert block.startswith("> "), (path.name, block)  # a blockquote
                    found.setdefault(m[3], []).append((path.name, int(m[1]), int(m[2]), said))
    assert sorted(found) == sorted(ex.name for ex in EXERCISES)  # every exercise, no other
    for ex in EXERCISES:
        assert len(found[ex.name]) == 1, found[ex.name]
        ((notebook, chapter, number, said),) = found[ex.name]
        assert notebook.startswith(f"{ex.chapter:02d}_") and chapter == ex.chapter, notebook
        same = [e.name for e in EXERCISES if e.chapter == ex.chapter]
        assert number == same.index(ex.name) + 1, (ex.name, number)
        file, function = _file_and_function(ex)
        assert f"`{file}`, `{function}`" in said, (ex.name, said)
        command = f"python -m minirlhf classroom check {ex.chapter} {ex.name}"
        assert f"`{command}`" in said, (ex.name, said)
        assert select(*command.split()[-2:]) == [ex]


def test_every_chapter_turns_on_autoreload_in_its_first_code_cell():
    """A student edits the library and re-runs a cell: autoreload brings the edit in, no
    kernel restart (the notebooks run in a Jupyter kernel, where the magics work)."""
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        first = next(c for c in cells if c["cell_type"] == "code")
        assert first["source"][:2] == ["%load_ext autoreload\n", "%autoreload 2\n"], path.name


def test_every_solution_region_says_what_to_define():
    """A stub alone says "your code here"; the comment above each region, which the student copy
    keeps, says what to define or return and with which shape."""
    missing = []
    files = [p for p in (ROOT / "minirlhf").rglob("*.py") if p.name != "classroom.py"]
    for path in files + sorted((ROOT / "notebooks").glob("*.ipynb")):
        texts = [path.read_text()] if path.suffix == ".py" else [
            "".join(c["source"]) for c in json.loads(path.read_text())["cells"]]
        for text in texts:
            lines = text.splitlines()
            for k, line in enumerate(lines):
                above = lines[max(0, k - 3):k]
                if line.strip() == BEGIN and not any(a.strip().startswith("# exercise")
                                                     for a in above):
                    missing.append(f"{path.name}:{k + 1}")
    assert missing == []


def test_every_library_region_names_its_exercises():
    """The comment above each library region names the exercises it belongs to (``# exercise
    layer-norm-backward: ...``), each one whose function holds the region; every exercise is
    named by a region; a notebook's own regions name none (``# exercise: ...``). A notebook cell
    that reaches a stub says which exercise it needs from this comment."""
    import re

    named: dict[str, list[str]] = {}
    for path in (p for p in (ROOT / "minirlhf").rglob("*.py") if p.name != "classroom.py"):
        lines = path.read_text().splitlines()
        for k, line in enumerate(lines):
            if line.strip() != BEGIN:
                continue
            comment = next(a.strip() for a in reversed(lines[max(0, k - 3):k])
                           if a.strip().startswith("# exercise"))
            m = re.match(r"# exercise ([a-z0-9, -]+):", comment)
            assert m, f"{path.name}:{k + 1}: {comment}"
            for name in m[1].split(", "):
                named.setdefault(name, []).append(f"{path.relative_to(ROOT)}:{k + 1}")
    assert sorted(named) == sorted(ex.name for ex in EXERCISES)
    for ex in EXERCISES:
        file, function = _file_and_function(ex)
        source = (ROOT / file).read_text()
        start = source.index(f"def {function.split('.')[-1]}(")
        end = source.find("\ndef ", start + 1)
        lines = range(source[:start].count("\n") + 1, source[:end if end > 0 else None]
                      .count("\n") + 2)
        for at in named[ex.name]:
            assert at.startswith(file) and int(at.split(":")[1]) in lines, (ex.name, at)
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            assert not re.search(r"# exercise [a-z]", "".join(cell["source"])), path.name


def test_running_times_have_one_source():
    """The README's chapter table holds the measured running times; the teacher's guide points
    to it instead of keeping figures of its own that drift."""
    guide = (ROOT / "docs" / "teaching.md").read_text()
    time_section = guide[guide.index("## Time"):guide.index("## Adding an exercise")]
    assert "README" in time_section
    header = next(line for line in time_section.splitlines() if line.startswith("| chapter"))
    assert header == "| chapter | reading | exercises |"  # no running-time column of its own


def test_the_teachers_table_names_each_exercise_where_it_lives():
    """docs/teaching.md's table gives each exercise the place its ``where`` names (a function
    with a solution region, checked above)."""
    import re

    table = dict(re.findall(r"^\| \d+ \| ([a-z0-9-]+) \| `([\w.]+)` \|",
                            (ROOT / "docs" / "teaching.md").read_text(), re.M))
    assert table == {ex.name: ex.where for ex in EXERCISES}


# what exercises.py may define besides the checks: the harness, none of it an expected value
HARNESS = {"CheckFailed", "Exercise", "CheckResult", "RecordError", "_FixedLogits", "_t", "_grad",
           "_carries_gradient", "_close", "_expect", "_match", "load_expected", "_raised_at",
           "_not_yet", "_does_not_compile", "_crashed", "select", "_select", "run_checks",
           "record_expected", "write_expected", "_same_value",
           "reward_export_model"}  # the last: a check's input, shared with its teacher reference


def _literal(node) -> bool:
    """A number written in the check: constants, lists and tuples of them, and arithmetic on
    them (``-1.1 / 6``)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float))
    if isinstance(node, (ast.List, ast.Tuple)):
        return all(_literal(e) for e in node.elts)
    if isinstance(node, ast.UnaryOp):
        return _literal(node.operand)
    if isinstance(node, ast.BinOp):
        return _literal(node.left) and _literal(node.right)
    return False


def _written(fn: ast.FunctionDef) -> set[str]:
    """The names a check binds to numbers written in it: ``for text, expected in (("a", 2),
    ...)`` (a table of literals) and ``alpha, beta = (1.5, 0.4) if ... else (1.2, 0.5)``."""
    names = set()
    for n in ast.walk(fn):
        if isinstance(n, ast.For) and isinstance(n.target, ast.Tuple) \
                and isinstance(n.iter, (ast.Tuple, ast.List)) \
                and all(isinstance(row, ast.Tuple) for row in n.iter.elts):
            for i, t in enumerate(n.target.elts):
                if isinstance(t, ast.Name) and all(_literal(row.elts[i]) for row in n.iter.elts):
                    names.add(t.id)
        if isinstance(n, ast.Assign) and len(n.targets) == 1 \
                and isinstance(n.targets[0], ast.Tuple) and isinstance(n.value, ast.IfExp) \
                and _literal(n.value.body) and _literal(n.value.orelse):
            names |= {t.id for t in n.targets[0].elts if isinstance(t, ast.Name)}
    return names


def test_no_check_computes_its_expected_value(student):
    """A student copy ships minirlhf/course/exercises.py, so its checks hold no reference
    computation: each ``_close`` compares with a number written in the check, a value recorded
    from the solutions (``_expect``, or ``_match`` which reads one), or a value the library
    computes another way (a call such as ``rm.score(...)``, no arithmetic); the module defines
    nothing beyond the checks and the harness (no reference helper); and the recorded values
    ship beside it."""
    folder, _ = student
    path = folder / "minirlhf" / "course" / "exercises.py"
    tree = ast.parse(path.read_text())
    checks = {ex.check.__name__ for ex in EXERCISES}
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert defined - checks - HARNESS == set()
    computed = []
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in checks):
        recorded = {t.id for n in ast.walk(fn) if isinstance(n, ast.Assign)
                    and isinstance(n.value, ast.Call) and getattr(n.value.func, "id", "")
                    == "_expect" for t in n.targets if isinstance(t, ast.Name)}
        recorded |= _written(fn)
        for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call)
                     and getattr(n.func, "id", "") == "_close"):
            expected = call.args[2] if len(call.args) > 2 else next(
                k.value for k in call.keywords if k.arg == "expected")
            if _literal(expected) or (isinstance(expected, ast.Name) and expected.id in recorded):
                continue
            if isinstance(expected, ast.Call) and getattr(expected.func, "id", "") == "_expect":
                continue
            if isinstance(expected, ast.Call) and isinstance(expected.func, ast.Attribute) \
                    and getattr(expected.func.value, "id", "np") not in ("np", "numpy") \
                    and not any(isinstance(a, ast.BinOp) for a in ast.walk(expected)):
                continue  # a property: the library's own value, by another route
            computed.append(f"{fn.name}:{call.lineno}: {ast.unparse(expected)}")
    assert computed == []
    assert (folder / "minirlhf" / "course" / "expected.npz").read_bytes() == \
        (ROOT / "minirlhf" / "course" / "expected.npz").read_bytes()


def test_the_readme_links_the_teachers_workflow():
    """The README's classroom row (and its list of documents) link docs/teaching.md's section on
    grading with nbgrader, which holds the commands, from the extra to the export."""
    readme = (ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `classroom"))
    assert "docs/teaching.md#the-teachers-workflow-with-nbgrader" in row
    guide = (ROOT / "docs" / "teaching.md").read_text()
    section = guide[guide.index("## The teacher's workflow with nbgrader"):]
    section = section[:section.index("\n## ", 1)]
    for command in ('pip install -e ".[teaching]"', "classroom make-student", "classroom nbgrader",
                    "nbgrader generate_assignment", "nbgrader autograde", "nbgrader export"):
        assert command in section, command


def _sources(root: Path) -> list[str]:
    """The notebooks' cells and the tests, each as its source text (what may hold a
    teacher-only region)."""
    texts = ["".join(c["source"]) for p in sorted((root / "notebooks").glob("*.ipynb"))
             for c in json.loads(p.read_text())["cells"]]
    return texts + [p.read_text() for p in sorted((root / "tests").glob("*.py"))]


def _stripped(text: str) -> str:
    """``text`` as a student copy holds it (a test that quotes the markers in its strings, as
    this one does, holds no region and stays as it is)."""
    try:
        return strip_text(text)
    except MarkerError:
        return text


def _teacher_lines(root: Path) -> set[str]:
    """The distinctive lines of every teacher-only region of the notebooks and the tests (code
    of 16 characters or more, comments cut; the ``# student:`` lines are the student's)."""
    lines: set[str] = set()
    for text in _sources(root):
        inside = False
        for line in text.splitlines():
            s = line.strip()
            if s in (TEACHER_BEGIN, TEACHER_END):
                inside = s == TEACHER_BEGIN
            elif inside and len(code := s.split("#")[0].strip()) >= 16:
                lines.add(code)
    return lines


def test_the_student_copy_writes_out_no_exercise_formula(student):
    """The teacher's notebooks write the exercises' formulas out beside the library's results,
    and some tests compute an exercise's value by a reference formula, in teacher-only regions;
    the student copy holds none of their lines (nowhere: notebooks with their outputs, tests,
    docs, library), and no code cell of its notebooks computes a value by hand (``by_hand``) or
    with the idioms of the exercises' formulas: the causal mask (``np.triu``, ``np.tril``) or a
    log-sigmoid (``logaddexp``, ``log1p``)."""
    import re

    folder, _ = student
    teacher = _teacher_lines(ROOT)
    assert len(teacher) > 60
    outside = "\n".join([*(_stripped(t) for t in _sources(ROOT)),  # what stays: an idiom
                         *_outside_regions(ROOT).values()])
    distinctive = {line for line in teacher if line not in outside}
    texts = _texts(folder)  # notebooks with their outputs, tests, library, docs
    leaks = [(name, line) for line in sorted(distinctive) for name, t in texts.items()
             if line in t]
    assert leaks == [], leaks
    idioms = re.compile(r"\bby_hand\b|np\.triu\(|np\.tril\(|logaddexp|log1p")
    for path in sorted((folder / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "code":
                found = idioms.findall("".join(cell["source"]))
                assert not found, (path.name, i, found)


def test_a_cell_after_an_unsolved_one_keeps_the_command_its_error_names(monkeypatch, capsys):
    """The one line of a cell that needs what an unsolved cell did not make: a long error is
    cut, but never inside a command between backticks (it would not run when pasted)."""
    from minirlhf.course import unsolved

    monkeypatch.setattr(unsolved, "_waiting", ["exercise 2.2 (attention-scores: ...)"])
    hint = ("runs/default/sft/model.npz is missing: make it with `python -m minirlhf pipeline "
            "--preset default --name default --runs-dir /home/student/minirlhf/runs`")
    long = "the chapter reads the pipeline's run, and " * 3 + hint
    assert unsolved.handle(FileNotFoundError(long))
    line = capsys.readouterr().out.strip()
    assert hint in line and line.endswith("solve it and re-run from there")
    assert unsolved.handle(NameError("x" * 400))
    assert "x" * 157 + "...)" in capsys.readouterr().out
    assert unsolved.handle(FileNotFoundError("y" * 300 + hint + "z" * 300))  # long either side
    line = capsys.readouterr().out.strip()
    assert hint.split(": ", 1)[1] in line and len(line) < 600 and "y" * 78 not in line
