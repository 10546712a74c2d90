"""The pipeline on its tiny preset: report and summary, reproducibility, resuming after a kill,
invalidation, corrupted checkpoints, a NaN loss, and config errors caught before any work."""

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minirlhf.config import ConfigError
from minirlhf.lm.checkpoint import CheckpointError, load_model
from minirlhf.machine import blas_threads
from minirlhf.pipeline import PipelineConfig, PipelineError, run_pipeline
from minirlhf.registry import STAGES

ROOT = Path(__file__).resolve().parent.parent


def tiny(runs_dir, **kw) -> PipelineConfig:
    return PipelineConfig(name="tiny", preset="tiny", runs_dir=str(runs_dir), progress=False,
                          **kw)


@pytest.fixture(scope="module")
def finished(tiny_run):
    """One uninterrupted tiny run (made once per session): (its runs_dir, its result)."""
    return tiny_run


def copy_run(finished, tmp_path) -> Path:
    runs, _ = finished
    shutil.copytree(runs, tmp_path / "runs")
    return tmp_path / "runs"


def test_report_and_summary(finished):
    runs, result = finished
    assert result.ran == list(STAGES) and result.skipped == []
    summary = json.loads((runs / "tiny" / "summary.json").read_text())
    assert summary == result.summary
    for policy in ("sft", "best_of_n", "ppo", "dpo"):
        for key in ("gold_reward", "win_rate_vs_sft", "kl_to_ref", "mean_length", "valid_rate"):
            assert isinstance(summary["policies"][policy][key], float), (policy, key)
    assert summary["policies"]["sft"]["kl_to_ref"] == pytest.approx(0.0, abs=1e-4)
    for policy, p in summary["policies"].items():  # 95% intervals over the evaluation prompts
        ci = p["ci95"]
        measured = {"gold_reward", "win_rate_vs_sft"} | ({"kl_to_ref"} if policy != "best_of_n"
                                                        else set())  # best-of-n: analytic KL
        assert set(ci) == measured, policy
        for key, (lo, hi) in ci.items():
            assert lo <= p[key] <= hi and lo < hi or (policy == "sft" and key == "kl_to_ref")
    assert 0.5 <= summary["reward_model"]["ceiling"] <= 1.0
    assert 0.0 <= summary["reward_model"]["accuracy"] <= 1.0
    report = (runs / "tiny" / "report.md").read_text()
    ppo_row = next(line for line in report.splitlines() if line.startswith("| PPO |"))
    assert ppo_row.count(" ± ") == 3  # gold, win-rate and KL with their half-widths
    for needle in ("| PPO |", "| DPO |", "| SFT |", "best-of-n (n=8)", "ceiling",
                   "frontier.png", "## Samples for the same prompts"):
        assert needle in report, needle
    # what puzzles a newcomer, explained: the gold scale, SFT's win-rate against itself, a
    # KL of -0.00, best-of-n at n = 1, the two ceilings; and what reproduces elsewhere
    for needle in ("**Gold reward**", "**SFT's win-rate against itself**", "(−0.00)",
                   "**Best-of-n at n = 1**", "**Two ceilings**", "python -m minirlhf claims"):
        assert needle in report, needle
    assert (runs / "tiny" / "frontier.png").stat().st_size > 1000
    env = summary["environment"]  # what the numbers depend on besides the seed
    assert env["numpy"] == np.__version__ and env["blas_threads"] == blas_threads()
    assert env["python"] == platform.python_version() and env["cpu"] and env["blas"]
    assert env["simd"] and f"({env['simd']})" in report  # the vector extensions, named
    assert f"NumPy {np.__version__}" in report and f"{blas_threads()} thread(s)" in report
    for line in report.splitlines():  # every linked plot exists
        if line.startswith("!["):
            assert (runs / "tiny" / line.split("](")[1].rstrip(")")).exists(), line


@pytest.mark.catalogue  # 25 s: with the reliability catalogue (pytest -m catalogue), in CI
def test_same_seed_gives_an_identical_summary(finished, tmp_path):
    runs, _ = finished
    run_pipeline(tiny(tmp_path))
    assert (tmp_path / "tiny" / "summary.json").read_bytes() == \
        (runs / "tiny" / "summary.json").read_bytes()


def test_a_second_run_skips_every_stage(finished, tmp_path):
    runs = copy_run(finished, tmp_path)
    again = run_pipeline(tiny(runs))
    assert again.ran == [] and again.skipped == list(STAGES)
    assert again.summary == finished[1].summary


