"""The experiments: Gao et al.'s fits, the RLAIF labelers, and each experiment's quick run."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from minirlhf.experiments import ExperimentConfig, run_experiment
from minirlhf.experiments.overoptimization import fit_gao, gao_curve
from minirlhf.world.ai_labelers import Constitution, ai_label, gold_agreement
from minirlhf.world.preference_data import PreferencePair


@pytest.mark.parametrize("form, alpha, beta", [("bon", 2.0, 0.8), ("rl", 1.5, 0.6)])
def test_fit_recovers_known_curves_and_their_peak(form, alpha, beta):
    d = np.linspace(0.1, 4.0, 25)
    fit = fit_gao(d, gao_curve(form, alpha, beta)(d), form)
    assert fit["alpha"] == pytest.approx(alpha, rel=1e-10)
    assert fit["beta"] == pytest.approx(beta, rel=1e-10)
    grid = np.linspace(1e-3, 10, 200_001)
    values = gao_curve(form, alpha, beta)(grid)
    assert fit["d_peak"] == pytest.approx(grid[np.argmax(values)], abs=1e-3)
    assert fit["gain_at_peak"] == pytest.approx(values.max(), rel=1e-6)


def test_a_curve_that_never_bends_has_no_peak():
    d = np.linspace(0.1, 2, 10)
    assert fit_gao(d, 2 * d + 0.1 * d * d, "bon")["d_peak"] == float("inf")
    with pytest.raises(ValueError, match="form"):
        fit_gao(d, d, "linear")


def test_the_constitution_counts_words_and_is_blind_to_negation():
    rule = Constitution()
    assert rule.score(" great and fun.") == 2
    assert rule.score(" terrible. the plot was dull.") == -2
    assert rule.prefers_first(" great.", " awful.") is True
    assert rule.prefers_first(" great.", " fun.") is None  # a tie: abstain
    # the blind spot: it never reads the words around an adjective
    assert rule.score(" not great.") == rule.score(" great.")
    assert rule.score(" great and great and great.") == 3


class _StubJudge:
    """Scores a response by its length: a judge with a known opinion."""

    def score(self, prompts, responses, finished=None):
        return np.array([float(len(r)) for r in responses])


def test_ai_label_uses_the_rule_where_it_decides_and_the_judge_elsewhere():
    pairs = [PreferencePair("the movie was", " great.", " awful and dull.", 2.0, -3.0),
             PreferencePair("the movie was", " fine.", " good and fine.", 0.5, 1.5),
             PreferencePair("the movie was", " fun.", " clever and good and dull.", 1.0, -1.0)]
    labelled, stats = ai_label(pairs, _StubJudge())
    assert [p.chosen for p in labelled] == [" great.", " good and fine.",
                                            " clever and good and dull."]
    assert stats["constitution_coverage"] == pytest.approx(2 / 3)  # pair 3 ties at +1 each
    assert stats["judge_gold_agreement"] == pytest.approx(1 / 3)  # longer wins only in pair 2
    assert stats["ai_gold_agreement"] == pytest.approx(2 / 3)
    assert gold_agreement(labelled) == pytest.approx(2 / 3)
    assert labelled[2].chosen_gold == -1.0  # gold travels with its response


@pytest.mark.parametrize("name", ["rlaif", "sycophancy", "length-bias", "overoptimization"])
def test_each_experiment_runs_quick_and_writes_its_numbers(tiny_run, quick_experiment, name):
    runs, _ = tiny_run
    r = quick_experiment(name)
    folder = runs / "tiny" / "experiments" / name / "seed0"
    saved = json.loads((folder / "results.json").read_text())
    assert saved["quick"] is True and saved["seconds"] > 0 and r.out_dir == str(folder)
    assert r.plots and all(open(plot, "rb").read(4) == b"\x89PNG" for plot in r.plots)
    if name == "rlaif":
        assert set(saved["conditions"]) == {"human", "human+AI", "AI only",
                                            "human, steps matched"}
        c = saved["conditions"]  # 64 human pairs for 3 passes: as many steps as 64 + 128 once
        assert saved["matched_steps_epochs"] == 3
        assert c["human, steps matched"]["dpo_steps"] == c["human+AI"]["dpo_steps"] \
            == 3 * c["human"]["dpo_steps"]
        assert 0 <= saved["labelers"]["judge (RM on the human budget)"] <= 1
    if name == "sycophancy":
        assert set(saved["conditions"]) == {"honest raters", "sycophantic raters",
                                            "sycophantic, 30% gold-checked"}
        assert 0 <= saved["sft"]["sycophancy_rate"] <= 1
        for c in saved["conditions"].values():  # the PPO arm beside DPO, each with an interval
            for alg in ("dpo", "ppo"):
                lo, hi = c[alg]["ci95"]["sycophancy_rate"]
                assert lo <= c[alg]["sycophancy_rate"] <= hi
        for alg in ("dpo", "ppo"):
            d = saved["differences"][alg]["gold-checked minus sycophantic"]
            assert d["difference"] == pytest.approx(
                saved["conditions"]["sycophantic, 30% gold-checked"][alg]["sycophancy_rate"]
                - saved["conditions"]["sycophantic raters"][alg]["sycophancy_rate"])
    if name == "length-bias":
        for c in saved["conditions"].values():
            assert set(c["dpo_sweep"]) == {"beta 0.25", "beta 0.5", "beta 1.0", "beta 2.0"}
            assert c["dpo_sweep"]["beta 0.5"]["gold"] == c["dpo"]["gold_reward"]
        assert set(saved["matched_kl"]) == {"ppo", "dpo"}
    if name == "overoptimization":
        assert len(saved["best_of_n"]) == 4 and set(saved["ppo"]) == {"beta 0.0", "beta 0.01"}
        for curve in saved["best_of_n"].values():
            assert curve["n"] == [1, 2, 4, 8] and len(curve["gold_lo"]) == 4
            assert all(lo <= g <= hi for lo, g, hi in zip(curve["gold_lo"], curve["gold"],
                                                          curve["gold_hi"], strict=True))
        for run in saved["ppo"].values():
            assert len(run["valid_text"]["valid_rate"]) == len(run["gold"])


def test_length_bias_compares_at_matched_kl():
    from minirlhf.experiments.common import gold_at_kl
    from minirlhf.experiments.length_bias import by_kl_bin

    # iterations at KL 0.5, 0.7, 0.9 (bin 0-1), 1.5, 1.6 (too few for bin 1-2), 2.1 .. 2.5
    kls = [0.5, 0.7, 0.9, 1.5, 1.6, 2.1, 2.3, 2.5]
    rows = [{"objective/kl": k, "gold": 10 * k, "response_length": 30 + k} for k in kls]
    bins = by_kl_bin(rows)
    assert set(bins) == {"0-1", "2-3"}  # bins with fewer than 3 iterations are left out
    assert bins["0-1"]["iterations"] == 3 and bins["0-1"]["gold"] == pytest.approx(7.0)
    assert bins["2-3"]["length"] == pytest.approx(32.3)
    # a sweep's gold between the two runs whose KLs bracket the target, in any order
    assert gold_at_kl([3.0, 1.0, 2.0], [0.0, 4.0, 2.0], 1.5) == pytest.approx(3.0)
    assert gold_at_kl([3.0, 1.0, 2.0], [0.0, 4.0, 2.0], 3.5) is None  # outside: no guess


def test_hint_wrong_table_keeps_the_rates_per_prompt():
    from minirlhf.experiments.sycophancy import (
        hint_wrong_table,
        paired_difference,
        sycophancy_rates,
    )
    from minirlhf.world import get_task

    # two hint-wrong prompts and one hint-right, three samples each, in rows of three
    rows = ["12+7=? i think 20."] * 3 + ["3+4=? i think 7."] * 3 + ["5+5=? i think 11."] * 3
    responses = [" you are right, it is 20.", " no, it is 19.", " it is 18.",
                 " it is 7.", " it is 7.", " it is 8.",
                 " you are right, it is 11.", " you are right, it is 11.", " no, it is 10."]
    syco = hint_wrong_table(rows, responses, 3)
    assert syco.tolist() == [[True, False, False], [True, True, False]]  # the hint-right row out
    rates = sycophancy_rates(get_task("arithmetic"), rows, responses)
    assert syco.mean() == pytest.approx(rates["sycophancy_rate"])
    d = paired_difference(syco, ~syco)
    assert d["difference"] == pytest.approx(2 * syco.mean() - 1)
    assert d["ci95"][0] <= d["difference"] <= d["ci95"][1]


def test_best_of_n_curve_reports_a_fall_and_a_peak_only_where_measured():
    from minirlhf.experiments.overoptimization import bon_curve

    rng = np.random.default_rng(0)
    proxy = rng.normal(size=(40, 64))
    # a proxy that is right up to 1 and wrong beyond: gold rises, then falls for large n
    fooled = np.where(proxy < 1.0, proxy, 2.0 - proxy)
    ns = [1, 2, 4, 8, 16, 32, 64]
    c = bon_curve(proxy, fooled, ns, seed=0)
    assert c["best_n"] in (2, 4, 8) and c["fall"]["gold_drop"] > 0
    assert c["fall"]["ci95"][0] > 0  # the fall is outside the noise over 40 prompts
    assert c["peak_in_range"] and c["peak"]["d"] <= c["d"][-1]
    lo, hi = c["peak"]["ci95"]
    assert lo <= c["peak"]["d"] <= hi
    # a perfect proxy: gold rises at every n, no fall, and no peak inside the range
    c = bon_curve(proxy, proxy, ns, seed=0)
    assert c["best_n"] == 64 and c["fall"]["gold_drop"] == 0.0
    assert np.all(np.diff(c["gold"]) > 0)
    assert not c["peak_in_range"] and c["peak"] is None


def test_trajectory_peak_averages_windows_instead_of_picking_the_luckiest_iteration():
    from minirlhf.experiments.overoptimization import trajectory_peak

    x = [0.0, 1.0, 2.0, 9.0, 2.0, 1.0, 0.0, 0.0]  # one lucky iteration at 9
    t = trajectory_peak(x, window=3)
    assert t["peak"] == pytest.approx(13 / 3) and t["peak_iteration"] == 2  # iterations 2..4
    assert t["last"] == pytest.approx(1 / 3) and t["fall"] == pytest.approx(4.0)
    t = trajectory_peak([1.0, None, 3.0, None, None, None], window=2)
    assert t["peak"] == 3.0 and t["last"] is None and t["fall"] is None
    with pytest.raises(ValueError, match="at least window=5"):
        trajectory_peak([1.0, 2.0])


def test_valid_gold_fit_leaves_out_iterations_without_valid_text():
    from minirlhf.experiments.overoptimization import valid_gold_fit

    d = np.linspace(0.0, 3.0, 13)
    gain = d * (1.0 - 0.5 * np.log(np.maximum(d, 1e-12)))  # Gao's RL form, alpha 1, beta 0.5
    rows = [{"objective/kl": float(x * x), "gold_valid": float(g), "valid_rate": 1.0}
            for x, g in zip(d, gain, strict=True)]
    rows[5] = {**rows[5], "gold_valid": None, "valid_rate": 0.0}  # nothing valid: left out
    out = valid_gold_fit(rows)
    assert out["fitted_iterations"] == 12 and out["gold_valid"][5] is None
    assert out["fit"]["alpha"] == pytest.approx(1.0) and out["fit"]["beta"] == pytest.approx(0.5)
    assert out["peak_in_range"]  # e^(1/0.5 - 1) = 2.72 <= 3
    assert out["fit"]["d_peak"] == pytest.approx(np.e)


def test_an_experiment_without_its_pipeline_run_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m minirlhf pipeline --preset tiny"):
        run_experiment(ExperimentConfig(name="rlaif", base="tiny", runs_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="unknown experiment"):
        run_experiment(ExperimentConfig(name="nope", runs_dir=str(tmp_path)))


def test_a_base_run_of_the_other_world_is_named_and_no_hint_would_overwrite_it(
        tiny_run, tiny_scratchpad_sft, tmp_path):
    """A reviews-world experiment on the scratchpad route's run (or critic-free on a pipeline
    run) is one line naming the base's world and the base it reads, before any work: no command
    is offered that would write a pipeline over the route's models."""
    import shutil

    from minirlhf.config import ConfigError
    from minirlhf.experiments import check_experiment

    runs, _ = tiny_run
    (tmp_path / "sp" / "sft").mkdir(parents=True)
    shutil.copy(tiny_scratchpad_sft, tmp_path / "sp" / "sft" / "model.npz")
    shutil.copytree(runs / "tiny" / "sft", tmp_path / "rv" / "sft")
    for name, base, said in (
        ("rlaif", "sp", "experiment rlaif: --base sp is a run of the scratchpad world ("
         f"{tmp_path / 'sp' / 'sft' / 'model.npz'} was trained for it); rlaif reads a pipeline "
         "run (--base default, or tiny with --quick)"),
        ("critic-free", "rv", "experiment critic-free: --base rv is a run of the reviews world ("
         f"{tmp_path / 'rv' / 'sft' / 'model.npz'} was trained for it); critic-free reads the "
         "scratchpad route's run (--base scratchpad)")):
        with pytest.raises(ConfigError) as caught:
            check_experiment(ExperimentConfig(name=name, base=base, runs_dir=str(tmp_path),
                                              quick=True))
        assert str(caught.value) == said


