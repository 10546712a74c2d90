"""pipeline --seeds N: independent runs, each figure's mean and 95% interval over seeds."""

import json
import shutil

import numpy as np
import pytest

from minirlhf.cli import main
from minirlhf.config import ConfigError
from minirlhf.evaluation import seed_interval
from minirlhf.pipeline import PipelineConfig, aggregate_seeds, run_seeds


def _summary(gold, acc):
    return {"policies": {"ppo": {"gold_reward": gold, "kl_to_ref": 2.0, "win_rate_vs_sft": 0.8,
                                 "ci95": {"gold_reward": [gold - 1, gold + 1]}}},
            "reward_model": {"accuracy": acc, "ceiling": None, "train_pairs": 90},
            "samples": {"ppo": [["a", "b", 1.0]]}}


def test_aggregate_keeps_todays_keys_as_the_mean_beside_mean_ci95_per_seed():
    agg = aggregate_seeds([_summary(1.0, 0.7), _summary(2.0, 0.8), _summary(4.0, 0.75)])
    ppo = agg["policies"]["ppo"]
    m, lo, hi = seed_interval(np.array([1.0, 2.0, 4.0]))
    assert ppo["gold_reward"] == ppo["mean"]["gold_reward"] == pytest.approx(7 / 3)
    assert ppo["ci95"]["gold_reward"] == [lo, hi] and ppo["per_seed"]["gold_reward"] == [1, 2, 4]
    assert ppo["ci95"]["kl_to_ref"] == [2.0, 2.0]  # no spread, no width
    assert "samples" not in agg and set(agg) == {"policies", "reward_model"}
    rm = agg["reward_model"]
    assert rm["accuracy"] == pytest.approx(0.75) and "ceiling" not in rm["per_seed"]  # None


def test_one_seed_is_refused_with_the_setting_named(tmp_path):
    with pytest.raises(ConfigError, match="--seeds must be at least 2"):
        run_seeds(PipelineConfig(name="x", preset="tiny", runs_dir=str(tmp_path)), 1)


def test_seeds_run_resume_and_aggregate(tiny_run, tmp_path, capsys):
    """Seed 0 is the tiny run already made (copied: records are relative to their folder, so it
    is skipped); seed 1 runs. The aggregate holds both, and its report pairs the policies."""
    runs, first = tiny_run
    shutil.copytree(runs / "tiny", tmp_path / "tiny-2seeds" / "seed0",
                    ignore=shutil.ignore_patterns("experiments"))
    code = main(["pipeline", "--preset", "tiny", "--seeds", "2", "--runs-dir", str(tmp_path),
                 "-q"])
    assert code == 0
    out = capsys.readouterr().out
    assert "2 seeds (0, 1): mean ± 95% half-width over seeds" in out
    root = tmp_path / "tiny-2seeds"
    summary = json.loads((root / "summary.json").read_text())
    one = json.loads((root / "seed1" / "summary.json").read_text())
    assert summary["seeds"] == [0, 1]
    ppo = summary["policies"]["ppo"]
    assert ppo["per_seed"]["gold_reward"] == [first.summary["policies"]["ppo"]["gold_reward"],
                                              one["policies"]["ppo"]["gold_reward"]]
    assert ppo["gold_reward"] == pytest.approx(np.mean(ppo["per_seed"]["gold_reward"]))
    lo, hi = ppo["ci95"]["gold_reward"]
    assert lo <= ppo["gold_reward"] <= hi
    report = (root / "report.md").read_text()
    assert "| PPO − DPO |" in report and "[seed1](seed1/report.md)" in report
    assert (root / "frontier.png").stat().st_size > 1000
    for stage in ("pretrain", "ppo"):  # seed 0 was skipped: its records are the copied ones
        assert (root / "seed0" / "pipeline" / f"{stage}.json").read_text() == \
            (runs / "tiny" / "pipeline" / f"{stage}.json").read_text()


def test_a_stage_command_with_seeds_aggregates_its_record(tiny_run, tmp_path, capsys):
    runs, _ = tiny_run
    out = tmp_path / "rm"
    code = main(["reward", "--seeds", "2", "-q", "--set",
                 f"preferences={runs / 'tiny' / 'preferences' / 'preferences.jsonl'}",
                 f"init={runs / 'tiny' / 'sft' / 'model.npz'}", f"out_dir={out}", "epochs=1",
                 "norm_samples=16", "corr_samples=16", "seed=3"])
    assert code == 0 and "2 seeds (3, 4): mean ± 95% half-width" in capsys.readouterr().out
    figures = json.loads((out / "seeds.json").read_text())
    assert figures["seeds"] == [3, 4] and (out / "seed3" / "model.npz").exists()
    acc = figures["per_seed"]["accuracy"]
    assert figures["accuracy"] == pytest.approx(np.mean(acc)) and len(acc) == 2
    assert acc[0] != acc[1]  # two seeds, two different shuffles and models
    assert main(["reward", "--seeds", "0", "-q"]) == 2  # a one-line error


def test_an_experiment_with_seeds_aggregates_its_results(tiny_run, capsys):
    runs, _ = tiny_run
    code = main(["experiment", "rankings", "--quick", "--seeds", "2", "--base", "tiny",
                 "--runs-dir", str(runs), "-q"])
    assert code == 0
    out = capsys.readouterr().out
    folder = runs / "tiny" / "experiments" / "rankings"
    agg = json.loads((folder / "seeds.json").read_text())
    assert agg["run_seeds"] == [0, 1] and "2 seeds (0, 1)" in out
    one = [json.loads((folder / f"seed{s}" / "results.json").read_text()) for s in (0, 1)]
    arm = "pairs, Bradley-Terry"
    per_seed = [r["arms"][arm]["gold_accuracy"]["mean"] for r in one]
    nested = agg["arms"][arm]["gold_accuracy"]  # its own keys: mean, ci95 (None), per_seed
    assert nested["over_seeds"]["per_seed"]["mean"] == per_seed
    assert nested["mean"] == nested["over_seeds"]["mean"]["mean"] == pytest.approx(
        np.mean(per_seed))
    assert f"arms/{arm}/gold_accuracy/mean:" in out