@pytest.mark.catalogue  # 30 s: with the reliability catalogue (pytest -m catalogue)
def test_a_changed_config_upstream_redoes_what_depends_on_it(finished, tmp_path):
    runs = copy_run(finished, tmp_path)
    again = run_pipeline(tiny(runs, overrides=["reward.lr=0.002"]))
    assert again.skipped == ["pretrain", "sft", "preferences", "dpo"]  # DPO needs no RM
    assert again.ran == ["reward", "best_of_n", "ppo"]
    forced = run_pipeline(tiny(runs, overrides=["reward.lr=0.002"], force=True))
    assert forced.ran == list(STAGES)


@pytest.mark.catalogue  # 25 s: with the reliability catalogue, whose kills it complements
def test_a_killed_run_resumes_to_the_same_summary(finished, tmp_path):
    """Kill -9 the command in the middle of the run (after the reward model's record appears,
    while the next stages run), then run it again: only the unfinished stages run, and the
    summary is byte-identical to the uninterrupted run's. The command is started outside the
    repository (the corpus ships with the package)."""
    runs, _ = finished
    cmd = [sys.executable, "-m", "minirlhf", "pipeline", "--preset", "tiny", "--runs-dir",
           str(tmp_path), "-q"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record = tmp_path / "tiny" / "pipeline" / "reward.json"
    deadline = time.time() + 120
    while not record.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert record.exists()
    assert not (tmp_path / "tiny" / "summary.json").exists()  # it really was cut short
    done = sorted(p.stem for p in (tmp_path / "tiny" / "pipeline").glob("*.json"))
    resumed = run_pipeline(tiny(tmp_path))
    assert set(resumed.skipped) == set(done) and "reward" in resumed.skipped
    assert resumed.ran == [s for s in STAGES if s not in done]
    assert (tmp_path / "tiny" / "summary.json").read_bytes() == \
        (runs / "tiny" / "summary.json").read_bytes()


@pytest.mark.catalogue  # 20 s: with the reliability catalogue
@pytest.mark.parametrize("damage", ["truncate", "flip a byte"])
def test_a_corrupted_checkpoint_is_named_and_never_loaded(finished, tmp_path, damage, caplog):
    runs = copy_run(finished, tmp_path)
    path = runs / "tiny" / "sft" / "model.npz"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=str(path)):
        load_model(path)
    with caplog.at_level("WARNING", logger="minirlhf.pipeline"):
        again = run_pipeline(tiny(runs))
    assert str(path) in caplog.text  # the warning names the damaged file
    assert again.ran[0] == "sft" and "pretrain" in again.skipped
    load_model(path)  # remade, whole again
    assert again.summary == finished[1].summary


def test_a_nan_loss_stops_the_stage_and_keeps_the_last_good_checkpoint(finished, tmp_path,
                                                                      monkeypatch):
    import minirlhf.stages.dpo as dpo

    runs = copy_run(finished, tmp_path)
    old_dpo = (runs / "tiny" / "dpo" / "model.npz").read_bytes()
    real = dpo.dpo_loss

    def poisoned(*args, **kw):  # the third step's loss is NaN
        out = real(*args, **kw)
        poisoned.calls += 1
        return (out[0] * np.nan if poisoned.calls == 3 else out[0],) + tuple(out[1:])
    poisoned.calls = 0
    monkeypatch.setattr(dpo, "dpo_loss", poisoned)
    with pytest.raises(PipelineError) as err:
        run_pipeline(tiny(runs, overrides=["dpo.lr=0.0002"]))
    message = str(err.value)
    assert "stage dpo" in message and "step 2" in message and "loss is nan" in message
    # the message names the checkpoint the stage started from
    assert f"init = {runs / 'tiny' / 'sft' / 'model.npz'}" in message
    load_model(runs / "tiny" / "ppo" / "model.npz")
    assert (runs / "tiny" / "dpo" / "model.npz").read_bytes() == old_dpo  # untouched


@pytest.mark.parametrize("override, needle", [
    ("ppo.nonsense=1", "unknown config key 'nonsense'"),
    ("ppo.lr=fast", "'lr' expects float"),
    ("ppo.beta=-0.1", "beta = -0.1 is outside its allowed range [0, inf)"),
    ("ppo.clip=1.5", "clip = 1.5 is outside its allowed range (0, 1)"),
    ("dpo.label_smoothing=0.7", "label_smoothing = 0.7 is outside its allowed range [0, 0.5)"),
    ("reward.batch_size=1000", "reward: RewardConfig: batch_size = 1000 is larger than the 900 "
                               "training pairs"),
    ("dpo.batch_size=600", "dpo: DPOConfig: batch_size = 600 is larger than the 512 pairs"),
    ("ppo.minibatch_size=12", "ppo: PPOConfig: minibatch_size = 12 must divide rollout_size"),
    ("dpo.beta=0", "dpo: DPOConfig: beta = 0.0 is outside its allowed range (0, inf)"),
    ("best_of_n.ns=1,3", "ns = '1,3': each n must be >= 1 and divide samples_per_prompt = 8"),
    ("sft.lr=nan", "lr is NaN"),
    ("ppo_beta=1", "must look like stage.key=value"),
])
def test_config_errors_are_caught_before_any_work(tmp_path, override, needle):
    with pytest.raises(ConfigError) as err:
        run_pipeline(tiny(tmp_path, overrides=[override]))
    assert needle in str(err.value)
    assert not (tmp_path / "tiny").exists()  # nothing was started