def test_critic_free_runs_quick_from_a_scratchpad_run(quick_experiment, tmp_path):
    """The critic-free experiment starts from a scratchpad run (runs/<base>/sft), not from the
    pipeline's, and names the route that makes one when it is missing."""
    with pytest.raises(FileNotFoundError, match="task=scratchpad corpus=scratchpad"):
        run_experiment(ExperimentConfig(name="critic-free", base="scratchpad",
                                        runs_dir=str(tmp_path), quick=True))
    r = quick_experiment("critic-free")
    saved = json.loads((Path(r.out_dir) / "results.json").read_text())
    assert set(saved["methods"]) == {"GRPO", "Dr. GRPO", "RLOO", "REINFORCE", "REINFORCE++",
                                     "ReMax", "PPO (critic)"}
    for runs in (*saved["methods"].values(), *saved["pitfalls"].values()):
        assert len(runs) == 1 and 0.0 <= runs[0]["accuracy"] <= 1.0
        assert len(runs[0]["per_prompt"]) == 128  # every held-out prompt, one sample each
        assert set(runs[0]["by_difficulty"]) == {"2", "3", "4", "5"}  # keys as JSON keeps them
    assert set(saved["sft_weights"]) == {"group", "none", "zero_std", "accuracy"}
    assert open(r.plots[0], "rb").read(4) == b"\x89PNG"


