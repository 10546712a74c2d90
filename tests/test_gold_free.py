"""Preference data without gold (plain prompt / chosen / rejected, as public datasets are): every
stage that learns from it runs, and the figures that need gold say they are not available.
The tiny pipeline on such a file is in the catalogue (tests/test_catalogue.py)."""

import json
import math
from pathlib import Path

import pytest

from minirlhf.stages import reward as reward_stage
from minirlhf.world.preference_data import (
    NO_GOLD,
    NO_LABEL_P,
    PreferencePair,
    UnpairedExample,
    has_gold,
    load_jsonl,
    pairs_to_unpaired,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "data" / "example_preferences.jsonl"


def gold_free_copy(path: Path, n: int | None = None) -> Path:
    """The example preference data with only TRL's three fields on each line (first ``n``)."""
    lines = EXAMPLE.read_text().splitlines()[:n]
    path.write_text("".join(json.dumps({k: json.loads(line)[k] for k in ("prompt", "chosen",
                                                                           "rejected")}) + "\n"
                            for line in lines))
    return path


@pytest.fixture
def plain(tmp_path):
    return gold_free_copy(tmp_path / "plain.jsonl", 96)


def test_the_gold_free_copy_loads_as_pairs_without_gold(plain):
    pairs = load_jsonl(plain)
    assert len(pairs) == 96 and all(isinstance(p, PreferencePair) for p in pairs)
    assert not has_gold(pairs) and has_gold(load_jsonl(EXAMPLE))


def test_reward_on_data_without_gold_reports_it_not_available(tiny_pretrained, plain, tmp_path):
    cfg = reward_stage.RewardConfig(preferences=str(plain), init=tiny_pretrained,
                                    out_dir=str(tmp_path / "rm"), epochs=1, batch_size=16,
                                    norm_samples=32, corr_samples=32, progress=False)
    r = reward_stage.train_reward(cfg)
    assert 0.0 <= r.val_metrics["accuracy"] <= 1.0 and Path(r.checkpoint).exists()
    assert not {"ceiling", "expected_accuracy", "gold_accuracy"} & set(r.val_metrics)
    assert not r.data_gold and not r.data_label_p
    numbers = reward_stage.record(r, cfg)
    summary = reward_stage.STAGE.summary(numbers)["reward_model"]
    assert summary["ceiling"] is None and summary["gold_accuracy"] is None
    assert summary["expected_accuracy"] is None and summary["accuracy"] is not None
    json.dumps(summary)  # None is JSON's null
    section = "\n".join(reward_stage.report(numbers))
    assert f"Against gold preferences: {NO_GOLD}" in section and NO_LABEL_P in section
    shown = reward_stage.show(r, cfg)  # once a TypeError on the examples' missing gold
    assert f"held-out accuracy vs gold: {NO_GOLD}" in shown and "n/a" in shown
    # a record written before the flags existed: told by its nulls
    old = {k: v for k, v in numbers.items() if not k.startswith("data_")}
    assert f"Against gold preferences: {NO_GOLD}" in "\n".join(reward_stage.report(old))


def test_reward_report_on_data_with_gold_is_unchanged_in_form():
    numbers = {"accuracy": 0.7, "ceiling": 0.8, "expected_accuracy": 0.71,
               "gold_accuracy": 0.75, "gold_correlation": 0.5, "ece": 0.02, "train_pairs": 10,
               "data_gold": True, "data_label_p": True}
    text = "\n".join(reward_stage.report(numbers))
    assert "not available" not in text and "Against gold preferences: 75.0%." in text
    assert "**80.0%** (the best any model can do on labels this noisy); expected accuracy " \
        "against a fresh label 71.0% (the same without" in text


@pytest.mark.parametrize("command", ["dpo", "kto", "orpo", "simpo"])
def test_offline_stages_train_on_data_without_gold(tiny_pretrained, plain, tmp_path, command):
    import importlib

    stage = importlib.import_module(f"minirlhf.stages.{command}").STAGE
    budget = {"kto": dict(max_examples=64, batch_size=16)}.get(command,
                                                               dict(max_pairs=48, batch_size=16))
    cfg = stage.config(preferences=str(plain), init=tiny_pretrained,
                       out_dir=str(tmp_path / command), eval_samples_per_prompt=1,
                       max_new_tokens=40, progress=False, **budget)
    r = stage.run(cfg)
    assert Path(r.checkpoint).exists() and r.metrics
    assert all(math.isfinite(m["loss"]) for m in r.metrics)
    numbers = stage.record(r, cfg)
    assert numbers["gold_reward"] is not None  # the world's gold judges the policy, as ever
    stage.show(r, cfg)


def test_preferences_writes_kto_s_unpaired_file(tiny_pretrained, tmp_path):
    from minirlhf.config import ConfigError
    from minirlhf.stages.preferences import PreferenceConfig, build_preference_data

    common = dict(policy=tiny_pretrained, n_pairs=24, max_new_tokens=60, progress=False)
    pairs = build_preference_data(PreferenceConfig(out_dir=str(tmp_path / "p"), **common))
    unp = build_preference_data(PreferenceConfig(out_dir=str(tmp_path / "u"), format="unpaired",
                                                 **common))
    records = load_jsonl(unp.path)
    assert all(isinstance(e, UnpairedExample) for e in records)
    assert records == pairs_to_unpaired(load_jsonl(pairs.path))  # same seed, same pairs
    assert unp.stats == pairs.stats  # the raters' figures are the pairs'
    first = json.loads(Path(unp.path).read_text().splitlines()[0])
    assert {"prompt", "completion", "label"} <= set(first)
    with pytest.raises(ConfigError, match="format = unpaired splits pairs"):
        PreferenceConfig(format="unpaired", ranking_size=3).check()
    with pytest.raises(ConfigError, match="preferences.format = unpaired"):
        reward_stage.RewardConfig().check({"preferences": PreferenceConfig(format="unpaired")})
    # a gold-free file splits too: its lines carry no gold
    plain = load_jsonl(gold_free_copy(tmp_path / "plain.jsonl", 4))
    assert [e.gold for e in pairs_to_unpaired(plain)] == [None] * 8


def test_rankings_without_gold_say_so_and_keep_their_ceiling_n_a(tiny_pretrained, tmp_path):
    """A ranking has no simple ceiling whatever its fields ("n/a", as ever); its missing gold
    is said."""
    path = tmp_path / "ranked.jsonl"
    rows = [json.loads(line) for line in EXAMPLE.read_text().splitlines()[:64]]
    path.write_text("".join(json.dumps({"prompt": r["prompt"], "ranked": [
        r["chosen"], r["rejected"], r["rejected"] + " the end."]}) + "\n" for r in rows))
    cfg = reward_stage.RewardConfig(preferences=str(path), init=tiny_pretrained,
                                    out_dir=str(tmp_path / "rm"), epochs=1, batch_size=16,
                                    norm_samples=32, corr_samples=32, progress=False)
    r = reward_stage.train_reward(cfg)
    assert r.ranking_size == 3 and not r.data_gold and r.data_label_p
    section = "\n".join(reward_stage.report(reward_stage.record(r, cfg)))
    assert "the ceiling **n/a**" in section and f"gold preferences: {NO_GOLD}" in section
    assert NO_LABEL_P not in reward_stage.show(r, cfg)