def test_a_missing_corpus_of_the_user_s_says_what_to_give(tmp_path):
    """No command makes a file of the user's: the error says what a corpus is (it once named
    data/make_corpora.py, which writes the shipped corpora only)."""
    config = tiny(tmp_path)
    config.corpus = str(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match=f"corpus {tmp_path / 'nope.txt'} is missing: give "
                       "a text file, one document per line, or a shipped corpus by name "
                       r"\(reviews, arithmetic, scratchpad\)$"):
        run_pipeline(config)


def test_the_pipeline_command(tmp_path, capsys):
    from minirlhf.cli import main

    assert main(["pipeline", "--preset", "tiny", "--runs-dir", str(tmp_path), "--set",
                 "ppo.beta=-1"]) == 2
    assert "beta = -1.0 is outside" in capsys.readouterr().err


def test_the_batch_check_counts_the_pairs_the_reward_stage_will_use(tmp_path):
    """With max_pairs, the held-out tenth is taken from the pairs used, as train_reward does:
    100 pairs leave 90 to train on, so a batch of 91 is rejected and one of 90 is not."""
    from minirlhf.pipeline import stage_configs

    with pytest.raises(ConfigError, match="larger than the 90 training pairs"):
        stage_configs(tiny(tmp_path, overrides=["reward.max_pairs=100",
                                                "reward.batch_size=91"]))
    stage_configs(tiny(tmp_path, overrides=["reward.max_pairs=100", "reward.batch_size=90"]))