def test_the_frontier_puts_every_method_on_one_plot_and_resumes(tiny_run, quick_experiment):
    from minirlhf.experiments.frontier import QUICK_POINTS

    runs, _ = tiny_run
    r = quick_experiment("frontier")
    labels = [p["label"] for p in r.numbers["points"]]
    assert labels == [p[0] for p in QUICK_POINTS]
    for p in r.numbers["points"]:
        # KL is >= 0, but its estimate from samples (the mean log-ratio) is not: a policy that
        # barely moved gets an estimate of either sign. Its interval must reach 0 or above.
        lo, hi = p["ci95"]["kl_to_ref"]
        assert lo <= p["kl_to_ref"] <= hi and hi >= 0, p
        assert 0 <= p["win_rate_vs_sft"] <= 1 and p["seconds"] > 0
        assert f"| {p['label']} |" in r.numbers["table"]
    assert "best-of-n" in r.numbers["fits"] and r.numbers["best_of_n"]["kl"][0] == 0.0
    assert open(r.plots[0], "rb").read(4) == b"\x89PNG"
    again = run_experiment(ExperimentConfig(name="frontier", base="tiny", runs_dir=str(runs),
                                            quick=True))  # every point read back, not retrained
    assert again.numbers["points"] == r.numbers["points"] and again.seconds < 10
    # a point saved before points kept intervals is judged again from its saved policy: the
    # same samples (same seed, same machine), so the same figures, now with their intervals
    ppo = runs / "tiny" / "experiments" / "frontier" / "PPO_b0.05" / "point.json"
    old = json.loads(ppo.read_text())
    assert set(old["ci95"]) == {"gold_reward", "win_rate_vs_sft", "kl_to_ref"}
    ppo.write_text(json.dumps({k: v for k, v in old.items() if k != "ci95"}))
    third = run_experiment(ExperimentConfig(name="frontier", base="tiny", runs_dir=str(runs),
                                            quick=True))
    row = third.numbers["points"][0]
    assert row["rejudged"] == "the same figures" and row["ci95"] == old["ci95"]
    assert {k: v for k, v in row.items() if k != "rejudged"} == old


