"""Shared fixtures: a tiny pretrained model, made once per test session."""

import pytest

from minirlhf.autograd import runtime
from minirlhf.stages.pretrain import PretrainConfig, train_pretrain
from minirlhf.world.reviews import make_corpus


def pytest_configure(config):
    """The tests run the engine as the command line does: split over the cores
    (minirlhf/autograd/runtime.py; MINIRLHF_THREADS=1 runs them on one)."""
    runtime.configure()


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "reviews.txt"
    reviews, _ = make_corpus(600, seed=3)
    path.write_text("\n".join(reviews) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_pretrained(tiny_corpus, tmp_path_factory):
    """A tiny-preset model pretrained for a few seconds: it writes review-like text."""
    out = tmp_path_factory.mktemp("pretrain")
    config = PretrainConfig(preset="tiny", corpus=str(tiny_corpus), out_dir=str(out), steps=150,
                            batch_size=16, seq_len=64, eval_every=150, eval_windows=8,
                            n_samples=4, warmup_steps=10, progress=False, val_fraction=0.1)
    return train_pretrain(config).checkpoint


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One uninterrupted run of the pipeline's tiny preset: (its runs_dir, its result)."""
    from minirlhf.pipeline import PipelineConfig, run_pipeline

    runs = tmp_path_factory.mktemp("runs")
    config = PipelineConfig(name="tiny", preset="tiny", runs_dir=str(runs), progress=False)
    return runs, run_pipeline(config)


@pytest.fixture(scope="session")
def tiny_scratchpad_sft(tmp_path_factory):
    """A tiny model pretrained for a few seconds on worked sums, then briefly fine-tuned on
    right ones: it writes scratchpads, often wrong."""
    from minirlhf.stages.sft import SFTConfig, train_sft
    from minirlhf.world.scratchpad import make_corpus as sums

    path = tmp_path_factory.mktemp("corpus") / "scratchpad.txt"
    path.write_text("\n".join(sums(2000, seed=3)) + "\n")
    pre = train_pretrain(PretrainConfig(
        preset="tiny", task="scratchpad", corpus=str(path),
        out_dir=str(tmp_path_factory.mktemp("sp_pretrain")), steps=150, batch_size=16,
        seq_len=64, eval_every=150, eval_windows=8, n_samples=4, warmup_steps=10,
        progress=False, val_fraction=0.1)).checkpoint
    return train_sft(SFTConfig(task="scratchpad", init=pre, n_demos=256, steps=20,
                               batch_size=16, eval_samples_per_prompt=1, max_new_tokens=60,
                               out_dir=str(tmp_path_factory.mktemp("sp_sft")),
                               progress=False)).checkpoint


@pytest.fixture(scope="session")
def quick_experiment(tiny_run, tiny_scratchpad_sft):
    """``quick_experiment(name)``: the experiment's quick run on the tiny pipeline run, made once
    per session and laid out as the course lays it out (``runs/tiny/experiments/<name>/seed0/``;
    critic-free from ``runs/scratchpad-tiny``; critic-free's and the frontier's seed 0 in their
    own folder), so the claims'
    rules read the same files the experiments' tests check."""
    import shutil

    from minirlhf.course.build import subdir
    from minirlhf.experiments import ExperimentConfig, run_experiment

    runs, _ = tiny_run
    sft = runs / "scratchpad-tiny" / "sft"
    sft.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_scratchpad_sft, sft / "model.npz")
    made = {}

    def run(name):
        if name not in made:
            made[name] = run_experiment(ExperimentConfig(
                name=name, base="scratchpad-tiny" if name == "critic-free" else "tiny",
                runs_dir=str(runs), quick=True, subdir=subdir(name, 0)))
        return made[name]
    return run
