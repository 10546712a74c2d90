"""The claims registry: every conclusion names where it is stated, and that place exists; every
rule parses and runs on the tiny preset's results (no verdict asserted there: the tiny models
are too small for the course's conclusions); the table and the files; the command."""

import json
import re
from fractions import Fraction
from pathlib import Path

import pytest

from minirlhf.config import ConfigError
from minirlhf.course import claims as C

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = sorted({c.reads.split(" ", 1)[1] for c in C.CLAIMS
                      if c.reads.startswith("experiment ")} | {"frontier"})


def _text_of(where: str) -> str:
    """A notebook's markdown cells, or a file's text."""
    path = ROOT / where
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return path.read_text()


def test_the_registry_holds_the_course_s_conclusions_each_where_it_is_stated():
    assert len(C.CLAIMS) >= 40 and len({c.id for c in C.CLAIMS}) == len(C.CLAIMS)
    for c in C.CLAIMS:
        assert (ROOT / c.where).is_file(), c.where
        assert c.section in _text_of(c.where), f"{c.id}: {c.section!r} not in {c.where}"
        assert c.statement and c.figure and c.reads.split(" ")[0] in (
            "pipeline", "stage", "experiment", "frontier"), c.id
        op, threshold = c.rule.split()
        assert op in C.OPS and float(threshold) == float(threshold)


def test_a_rule_decides_each_seed_on_its_own():
    c = next(c for c in C.CLAIMS if c.id == "ppo-beta0-hacks")  # figure < 0
    v = C.Verdict(c, {0: -1.0, 1: -2.0, 2: 0.5}, {})
    assert v.held == [0, 1] and v.verdict == "holds in some seeds"
    assert C.Verdict(c, {0: -1.0, 1: -2.0}, {}).verdict == "holds"
    assert C.Verdict(c, {0: 1.0}, {}).verdict == "does not hold"
    assert C.Verdict(c, {0: -1.0, 1: None}, {}).verdict == "not run"
    assert not c.holds(float("nan"))  # a NaN figure holds nothing


def test_a_path_finds_keys_that_hold_dots_and_list_items():
    r = {"ppo": {"beta 0.0": {"x": [1.0, 2.0]}}, "runs": {"mean, beta=0.5*L=15.5": {"g": 3}}}
    assert C.get(r, "ppo.beta 0.0.x.1") == 2.0
    assert C.get(r, C.keyed("runs", "L=") + ".g") == 3
    with pytest.raises(KeyError):
        C.get(r, "ppo.beta 0.5.x")


def test_a_figure_that_cannot_be_shown_counts_as_not_holding_and_shows_as_n_a(tmp_path):
    """dpo-details' gold at matched KL exists only where the offline sweep's KLs bracket
    online's: elsewhere the rule gives NaN, the seed does not hold, the table says n/a, and
    claims.json keeps null (valid JSON) under a verdict that is not "not run"."""
    claim = next(c for c in C.CLAIMS if c.id == "dpo-online-wins-at-matched-kl")
    inside = {"online_at_matched_kl": {"in_range": True, "gold_difference": 0.4}}
    outside = {"online_at_matched_kl": {"in_range": False, "kl": 0.5}}
    assert C.matched_kl_difference(inside) == 0.4
    v = C.Verdict(claim, {0: C.matched_kl_difference(inside),
                          1: C.matched_kl_difference(outside)}, {})
    assert v.held == [0] and v.verdict == "holds in some seeds"
    assert "| 0.400 | n/a | 1 of 2 | holds in some seeds |" in C.table([v])
    json_path, _ = C.write([v], tmp_path, {"seeds": [0, 1], "threads": 1})
    assert json.loads(json_path.read_text())["claims"][0]["figures"] == {"0": 0.4, "1": None}