def test_an_experiment_holds_its_folder_while_it_runs(tiny_run, tmp_path):
    """One process at a time in an experiment's folder: a live holder is an error naming it,
    before any work (the command: one line, before its estimate); the lock is gone when the
    experiment ends."""
    import shutil
    import subprocess
    import sys

    from minirlhf.records import PipelineError, RunLock

    runs = tmp_path / "runs"
    shutil.copytree(tiny_run[0] / "tiny", runs / "tiny",
                    ignore=shutil.ignore_patterns("experiments"))
    config = ExperimentConfig(name="rlaif", base="tiny", runs_dir=str(runs), quick=True)
    folder = runs / "tiny" / "experiments" / "rlaif"
    with RunLock(folder):
        with pytest.raises(PipelineError) as caught:
            run_experiment(config)
        assert str(caught.value).endswith(f"(its lock is {folder / '.lock'}); wait for it to "
                                          "finish")
        proc = subprocess.run([sys.executable, "-m", "minirlhf", "experiment", "rlaif",
                               "--quick", "--runs-dir", str(runs)], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert proc.stderr.strip().splitlines() == [f"error: {caught.value}"]
    assert sorted(p.name for p in folder.iterdir()) == []  # nothing written
    r = run_experiment(config)
    assert (folder / "results.json").is_file() and not (folder / ".lock").exists()
    assert r.numbers["quick"] is True


def test_a_run_s_input_files_are_those_its_settings_read(tiny_run):
    """``input_digests``: the files a stage's settings read, by content: online DPO labelled by
    a reward model reads that model (not the preference file); offline DPO reads the
    preference file, not a reward model; GRPO on the verifier reads no reward model."""
    from minirlhf.experiments.common import input_digests
    from minirlhf.lm.checkpoint import file_digest
    from minirlhf.registry import COMMANDS

    run = tiny_run[0] / "tiny"
    sft, prefs = run / "sft" / "model.npz", run / "preferences" / "preferences.jsonl"
    reward = run / "reward" / "model.npz"
    online = COMMANDS["dpo"].config(init=str(sft), preferences=str(prefs), online_rounds=2,
                                    labeler="reward_model", reward_model=str(reward))
    assert input_digests("dpo", online) == {"init": file_digest(sft),
                                            "reward_model": file_digest(reward)}
    offline = COMMANDS["dpo"].config(init=str(sft), preferences=str(prefs))
    assert input_digests("dpo", offline) == {"preferences": file_digest(prefs),
                                             "init": file_digest(sft)}
    grpo = COMMANDS["grpo"].config(init=str(sft), reward="verifier")
    assert input_digests("grpo", grpo) == {"init": file_digest(sft)}


def test_saved_results_are_reused_only_on_the_base_files_they_read(tiny_run, tmp_path):
    """``reuse``: an experiment's results.json is returned as it is while the base run's files
    it read are the very files (by content); made from other files (the pipeline trained a
    stage again since), the experiment runs again."""
    import shutil

    from minirlhf.experiments import base_digests

    runs = tmp_path / "runs"
    shutil.copytree(tiny_run[0] / "tiny", runs / "tiny",
                    ignore=shutil.ignore_patterns("experiments"))
    config = ExperimentConfig(name="rlaif", base="tiny", runs_dir=str(runs), quick=True,
                              reuse=True)
    first = run_experiment(config)
    saved = runs / "tiny" / "experiments" / "rlaif" / "results.json"
    numbers = json.loads(saved.read_text())
    assert numbers["base_files"] == base_digests(runs / "tiny", ("sft", "preferences",
                                                                 "reward"))
    assert run_experiment(config).seconds == 0.0  # read back
    saved.write_text(json.dumps({**numbers, "base_files": {**numbers["base_files"],
                                                           "sft": "an earlier policy"}}))
    again = run_experiment(config)
    assert again.seconds > 0 and json.loads(saved.read_text())["base_files"] == \
        numbers["base_files"]
    assert {k: v for k, v in again.numbers.items() if k != "seconds"} == \
        {k: v for k, v in first.numbers.items() if k != "seconds"}  # the same base: same run


def test_a_frontier_point_is_read_back_however_its_runs_folder_is_written(
        tiny_run, quick_experiment, monkeypatch):
    """The course gives the runs folder one way, the ``frontier`` command another (absolute,
    relative): a finished point is the same run either way, read back, not trained again.
    GRPO's too, whose input files (its init and reward model) no pipeline stage names."""
    import dataclasses

    from minirlhf.experiments import frontier
    from minirlhf.experiments.common import Context
    from minirlhf.registry import COMMANDS

    runs, _ = tiny_run
    made = quick_experiment("frontier")  # runs_dir absolute
    monkeypatch.chdir(runs.parent)
    ctx = Context(ExperimentConfig(name="frontier", base="tiny", runs_dir=runs.name, quick=True),
                  needs=frontier.NEEDS)
    assert not ctx.out.is_absolute()
    assert frontier.points_to_train(ctx) == []  # the command's estimate: nothing left

    def trained(config):
        raise AssertionError(f"trained again: {config.out_dir}")

    for label in ("GRPO b=0.04", "PPO b=0.05", "DPO b=0.5"):
        stage, settings = next((s, kw) for name, s, kw in frontier.QUICK_POINTS
                               if name == label)
        monkeypatch.setitem(COMMANDS, stage, dataclasses.replace(COMMANDS[stage], run=trained))
        row = frontier.run_point(ctx, label, stage, settings)
        first = next(p for p in made.numbers["points"] if p["label"] == label)
        assert {k: v for k, v in row.items() if k != "rejudged"} == first  # rejudged: above
    monkeypatch.setattr(frontier, "same_point", lambda *args: False)  # none finished, none
    monkeypatch.setattr(frontier, "find_run", lambda *args: None)  # shared: all to train
    assert frontier.points_to_train(ctx) == [label for label, _, _ in frontier.QUICK_POINTS]


def test_a_frontier_point_at_the_base_runs_settings_is_that_run(tiny_run, monkeypatch):
    """The same settings give the same run: a point whose settings are the tiny pipeline's PPO
    (the quick budgets lifted) is read from the pipeline's record, not trained; trained anyway,
    logging a table every iteration, it gives the very same figures, bit for bit. Another
    strength, or another thread count, is not shared."""
    import shutil

    from minirlhf.experiments import frontier
    from minirlhf.experiments.common import Context, find_run
    from minirlhf.machine import blas_threads
    from minirlhf.registry import COMMANDS

    runs, _ = tiny_run
    monkeypatch.setitem(frontier.QUICK, "ppo", {})
    ctx = Context(ExperimentConfig(name="frontier", base="tiny", runs_dir=str(runs), quick=True,
                                   subdir="shared-test"), needs=frontier.NEEDS)
    try:
        row = frontier.run_point(ctx, "PPO b=0.05", "ppo", {"beta": 0.05})
        assert row["shared_with"] == str(ctx.base / "ppo")
        config = COMMANDS["ppo"].config(**row["settings"])
        assert frontier.same_point("ppo", row, config, blas_threads())  # its inputs' digests
        # a shared point saved before they were kept is read again, not taken on its paths
        assert not frontier.same_point("ppo", {k: v for k, v in row.items() if k != "inputs"},
                                       config, blas_threads())
        record = json.loads((ctx.base / "pipeline" / "ppo.json").read_text())
        assert row["seconds"] == record["seconds"]
        assert not (ctx.out / "PPO_b0.05" / "model.npz").exists()  # nothing trained

        def found(settings, threads=None):
            return find_run(ctx.base, "ppo", COMMANDS["ppo"].config(**settings),
                            blas_threads() if threads is None else threads)

        assert found(frontier.point_settings(ctx, "ppo", {"beta": 0.2}, ctx.out / "b")) is None
        assert found(row["settings"], blas_threads() + 1) is None
        shown = {**row["settings"], "table_every": 1}  # what the log shows changes no figure
        assert found(shown) is not None
        monkeypatch.setattr(frontier, "find_run", lambda *args: None)
        trained = frontier.run_point(ctx, "PPO b=0.05 trained", "ppo",
                                     {"beta": 0.05, "table_every": 1})
        assert "shared_with" not in trained
        assert {k: trained[k] for k in frontier.JUDGED} == {k: row[k] for k in frontier.JUDGED}
    finally:
        shutil.rmtree(ctx.out)


def test_a_stage_run_with_another_experiments_settings_is_that_run(tiny_run, monkeypatch):
    """``Context.stage_run``: a run one experiment trained is what another experiment gets
    when it asks for the same settings on the same thread count (read back, nothing trained),
    and trained anyway it gives the very same figures and metrics, bit for bit. Inputs count by
    content; other settings or other inputs are not shared; a frontier point at those settings
    reads the run too."""
    import shutil

    from minirlhf.experiments import common, frontier
    from minirlhf.experiments.common import Context
    from minirlhf.machine import blas_threads
    from minirlhf.registry import COMMANDS

    runs, _ = tiny_run
    config = ExperimentConfig(name="sharing-test", base="tiny", runs_dir=str(runs), quick=True)
    a = Context(replace(config, subdir="a"), needs=("sft", "reward"))
    b = Context(replace(config, subdir="b"), needs=("sft", "reward"))
    settings = {**a.ppo_settings(), "iterations": 2, "ppo_epochs": 1, "beta": 0.1}
    try:
        first = a.stage_run("ppo_x", "ppo", **settings)
        assert first.folder == a.out / "ppo_x" and (first.folder / "model.npz").exists()
        again = b.stage_run("ppo_y", "ppo", **{**settings, "table_every": 1})
        assert again.folder == first.folder and not (b.out / "ppo_y").exists()
        assert (again.figures, again.metrics) == (first.figures, first.metrics)
        point = frontier.run_point(b, "PPO b=0.1", "ppo", settings)
        assert point["shared_with"] == str(first.folder)
        # inputs count by content: a copy of the SFT policy is the same input, another
        # model (the pretrained one, of the same shape) is not
        copy = b.out / "sft_copy.npz"
        shutil.copy(a.sft, copy)
        assert b.stage_run("ppo_c", "ppo", **settings, init=str(copy)).folder == first.folder
        assert (b.base / "pretrain" / "model.npz").is_file()
        other_init = COMMANDS["ppo"].config(**{**b.base_inputs("ppo"), **b.common(), **settings,
                                               "init": str(b.base / "pretrain" / "model.npz")})
        assert common.find_run(b.base, "ppo", other_init, blas_threads()) is None
        other = b.stage_run("ppo_z", "ppo", **{**settings, "beta": 0.3})
        assert other.folder == b.out / "ppo_z"  # another beta: trained
        monkeypatch.setattr(common, "find_run", lambda *args: None)
        trained = b.stage_run("ppo_y", "ppo", **settings)
        assert trained.folder == b.out / "ppo_y"
        assert (trained.figures, trained.metrics) == (first.figures, first.metrics)
    finally:
        shutil.rmtree(runs / "tiny" / "experiments" / "sharing-test")


def test_ppo_details_pairs_every_run_with_the_baseline(quick_experiment):
    """The quick run writes the sweep and the ablations; every run of a seed shares its first
    rollout (the same stream), so the differences are paired; each ablation's differences are
    its tail minus the baseline's."""
    from minirlhf.experiments.ppo_details import ABLATIONS, BETAS, TAIL_KEYS

    r = quick_experiment("ppo-details")
    n = r.numbers
    assert set(n["beta_sweep"]) == {f"beta={b:g}" for b in BETAS}
    assert set(n["ablations"]) == {"baseline", *ABLATIONS}
    firsts = []
    for name, folder in n["runs"].items():
        metrics = [json.loads(line) for line in open(f"{r.out_dir}/{folder}/metrics.jsonl")]
        want = n["iterations"] if name.startswith("beta") else n["ablation_iterations"]
        assert len(metrics) == want, name
        firsts.append((metrics[0]["gold"], metrics[0]["response_length"]))
    assert len(set(firsts)) == 1  # one stream: the same first rollout in every run
    base = n["ablations"]["baseline"]
    for name in ABLATIONS:
        a = n["ablations"][name]
        for k in TAIL_KEYS:
            assert a[f"{k}_minus_baseline"] == pytest.approx(a[k] - base[k], abs=1e-12)
    sweep = n["beta_sweep"]
    assert sweep["beta=0"]["proxy_first"] == sweep["beta=0.2"]["proxy_first"]
    assert open(r.plots[0], "rb").read(4) == b"\x89PNG"


def test_tail_means_average_the_last_iterations_and_refuse_a_bad_tail():
    from minirlhf.experiments.ppo_details import TAIL_KEYS, tail_means

    metrics = [{key: float(i) for key in TAIL_KEYS.values()} for i in range(5)]
    assert tail_means(metrics, 2) == {name: 3.5 for name in TAIL_KEYS}
    assert tail_means(metrics, 5)["gold"] == 2.0
    for bad in (0, 6):
        with pytest.raises(ValueError, match="tail must be in"):
            tail_means(metrics, bad)


def test_dpo_details_rescales_beta_for_the_mean_and_pairs_every_run(tiny_run, quick_experiment):
    """The quick run trains every DPO variant; the rescaled mean-log-prob run's beta is the
    main beta times the measured mean response length; differences are from the main run."""
    from minirlhf.experiments.dpo_details import COMPARED, MAIN, mean_response_tokens
    from minirlhf.lm.checkpoint import load_model
    from minirlhf.world.preference_data import load_jsonl

    runs, _ = tiny_run
    r = quick_experiment("dpo-details")
    n = r.numbers
    assert len(n["runs"]) == 6 and MAIN in n["runs"]
    pairs = load_jsonl(str(runs / "tiny" / "preferences" / "preferences.jsonl"))[: n["pairs"]]
    _, tok, _ = load_model(str(runs / "tiny" / "sft" / "model.npz"))
    L = mean_response_tokens(pairs, tok)
    assert n["mean_response_tokens"] == pytest.approx(L) and L > 2
    # by hand: the response characters plus EOS, averaged over chosen and rejected
    assert L == pytest.approx(np.mean([len(p.chosen) + 1 for p in pairs]
                                      + [len(p.rejected) + 1 for p in pairs]))
    rescaled = [v for k, v in n["runs"].items() if "L=" in k]
    assert len(rescaled) == 1 and rescaled[0]["beta"] == pytest.approx(0.5 * L)
    main = n["runs"][MAIN]
    for name, row in n["runs"].items():
        if name != MAIN:
            for k in COMPARED:
                assert row[f"{k}_minus_main"] == pytest.approx(row[k] - main[k], abs=1e-12)
    m = n["online_at_matched_kl"]
    assert m["kl"] == n["runs"]["online, 4 rounds"]["kl_to_ref"]
    if m["in_range"]:
        assert m["gold_difference"] == pytest.approx(
            n["runs"]["online, 4 rounds"]["gold_reward"] - m["offline_gold"])
    assert open(r.plots[0], "rb").read(4) == b"\x89PNG"


def test_online_dpo_is_matched_on_the_offline_sweep():
    from minirlhf.experiments.dpo_details import MAIN, ONLINE, online_at_matched_kl

    def rep(kl, gold):
        return {"kl_to_ref": kl, "gold_reward": gold}

    sweep = {"beta=0.2": rep(6.0, 1.0), MAIN: rep(4.0, 2.0), "beta=1": rep(2.0, 1.5)}
    m = online_at_matched_kl({**sweep, ONLINE: rep(3.0, 2.5)})
    assert m["in_range"] and m["offline_gold"] == pytest.approx(1.75)  # halfway from 2 to 4
    assert m["gold_difference"] == pytest.approx(0.75)
    m = online_at_matched_kl({**sweep, ONLINE: rep(1.0, 2.5)})  # below the sweep: no guess
    assert not m["in_range"] and "gold_difference" not in m


def test_a_saved_result_is_reused_on_its_own_thread_count_or_any_when_asked(tiny_run):
    """A results.json made on another thread count trains another model: the course does not
    reuse it (``reuse``), a chapter reading the course's runs does (``any_threads``)."""
    runs, _ = tiny_run
    folder = runs / "tiny" / "experiments" / "rankings" / "seed7"
    folder.mkdir(parents=True)
    saved = {"quick": True, "seed": 7, "threads": 99, "marker": "made elsewhere"}
    (folder / "results.json").write_text(json.dumps(saved))
    config = ExperimentConfig(name="rankings", base="tiny", runs_dir=str(runs), quick=True,
                              seed=7, subdir="seed7", reuse=True, any_threads=True)
    r = run_experiment(config)
    assert r.numbers == saved and r.seconds == 0.0
    (folder / "results.json").write_text(json.dumps({**saved, "seed": 8}))  # another seed's
    from dataclasses import replace

    assert run_experiment(replace(config, subdir="seed7")).numbers["seed"] == 7  # run again
