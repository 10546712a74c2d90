"""The house's rules, checked on the code itself (every module's imports, read with ast):

- a module imports only from its own floor or from floors below it:
  foundations (files, streams, machine; config and plots, which write with files) ->
  autograd -> lm -> world -> objectives -> evaluation -> training -> stages -> experiments /
  pipeline / records / report / registry -> course -> cli; ``objectives`` imports only
  ``autograd`` and ``lm`` (every loss and estimator of the course);
- no stage imports another stage (what two stages share lives on a lower floor);
- no module imports from the package root (``from minirlhf import X``): the root re-exports for
  readers, the library imports where things live;
- no module uses another module's private (``_name``) definitions;
- no module outside ``objectives/`` defines a public function (at any depth) whose name ends
  in ``_loss`` or ``_advantages``: the next algorithm's objective goes there too.

Each rule is also shown to catch a planted violation.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "minirlhf"

# The floors, lowest first. A module's floor is that of its folder, or of its own name at the
# top of the package.
FLOORS = {
    # foundations: they import nothing from the package but ``files``
    "config": 0, "files": 0, "streams": 0, "machine": 0, "plots": 0,
    "autograd": 1, "lm": 2, "world": 3, "objectives": 4, "evaluation": 5, "training": 6,
    "stages": 7, "experiments": 8, "pipeline": 8, "records": 8, "report": 8, "registry": 8,
    "course": 9, "cli": 10, "__main__": 10, "__init__": 10,
}


def module_name(path: Path, package: Path) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def floor_of(name: str) -> int:
    """minirlhf.lm.model -> 2; minirlhf (the root package) -> 10."""
    parts = name.split(".")
    return FLOORS["__init__"] if len(parts) == 1 else FLOORS[parts[1]]


def _resolve(node: ast.ImportFrom, source: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = source.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def violations(package: Path) -> list[str]:
    """Every breach of the rules in the package at ``package``, one line each, naming the file,
    the line and the import."""
    modules = {module_name(p, package): p for p in package.rglob("*.py")
               if "__pycache__" not in p.parts}
    found = []
    for source, path in sorted(modules.items()):
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        where = f"{path.relative_to(package.parent)}"
        imported_modules = {}  # local alias -> module, for `alias._private` uses
        for node in ast.walk(tree):
            targets = []  # (module imported, names taken from it)
            if isinstance(node, ast.Import):
                for a in node.names:
                    targets.append((a.name, []))
                    imported_modules[a.asname or a.name.split(".")[0]] = a.name
            elif isinstance(node, ast.ImportFrom):
                mod = _resolve(node, source, is_package)
                for a in node.names:
                    full = f"{mod}.{a.name}"
                    if full in modules:  # `from minirlhf.autograd import ops`: a module
                        targets.append((full, []))
                        imported_modules[a.asname or a.name] = full
                    else:
                        targets.append((mod, [a.name]))
            for target, names in targets:
                if target != "minirlhf" and not target.startswith("minirlhf."):
                    continue
                text = f"{where}:{node.lineno}: imports {target}" + (
                    f" ({', '.join(names)})" if names else "")
                if target == "minirlhf" and source != "minirlhf":
                    found.append(f"{text}: a module imports from where things live, never from "
                                 "the package root")
                    continue
                if floor_of(target) > floor_of(source):
                    found.append(f"{text}: floor {floor_of(target)} is above this module's "
                                 f"floor {floor_of(source)}")
                if source.startswith("minirlhf.stages.") and target.startswith(
                        "minirlhf.stages.") and target != source:
                    found.append(f"{text}: a stage imports another stage (move what they share "
                                 "down to lm/, world/ or evaluation)")
                for name in names:
                    if name.startswith("_") and not name.startswith("__"):
                        found.append(f"{text}: uses the private name {name} of another module "
                                     "(make it public on the lower floor)")
        for node in ast.walk(tree):  # alias._private, where alias is an imported module
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in imported_modules and node.attr.startswith("_") \
                    and not node.attr.startswith("__"):
                found.append(f"{where}:{node.lineno}: uses {node.value.id}.{node.attr}, a "
                             f"private name of {imported_modules[node.value.id]}")
    return found


def objective_names_outside(package: Path) -> list[str]:
    """Public functions named ``*_loss`` or ``*_advantages`` defined outside objectives/, one
    line each naming file, line and function."""
    found = []
    for path in sorted(package.rglob("*.py")):
        if "objectives" in path.relative_to(package).parts or "__pycache__" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) \
                    and not node.name.startswith("_") \
                    and node.name.endswith(("_loss", "_advantages")):
                found.append(f"{path.relative_to(package.parent)}:{node.lineno}: {node.name} "
                             "is an objective: define it in minirlhf/objectives/")
    return found


def test_every_objective_lives_in_objectives():
    assert objective_names_outside(PACKAGE) == []


def test_objectives_import_only_autograd_and_lm():
    for path in (PACKAGE / "objectives").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                if name == "minirlhf" or name.startswith("minirlhf."):
                    assert name.split(".")[1:2] and name.split(".")[1] in (
                        "autograd", "lm", "objectives"), f"{path.name}: imports {name}"


def test_an_objective_outside_objectives_is_named(tmp_path):
    copy = tmp_path / "minirlhf"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "stages" / "ppo.py"
    text = target.read_text()
    line = text.count("\n") + 1
    target.write_text(text + "def value_loss(x):\n    return x\n")
    assert objective_names_outside(copy) == [
        f"minirlhf/stages/ppo.py:{line}: value_loss is an objective: define it in "
        "minirlhf/objectives/"]


def test_every_module_has_a_floor():
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path, PACKAGE)
        floor_of(name)  # a KeyError names a module outside the floors


def test_the_house_keeps_its_floors():
    assert violations(PACKAGE) == []


def test_the_foundations_import_nothing_from_the_package_but_files():
    """files, streams and machine import nothing of the package; config (a checkpoint's label)
    and plots (a figure written whole) import files alone."""
    allowed = {"files": set(), "streams": set(), "machine": set(),
               "config": {"minirlhf.files"}, "plots": {"minirlhf.files"}}
    for name, ok in allowed.items():
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert {m for m in imported if m and m.startswith("minirlhf")} <= ok, name


@pytest.mark.parametrize("file, planted, needle", [
    ("stages/ppo.py", "from minirlhf.stages.reward import split_pairs",
     "stages/ppo.py:{line}: imports minirlhf.stages.reward (split_pairs): a stage imports "
     "another stage"),
    ("lm/model.py", "from minirlhf.world import get_task",
     "lm/model.py:{line}: imports minirlhf.world (get_task): floor 3 is above this module's "
     "floor 2"),
    ("evaluation.py", "from minirlhf.autograd.functional import _mean_last",
     "uses the private name _mean_last of another module"),
    ("world/raters.py", "from minirlhf import Tensor",
     "never from the package root"),
])
def test_a_planted_violation_is_named(tmp_path, file, planted, needle):
    """Copy the package, plant one bad import at the end of a module, and the check names the
    file, the line and the rule it breaks."""
    copy = tmp_path / "minirlhf"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / file
    text = target.read_text()
    line = text.count("\n") + 1
    target.write_text(text + planted + "\n")
    found = violations(copy)
    assert len(found) == 1 and needle.format(line=line) in found[0], found


def test_the_root_re_exports_what_readers_use_and_stays_light():
    """``from minirlhf import train_ppo`` works for every re-exported name; a fresh
    ``import minirlhf`` loads no stage (they load on first use)."""
    import subprocess
    import sys

    import minirlhf

    for name in minirlhf.__all__:
        assert getattr(minirlhf, name) is not None, name
    code = "import sys, minirlhf; print(any(m.startswith('minirlhf.stages') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr


def test_random_streams_are_named_and_seeds_never_share_one():
    """Every stream of seed 0 differs from every stream of seed 1 (with ``seed + k`` seed 1's
    training stream was seed 0's evaluation stream), and what trains and evaluates makes its
    generators only through ``streams.stream``. (The corpus generators in world/ and the
    gradient checks keep plain fixed seeds: they make files and test inputs, not runs.)"""
    from minirlhf.streams import stream

    names = ("init", "head_init", "train", "validation", "samples", "eval", "eval_reference",
             "preferences", "calibration")
    firsts = {(seed, n): stream(seed, n).integers(2**62) for seed in (0, 1, 2) for n in names}
    assert len(set(firsts.values())) == len(firsts)
    assert stream(0, "train").integers(2**62) == firsts[(0, "train")]  # and reproducible
    offenders = []
    run_code = [p for p in PACKAGE.rglob("*.py") if p.parent.name not in ("world", "autograd")]
    for path in run_code:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "default_rng" \
                    and "seed" in ast.unparse(node) and path.name != "streams.py":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == []
