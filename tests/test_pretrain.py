"""The pretraining stage on a tiny preset: reproducible, checkpointed, clear about bad input."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minirlhf.lm.checkpoint import load_model
from minirlhf.stages.pretrain import PretrainConfig, train_pretrain

ROOT = Path(__file__).resolve().parent.parent


def _config(corpus, out, **kw):
    base = dict(preset="tiny", corpus=str(corpus), out_dir=str(out), steps=12, batch_size=4,
                seq_len=48, eval_every=6, eval_windows=8, n_samples=4, warmup_steps=2,
                progress=False, val_fraction=0.2)
    base.update(kw)
    return PretrainConfig(**base)


def test_same_seed_same_losses(tiny_corpus, tmp_path):
    a = train_pretrain(_config(tiny_corpus, tmp_path / "a"))
    b = train_pretrain(_config(tiny_corpus, tmp_path / "b"))
    c = train_pretrain(_config(tiny_corpus, tmp_path / "c", seed=1))
    assert a.train_curve == b.train_curve and a.val_curve == b.val_curve
    assert a.samples == b.samples
    assert a.train_curve != c.train_curve


def test_outputs_and_learning(tiny_corpus, tmp_path):
    r = train_pretrain(_config(tiny_corpus, tmp_path, steps=40, eval_every=20))
    assert Path(r.checkpoint).exists() and Path(r.plot).exists()
    assert r.train_curve[-1][1] < r.train_curve[0][1] - 0.5  # it learns
    model, tok, extra = load_model(r.checkpoint)
    assert extra["stage"] == "pretrain" and extra["val_loss"] == pytest.approx(r.val_loss)
    assert len(r.samples) == 4 and len(r.samples_before) == 3
    assert 0.0 <= r.grammatical_rate <= 1.0


def test_bad_corpus_line_is_named(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("the plot was fun.\nthe plot was FUN.\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: CharTokenizer: unknown character 'F'"):
        train_pretrain(_config(bad, tmp_path / "out"))


def test_missing_corpus_names_the_fix(tmp_path, monkeypatch):
    """A shipped corpus is made by data/make_corpora.py (its absolute path: it runs from any
    folder); a file of the user's is theirs to give."""
    import minirlhf.world as world

    with pytest.raises(FileNotFoundError, match="give a text file, one document per line"):
        train_pretrain(_config(tmp_path / "nope.txt", tmp_path / "out"))
    monkeypatch.setattr(world, "CORPORA", tmp_path)  # no shipped corpus there
    script = Path(__file__).resolve().parent.parent / "data" / "make_corpora.py"
    with pytest.raises(FileNotFoundError, match=f"corpus {tmp_path / 'reviews.txt'} is missing: "
                       f"make it with `python {script}`$"):
        train_pretrain(_config("reviews", tmp_path / "out"))


def test_seq_len_longer_than_block_is_rejected(tiny_corpus, tmp_path):
    with pytest.raises(ValueError, match="seq_len = 200 exceeds the tiny preset's block_size 128"):
        train_pretrain(_config(tiny_corpus, tmp_path, seq_len=200))


def test_cli_pretrain_runs(tiny_corpus, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "minirlhf", "pretrain", "-q", "--set", "preset=tiny", "steps=6",
         f"corpus={tiny_corpus}", f"out_dir={tmp_path}", "batch_size=4", "seq_len=32",
         "eval_every=3", "eval_windows=4", "n_samples=3", "progress=false", "val_fraction=0.2"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert "samples before training" in run.stdout and "validation loss" in run.stdout
    assert (tmp_path / "model.npz").exists() and (tmp_path / "loss.png").exists()


def test_cli_rejects_unknown_key():
    run = subprocess.run([sys.executable, "-m", "minirlhf", "pretrain", "--set", "stepz=5"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode != 0
    assert "unknown config key 'stepz'" in run.stderr


def test_grammatical_rate_uses_the_parser():
    from minirlhf.world.reviews import is_grammatical

    assert is_grammatical("the plot was fun.") and not is_grammatical("the plot was fun.~")
    assert np.isclose(np.mean([is_grammatical(s) for s in ["the plot was fun.", "x"]]), 0.5)
