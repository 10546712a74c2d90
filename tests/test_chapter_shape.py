"""Every chapter has the shape a reader meets everywhere (../shared/CHAPTER-SHAPE.md): an
opening that says what you build, what you will understand and what you need, with no timing
or date; then the sections; then 3 to 5 takeaways, a Measured section and the exercises, in
that order. The Measured section prints the chapter's claims table when the claims registry
holds conclusions of that chapter."""

import json
import re
from pathlib import Path

import pytest

from minirlhf.course.claims import CLAIMS

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
TIMING = re.compile(r"\b\d+(\.\d+)?\s*(s|sec|seconds?|min|minutes?|h|hours?)\b")
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")


def _cells(path: Path) -> list[tuple[str, str]]:
    return [(c["cell_type"], "".join(c["source"]))
            for c in json.loads(path.read_text())["cells"]]


def _heading(cells: list[tuple[str, str]], title: str) -> int | None:
    found = [i for i, (kind, text) in enumerate(cells)
             if kind == "markdown" and text.lstrip().startswith(title)]
    assert len(found) <= 1, f"{len(found)} cells start with {title!r}"
    return found[0] if found else None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_every_chapter_has_the_shape(path):
    cells = _cells(path)
    kind, opening = cells[0]
    assert kind == "markdown" and re.match(r"# (Chapter \d+|Appendix)", opening), opening[:80]
    for part in ("What you will build", "What you will understand", "What you need"):
        assert part in opening, f"the opening has no {part!r}"
    assert not TIMING.search(opening), f"a timing in the opening: {TIMING.search(opening)[0]!r}"
    assert not DATE.search(opening), f"a date in the opening: {DATE.search(opening)[0]!r}"

    appendix = opening.startswith("# Appendix")
    takeaways = _heading(cells, "## Takeaways")
    measured = _heading(cells, "## Measured")
    exercises = _heading(cells, "## Exercises")
    assert measured is not None, "no Measured section"
    if not appendix:
        assert takeaways is not None and exercises is not None, "no Takeaways or Exercises"
        bullets = re.findall(r"^- ", cells[takeaways][1], re.M)
        assert 3 <= len(bullets) <= 5, f"{len(bullets)} takeaways (3 to 5)"
        assert takeaways < measured < exercises, "Takeaways, Measured, Exercises: in that order"

    chapter = path.name[:2]
    if any(Path(c.where).name[:2] == chapter for c in CLAIMS) or appendix:
        kind, code = cells[measured + 1]
        assert kind == "code" and "measured(" in code, "Measured does not print the claims table"
