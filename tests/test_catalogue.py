"""The reliability catalogue: bad inputs and faults, each with its exact outcome.

Every case runs the real command line (``python -m minirlhf ...``, in a subprocess, from a
folder outside the repository) on the tiny preset and asserts one of three outcomes:

* a **one-line error**: exit code 2, one line ``error: ...`` on stderr naming the right thing
  (key and range, file and line, path), no traceback, and no work done when it could be known
  before;
* a **refusal or warning** that says what it did;
* a **byte-identical resume**: after the fault, running the same command again ends with the
  same summary.json as an uninterrupted run.

Faults inside a run (kill -9 at chosen moments, a NaN loss, blown-up weights) are planted by
tests/catalogue_driver.py. It is a heavier suite (a few minutes): ``pytest -m catalogue``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.catalogue

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "tests" / "catalogue_driver.py"
ENV = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")


def _default_sigint() -> None:
    """In the child, before it runs: Ctrl-C's default action. A shell that starts a job in the
    background (``nohup ... &``) ignores SIGINT, the children inherit that, and Python keeps an
    inherited SIG_IGN: the Ctrl-C tests would test nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[str, str]:
    """communicate(), and kill the child if it does not end in time (no orphan left running)."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise


def run(args: list[str], cwd: Path, fault: str | None = None, timeout: float = 600,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m minirlhf ARGS`` (through the driver when a fault is planted)."""
    head = [sys.executable, str(DRIVER), fault, "--"] if fault else [sys.executable, "-m",
                                                                       "minirlhf"]
    return subprocess.run(head + args, cwd=cwd, env=env or ENV, capture_output=True, text=True,
                          timeout=timeout)


def follow(hint: str, cwd: Path, same: list[str] | None = None, env: dict[str, str] | None = None,
           more: dict[str, list[str]] | None = None) -> subprocess.CompletedProcess:
    """Do what a printed hint says, as a user pasting its command (the one text between
    backticks, which ``minirlhf.config.command_hint`` writes) into a shell would: its commands
    (joined by ``&&``) one after the other, stopping at the first that fails; ``VAR=value``
    words before a command set the variable for that command; ``cd DIR`` moves to DIR;
    ``python`` is this interpreter. A hint that only sets variables (``MINIRLHF_THREADS=2``:
    "run the same command with it") runs ``same``, the command that printed it, with them.
    ``more``: words added after a minirlhf subcommand's own (a tiny budget, where the hint's
    command would train for minutes: the hint's words still say what it makes, and where)."""
    (text,) = re.findall(r"`([^`]+)`", hint)
    base, proc = dict(env or ENV), None
    for part in text.split(" && "):
        words, cmd_env = shlex.split(part), dict(base)
        while words and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            key, _, value = words.pop(0).partition("=")
            cmd_env[key] = value
        if not words:
            assert same is not None, f"{hint!r} sets variables for the same command: give it"
            words = ["python", "-m", "minirlhf", *same]
        if words[0] == "cd":
            cwd = Path(words[1])
            continue
        if words[0] == "python":
            words[0] = sys.executable
        if more and words[1:3] == ["-m", "minirlhf"] and words[3] in more:
            words += more[words[3]]
        proc = subprocess.run(words, cwd=cwd, env=cmd_env, capture_output=True, text=True,
                              timeout=600)
        if proc.returncode != 0:
            return proc
    assert proc is not None, hint
    return proc


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2, exactly one ``error:`` line holding every needle, and no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def finished(tiny_run):
    return tiny_run