def test_over_seeds_leaves_out_figures_that_are_not_finite_in_some_seed():
    from minirlhf.evaluation import nested_over_seeds

    runs = [{"gold": 1.0, "fit": {"d_peak": 3.0, "alpha": 1.0}},
            {"gold": 2.0, "fit": {"d_peak": float("inf"), "alpha": 2.0}}]
    out = nested_over_seeds(runs)
    assert out["gold"] == 1.5 and out["fit"]["alpha"] == 1.5
    assert "d_peak" not in out["fit"] and "d_peak" not in out["fit"]["over_seeds"]["per_seed"]


def test_over_seeds_leaves_out_settings_and_each_seed_s_own_intervals():
    """A run's seed and thread count are settings, not figures to average; a run's intervals
    over prompts (its ``ci95``) are no figures either: each seed's results keep them."""
    from minirlhf.evaluation import nested_over_seeds

    runs = [{"seed": s, "threads": 1, "seconds": 10.0 + s, "gold": 1.0 + s,
             "ci95": {"gold": [0.5 + s, 1.5 + s]}, "ppo": {"gold": 2.0 + s, "seed": s}}
            for s in (0, 1)]
    out = nested_over_seeds(runs)
    assert out["gold"] == 1.5 and out["seconds"] == 10.5 and out["ppo"]["gold"] == 2.5
    assert {"seed", "threads", "ci95"}.isdisjoint(out)
    assert "seed" not in out["ppo"] and "seed" not in out["over_seeds"]["per_seed"]


def test_environment_names_the_cpus_vector_extensions(tmp_path, monkeypatch):
    from minirlhf import machine

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Some CPU\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(
        cpuinfo if path == "/proc/cpuinfo" else path, *a, **k))
    env = machine.environment()
    assert env["cpu"] == "Some CPU" and env["simd"] == "sse4_2 avx avx2 fma avx512f"


def test_an_experiment_runs_its_default_seeds_unless_told(monkeypatch, capsys):
    import minirlhf.experiments as experiments
    from minirlhf.experiments import EXPERIMENTS, default_seeds

    assert default_seeds("rlaif", quick=False) == 3  # three seeds fit in about 5 minutes
    assert default_seeds("rlaif", quick=True) == 1  # --quick is a seconds-long check
    assert default_seeds("ppo-details", quick=False) == 1  # one seed takes 5 minutes already
    assert all(default_seeds(name, quick=True) == 1 for name in EXPERIMENTS)
    calls = []

    def fake_seeds(config, n):
        calls.append((config.name, n))
        return {"run_seeds": list(range(n)), "path": "seeds.json"}

    def fake_one(config):
        calls.append((config.name, 1))
        raise SystemExit(0)  # one run: the call is all this test needs

    monkeypatch.setattr(experiments, "run_experiment_seeds", fake_seeds)
    monkeypatch.setattr(experiments, "run_experiment", fake_one)
    monkeypatch.setattr(experiments, "check_experiment", lambda config: None)  # no base run
    assert main(["experiment", "rlaif", "-q"]) == 0
    assert main(["experiment", "rlaif", "--seeds", "2", "-q"]) == 0
    with pytest.raises(SystemExit):
        main(["experiment", "rlaif", "--quick", "-q"])
    with pytest.raises(SystemExit):
        main(["experiment", "sycophancy", "-q"])
    assert calls == [("rlaif", 3), ("rlaif", 2), ("rlaif", 1), ("sycophancy", 1)]


def test_a_proportion_s_interval_over_seeds_stays_inside_zero_and_one():
    """Student's t on three shares far apart reaches below 0 and above 1 ("59% ± 68"); a
    proportion gets a bootstrap over the seeds instead, inside [0, 1], printed as an interval
    when it is not centred on the mean."""
    from minirlhf.evaluation import is_proportion, nested_over_seeds, with_interval

    shares = [0.9, 0.38, 0.48]
    _, lo, hi = seed_interval(np.array(shares))
    assert lo < 0 and hi > 1  # what Student's t gives here
    m, lo, hi = seed_interval(np.array(shares), proportion=True)
    assert 0.38 <= lo <= m <= hi <= 0.9
    assert is_proportion("rm_prefers_wrong_agreement", shares)
    assert is_proportion("win_rate_vs_sft", shares) and is_proportion("valid_rate", shares)
    assert not is_proportion("gold_reward", shares)  # not a share
    assert not is_proportion("valid_rate_minus_main", shares)  # a difference of two
    assert not is_proportion("valid_rate", [0.5, 1.2])  # not in [0, 1]
    agg = nested_over_seeds([{"valid_rate": v, "gold": v} for v in shares])
    (plo, phi), (glo, ghi) = (agg["over_seeds"]["ci95"][k] for k in ("valid_rate", "gold"))
    assert 0 <= plo <= phi <= 1 and glo < 0  # the share bootstrapped, the gold by t
    assert with_interval(0.5, [0.4, 0.6], ".1%") == "50.0% ± 10.0"
    assert with_interval(0.59, [0.38, 0.9], ".1%") == "59.0% [38.0%, 90.0%]"