def test_an_example_stage_joins_with_its_file_and_one_registry_line(finished, tmp_path):
    """tests/example_stage/ (REINFORCE with a batch-mean baseline: its stage file and its
    objective), copied into a copy of the package with one line added to the registry, and
    nothing else: it appears in the command line, runs in the pipeline (after the finished
    stages, which are skipped), and enters summary.json and the report."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "minirlhf", project / "minirlhf",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for floor in ("objectives", "stages"):  # its objective, and its loop
        shutil.copy(ROOT / "tests" / "example_stage" / floor / "reinforce.py",
                    project / "minirlhf" / floor / "reinforce.py")
    registry = project / "minirlhf" / "registry.py"
    text = registry.read_text()
    registry.write_text(text.replace('    "dpo",\n', '    "dpo",\n    "reinforce",\n'))
    added = set(registry.read_text().splitlines()) - set(text.splitlines())
    assert added == {'    "reinforce",'}  # the one registry line

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "minirlhf", *args], cwd=project,
                              capture_output=True, text=True, timeout=300)

    listing = cli("--help")
    assert "reinforce" in listing.stdout and "REINFORCE with a batch-mean baseline" in \
        listing.stdout
    help_text = cli("reinforce", "--help").stdout
    assert "batch_size = 16  [2, inf)" in help_text and "prompts per iteration" in help_text
    runs = copy_run(finished, tmp_path)
    run = cli("pipeline", "--preset", "tiny", "--runs-dir", str(runs), "-q")
    assert run.returncode == 0, run.stderr
    assert "ran reinforce; skipped pretrain, sft, preferences, reward, best_of_n, ppo, dpo" \
        in run.stdout
    summary = json.loads((runs / "tiny" / "summary.json").read_text())
    assert set(summary["policies"]) == {"sft", "best_of_n", "ppo", "dpo", "reinforce"}
    assert 0.0 <= summary["policies"]["reinforce"]["win_rate_vs_sft"] <= 1.0
    assert len(summary["samples"]["reinforce"]) == len(summary["samples"]["sft"])
    report = (runs / "tiny" / "report.md").read_text()
    assert "| REINFORCE |" in report and "- REINFORCE (" in report
    assert (runs / "tiny" / "reinforce" / "model.npz").exists()


@pytest.mark.parametrize("damage, stage", [
    ("another stage's checkpoint copied into place", "reward"),
    ("a truncated preference file", "preferences"),
])
def test_a_record_vouches_only_for_the_files_it_wrote(finished, tmp_path, damage, stage, caplog):
    """Each record holds the hashes of the files its stage wrote and read: a file replaced or
    truncated since makes the stage (and what depends on it) run again, never a silent
    resume."""
    runs = copy_run(finished, tmp_path)
    run = runs / "tiny"
    if stage == "reward":
        shutil.copy(run / "sft" / "model.npz", run / "reward" / "model.npz")  # loads fine
        load_model(run / "reward" / "model.npz")
    else:
        path = run / "preferences" / "preferences.jsonl"
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[: len(lines) // 2]))  # whole lines: it still parses
    with caplog.at_level("WARNING", logger="minirlhf.pipeline"):
        again = run_pipeline(tiny(runs))
    assert "not the file the stage wrote" in caplog.text
    assert again.ran[0] == stage
    assert again.summary == finished[1].summary


def test_two_runs_in_one_folder_are_refused_and_a_stale_lock_is_taken_over(finished, tmp_path,
                                                                          caplog):
    runs = copy_run(finished, tmp_path)
    lock = runs / "tiny" / ".lock"
    lock.write_text(f"{os.getpid()}\n")  # a live process holds the folder
    with pytest.raises(PipelineError, match=f"in use by process {os.getpid()}"):
        run_pipeline(tiny(runs))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lock.write_text(f"{gone.pid}\n")  # a killed run's lock: its process is gone
    with caplog.at_level("WARNING", logger="minirlhf.pipeline"):
        again = run_pipeline(tiny(runs))
    assert f"process {gone.pid} that held it is gone" in caplog.text
    assert again.ran == [] and not lock.exists()


def test_files_the_pipeline_writes_are_readable_by_others(finished):
    runs, _ = finished
    old = os.umask(0o022)
    os.umask(old)
    if old != 0o022:
        pytest.skip("this check assumes the usual umask 022")
    for name in ("summary.json", "report.md", "pipeline/ppo.json", "ppo/model.npz",
                 "preferences/preferences.jsonl"):
        assert (runs / "tiny" / name).stat().st_mode & 0o777 == 0o644, name


def test_a_stage_command_is_estimated_for_its_model_s_size(finished):
    """A stage command's estimate reads the model's size from the checkpoint it starts from:
    the tiny pipeline's SFT settings on a tiny model take the tiny pipeline's SFT time."""
    import dataclasses

    from minirlhf.pipeline import estimate_stage, model_preset
    from minirlhf.stages.kto import KTOConfig
    from minirlhf.stages.sft import SFTConfig

    runs, _ = finished
    cfg = dataclasses.replace(SFTConfig(init=str(runs / "tiny" / "pretrain" / "model.npz")),
                              **STAGES["sft"].presets["tiny"])
    assert model_preset(cfg) == "tiny" and model_preset(SFTConfig(init="/none.npz")) == "default"
    assert estimate_stage("sft", cfg) == pytest.approx(STAGES["sft"].seconds["tiny"])
    assert estimate_stage("sft", dataclasses.replace(cfg, steps=cfg.steps * 3)) == \
        pytest.approx(3 * STAGES["sft"].seconds["tiny"])
    assert estimate_stage("kto", KTOConfig()) is None  # beyond the pipeline: no time known


def test_a_setting_added_later_leaves_the_fingerprint_at_its_default(tmp_path):
    """preferences.format came after runs were made: at its default ("pairs", what they did) it
    is left out of the fingerprint, so those runs stay valid; another value changes it."""
    import dataclasses

    from minirlhf.config import unchanged_by_default
    from minirlhf.pipeline import PipelineConfig, fingerprints, stage_configs

    cfgs = stage_configs(PipelineConfig(preset="tiny"))
    assert unchanged_by_default(cfgs["preferences"]) == {"format"}
    base = fingerprints(cfgs, tmp_path, 1)
    other = {**cfgs, "preferences": dataclasses.replace(cfgs["preferences"], format="unpaired")}
    changed = fingerprints(other, tmp_path, 1)
    assert changed["preferences"] != base["preferences"]
    assert changed["pretrain"] == base["pretrain"] and changed["sft"] == base["sft"]


def test_a_bad_path_given_to_a_stage_stops_the_pipeline_before_any_work(tmp_path, capsys):
    """A stage's folder with a file in the way, a preference file that is not there or breaks at
    a line: one line naming it, before the first stage runs (nothing made in the runs folder)."""
    from minirlhf.cli import main

    (tmp_path / "a-file").write_text("")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\nnot json\n')
    runs = tmp_path / "runs"
    for override, said in (
        (f"ppo.out_dir={tmp_path / 'a-file' / 'ppo'}",
         f"error: ppo.out_dir {tmp_path / 'a-file' / 'ppo'}: {tmp_path / 'a-file'} is a file, "
         "not a folder"),
        (f"reward.preferences={bad}", f"error: {bad}:2: malformed JSON"),
        (f"reward.preferences={tmp_path / 'none.jsonl'}",
         f"error: preferences file {tmp_path / 'none.jsonl'} is missing"),
    ):
        assert main(["pipeline", "--preset", "tiny", "--runs-dir", str(runs), "-q", "--set",
                     override]) == 2
        err = capsys.readouterr().err
        assert err.startswith(said) and len(err.splitlines()) == 1, err
        assert not runs.exists()