@pytest.fixture
def work(tmp_path):
    """A folder outside the repository to run the commands from."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


def copy_run(finished, tmp_path) -> Path:
    runs, _ = finished
    shutil.copytree(runs, tmp_path / "runs")
    return tmp_path / "runs"


def pipeline(runs: Path, *more: str) -> list[str]:
    return ["pipeline", "--preset", "tiny", "--runs-dir", str(runs), "-q", *more]


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden temporary ones too): {relative path: its bytes}."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def same_summary(runs: Path, finished) -> bool:
    return (runs / "tiny" / "summary.json").read_bytes() == \
        (finished[0] / "tiny" / "summary.json").read_bytes()


# --------------------------------------------------------------------------- settings
SETTINGS = [
    ("pretrain.steps=0", "PretrainConfig: steps = 0 is outside its allowed range [1, 1_000_000]"),
    ("pretrain.steps=1000000000", "steps = 1000000000 is outside its allowed range"),
    ("pretrain.lr=-1", "PretrainConfig: lr = -1.0 is outside its allowed range (0, inf)"),
    ("pretrain.lr=inf", "PretrainConfig: lr = inf is outside its allowed range (0, inf)"),
    ("pretrain.seq_len=500", "seq_len = 500 exceeds the tiny preset's block_size 128"),
    ("pretrain.preset=huge", "PretrainConfig: preset = 'huge' is not one of"),
    ("pretrain.task=chess", "PretrainConfig: task = 'chess' is not one of reviews, arithmetic"),
    ("pretrain.val_fraction=1", "val_fraction = 1.0 is outside its allowed range (0, 1)"),
    ("sft.steps=abc", "config key 'steps' expects int, got 'abc'"),
    ("sft.lr=nan", "SFTConfig: lr is NaN"),
    ("sft.max_new_tokens=1000", "max_new_tokens = 1000 is outside its allowed range [1, 126]"),
    ("sft.batch_size=0", "SFTConfig: batch_size = 0 is outside its allowed range [1, 4096]"),
    ("sft.progress=maybe", "config key 'progress' expects true or false, got 'maybe'"),
    ("preferences.n_pairs=-5", "n_pairs = -5 is outside its allowed range [1, 10_000_000]"),
    ("preferences.raters=nobody", "PreferenceConfig: raters = 'nobody' is not one of"),
    ("reward.val_fraction=1.5", "RewardConfig: val_fraction = 1.5 is outside"),
    ("reward.batch_size=5000", "reward: RewardConfig: batch_size = 5000 is outside its allowed "
                               "range [1, 4096]"),
    ("reward.batch_size=1000", "RewardConfig: batch_size = 1000 is larger than the 900 training "
                               "pairs"),
    ("reward.readout=middle", "RewardConfig: readout = 'middle' is not one of"),
    ("best_of_n.ns=1,3", "ns = '1,3': each n must be >= 1 and divide samples_per_prompt = 8"),
    ("best_of_n.ns=one", "ns = 'one'"),
    ("ppo.minibatch_size=12", "PPOConfig: minibatch_size = 12 must divide rollout_size = 32"),
    ("ppo.clip=1.5", "PPOConfig: clip = 1.5 is outside its allowed range (0, 1)"),
    ("ppo.beta=-0.1", "PPOConfig: beta = -0.1 is outside its allowed range [0, inf)"),
    ("ppo.kl_estimator=k2", "PPOConfig: kl_estimator = 'k2' is not one of"),
    ("ppo.iterations=10000000", "iterations = 10000000 is outside its allowed range [1, 100_000]"),
    ("dpo.beta=0", "DPOConfig: beta = 0.0 is outside its allowed range (0, inf)"),
    ("dpo.loss_type=hinge2", "DPOConfig: loss_type = 'hinge2' is not one of"),
    ("dpo.label_smoothing=0.7", "label_smoothing = 0.7 is outside its allowed range [0, 0.5)"),
    ("dpo.batch_size=600", "DPOConfig: batch_size = 600 is larger than the 512 pairs"),
    ("ppo.nonsense=1", "unknown config key 'nonsense' for PPOConfig"),
    ("chess.depth=3", "pipeline override 'chess.depth=3' must look like stage.key=value"),
]


@pytest.mark.parametrize("override, needle", SETTINGS, ids=[s[0] for s in SETTINGS])
def test_a_bad_setting_is_one_line_before_any_work(override, needle, work):
    proc = run(pipeline(work / "runs", "--set", override), work)
    one_line_error(proc, needle)
    assert not (work / "runs").exists()  # refused before anything was made


def test_an_unknown_preset_is_one_line(work):
    one_line_error(run(["pipeline", "--preset", "huge", "--runs-dir", "runs"], work),
                   "PipelineConfig: preset = 'huge' is not one of default, tiny")


def test_a_missing_corpus_names_its_absolute_path(work):
    proc = run(pipeline(work / "runs", "--set", "pretrain.corpus=mine.txt"), work)
    one_line_error(proc, f"corpus {work / 'mine.txt'} is missing")


def test_a_runs_folder_that_is_a_file_is_one_line(work):
    (work / "runs").write_text("not a folder\n")
    proc = run(pipeline(work / "runs"), work)
    one_line_error(proc, str(work / "runs"))


def test_an_output_folder_that_cannot_be_made_fails_before_training(finished, work):
    runs, _ = finished
    (work / "file").write_text("x\n")
    proc = run(["sft", "-q", "--set", f"init={runs / 'tiny' / 'pretrain' / 'model.npz'}",
                f"out_dir={work / 'file' / 'sft'}"], work)
    one_line_error(proc, f"cannot make the output folder {work / 'file' / 'sft'}")


# ------------------------------------------------------------------ preference files
GOOD = '{"prompt": "the plot was", "chosen": " good.", "rejected": " bad."}'
PREFERENCE_FILES = [
    ("malformed JSON", '{"prompt": "the plot was", "chosen": " good."', ":3: malformed JSON"),
    ("a missing field", '{"prompt": "the plot was", "chosen": " good."}',
     ":3: missing field 'rejected'"),
    ("an empty response", '{"prompt": "the plot was", "chosen": "", "rejected": " bad."}',
     ":3: field 'chosen' is empty"),
    ("a character outside the alphabet",
     '{"prompt": "the plot was", "chosen": " GOOD.", "rejected": " bad."}',
     ":3: field 'chosen' has character 'G' at position 1"),
    ("a number for a text", '{"prompt": "the plot was", "chosen": 5, "rejected": " bad."}',
     ":3: field 'chosen' must be a string"),
    ("a list for an object", '["the plot was", " good.", " bad."]',
     ":3: each line must be a JSON object"),
    ("chosen identical to rejected",
     '{"prompt": "the plot was", "chosen": " good.", "rejected": " good."}',
     ":3: 'chosen' and 'rejected' are the same response"),
    ("p_chosen above 1", GOOD[:-1] + ', "p_chosen": 1.5}',
     ":3: field 'p_chosen' is 1.5; a probability must be in [0, 1]"),
    ("p_chosen below 0", GOOD[:-1] + ', "p_chosen": -0.2}',
     ":3: field 'p_chosen' is -0.2; a probability must be in [0, 1]"),
    ("a NaN gold value", GOOD[:-1] + ', "chosen_gold": NaN}',
     ":3: field 'chosen_gold' is nan; it must be a finite number"),
    ("an infinite gold value", GOOD[:-1] + ', "rejected_gold": -Infinity}',
     ":3: field 'rejected_gold' is -inf; it must be a finite number"),
    ("a response longer than the model's context",
     '{"prompt": "the plot was", "chosen": " good.", "rejected": "' + " bad" * 40 + '"}',
     ":3: prompt + 'rejected' is 174 tokens with BOS and EOS; the model's block_size is 128"),
    ("a ranking among pairs", '{"prompt": "the plot was", "ranked": [" good.", " bad."]}',
     ":3: a ranking, in a file of pairs from line 1: a file holds one kind of record"),
]


@pytest.mark.parametrize("stage", ["reward", "dpo"])
@pytest.mark.parametrize("what, line, needle", PREFERENCE_FILES,
                         ids=[c[0] for c in PREFERENCE_FILES])
def test_a_meaningless_preference_file_names_file_and_line(finished, work, stage, what, line,
                                                           needle):
    runs, _ = finished
    path = work / "prefs.jsonl"
    path.write_text(GOOD + "\n" + GOOD.replace("good", "fine") + "\n" + line + "\n")
    proc = run([stage, "-q", "--set", f"preferences={path}",
                f"init={runs / 'tiny' / 'sft' / 'model.npz'}", f"out_dir={work / stage}"], work)
    one_line_error(proc, f"{path}{needle}")
    assert not (work / stage / "model.npz").exists()


def test_a_preference_file_that_is_not_utf8_names_the_line(finished, work):
    runs, _ = finished
    path = work / "prefs.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + GOOD.encode()[:-2] + b"\xff\"}\n")
    proc = run(["reward", "-q", "--set", f"preferences={path}",
                f"init={runs / 'tiny' / 'sft' / 'model.npz'}", f"out_dir={work / 'rm'}"], work)
    one_line_error(proc, f"{path}:2: not UTF-8 text")


@pytest.mark.parametrize("stage, line, kind", [
    ("reward", '{"prompt": "the plot was", "completion": " good.", "label": true}',
     "unpaired thumbs-up/down examples"),
    ("dpo", '{"prompt": "the plot was", "ranked": [" good.", " bad."]}', "rankings"),
    ("dpo", '{"prompt": "the plot was", "completion": " good.", "label": true}',
     "unpaired thumbs-up/down examples"),
])
def test_a_file_of_another_kind_given_to_a_pair_stage_is_one_line(finished, work, stage, line,
                                                                   kind):
    runs, _ = finished
    path = work / "other.jsonl"
    path.write_text(line + "\n")
    proc = run([stage, "-q", "--set", f"preferences={path}",
                f"init={runs / 'tiny' / 'sft' / 'model.npz'}", f"out_dir={work / 'out'}"], work)
    needs = "reward training needs chosen/rejected pairs or rankings" if stage == "reward" \
        else "DPO needs chosen/rejected pairs"
    one_line_error(proc, f"{path}: {needs}; this file holds {kind}")


def test_duplicate_pairs_never_reach_both_sides_of_the_split(finished, work):
    """Every pair written twice: the held-out accuracy is measured on comparisons the model
    never trained on (a leak would put it above the ceiling)."""
    from minirlhf.stages.reward import RewardConfig, split_pairs
    from minirlhf.world.preference_data import load_jsonl, pair_key, save_jsonl

    runs, _ = finished
    pairs = load_jsonl(runs / "tiny" / "preferences" / "preferences.jsonl")[:300]
    path = save_jsonl(work / "twice.jsonl", pairs + pairs)
    cfg = RewardConfig(preferences=str(path))
    train, val = split_pairs(load_jsonl(path), cfg)
    assert len(train) + len(val) == 600
    assert not {pair_key(p) for p in train} & {pair_key(p) for p in val}


# ------------------------------------------------------------------------- corpora
CORPORA = [
    ("an empty corpus", b"\n\n", ": the corpus is empty"),
    ("a character outside the alphabet", b"the plot was good.\nthe PLOT was bad.\n",
     ":2: "),
    ("bytes that are not UTF-8", b"the plot was good.\nthe plot was \xff.\n",
     ":2: not UTF-8 text"),
    ("a single document", b"the plot was good.\n", "has 1 document(s): it needs at least two"),
    ("a corpus shorter than a window", b"the plot was good.\nthe cast is bad.\n",
     "is too small for seq_len 64"),
]


@pytest.mark.parametrize("what, content, needle", CORPORA, ids=[c[0] for c in CORPORA])
def test_a_bad_corpus_names_file_and_line(work, what, content, needle):
    path = work / "corpus.txt"
    path.write_bytes(content)
    proc = run(["pretrain", "-q", "--set", "corpus=corpus.txt", "preset=tiny", "steps=2",
                "seq_len=64", f"out_dir={work / 'pre'}"], work)
    one_line_error(proc, str(path), needle)
    assert not (work / "pre" / "model.npz").exists()


# ------------------------------------------------------------------------- checkpoints
def _damaged(kind: str, finished, work: Path) -> Path:
    runs, _ = finished
    good = runs / "tiny" / "pretrain" / "model.npz"
    path = work / "model.npz"
    data = good.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "a flipped byte":
        i = len(data) // 2
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
    elif kind == "a text file":
        path.write_text("this is not a checkpoint\n")
    elif kind == "an empty file":
        path.write_bytes(b"")
    elif kind == "a plain npz":
        np.savez(path, w=np.ones(3))
    elif kind == "its JSON sidecar":
        path.write_bytes(good.with_suffix(".json").read_bytes())
    elif kind == "a .npy array":
        np.save(work / "w.npy", np.ones(3))
        (work / "w.npy").rename(path)
    return path


CHECKPOINTS = [  # what the file is, not a guess at a cause (NumPy's speaks of allow_pickle)
    ("truncated", "cannot be read as a checkpoint: it is a cut-off or damaged .npz archive ("),
    ("a flipped byte", ""),  # a flipped byte fails the zip's CRC or the checksum
    ("a text file", "cannot be read as a checkpoint: it is a text file of 25 bytes (its first "
                    "line: 'this is not a checkpoint')"),
    ("an empty file", "cannot be read as a checkpoint: it is an empty file"),
    ("a plain npz", "has no metadata: not a minirlhf checkpoint"),
    ("its JSON sidecar", " bytes (its first line: '{')"),  # "it is a text file of N bytes"
    ("a .npy array", "cannot be read as a checkpoint: it is a NumPy .npy array, not a .npz "
                     "archive"),
]


@pytest.mark.parametrize("kind, needle", CHECKPOINTS, ids=[c[0] for c in CHECKPOINTS])
def test_a_damaged_checkpoint_is_one_line_and_never_loaded(finished, work, kind, needle):
    path = _damaged(kind, finished, work)
    proc = run(["sft", "-q", "--set", f"init={path}", f"out_dir={work / 'sft'}", "steps=2"],
               work)
    line = one_line_error(proc, f"checkpoint {path}", needle)
    assert "cannot be read as a checkpoint" in line or "checksum" in line or "metadata" in line
    assert "allow_pickle" not in line
    assert not (work / "sft" / "model.npz").exists()


def test_a_missing_checkpoint_names_the_command_that_makes_it(work):
    """Of another name than the stage writes: the command, and the file it writes (it once
    said `python -m minirlhf pretrain`, which writes runs/default/pretrain/model.npz)."""
    proc = run(["sft", "-q", "--set", f"init={work / 'none.npz'}"], work)
    one_line_error(proc, f"{work / 'none.npz'} is missing: make one with `python -m minirlhf "
                         f"pretrain --set out_dir={work}` (it writes {work / 'model.npz'})")


def test_a_policy_given_as_the_reward_model_is_one_line(finished, work):
    runs, _ = finished
    sft = runs / "tiny" / "sft" / "model.npz"
    proc = run(["best-of-n", "-q", "--set", f"policy={sft}", f"reward_model={sft}",
                f"out_dir={work / 'bon'}", "ns=1,2", "samples_per_prompt=2",
                "prompts_per_eval=1"], work)
    one_line_error(proc, f"BestOfNConfig: reward_model = {sft} is a policy (made by the sft "
                         "stage), not a reward model: give a reward model's model.npz")
    assert not (work / "bon").exists()  # refused before its folder was made



def test_export_into_a_folder_that_is_not_empty_is_one_line_and_changes_nothing(finished,
                                                                                   work):
    """Export refuses a folder with anything in it, naming the folder and --force, and leaves
    it byte for byte; --force replaces the model's files and keeps the rest (the same
    checkpoint again: the same bytes, the run's figures in its card included)."""
    runs, _ = finished
    reward = runs / "tiny" / "reward" / "model.npz"
    out = work / "hf"
    assert run(["export", str(reward), str(out)], work).returncode == 0
    assert "From the run's summary.json" in (out / "README.md").read_text()
    (out / "notes.txt").write_text("mine\n")
    before = files(out)
    one_line_error(run(["export", str(reward), str(out)], work), str(out), "--force")
    assert files(out) == before
    proc = run(["export", "--force", str(reward), str(out)], work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert files(out) == before

# ----------------------------------------------------------------------------- records
def _damage_record(kind: str, run_dir: Path) -> None:
    record = run_dir / "pipeline" / "reward.json"
    if kind == "a truncated record":
        record.write_text(record.read_text()[:100])
    elif kind == "a record that is not an object":
        record.write_text("[]\n")
    elif kind == "an edited number":
        obj = json.loads(record.read_text())
        obj["numbers"]["accuracy"] = 0.99
        record.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    elif kind == "a deleted record":
        record.unlink()
    elif kind == "a deleted output":
        (run_dir / "reward" / "model.npz").unlink()
    elif kind == "binary garbage":
        record.write_bytes(b"\xff\xfe\x00garbage")


RECORDS = [
    ("a truncated record", "unreadable record"),
    ("a record that is not an object", "not a stage record"),
    ("an edited number", "the record was altered since the stage wrote it"),
    ("a deleted record", None),
    ("a deleted output", "is missing"),
    ("binary garbage", "unreadable record"),
]


@pytest.mark.parametrize("kind, warning", RECORDS, ids=[c[0] for c in RECORDS])
def test_a_damaged_record_reruns_its_stage_to_the_same_summary(finished, tmp_path, work, kind,
                                                               warning):
    runs = copy_run(finished, tmp_path)
    _damage_record(kind, runs / "tiny")
    proc = run(pipeline(runs), work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if warning:
        assert warning in proc.stderr
    assert "ran reward, best_of_n, ppo; skipped pretrain, sft, preferences, dpo" in proc.stdout
    assert same_summary(runs, finished)


@pytest.mark.parametrize("name", ["summary.json", "report.md"])
def test_a_deleted_summary_or_report_is_written_again_without_rerunning(finished, tmp_path,
                                                                       work, name):
    runs = copy_run(finished, tmp_path)
    (runs / "tiny" / name).unlink()
    proc = run(pipeline(runs), work)
    assert proc.returncode == 0 and "ran nothing" in proc.stdout, proc.stderr[-3000:]
    assert same_summary(runs, finished) and (runs / "tiny" / "report.md").exists()


# ------------------------------------------------------------------ kills at five moments
KILLS = [  # (fault, the first stage the killed run had to do, what the resumed run runs)
    ("kill-inside:ppo", "ppo", "ppo, dpo"),
    ("kill-inside:reward", "reward", "reward, best_of_n, ppo, dpo"),
    ("kill-after:sft", "sft", "preferences, reward, best_of_n, ppo, dpo"),
    ("kill-after:best_of_n", "best_of_n", "ppo, dpo"),
    ("kill-before-record:reward", "reward", "reward, best_of_n, ppo, dpo"),
    ("kill-writing:ppo/model.npz", "ppo", "ppo, dpo"),
    ("kill-writing:preferences.jsonl", "preferences", "preferences, reward, best_of_n, ppo, dpo"),
    ("kill-writing:report.md", None, "nothing"),
    ("kill-writing:summary.json", None, "nothing"),
]
STAGE_ORDER = ["pretrain", "sft", "preferences", "reward", "best_of_n", "ppo", "dpo"]


@pytest.mark.parametrize("fault, first, resumed_runs", KILLS, ids=[k[0] for k in KILLS])
def test_a_kill_at_any_moment_resumes_to_the_same_summary(finished, tmp_path, work, fault,
                                                          first, resumed_runs):
    """A copy of the finished run with the records from ``first`` on removed (as if the run had
    got that far), killed -9 at the chosen moment, then run again: the resumed run does exactly
    what was left, leaves no temporary file, and ends with the uninterrupted run's summary."""
    runs = copy_run(finished, tmp_path)
    for stage in STAGE_ORDER[STAGE_ORDER.index(first):] if first else []:
        (runs / "tiny" / "pipeline" / f"{stage}.json").unlink()
    for name in ("summary.json", "report.md"):
        (runs / "tiny" / name).unlink()
    killed = run(pipeline(runs), work, fault=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (runs / "tiny" / "report.md").exists()
    resumed = run(pipeline(runs), work)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"ran {resumed_runs};" in resumed.stdout
    assert same_summary(runs, finished)
    assert not list((runs / "tiny").rglob("*.tmp"))  # no temporary file left behind


def test_ctrl_c_keeps_what_is_finished_and_exits_130(finished, tmp_path, work):
    runs = copy_run(finished, tmp_path)
    for stage in ("ppo", "dpo"):
        (runs / "tiny" / "pipeline" / f"{stage}.json").unlink()
    ppo = runs / "tiny" / "ppo"
    (ppo / "metrics.jsonl").unlink()  # an interrupted PPO must not make it either
    before = files(ppo)
    proc = subprocess.Popen([sys.executable, "-m", "minirlhf", *pipeline(runs)], cwd=work,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    deadline = time.time() + 120
    # PPO is writing its outputs: they are held under temporary names until it ends
    while not list(ppo.glob(".*.tmp")) and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = _finish(proc)
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == ("interrupted: every finished stage is kept; run the "
                                            "same command again to resume")
    assert "Traceback" not in err
    assert files(ppo) == before  # every file as it was, no temporary file left
    resumed = run(pipeline(runs), work)
    assert "ran ppo, dpo;" in resumed.stdout and same_summary(runs, finished)


# ----------------------------------------------------------------- NaN in each stage
NAN_STAGES = [  # (stage, where its second update is, what it started from)
    ("pretrain", "pretrain: step 1", "scratch"),
    ("sft", "sft: step 1", "init = {run}/pretrain/model.npz"),
    ("reward", "reward: step 1", "preferences = {run}/preferences/preferences.jsonl, init = "
                                 "{run}/sft/model.npz"),
    ("ppo", "ppo: iteration 0", "init = {run}/sft/model.npz, reward_model = "
                                "{run}/reward/model.npz"),
    ("dpo", "dpo: step 1", "preferences = {run}/preferences/preferences.jsonl, init = "
                           "{run}/sft/model.npz"),
]


@pytest.mark.parametrize("stage, where, started", NAN_STAGES, ids=[s[0] for s in NAN_STAGES])
def test_a_nan_loss_in_any_stage_is_one_line_and_keeps_the_last_good_checkpoint(
        finished, tmp_path, work, stage, where, started):
    runs = copy_run(finished, tmp_path)
    (runs / "tiny" / "pipeline" / f"{stage}.json").unlink()
    before = (runs / "tiny" / stage / "model.npz").read_bytes()
    proc = run(pipeline(runs), work, fault=f"nan:{stage}")
    one_line_error(proc, f"stage {stage} stopped: {where}: loss is nan",
                   f"It started from {started.format(run=runs / 'tiny')}, which is intact")
    assert (runs / "tiny" / stage / "model.npz").read_bytes() == before


@pytest.mark.parametrize("stage", ["sft", "ppo"])
def test_weights_that_blow_up_are_never_saved(finished, tmp_path, work, stage):
    """The last update leaves weights of 1e28 (finite, but the next forward pass overflows):
    the stage stops, one line, and its previous checkpoint is untouched."""
    runs = copy_run(finished, tmp_path)
    (runs / "tiny" / "pipeline" / f"{stage}.json").unlink()
    before = (runs / "tiny" / stage / "model.npz").read_bytes()
    proc = run(pipeline(runs), work, fault=f"blow-up:{stage}")
    one_line_error(proc, f"stage {stage} stopped", "was not written", "the run blew up")
    assert (runs / "tiny" / stage / "model.npz").read_bytes() == before


# ------------------------------------------------------- two runs, threads, estimates
def test_a_second_concurrent_run_is_refused(finished, tmp_path, work):
    runs = copy_run(finished, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (runs / "tiny" / ".lock").write_text(f"{holder.pid}\n")
        proc = run(pipeline(runs), work)
        one_line_error(proc, f"{runs / 'tiny'} is in use by process {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    proc = run(pipeline(runs), work)  # the holder is gone: its stale lock is taken over
    assert proc.returncode == 0 and f"process {holder.pid} that held it is gone" in proc.stderr


def _other_threads() -> tuple[int, int, dict[str, str]]:
    """(the finished run's thread count, another, an environment that sets the other in the
    three variables of the BLAS, as a user's shell might)."""
    from minirlhf.machine import blas_threads

    now = blas_threads()
    other = 1 if now > 1 else 2
    env = {k: v for k, v in ENV.items() if k != "MINIRLHF_THREADS"}
    return now, other, dict(env, OPENBLAS_NUM_THREADS=str(other), OMP_NUM_THREADS=str(other),
                            MKL_NUM_THREADS=str(other))


def test_a_run_of_another_thread_count_is_refused_unless_forced(finished, tmp_path, work):
    """A finished run made with another thread count is not replaced: one line before any
    work, naming the count that reuses it and --force; --force trains every stage again, and
    with the same count again nothing runs."""
    runs = copy_run(finished, tmp_path)
    before = files(runs)
    now, other, env = _other_threads()
    proc = run(pipeline(runs), work, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {runs / 'tiny'}: its pretrain stage was made with {now} "
                           "thread")
    assert line.endswith(f"or add --force to train every stage again with {other}, replacing "
                         "the run"), line
    assert files(runs) == before and proc.stdout == ""  # nothing done, not even the estimate
    seeds = run(pipeline(runs, "--name", "tiny-2", "--seeds", "2"), work)
    assert seeds.returncode == 0, seeds.stderr[-3000:]
    before = files(runs)
    refused = run(pipeline(runs, "--name", "tiny-2", "--seeds", "2"), work, env=env)
    assert refused.returncode == 2 and "tiny-2/seed0: its pretrain stage was made" in refused.stderr
    assert files(runs) == before
    seed1 = run(pipeline(runs, "--name", "tiny-2/seed1", "--seed", "1", "--force"), work,
                env=env)  # one seed made again with the other count
    assert seed1.returncode == 0, seed1.stderr[-3000:]
    before = files(runs)
    mixed = run(pipeline(runs, "--name", "tiny-2", "--seeds", "2"), work)
    (line,) = mixed.stderr.strip().splitlines()
    assert mixed.returncode == 2 and line.startswith(
        f"error: {runs / 'tiny-2'}: its seeds were made with different BLAS thread counts "
        f"(seed0: {now}, seed1: {other}), this process has {now}, and results depend on the "
        "count; each seed is read again with its own count: `")
    assert line.endswith(f"`; or add --force to train every seed again with {now}, replacing "
                         "them") and files(runs) == before
    followed = follow(line, work)  # each seed's run, with its own count: nothing trained
    assert followed.returncode == 0 and "ran nothing" in followed.stdout, followed.stderr[-3000:]
    forced = run(pipeline(runs, "--force"), work, env=env)
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert "ran pretrain, sft, preferences, reward, best_of_n, ppo, dpo;" in forced.stdout
    again = run(pipeline(runs), work, env=env)
    assert "ran nothing" in again.stdout  # with the same count, it is resumed as usual


def test_other_settings_do_not_train_over_the_course_s_run(tmp_path, work):
    """The README's `pipeline --set ppo.beta=0.1` after `course` would train a stage again over
    the run the chapters and the claims read: refused in one line before any work, naming a
    run of its own (followed: a run beside it); --force replaces it, and the course then
    trains the changed stage back, to the very figures it had."""
    from minirlhf.course.build import aside_line, build, plan, set_aside
    from minirlhf.machine import cores

    runs = tmp_path / "runs"
    jobs = [j for j in plan("tiny", seeds=1, runs_dir=str(runs))
            if j.name in ("pipeline", "rlaif:seed0")]  # a run, and an experiment that reads it
    assert sorted(build(jobs, base="tiny", runs_dir=str(runs), workers=1,
                        progress=False).done) == ["pipeline", "rlaif:seed0"]
    root = runs / "tiny"
    rlaif = (root / "experiments" / "rlaif" / "seed0" / "results.json").read_bytes()
    summary = json.loads((root / "summary.json").read_text())
    one = dict(ENV, MINIRLHF_THREADS="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")  # the course's count
    plain = run(pipeline(runs), work, env=one)  # the course's own settings: read back
    assert plain.returncode == 0 and "ran nothing" in plain.stdout, plain.stderr[-3000:]
    before = files(runs)
    changed = pipeline(runs, "--set", "dpo.beta=0.2")
    proc = run(changed, work, env=one)
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line == (
        f"error: {root}: the course made this run, which the chapters and the claims read, and "
        "these settings would train its dpo stage again over it: give this run a folder of its "
        f"own, `python -m minirlhf pipeline --preset tiny --name tiny-mine --runs-dir "
        f"{runs.absolute()} --set dpo.beta=0.2`, or add --force to train every stage again "
        "with these settings, replacing it")
    assert files(runs) == before and proc.stdout == ""  # nothing done, not even the estimate
    if cores() > 1:  # in a shell of two threads, the pipeline's default: the same line (the
        two = run(changed, work, env=dict(one, MINIRLHF_THREADS="2"))  # settings come first)
        assert two.returncode == 2 and two.stderr.strip() == line, two.stderr
    followed = follow(line, work, env=one)
    assert followed.returncode == 0, followed.stderr[-3000:]
    mine = json.loads((runs / "tiny-mine" / "pipeline" / "dpo.json").read_text())
    assert mine["config"]["beta"] == 0.2  # a run beside the course's, which is untouched
    assert not (runs / "tiny-mine" / "pipeline" / "course.json").exists()
    assert {k: v for k, v in files(runs).items() if k.startswith("tiny/")} == before
    forced = run([*changed, "--force"], work, env=one)
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert "the course made this run; --force: its dpo stage trained with these settings" \
        in forced.stderr
    assert not (root / "pipeline" / "course.json").exists()
    assert json.loads((root / "summary.json").read_text())["policies"]["dpo"] \
        != summary["policies"]["dpo"]
    plan_now = run(["course", "--preset", "tiny", "--runs-dir", str(runs), "--plan"], work,
                   env=one)
    assert "its dpo stage is missing or says other settings (pipeline --force with others, " \
        "say); the course trains it again" in plan_now.stderr, plan_now.stderr[-3000:]
    assert re.search(r"\n  pipeline +to run", plan_now.stdout), plan_now.stdout
    assert re.search(r"\n  rlaif:seed0 +to check", plan_now.stdout), plan_now.stdout
    back = build(jobs, base="tiny", runs_dir=str(runs), workers=1, progress=False)
    # the run trained back, and the experiment that reads it run again: its results, made
    # from the very files it reads (dpo's policy is not among them), read back as they were
    assert sorted(back.done) == ["pipeline", "rlaif:seed0"]
    assert (root / "pipeline" / "course.json").is_file()
    assert json.loads((root / "summary.json").read_text())["policies"] == summary["policies"]
    assert (root / "experiments" / "rlaif" / "seed0" / "results.json").read_bytes() == rlaif
    mark = root / "pipeline" / "course.json"
    mark.write_text('{"made by": "python -m minirlhf course"}\n')  # a mark of 1988f67's
    assert build(jobs, base="tiny", runs_dir=str(runs), workers=1, progress=False).done == []
    assert set(json.loads(mark.read_text())) == {"made by", "threads", "fingerprints"}
    if cores() > 1:  # made again with another count: the course's run no more
        forced = run([*changed, "--force"], work, env=dict(one, MINIRLHF_THREADS="2"))
        assert forced.returncode == 0 and not mark.exists(), forced.stderr[-3000:]
        (aside,) = set_aside(jobs, str(runs), "tiny", move=False)[0]
        # kept aside, with no command that would "read it again" on the preset's settings
        assert aside_line(aside, 1) == (
            f"{root} holds a pipeline run made with 2 threads and other settings than the "
            f"preset's (its records in pipeline/ hold them): kept as {runs / 'tiny-threads2'}; "
            "the course makes its own with 1")


def test_an_experiment_of_another_thread_count_is_refused_unless_forced(finished, tmp_path,
                                                                         work):
    """`experiment` would replace a course's one-thread results with another count's: refused
    in one line before any work; the hint's count reruns it, reusing every run; --force
    trains it again with this count."""
    runs = copy_run(finished, tmp_path)
    now, other, env = _other_threads()
    command = ["experiment", "sycophancy", "--quick", "--base", "tiny", "--runs-dir", str(runs),
               "-q"]
    made = run(command, work)
    assert made.returncode == 0, made.stderr[-3000:]
    results = runs / "tiny" / "experiments" / "sycophancy" / "results.json"
    before = files(runs)
    refused = run(command, work, env=env)
    assert refused.returncode == 2 and refused.stdout == "", refused.stderr[-3000:]
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith(f"error: {results} was made with {now} thread")
    assert line.endswith(f"or add --force to train again with {other}, replacing it"), line
    assert files(runs) == before
    followed = follow(line, work, same=command, env=env)
    assert followed.returncode == 0, followed.stderr[-3000:]
    assert json.loads(results.read_text())["threads"] == now
    forced = run([*command, "--force"], work, env=env)
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert json.loads(results.read_text())["threads"] == other


def test_runs_over_seeds_and_a_run_of_one_seed_never_share_a_name(finished, tmp_path, work):
    """`pipeline --seeds N --name X` once wrote its summary over seeds over the one-seed run X's
    summary.json and report.md (and the one-seed run back over them): refused both ways."""
    runs = copy_run(finished, tmp_path)
    before = files(runs)
    proc = run(pipeline(runs, "--name", "tiny", "--seeds", "2"), work)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"error: {runs / 'tiny'} holds a run of one seed (its records, "
        f"{runs / 'tiny' / 'pipeline'}); give the runs over seeds a --name of their own")
    (runs / "over" / "seed0" / "pipeline").mkdir(parents=True)
    proc = run(pipeline(runs, "--name", "over"), work)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"error: {runs / 'over'} holds runs over seeds ({runs / 'over' / 'seed0'}, ...); give "
        "the run of one seed a --name of its own")
    assert files(runs) == before


def test_a_run_of_days_is_announced_before_it_starts(work):
    from minirlhf.pipeline import PipelineConfig, estimate_seconds, stage_configs

    config = PipelineConfig(preset="tiny", runs_dir=str(work / "runs"),
                            overrides=["pretrain.steps=1000000"])
    cfgs = stage_configs(config)
    est = estimate_seconds(config, cfgs, ["pretrain"])
    tiny = estimate_seconds(PipelineConfig(preset="tiny"), stage_configs(
        PipelineConfig(preset="tiny")), ["pretrain"])
    assert est["pretrain"] == pytest.approx(tiny["pretrain"] * 1_000_000 / 600)
    proc = subprocess.Popen([sys.executable, "-m", "minirlhf", *pipeline(
        work / "runs", "--set", "pretrain.steps=1000000")], cwd=work, env=ENV,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    line = proc.stderr.readline()
    proc.send_signal(signal.SIGINT)
    _finish(proc)
    assert re.search(r"this run will take about [\d.]+ (hours|days) on a 2-core laptop", line), \
        line
    assert "pretrain" in line and proc.returncode == 130


def test_a_stage_runs_from_any_directory_with_the_shipped_corpus(work):
    proc = run(["pretrain", "-q", "--set", "preset=tiny", "steps=3", "eval_every=3",
                "eval_windows=2", "n_samples=2", f"out_dir={work / 'pre'}"], work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / "pre" / "model.npz").exists()


# ------------------------------------------------------------- nothing to learn from
def _stage(finished, work: Path, stage: str) -> Path:
    """A copy of the finished run's folder of ``stage`` (its outputs, to be kept as they are)."""
    runs, _ = finished
    shutil.copytree(runs / "tiny" / stage, work / stage)
    return work / stage


def test_a_preference_file_of_one_comparison_leaves_nothing_to_train_on(finished, work):
    """Every row the same comparison: the held-out share takes every copy of it, and the reward
    model would train on 0 pairs (it once saved a model 'at chance', gain 1e6, and went on)."""
    runs, _ = finished
    line = (runs / "tiny" / "preferences" / "preferences.jsonl").read_text().splitlines()[0]
    path = work / "same.jsonl"
    path.write_text((line + "\n") * 40)
    out = _stage(finished, work, "reward")
    before = files(out)
    proc = run(["reward", "-q", "--set", f"preferences={path}",
                f"init={runs / 'tiny' / 'sft' / 'model.npz'}", f"out_dir={out}"], work)
    one_line_error(proc, f"RewardConfig: nothing to learn from: the 0 training pairs left in "
                         f"{path} (40 rows, 1 distinct comparison; held out: 4 and 36 copies "
                         "of them)")
    assert files(out) == before


def test_fewer_pairs_than_a_batch_names_the_file_and_its_rows(finished, work):
    runs, _ = finished
    rows = (runs / "tiny" / "preferences" / "preferences.jsonl").read_text().splitlines()[:3]
    path = work / "three.jsonl"
    path.write_text("\n".join(rows) + "\n")
    proc = run(["orpo", "-q", "--set", f"preferences={path}",
                f"init={runs / 'tiny' / 'sft' / 'model.npz'}", f"out_dir={work / 'orpo'}"], work)
    one_line_error(proc, f"ORPOConfig: batch_size = 32 is larger than the 3 pairs of {path} (3 "
                         "rows); allowed range [1, 3]")
    assert not list((work / "orpo").iterdir())


def test_one_thumb_is_nothing_to_learn_from_whatever_the_batch(finished, work):
    """KTO's smallest batch is 2: one sample can never fill it (it once offered [1, 1] and then
    refused batch_size = 1)."""
    runs, _ = finished
    for batch in ("64", "2"):
        proc = run(["kto", "-q", "--set", "thumbs=1", f"batch_size={batch}",
                    f"init={runs / 'tiny' / 'sft' / 'model.npz'}", f"out_dir={work / 'kto'}"],
                   work)
        one_line_error(proc, "KTOConfig: nothing to learn from: the 1 sample thumbs = 1 labels; "
                             "batch_size needs at least 2")
    assert not (work / "kto").exists()


SAMPLERS = [  # (stage, its settings, the line): a policy that never finishes a response
    ("preferences", ["n_pairs=10"], "PreferenceConfig: nothing to learn from: none of 64 "
     "prompts' 2 samples from {sft} are usable (64 with an unfinished or empty response within "
     "max_new_tokens = 1, 0 with two equal responses)"),
    ("dpo", ["online_rounds=1", "online_pairs=4", "batch_size=4"], "DPOConfig: nothing to learn "
     "from: none of 20 pairs of fresh samples is usable (20 with an unfinished or empty response "
     "within max_new_tokens = 1, 0 with two equal responses)"),
    ("rft", ["rounds=1", "prompts_per_round=8", "n=2", "reward_model={rm}"], "RFTConfig: nothing "
     "to learn from: round 1 kept none of its 8 prompts: not one of their 2 samples finished "
     "within max_new_tokens = 1"),
]


@pytest.mark.parametrize("stage, settings, line", SAMPLERS, ids=[s[0] for s in SAMPLERS])
def test_samples_that_never_finish_are_one_line_not_a_loop(finished, work, stage, settings,
                                                         line):
    """Sampling stages keep finished, different responses only: with none (a budget of one
    token), preferences and online DPO once sampled forever, and RFT fine-tuned on nothing."""
    runs, _ = finished
    paths = dict(sft=runs / "tiny" / "sft" / "model.npz", rm=runs / "tiny" / "reward" /
                 "model.npz")
    out = _stage(finished, work, stage) if (runs / "tiny" / stage).exists() else work / stage
    before = files(out) if out.exists() else {}
    init = "policy" if stage == "preferences" else "init"
    proc = run([stage, "-q", "--set", f"{init}={paths['sft']}", "max_new_tokens=1",
                f"out_dir={out}", *[s.format(**paths) for s in settings]], work, timeout=120)
    one_line_error(proc, line.format(**paths))
    assert files(out) == before


def test_a_critic_free_run_that_never_takes_a_step_says_so(finished, work):
    """A budget of one token: every response gets the same (invalid) gold reward and dynamic
    sampling drops every group, so GRPO never steps. That is a finding, not an input error
    (critic-free's dynamic-sampling pitfall shows it on purpose): the run ends, and says in its
    log that its policy is the SFT policy."""
    runs, _ = finished
    proc = run(["grpo", "-q", "--set", "task=reviews", "dynamic_sampling=true",
                "max_new_tokens=1", "iterations=2", "prompts_per_iteration=2",
                "num_generations=2", "minibatch_size=4", f"out_dir={work / 'grpo'}",
                f"init={runs / 'tiny' / 'sft' / 'model.npz'}"], work)
    assert proc.returncode == 0, proc.stderr
    assert ("not one step in 2 iterations: the loss left out every response (dynamic_sampling "
            "= True: groups whose rewards are all equal; mask_truncated_completions = False: "
            "responses without EOS); the policy is the SFT policy") in proc.stderr


def test_a_reward_model_that_learned_nothing_is_not_saved(finished, work):
    """At a learning rate of 1e-30 the zero-initialised head stays at about 0: every SFT sample
    gets one score, and the model was once saved with a normalisation gain of 1e6."""
    runs, _ = finished
    out = _stage(finished, work, "reward")
    before = files(out)
    proc = run(["reward", "-q", "--set", "lr=1e-30", "max_pairs=64", "norm_samples=16",
                "corr_samples=16", "max_new_tokens=60", f"out_dir={out}",
                f"init={runs / 'tiny' / 'sft' / 'model.npz'}",
                f"preferences={runs / 'tiny' / 'preferences' / 'preferences.jsonl'}"], work)
    line = one_line_error(proc, "reward: the reward model gives the 16 SFT samples one score "
                                "(standard deviation ", "): it tells no response from another")
    assert float(line.split("standard deviation ")[1].split(")")[0]) < 1e-6
    assert files(out) == before


# ---------------------------------------------------------- a checkpoint of the wrong kind
KINDS = [  # (command, the setting, its file in the tiny run, the line after "error: ")
    ("ppo", "init", "reward", "PPOConfig: init = {path} is a reward model (made by the reward "
     "stage), not a policy: give a policy's model.npz"),
    ("dpo", "init", "reward", "DPOConfig: init = {path} is a reward model (made by the reward "
     "stage), not a policy: give a policy's model.npz"),
    ("reward", "init", "reward", "RewardConfig: init = {path} is a reward model (made by the "
     "reward stage), not a policy: give a policy's model.npz"),
    ("rft", "reward_model", "pretrain", "RFTConfig: reward_model = {path} is a policy (made by "
     "the pretrain stage), not a reward model: give a reward model's model.npz"),
    ("ppo", "reward_model", "dpo", "PPOConfig: reward_model = {path} is a policy (made by the "
     "dpo stage), not a reward model: give a reward model's model.npz"),
]


@pytest.mark.parametrize("command, key, made_by, line", KINDS,
                         ids=[f"{c[0]} {c[1]}={c[2]}" for c in KINDS])
def test_a_checkpoint_of_the_wrong_kind_is_refused_before_any_work(finished, work, command, key,
                                                                   made_by, line):
    """``ppo --set init=<the reward model>`` once trained the reward model as a policy, to
    exit 0 with 0% valid responses."""
    runs, _ = finished
    path = runs / "tiny" / made_by / "model.npz"
    out = _stage(finished, work, command) if (runs / "tiny" / command).exists() \
        else work / command
    before = files(out) if out.exists() else {}
    proc = run([command, "-q", "--set", f"{key}={path}", f"out_dir={out}"]
               + ([f"init={runs / 'tiny' / 'sft' / 'model.npz'}"] if key != "init" else [])
               + ([f"preferences={runs / 'tiny' / 'preferences' / 'preferences.jsonl'}"]
                  if command in ("dpo", "reward") else [])
               + ([f"reward_model={runs / 'tiny' / 'reward' / 'model.npz'}"]
                  if command in ("ppo", "rft") and key != "reward_model" else []), work)
    one_line_error(proc, line.format(path=path))
    assert files(out) == before


def test_a_policy_of_another_world_is_refused(finished, work):
    runs, _ = finished
    sft = runs / "tiny" / "sft" / "model.npz"
    out = _stage(finished, work, "ppo")
    before = files(out)
    proc = run(["ppo", "-q", "--set", "task=arithmetic", f"init={sft}", f"out_dir={out}",
                f"reward_model={runs / 'tiny' / 'reward' / 'model.npz'}"], work)
    one_line_error(proc, f"PPOConfig: init = {sft} was trained for the 'reviews' world, and "
                         "task = 'arithmetic'; give a policy of that world")
    assert files(out) == before


def test_a_reward_model_with_another_tokenizer_is_refused(finished, work):
    """The same alphabet in another order: every id would mean another character, and the
    scores would be noise, silently."""
    from minirlhf.lm.checkpoint import load_model, save_model
    from minirlhf.lm.tokenizer import DEFAULT_CHARS, CharTokenizer

    runs, _ = finished
    model, _, extra = load_model(runs / "tiny" / "reward" / "model.npz")
    other = work / "other_rm.npz"
    save_model(other, model, CharTokenizer(DEFAULT_CHARS[::-1]), extra)
    sft = runs / "tiny" / "sft" / "model.npz"
    proc = run(["best-of-n", "-q", "--set", f"policy={sft}", f"reward_model={other}",
                f"out_dir={work / 'bon'}"], work)
    one_line_error(proc, f"BestOfNConfig: reward_model = {other} reads text with another "
                         f"tokenizer than policy = {sft}; give checkpoints made with one "
                         "tokenizer")
    assert not (work / "bon").exists()


def test_a_wrong_kind_in_the_pipeline_stops_it_with_every_file_kept(finished, tmp_path, work):
    runs = copy_run(finished, tmp_path)
    before = files(runs / "tiny")
    sft = runs / "tiny" / "sft" / "model.npz"
    proc = run(pipeline(runs, "--set", f"best_of_n.reward_model={sft}"), work)
    one_line_error(proc, f"BestOfNConfig: reward_model = {sft} is a policy (made by the sft "
                         "stage), not a reward model")
    assert files(runs / "tiny") == before


# --------------------------------------------------- a failed stage leaves no traces
def test_a_refused_checkpoint_leaves_every_output_of_the_stage_as_it_was(finished, tmp_path,
                                                                        work):
    """A learning rate that blows the weights up: DPO's checkpoint is refused, and its metrics,
    plot, summary and sidecar stay the finished run's (metrics.jsonl was once overwritten, and
    the next run skipped DPO over the mismatch)."""
    runs = copy_run(finished, tmp_path)
    before = files(runs / "tiny")
    proc = run(pipeline(runs, "--set", "dpo.lr=1e30", "dpo.max_pairs=32"), work)
    one_line_error(proc, "stage dpo stopped", "model.npz was not written", "the run blew up")
    assert files(runs / "tiny") == before
    again = run(pipeline(runs), work)
    assert "ran nothing" in again.stdout and same_summary(runs, finished)


def _relabel(path: Path, stage: str) -> None:
    """The checkpoint at ``path`` saved again as ``stage``'s: a stage command refuses to write
    into another stage's folder."""
    from minirlhf.lm.checkpoint import load_model, save_model

    model, tokenizer, extra = load_model(path)
    save_model(path, model, tokenizer, {**extra, "stage": stage})


@pytest.mark.parametrize("command, settings", [
    ("kto", ["max_examples=64"]), ("orpo", ["max_pairs=32"]), ("simpo", ["max_pairs=32"])])
def test_a_blown_up_offline_stage_leaves_its_folder_as_it_was(finished, work, command,
                                                             settings):
    """One step at a learning rate of 5e28: the checkpoint is refused, and the outputs a
    previous run left in the folder (DPO's five files, its model relabelled as this stage's, as
    a previous run of it would have left them) are all kept."""
    runs, _ = finished
    out = work / command
    shutil.copytree(runs / "tiny" / "dpo", out)
    _relabel(out / "model.npz", command)
    before = files(out)
    proc = run([command, "-q", "--set", "lr=1e30", f"out_dir={out}", *settings,
                f"init={runs / 'tiny' / 'sft' / 'model.npz'}",
                f"preferences={runs / 'tiny' / 'preferences' / 'preferences.jsonl'}"], work)
    one_line_error(proc, f"{out / 'model.npz'} was not written", "the run blew up")
    assert files(out) == before


def test_an_output_name_taken_by_a_folder_fails_with_nothing_moved(finished, work):
    """ORPO trains and saves, then cannot write its plot: the model, the metrics and the
    summary it made are not moved into place either."""
    runs, _ = finished
    out = work / "orpo"
    shutil.copytree(runs / "tiny" / "dpo", out)
    _relabel(out / "model.npz", "orpo")  # a previous ORPO run's folder
    (out / "metrics.png").unlink()
    (out / "metrics.png").mkdir()
    before = files(out)
    proc = run(["orpo", "-q", "--set", "max_pairs=32", "eval_samples_per_prompt=1",
                "max_new_tokens=60", f"out_dir={out}",
                f"init={runs / 'tiny' / 'sft' / 'model.npz'}",
                f"preferences={runs / 'tiny' / 'preferences' / 'preferences.jsonl'}"], work)
    one_line_error(proc, f"cannot write {out / 'metrics.png'}: a folder has that name")
    assert files(out) == before


def test_weights_that_blow_up_keep_every_file_of_the_stage(finished, tmp_path, work):
    runs = copy_run(finished, tmp_path)
    (runs / "tiny" / "pipeline" / "ppo.json").unlink()
    (runs / "tiny" / "ppo" / "metrics.jsonl").unlink()  # a refused PPO must not make it
    before = files(runs / "tiny" / "ppo")
    proc = run(pipeline(runs), work, fault="blow-up:ppo")
    one_line_error(proc, "stage ppo stopped", "was not written", "the run blew up")
    assert files(runs / "tiny" / "ppo") == before


# ------------------------------- one check for every command, before any work (class 4)
EXPERIMENT_NAMES = ["rlaif", "sycophancy", "length-bias", "overoptimization", "critic-free",
                    "rankings", "ppo-details", "dpo-details"]
SEED_COMMANDS = [  # (a command with seed -5, its one line): every command, the same check
    *[(["experiment", name, "--quick", "--seed", "-5"],
       "ExperimentConfig: seed = -5 is outside its allowed range [0, inf)")
      for name in EXPERIMENT_NAMES],
    (["frontier", "--quick", "--seed", "-5"],
     "ExperimentConfig: seed = -5 is outside its allowed range [0, inf)"),
    (["pipeline", "--preset", "tiny", "--seed", "-5"],
     "PipelineConfig: seed = -5 is outside its allowed range [0, inf)"),
    (["ppo", "--set", "seed=-5", "out_dir={runs}/tiny/ppo"],
     "PPOConfig: seed = -5 is outside its allowed range [0, inf)"),
    (["evaluate", "{runs}/tiny/dpo/model.npz", "--set", "seed=-5"],
     "EvaluateConfig: seed = -5 is outside its allowed range [0, inf)"),
]


@pytest.mark.parametrize("args, line", SEED_COMMANDS, ids=[" ".join(c[0][:2]) for c in
                                                           SEED_COMMANDS])
def test_a_negative_seed_is_one_line_in_every_command_before_any_work(finished, tmp_path, work,
                                                                       args, line):
    """``experiment overoptimization --seed -5`` once wrote a file, then ended in a 42-line
    traceback from NumPy's seeding; sycophancy refused only when its first stage checked. Every
    command checks its settings with the one routine (check_settings) before any work."""
    runs = copy_run(finished, tmp_path)
    before = files(runs)
    proc = run([a.format(runs=runs) for a in args] + ["-q"]
               + (["--runs-dir", str(runs)] if args[0] not in ("ppo", "evaluate") else []),
               work)
    one_line_error(proc, line)
    assert files(runs) == before


SEEDS_OPTIONS = [  # (a command, its --seeds out of range, the one line)
    (["pipeline", "--preset", "tiny", "--seeds", "1000"],
     "pipeline: --seeds = 1000 is outside its allowed range [1, 100]"),
    (["experiment", "rlaif", "--quick", "--seeds", "101"],
     "experiment rlaif: --seeds = 101 is outside its allowed range [1, 100]"),
    (["experiment", "critic-free", "--seeds", "-1"],
     "experiment critic-free: --seeds = -1 is outside its allowed range [1, 100]"),
    (["sft", "--seeds", "0"], "sft: --seeds = 0 is outside its allowed range [1, 100]"),
    (["course", "--preset", "tiny", "--seeds", "11", "--plan"],
     "course: --seeds = 11 is outside its allowed range [1, 10]"),
    (["claims", "--preset", "tiny", "--seeds", "0", "--no-run"],
     "claims: --seeds = 0 is outside its allowed range [1, 10]"),
]


OPTIONS = [  # (a command, an option out of its range, the one line): the same check
    (["gradcheck", "--tol", "-1"], "gradcheck: --tol = -1.0 is outside its allowed range "
                                   "(0, inf)"),
    (["gradcheck", "--only", "matmul", "nope"], "gradcheck: no case named nope; the cases: "),
    (["course", "--preset", "tiny", "--workers", "0", "--plan"],
     "course: --workers = 0 is outside its allowed range [1, 64]"),
    (["claims", "--preset", "tiny", "--threads", "99", "--no-run"],
     "claims: --threads = 99 is outside its allowed range [1, "),
]


@pytest.mark.parametrize("args, line", OPTIONS, ids=[" ".join(c[0][:3]) for c in OPTIONS])
def test_an_option_out_of_range_is_one_line_in_every_command(work, args, line):
    """gradcheck said 'no case named' outside the one-line format, and took any tolerance."""
    extra = [] if args[0] == "gradcheck" else ["--runs-dir", str(work / "runs")]
    one_line_error(run([*args, *extra], work), line)
    assert not any(work.iterdir())  # nothing made


@pytest.mark.parametrize("args, line", SEEDS_OPTIONS, ids=[" ".join(c[0][:2]) for c in
                                                           SEEDS_OPTIONS])
def test_seeds_out_of_range_is_one_line_in_every_command(work, args, line):
    """``--seeds 1000`` was accepted, with a one-seed time estimate; 0 and -1 reached the
    aggregation. Every command's --seeds goes through one range check (check_range)."""
    where = ["--set", f"out_dir={work / 'sft'}"] if args[0] == "sft" else \
        ["--runs-dir", str(work / "runs")]
    proc = run([*args, *where, "-q"] if args[0] != "course" else [*args, *where], work)
    one_line_error(proc, line)
    assert not any(work.iterdir())  # nothing made


def _first_line_then_ctrl_c(args: list[str], cwd: Path) -> tuple[str, int]:
    """The first line a command writes on stderr; then Ctrl-C: (that line, its exit code)."""
    proc = subprocess.Popen([sys.executable, "-m", "minirlhf", *args], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    line = proc.stderr.readline()
    proc.send_signal(signal.SIGINT)
    _finish(proc)
    return line, proc.returncode


def test_pipeline_seeds_announce_the_whole_run(work):
    """``pipeline --seeds 100`` once announced one seed's time: the estimate is every seed's,
    the stages summed over the seeds, before the first starts."""
    from minirlhf.pipeline import PipelineConfig, estimate_run

    one = estimate_run(PipelineConfig(name="seed0", runs_dir=str(work / "runs" / "r")))
    line, code = _first_line_then_ctrl_c(["pipeline", "--seeds", "100", "--name", "r",
                                          "--runs-dir", str(work / "runs"), "-q"], work)
    hours = sum(one.values()) * 100 / 3600
    assert f"this run will take about {hours:.1f} hours on a 2-core laptop (100 seeds: " \
           f"pretrain {one['pretrain'] * 100 / 3600:.1f} hours, " in line, line
    assert line.rstrip().endswith("Ctrl-C stops it, keeping every finished stage"), line
    assert code == 130


def test_experiment_seeds_announce_the_whole_run(finished, tmp_path, work):
    """An experiment's seeds, estimated together (SECONDS per seed, as the course plans them),
    before any work."""
    from minirlhf.course.build import SECONDS

    runs = copy_run(finished, tmp_path)
    line, code = _first_line_then_ctrl_c(["experiment", "ppo-details", "--seeds", "20",
                                          "--base", "tiny", "--runs-dir", str(runs), "-q"],
                                         work)
    hours = SECONDS["ppo-details"] * 20 / 3600
    assert line.split(": ", 1)[1].rstrip() == (
        f"this run will take about {hours:.1f} hours on a 2-core laptop (20 seeds: ppo-details "
        f"{hours:.1f} hours); Ctrl-C stops it, keeping every finished seed"), line
    assert code == 130


def test_a_stage_command_s_seeds_announce_the_whole_run(finished, work):
    """A stage command estimates its run as the pipeline does its stage (the model's size read
    from the checkpoint it starts from), times its seeds."""
    from minirlhf.pipeline import estimate_stage
    from minirlhf.stages.pretrain import PretrainConfig

    one = estimate_stage("pretrain", PretrainConfig())
    line, code = _first_line_then_ctrl_c(["pretrain", "--seeds", "100", "-q", "--set",
                                          f"out_dir={work / 'pre'}"], work)
    hours = one * 100 / 3600
    assert line.split(": ", 1)[1].rstrip() == (
        f"this run will take about {hours:.1f} hours on a 2-core laptop (100 seeds: pretrain "
        f"{hours:.1f} hours); Ctrl-C stops it, keeping every finished seed"), line
    assert code == 130


def test_a_batch_range_offered_can_be_met(finished, work):
    """The range an error offers is one a run accepts (KTO once offered [1, 1], then refused
    batch_size = 1 as outside [2, 4096]; then [2, 3] for three thumbs before sampling, of which
    one did not finish): before the samples are drawn their count is a bound, and no range is
    offered; once drawn, the range is exact, and a batch inside it trains. Which samples
    finish is a draw of the machine's rounding, so the budget is the first of a few under
    which some of the twelve do not finish (on the machine it was written on, the first)."""
    runs, _ = finished
    sft = runs / "tiny" / "sft" / "model.npz"

    def common(budget: int) -> list[str]:
        return ["-q", "--set", "thumbs=12", f"init={sft}", f"out_dir={work / 'kto'}",
                "eval_samples_per_prompt=1", f"max_new_tokens={budget}"]

    proc = run(["kto", *common(40), "batch_size=64"], work)
    one_line_error(proc, "KTOConfig: batch_size = 64 is larger than the 12 samples thumbs = 12 "
                         "labels at most (fewer when a sample does not finish within "
                         "max_new_tokens = 40: it is not labelled); lower batch_size")
    assert not (work / "kto").exists()
    for budget in (40, 30, 50, 25):
        proc = run(["kto", *common(budget), "batch_size=12"], work)
        if proc.returncode == 2:
            break
        shutil.rmtree(work / "kto")  # all twelve finished: try another budget
    line = one_line_error(proc, "KTOConfig: batch_size = 12 is larger than the ")
    lo, hi = map(int, re.search(r"allowed range \[(\d+), (\d+)\]$", line).groups())
    assert (work / "kto").exists() and not list((work / "kto").iterdir())  # nothing written
    proc = run(["kto", *common(budget), f"batch_size={hi}"], work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert lo == 2 and (work / "kto" / "model.npz").exists()


# ------------------------------------------------------- a lock that ends (class 5)
def _holder() -> subprocess.Popen:
    """A live process that is no run: it holds nothing."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def _lock(runs: Path, **fields) -> Path:
    """A lock of today's kind in the run folder: this machine's process, host and boot, with
    ``fields`` changed."""
    from minirlhf.records import Owner

    lock = runs / "tiny" / ".lock"
    lock.write_text(json.dumps({**Owner.this_process().__dict__, **fields}) + "\n")
    return lock


def test_a_lock_whose_process_id_is_now_another_program_s_is_taken_over(finished, tmp_path,
                                                                        work):
    """A killed run's lock (a process id alone, its older kind) whose id now belongs to an
    unrelated live process, started after the lock was written: once 'in use by process P,
    wait for it to finish', forever."""
    runs = copy_run(finished, tmp_path)
    lock = runs / "tiny" / ".lock"
    holder = _holder()
    try:
        lock.write_text(f"{holder.pid}\n")
        hour_ago = time.time() - 3600
        os.utime(lock, (hour_ago, hour_ago))  # written an hour before the process started
        proc = run(pipeline(runs), work)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (f"taking over {lock}: process {holder.pid} that held it is gone: that id is now "
            "another program's, started after the lock was written") in proc.stderr
    assert "ran nothing" in proc.stdout and not lock.exists()
    assert same_summary(runs, finished)


@pytest.mark.parametrize("fields, why", [
    ({"started": "1"}, "process {pid} that held it is gone: that id is now another program's, "
                       "started after the lock was taken"),
    ({"boot": "00000000-0000-0000-0000-000000000000"},
     "process {pid} held it before the machine restarted"),
    (None, "it names no process (unreadable: cut off, or not a lock)"),
], ids=["pid reused", "a restart", "garbage"])
def test_a_lock_of_today_s_kind_tells_a_gone_holder(finished, tmp_path, work, fields, why):
    """The lock records the holder's start time and the machine's boot: a live process with the
    lock's id but another start time is not the holder, nor is any process after a restart;
    a lock that names no one (bytes of something else) is nobody's."""
    runs = copy_run(finished, tmp_path)
    holder = _holder()
    try:
        if fields is None:
            lock = runs / "tiny" / ".lock"
            lock.write_bytes(b"\xff\x00not a lock")
        else:
            lock = _lock(runs, pid=holder.pid, **fields)
        proc = run(pipeline(runs), work)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"taking over {lock}: {why.format(pid=holder.pid)}" in proc.stderr, proc.stderr
    assert "ran nothing" in proc.stdout and not lock.exists()


def test_a_live_holder_is_refused_with_every_file_kept(finished, tmp_path, work):
    runs = copy_run(finished, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import json, sys, time; from "
                               "minirlhf.records import Owner; print(json.dumps(Owner."
                               "this_process().__dict__), flush=True); time.sleep(120)"],
                              env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        owner = json.loads(holder.stdout.readline())
        lock = runs / "tiny" / ".lock"
        lock.write_text(json.dumps(owner) + "\n")
        before = files(runs)
        proc = run(pipeline(runs), work)
        one_line_error(proc, f"the run folder {runs / 'tiny'} is in use by process {holder.pid} "
                             f"since {owner['since']} (its lock is {lock}); wait for it to "
                             "finish or choose another --name")
        assert files(runs) == before
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_of_another_host_is_refused_with_the_command_that_frees_it(finished, tmp_path,
                                                                          work):
    """This machine cannot see another host's processes: the run is refused, with every file
    as it was, and the command that frees the folder; following it, the run resumes."""
    runs = copy_run(finished, tmp_path)
    lock = _lock(runs, pid=4242, host="elsewhere.example", since="2026-12-01 10:00:00")
    before = files(runs)
    proc = run(pipeline(runs), work)
    line = one_line_error(proc, f"the run folder {runs / 'tiny'} is in use by process 4242 on "
                                "host elsewhere.example (since 2026-12-01 10:00:00), which this "
                                "machine cannot see; wait for that run to finish, or choose "
                                "another --name; if it is gone, free the folder with "
                                f"`rm {lock}`")
    assert files(runs) == before
    assert follow(line, work).returncode == 0 and not lock.exists()
    again = run(pipeline(runs), work)
    assert "ran nothing" in again.stdout and same_summary(runs, finished)


# ------------------------------------------------- every hint, followed (class 6)
def test_the_thread_count_hint_resumes_when_followed(finished, tmp_path, work):
    """With OPENBLAS_NUM_THREADS set in the shell, the hint once said 'set OMP_NUM_THREADS',
    which OPENBLAS_NUM_THREADS overrides: every stage ran again. The hint is the whole command,
    with the variable that wins before it; pasted in that same shell, nothing runs again."""
    runs = copy_run(finished, tmp_path)
    now, other, env = _other_threads()
    refused = run(pipeline(runs), work, env=env)
    assert refused.returncode == 2, refused.stderr[-3000:]
    (line,) = refused.stderr.strip().splitlines()
    assert (f"with that count the run is reused: run `MINIRLHF_THREADS={now} python -m minirlhf "
            f"pipeline --preset tiny --name tiny --runs-dir {runs.absolute()}`;") in line, line
    followed = follow(line, work, env=env)
    assert followed.returncode == 0, followed.stderr[-3000:]
    assert "ran nothing" in followed.stdout and same_summary(runs, finished)


def test_the_course_s_hint_reads_a_run_it_kept_aside(finished, tmp_path, work):
    """A course of another thread count than a finished pipeline run keeps the run aside as
    tiny-threadsN and names the command that reads it again: followed, nothing runs again."""
    from minirlhf.course.build import aside_line, plan, set_aside

    runs = copy_run(finished, tmp_path)
    now, other, env = _other_threads()
    asides, gone = set_aside(plan("tiny", seeds=1, runs_dir=str(runs)), str(runs), "tiny",
                             threads=other)
    assert [a.kept.name for a in asides] == [f"tiny-threads{now}"] and "pipeline" in gone
    line = aside_line(asides[0], other)
    followed = follow(line, work)
    assert followed.returncode == 0, followed.stderr[-3000:]
    assert "ran nothing" in followed.stdout
    kept, made = (json.loads((folder / "summary.json").read_text()) for folder in (
        runs / f"tiny-threads{now}", finished[0] / "tiny"))
    assert kept.pop("name") == f"tiny-threads{now}" and made.pop("name") == "tiny"
    assert kept == made  # every figure of the run it read


TINY_PRETRAIN = ["preset=tiny", "steps=3", "eval_every=3", "eval_windows=2", "n_samples=2"]


def test_a_missing_checkpoint_s_command_makes_that_very_file(work):
    """The hint once said `python -m minirlhf pretrain`, which writes runs/default/pretrain/
    under the working folder, whatever file was missing."""
    init = work / "base" / "model.npz"
    args = ["sft", "-q", "--set", f"init={init}", f"out_dir={work / 'sft'}", "steps=2",
            "n_demos=16", "batch_size=4", "eval_samples_per_prompt=1", "max_new_tokens=20"]
    line = one_line_error(run(args, work), f"init file {init} is missing: make it with `python "
                                           f"-m minirlhf pretrain --set out_dir={init.parent}`")
    assert not (work / "sft").exists()
    made = follow(line, work, more={"pretrain": TINY_PRETRAIN})
    assert made.returncode == 0, made.stderr[-3000:]
    assert init.exists() and not (work / "runs").exists()
    again = run(args, work)
    assert again.returncode == 0, again.stderr[-3000:]


def test_a_missing_preference_file_of_another_name_says_what_the_command_writes(finished,
                                                                               work):
    runs, _ = finished
    sft = runs / "tiny" / "sft" / "model.npz"
    mine = work / "mine.jsonl"
    proc = run(["dpo", "-q", "--set", f"preferences={mine}", f"init={sft}",
                f"out_dir={work / 'dpo'}"], work)
    line = one_line_error(proc, f"preferences file {mine} is missing: make one with `python -m "
                                f"minirlhf preferences --set out_dir={work} policy={sft}` (it "
                                f"writes {work / 'preferences.jsonl'})")  # the policy it was given
    made = follow(line, work, more={"preferences": ["n_pairs=16", "max_new_tokens=60"]})
    assert made.returncode == 0, made.stderr[-3000:]
    from minirlhf.world.preference_data import load_jsonl

    assert len(load_jsonl(work / "preferences.jsonl")) == 16


def test_an_experiment_s_missing_base_file_names_the_pipeline_that_makes_it(finished, tmp_path,
                                                                           work):
    """The hint once left out --runs-dir (and --name): it made another folder's run."""
    from minirlhf.experiments import ExperimentConfig, check_experiment

    runs = copy_run(finished, tmp_path)
    model = runs / "tiny" / "reward" / "model.npz"
    model.unlink()
    before = files(runs)
    proc = run(["experiment", "rlaif", "--quick", "--runs-dir", str(runs), "-q"], work)
    line = one_line_error(proc, f"the base run's file {model} is missing: make it with `python "
                                f"-m minirlhf pipeline --preset tiny --runs-dir {runs}`")
    assert files(runs) == before  # refused before any work: not even its folder
    made = follow(line, work)
    assert made.returncode == 0, made.stderr[-3000:]
    # the reward model is remade (its archive's times differ), and so what reads it
    assert "ran reward, best_of_n, ppo; skipped pretrain, sft, preferences, dpo" in made.stdout
    assert same_summary(runs, finished)
    check_experiment(ExperimentConfig(name="rlaif", base="tiny", runs_dir=str(runs),
                                      quick=True))  # what was missing is there


def test_the_scratchpad_route_is_built_from_the_missing_path(work):
    """GRPO's start point once had one route, into runs/scratchpad/ under the working folder,
    whatever init said."""
    from minirlhf.files import read_meta

    sft = work / "sp" / "sft" / "model.npz"
    pre = work / "sp" / "pretrain"
    proc = run(["grpo", "-q", "--set", f"init={sft}", f"out_dir={work / 'grpo'}"], work)
    line = one_line_error(proc, f"SFT policy {sft} is missing: make it with `python -m minirlhf "
                                "pretrain --set task=scratchpad corpus=scratchpad out_dir="
                                f"{pre} && python -m minirlhf sft --set task=scratchpad init="
                                f"{pre / 'model.npz'} steps=600 n_demos=8000 out_dir="
                                f"{sft.parent}`")
    assert not (work / "grpo").exists()  # refused before its folder was made
    made = follow(line, work, more={"pretrain": TINY_PRETRAIN, "sft": [
        "steps=2", "n_demos=16", "batch_size=4", "eval_samples_per_prompt=1",
        "max_new_tokens=20"]})
    assert made.returncode == 0, made.stderr[-3000:]
    extra = read_meta(sft)["extra"]
    assert (extra["stage"], extra["config"]["task"]) == ("sft", "scratchpad")


def test_a_corpus_too_small_for_its_windows_names_the_longest_that_fits(work):
    path = work / "corpus.txt"
    path.write_text("the plot was good.\nthe cast is bad.\nthe film was fine.\n")
    args = ["pretrain", "-q", "--set", f"corpus={path}", f"out_dir={work / 'pre'}",
            *TINY_PRETRAIN]
    line = one_line_error(run([*args, "seq_len=64"], work), f"corpus {path} is too small for "
                          "seq_len 64: set seq_len=")
    most = int(line.split("set seq_len=")[1].split()[0])
    assert line.endswith(f"set seq_len={most} or less, or give a larger corpus")
    followed = run([*args, f"seq_len={most}"], work)
    assert followed.returncode == 0, followed.stderr[-3000:]
    one_line_error(run([*args, f"seq_len={most + 1}"], work), "is too small for seq_len")


def test_a_missing_shipped_corpus_is_made_again_by_its_command(tmp_path, work):
    """In a copy of the project whose shipped arithmetic corpus is gone: the hint names the
    script that writes the shipped corpora, by its absolute path (it once said `python
    data/make_corpora.py`, which runs from the project's root only); followed, the corpus is
    back, byte for byte."""
    copy = tmp_path / "project"
    shutil.copytree(ROOT / "minirlhf", copy / "minirlhf",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "data", copy / "data")
    shipped = copy / "minirlhf" / "world" / "corpora" / "arithmetic.txt"
    shipped.unlink()
    env = dict(ENV, PYTHONPATH=str(copy))
    proc = run(["pretrain", "-q", "--set", "corpus=arithmetic", "task=arithmetic",
                f"out_dir={work / 'pre'}", *TINY_PRETRAIN], work, env=env)
    line = one_line_error(proc, f"corpus {shipped} is missing: make it with `python "
                                f"{copy / 'data' / 'make_corpora.py'}`")
    assert not (work / "pre").exists()
    made = follow(line, work, env=env)
    assert made.returncode == 0, made.stderr[-3000:]
    assert shipped.read_bytes() == (ROOT / "minirlhf" / "world" / "corpora" /
                                    "arithmetic.txt").read_bytes()


def test_the_classroom_hints_work_when_followed(tmp_path, work):
    """make-student's 'students run' and check's '--help' hint, each run as printed: the check
    runs the student copy's code (every exercise not implemented), the help lists chapters."""
    from minirlhf.course.exercises import EXERCISES, POINTS

    target = tmp_path / "student"
    made = run(["classroom", "make-student", str(target)], work)
    assert made.returncode == 0, made.stderr[-3000:]
    last = made.stdout.strip().splitlines()[-1]
    assert last.endswith(f"checks their work with `cd {target} && python -m minirlhf classroom "
                         "check`"), last
    check = follow(last.split("checks their work with ")[1], work)
    assert check.returncode == 1 and "Traceback" not in check.stderr, check.stderr[-3000:]
    assert check.stdout.strip().splitlines()[-1] == \
        f"0 pass, 0 fail, {len(EXERCISES)} not implemented: 0 of {sum(POINTS.values()):g} points"
    line = one_line_error(run(["classroom", "check", "99"], work), "no chapter or exercise '99'")
    assert line.endswith("all are listed by `python -m minirlhf classroom check --help`)")
    helped = follow(line, work)
    assert helped.returncode == 0 and "chapters (number, name) and their exercises" in \
        helped.stdout


# --------------------------------- the classroom tools and caches on odd input (class 7)
@pytest.mark.parametrize("inside", ["docs/student", "minirlhf/copy", "tests/a/b"])
def test_make_student_into_the_project_is_one_line_before_any_copying(work, inside):
    """Into a folder inside the project, the copy once copied the project into itself 184
    levels deep before failing with a 24 KB message."""
    folder = ROOT / inside.split("/")[0]
    listing = sorted(str(p) for p in folder.rglob("*"))
    proc = run(["classroom", "make-student", inside], ROOT)
    one_line_error(proc, f"{ROOT / inside} is inside {folder}, which the student copy takes (it "
                         f"would copy itself into itself); choose a folder outside {folder}")
    assert sorted(str(p) for p in folder.rglob("*")) == listing  # nothing made, nothing left


def test_make_student_into_a_folder_that_exists_keeps_it_as_it_was(work):
    (work / "copy").mkdir()
    (work / "copy" / "notes.md").write_text("mine\n")
    before = files(work)
    proc = run(["classroom", "make-student", "copy"], work)
    one_line_error(proc, "copy already exists; choose a new folder")
    assert files(work) == before


def test_make_student_under_a_file_is_one_line(work):
    (work / "afile").write_text("x\n")
    before = files(work)
    proc = run(["classroom", "make-student", str(work / "afile" / "x" / "copy")], work)
    one_line_error(proc, f"cannot make the output folder {work / 'afile' / 'x'}: Not a directory")
    assert files(work) == before and sorted(p.name for p in work.iterdir()) == ["afile"]


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """One student copy for the checks below (each test works on a copy of its files)."""
    target = tmp_path_factory.mktemp("student") / "copy"
    proc = run(["classroom", "make-student", str(target)], ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return target


STUDENT_FILES = [  # (what the student did to objectives/reward.py, the check's line for it)
    ("an IndentationError", lambda text: text + "\n      x = 1\n",
     "minirlhf/objectives/reward.py:{n}: IndentationError: unexpected indent (the file does not "
     "compile, so nothing that imports it can run: fix this line first)"),
    ("a null byte", lambda text: text + "\nx = 1\0\n",
     "minirlhf/objectives/reward.py:{n}: SyntaxError: source code string cannot contain null "
     "bytes (the file does not compile, so nothing that imports it can run: fix this line "
     "first)"),
    ("a deleted file", None, "minirlhf/objectives/reward.py is missing: the exercise's code "
     "imports minirlhf.objectives.reward (put the file back)"),
]


@pytest.mark.parametrize("what, change, line", STUDENT_FILES, ids=[c[0] for c in STUDENT_FILES])
def test_classroom_check_on_a_broken_student_file_is_one_line_per_exercise(student, tmp_path,
                                                                           what, change, line):
    """Python names neither file nor line for a null byte; a deleted file was 'raised at '
    nowhere. Each is one line naming the file (and line), and the other exercises still run."""
    work = tmp_path / "copy"
    shutil.copytree(student / "minirlhf", work / "minirlhf")
    path = work / "minirlhf" / "objectives" / "reward.py"
    n = path.read_text().count("\n") + 2  # the line after a blank one at the end
    if change is None:
        path.unlink()
    else:
        path.write_text(change(path.read_text()))
    proc = subprocess.run([sys.executable, "-m", "minirlhf", "classroom", "check", "4",
                           "--format", "json"], cwd=work, env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    by_id = {e["id"]: e for e in json.loads(proc.stdout)["exercises"]}
    for name in ("bradley-terry", "plackett-luce"):
        assert by_id[name]["status"] == "fail"
        assert by_id[name]["message"].endswith(line.format(n=n)), by_id[name]["message"]
    assert by_id["eos-positions"]["status"] == "not implemented"  # the other one ran


def test_a_truncated_point_of_the_frontier_is_named_and_trained_again(finished, tmp_path, work):
    """What a kill during the point's plain write once left: a JSONDecodeError traceback
    naming no file. It is a warning naming file and line; that point alone trains again."""
    runs = copy_run(finished, tmp_path)
    args = ["frontier", "--quick", "--runs-dir", str(runs), "-q"]
    first = run(args, work)
    assert first.returncode == 0, first.stderr[-3000:]
    folder = runs / "tiny" / "experiments" / "frontier"
    point = folder / "DPO_b0.5" / "point.json"
    text = point.read_text()
    point.write_text(text[: len(text) // 2])
    lines = point.read_text().count("\n") + 1
    others = {k: v for k, v in files(folder).items()
              if k.split("/")[0] not in ("DPO_b0.5", "results.json", "frontier.png")}
    proc = run(args, work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (warning,) = [w for w in proc.stderr.splitlines() if "point.json" in w]
    assert re.search(rf"{re.escape(str(point))}:{lines}: malformed JSON \(column \d+: .+\); "
                     "training the point again$", warning), warning
    assert json.loads(point.read_text())["label"] == "DPO b=0.5"  # whole again
    assert {k: v for k, v in files(folder).items() if k in others} == others  # read back


def test_a_damaged_frontier_result_is_left_out_of_the_report_with_a_warning(finished, tmp_path,
                                                                            work):
    runs = copy_run(finished, tmp_path)
    results = runs / "tiny" / "experiments" / "frontier" / "results.json"
    results.parent.mkdir(parents=True)
    results.write_bytes(b'{"points": [\n  {"label": "DPO\xff"}\n')
    proc = run(pipeline(runs), work)
    assert proc.returncode == 0 and "ran nothing" in proc.stdout, proc.stderr[-3000:]
    assert f"{results}:2: not UTF-8 text (invalid start byte at byte 29); the report leaves " \
           "the frontier out" in proc.stderr
    assert "Every method on one frontier" not in (runs / "tiny" / "report.md").read_text()
    assert same_summary(runs, finished)


def test_a_frontier_of_an_earlier_sft_policy_is_left_out_of_the_report(finished, tmp_path,
                                                                       work):
    """The pipeline trained again with other settings (its SFT policy another file): the
    frontier made from the earlier one is not shown as this run's. The report says so and names
    the command that makes it again; followed, and the pipeline run again, the report has it."""
    runs = copy_run(finished, tmp_path)
    made = run(["frontier", "--quick", "--runs-dir", str(runs), "-q"], work)
    assert made.returncode == 0, made.stderr[-3000:]
    report = runs / "tiny" / "report.md"
    hint = made.stdout.splitlines()[-1]  # the pipeline writes the report: its command again
    assert hint.startswith(f"{report} shows it once the pipeline runs again (it trains "
                           "nothing): `"), hint
    assert "Every method on one frontier" not in report.read_text()
    followed = follow(hint, work)
    assert followed.returncode == 0 and "ran nothing" in followed.stdout, followed.stderr[-3000:]
    assert "| PPO b=0.05 |" in report.read_text()
    changed = pipeline(runs, "--set", "sft.steps=90")
    proc = run(changed, work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = report.read_text()
    assert "| PPO b=0.05 |" not in text
    (line,) = [t for t in text.splitlines() if t.startswith("Left out: experiments/frontier/")]
    assert f"{runs / 'tiny'}: report.md leaves out the frontier: {line[len('Left out: '):]}" \
        in proc.stderr  # said where the command runs too
    assert "was made from earlier files of this folder (its point PPO b=0.05 was trained " \
           "from files this run no longer holds)" in line, line
    followed = follow(line, work)
    assert followed.returncode == 0, followed.stderr[-3000:]
    assert followed.stdout.splitlines()[-1] == (  # other settings than the preset's: no
        f"{report} shows it once the pipeline writes its report again: the command that made "
        f"{runs / 'tiny'}, with its settings and thread count, trains nothing")
    proc = run(changed, work)
    assert proc.returncode == 0 and "ran nothing" in proc.stdout, proc.stderr[-3000:]
    text = report.read_text()
    assert "| PPO b=0.05 |" in text and "Left out" not in text


def test_a_damaged_summary_is_left_out_of_the_comparison_with_a_warning(finished, tmp_path,
                                                                       work):
    runs = copy_run(finished, tmp_path)
    summary = runs / "tiny" / "ppo" / "summary.json"
    summary.write_text("[1, 2]\n")
    before = summary.read_bytes()
    proc = run(["best-of-n", "-q", "--set", f"out_dir={runs / 'tiny' / 'best_of_n'}",
                f"policy={runs / 'tiny' / 'sft' / 'model.npz'}",
                f"reward_model={runs / 'tiny' / 'reward' / 'model.npz'}", "ns=1,2",
                "samples_per_prompt=2", "prompts_per_eval=1", "max_new_tokens=60"], work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{summary}:1: holds a JSON list, not an object; it is left out of the comparison" \
        in proc.stderr
    assert "\nPPO " not in proc.stdout and summary.read_bytes() == before


def test_a_course_record_cut_short_is_named_and_its_job_runs_again(tmp_path, work):
    """The course's records of finished jobs: one cut short is a warning naming file and line
    (it was silently 'not done')."""
    record = tmp_path / "runs" / "tiny" / "course" / "pipeline.json"
    record.parent.mkdir(parents=True)
    record.write_text('{"job": "pipeline",\n "fingerprint": "ab')
    before = files(tmp_path / "runs")
    proc = run(["course", "--preset", "tiny", "--runs-dir", str(tmp_path / "runs"), "--plan"],
               work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{record}:2: malformed JSON (column 17: Unterminated string starting at); the " \
           "job runs again" in proc.stderr
    assert re.search(r"\n  pipeline +to run", proc.stdout), proc.stdout
    assert files(tmp_path / "runs") == before


# ------------------------------------------------------------- data without gold (issue 41)
def test_the_pipeline_on_data_without_gold_reports_it_not_available(finished, tmp_path, work):
    """Plain prompt/chosen/rejected lines (as public datasets are) for the reward model and DPO:
    every stage finishes (the pipeline once ended with a TypeError), the figures that need the
    data's gold are null in summary.json and "not available" in report.md and the last line,
    the others are there as usual."""
    from test_gold_free import gold_free_copy

    runs = copy_run(finished, tmp_path)
    plain = gold_free_copy(tmp_path / "plain.jsonl")
    proc = run(pipeline(runs, "--set", f"reward.preferences={plain}",
                        f"dpo.preferences={plain}"), work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ran reward, best_of_n, ppo, dpo;" in proc.stdout  # upstream of them: kept
    assert "(ceiling not available (the data has no gold))" in proc.stdout
    summary = json.loads((runs / "tiny" / "summary.json").read_text())
    rm = summary["reward_model"]
    assert rm["ceiling"] is None and rm["expected_accuracy"] is None
    assert rm["gold_accuracy"] is None and 0 <= rm["accuracy"] <= 1
    assert all(p["gold_reward"] is not None for p in summary["policies"].values())
    report = (runs / "tiny" / "report.md").read_text()
    assert "Against gold preferences: not available (the data has no gold)." in report
    assert "not available (the data has no label probabilities)" in report


def test_an_unpaired_preference_file_in_the_pipeline_is_refused_before_work(finished, tmp_path,
                                                                           work):
    runs = copy_run(finished, tmp_path)
    before = files(runs / "tiny")
    proc = run(pipeline(runs, "--set", "preferences.format=unpaired"), work)
    one_line_error(proc, "reward: RewardConfig: reward training needs chosen/rejected pairs",
                   "preferences.format = unpaired")
    assert files(runs / "tiny") == before


@pytest.mark.parametrize("settings, needle", [
    (["loss_type=rloo"], "GRPOConfig: loss_type = 'rloo' takes the KL in the reward, as "
                         "RLOOTrainer does: set kl_in=reward (or beta=0)"),
    (["loss_type=rloo", "kl_in=reward", "advantage=reinforce_pp"],
     "GRPOConfig: loss_type = 'rloo' needs one advantage per response"),
    (["loss_type=token"], "GRPOConfig: loss_type = 'token' is not one of grpo, dr_grpo, dapo, "
                          "bnpo, rloo"),
])
def test_a_grpo_loss_type_rloo_trainer_cannot_mean_is_one_line(settings, needle, work):
    """RLOOTrainer's loss clips one ratio per sequence and takes the KL in the reward: a KL in
    the loss, or per-token advantages, are refused before any work."""
    proc = run(["grpo", "-q", "--set", *settings, f"out_dir={work / 'grpo'}"], work)
    one_line_error(proc, needle)
    assert not (work / "grpo").exists()


def test_evaluate_in_another_world_makes_its_reference_in_a_run_of_its_own(finished, tmp_path,
                                                                         work):
    """`evaluate --set task=arithmetic` with no reference: the default one is the reviews
    world's, so the hint makes the arithmetic world's SFT policy in runs/arithmetic (not where
    the reviews world's belongs), and says to give it as the reference; followed, it is."""
    runs, _ = finished
    shutil.copytree(runs / "tiny" / "pretrain", work / "runs" / "default" / "pretrain")
    policy = runs / "tiny" / "sft" / "model.npz"
    evaluate = ["evaluate", str(policy), "--set", "task=arithmetic"]
    line = one_line_error(run(evaluate, work),
                          f"reference {work / 'runs/default/sft/model.npz'} is missing: give an "
                          "SFT policy of the arithmetic world: make it with `python -m minirlhf "
                          f"sft --set out_dir={work / 'runs/arithmetic/sft'} task=arithmetic`, "
                          "then give it as the reference (--set "
                          f"reference={work / 'runs/arithmetic/sft/model.npz'})")
    made = follow(line, work, more={"sft": ["steps=3", "eval_samples_per_prompt=1"]})
    assert made.returncode == 0, made.stderr[-3000:]
    assert not (work / "runs" / "default" / "sft").exists()
    again = one_line_error(run(evaluate, work), "is missing: the arithmetic world's SFT policy "
                           f"is {work / 'runs/arithmetic/sft/model.npz'}: give it as the "
                           f"reference (--set reference={work / 'runs/arithmetic/sft/model.npz'}"
                           ")")  # made: no command that would train it again
    assert "`" not in again
    proc = run([*evaluate, f"reference={work / 'runs/arithmetic/sft/model.npz'}"], work)
    one_line_error(proc, f"policy = {policy} was trained for the 'reviews' world, and task = "
                   "'arithmetic'")  # the reference is of its world now: the policy is not