def test_select_names_the_chapters_when_nothing_matches():
    assert {c.chapter for c in C.select(chapter="5")} == {"05"}
    assert [c.id for c in C.select(only="ppo-raises-gold")] == ["ppo-raises-gold"]
    with pytest.raises(ConfigError, match="claims: no claim has the chapter '99'; chapters: "):
        C.select(chapter="99")


def test_every_rule_runs_on_the_tiny_preset_s_results(tiny_run, quick_experiment, tmp_path):
    """Every claim reads its figure from the tiny run's files, laid out as the course lays
    them out, seed 0. The only figure allowed to be missing: a frontier point that the quick
    frontier does not train (it trains 7 of the 24)."""
    from minirlhf.experiments.frontier import QUICK_POINTS

    runs, _ = tiny_run
    for name in EXPERIMENTS:
        quick_experiment(name)
    verdicts = C.evaluate(C.CLAIMS, runs, "tiny", [0], threads=None)
    quick = {p[0] for p in QUICK_POINTS}
    for v in verdicts:
        assert v.figures[0] is not None or v.errors, f"{v.claim.id}: its results are missing"
        for message in v.errors.values():
            assert "the frontier has no point" in message and not any(
                f"'{label}'" in message for label in quick), f"{v.claim.id}: {message}"
    ran = sum(v.figures[0] is not None for v in verdicts)
    assert ran >= len(C.CLAIMS) - 8
    json_path, md_path = C.write(verdicts, tmp_path, {"seeds": [0], "threads": 1})
    data = json.loads(json_path.read_text())
    assert len(data["claims"]) == len(C.CLAIMS) and sum(data["counts"].values()) == len(
        C.CLAIMS)
    text = md_path.read_text()
    assert text.startswith("# Claims") and all(f"`{c.id}`" in text for c in C.CLAIMS)


def test_results_of_another_thread_count_or_seed_are_missing(tmp_path):
    c = next(c for c in C.CLAIMS if c.reads == "pipeline")
    path = C.results_path(c, tmp_path, "tiny", 1)
    assert path == tmp_path / "tiny-seed1" / "summary.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"seed": 1, "environment": {"blas_threads": 2}}))
    assert C.load(c, tmp_path, "tiny", 1, threads=2) is not None
    assert C.load(c, tmp_path, "tiny", 1, threads=1) is None
    path.write_text(json.dumps({"seed": 0, "environment": {"blas_threads": 2}}))
    assert C.load(c, tmp_path, "tiny", 1, threads=2) is None
    path.write_text('{"seed": 1, "environ')  # cut short
    assert C.load(c, tmp_path, "tiny", 1, threads=None) is None


def test_the_command_judges_what_exists_and_refuses_bad_settings(tmp_path, capsys):
    from minirlhf.cli import main

    assert main(["claims", "--seeds", "0", "--no-run", "--runs-dir", str(tmp_path)]) == 2
    assert "claims: --seeds = 0 is outside its allowed range [1, 10]" in capsys.readouterr().err
    assert main(["claims", "--chapter", "99", "--no-run", "--runs-dir", str(tmp_path)]) == 2
    assert main(["claims", "--no-run", "--runs-dir", str(tmp_path), "--preset", "tiny"]) == 1
    whole = (tmp_path / "tiny" / "claims" / "claims.md").read_text()
    assert "Made by `python -m minirlhf claims --seeds 3 --threads 1`" in whole
    assert main(["claims", "--chapter", "05", "--no-run", "--runs-dir", str(tmp_path),
                 "--preset", "tiny"]) == 1  # nothing made: every claim "not run"
    out = capsys.readouterr().out
    assert "| `ppo-raises-gold` |" in out and "not run" in out
    part = (tmp_path / "tiny" / "claims" / "chapter-05" / "claims.md").read_text()
    assert "`ppo-raises-gold`" in part and "`dpo-" not in part
    assert "Made by `python -m minirlhf claims --seeds 3 --threads 1 --chapter 05`" in part
    assert (tmp_path / "tiny" / "claims" / "claims.md").read_text() == whole  # never replaced
    assert main(["claims", "--only", "ppo-raises-glod", "--no-run", "--runs-dir",
                 str(tmp_path)]) == 2
    assert ("no claim has the id 'ppo-raises-glod'; the nearest: ppo-raises-gold"
            in capsys.readouterr().err)
    (tmp_path / "a-file").write_text("")
    assert main(["claims", "--no-run", "--runs-dir", str(tmp_path / "a-file" / "runs")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --runs-dir {tmp_path / 'a-file' / 'runs'}: {tmp_path / 'a-file'} is "
                   "a file, not a folder\n")


# (docs/claims*.md are the claims tables the command writes.)
# A numeric interval ("[0.42, 0.49]", "[−1.2%, +3%]") or a figure ± a figure ("4.31 ± 0.48";
# "mean ± half-width" in words is not one). How the test decides:
# markdown states conclusions and settings; this run's figures live in code-cell output and the
# across-seed ones in the Measured table a code cell prints from the claims run, so any
# interval or ± written into markdown is one run's figure typed by hand, and fails.
INTERVAL = re.compile(r"\d%?\s*±\s*\d|\[\s*[−+-]?\d[\d.,]*%?\s*,\s*[−+-]?\d[\d.,]*%?\s*\]")
PROSE = [*sorted((ROOT / "notebooks").glob("*.ipynb")), ROOT / "README.md",
         *sorted(p for p in (ROOT / "docs").rglob("*.md") if not p.name.startswith("claims"))]


def _markdown(path: Path) -> list[tuple[str, str]]:
    """(where, text) for each markdown cell of a notebook, or the whole file."""
    if path.suffix != ".ipynb":
        return [(path.name, path.read_text())]
    cells = json.loads(path.read_text())["cells"]
    return [(f"{path.name} [{i}]", "".join(c["source"])) for i, c in enumerate(cells)
            if c["cell_type"] == "markdown"]


@pytest.mark.parametrize("path", PROSE, ids=lambda p: p.name)
def test_no_interval_or_plus_minus_figure_is_typed_into_prose(path):
    found = [f"{where}: ...{text[max(0, m.start() - 40): m.end() + 10]!r}..."
             for where, text in _markdown(path) for m in INTERVAL.finditer(text)]
    assert not found, "\n".join(found[:10])


def test_every_takeaway_names_a_claim_that_holds_in_every_seed():
    """Each chapter's takeaways end with (claim: <id>): an id of the registry whose verdict in
    the committed claims table (docs/claims.json) is "holds"."""
    table = json.loads((ROOT / "docs" / "claims.json").read_text())
    verdict = {c["id"]: c["verdict"] for c in table["claims"]}
    cited = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for where, text in _markdown(path):
            if text.lstrip().startswith("## Takeaways"):  # what a reader sees: no comments
                shown = re.sub(r"<!--.*?-->", "", text, flags=re.S)
                cited += [(where, m) for m in re.findall(r"\(claim: ([\w-]+)\)", shown)]
    assert len(cited) >= 20
    for where, claim_id in cited:
        assert verdict.get(claim_id) == "holds", f"{where}: {claim_id}: {verdict.get(claim_id)}"


def test_no_claim_is_judged_on_one_draw_in_every_seed():
    """A figure equal to the last digit in every seed of the committed table comes from results
    that ignore the seed (the claim would be one draw judged three times), unless it is a count
    or a share of a few thousand samples (a rate at 0 or 1, or 255 of 256 in each seed)."""
    table = json.loads((ROOT / "docs" / "claims.json").read_text())
    for c in table["claims"]:
        values = [v for v in c["figures"].values() if v is not None]
        if len(values) > 1 and len(set(values)) == 1:
            v = values[0]
            assert v == float(Fraction(v).limit_denominator(4096)), f"{c['id']}: {v} in every seed"
