"""The whole course in one command: pretrain -> SFT -> preferences -> reward model -> best-of-n
-> PPO -> DPO -> report, resumable and reproducible.

Each stage is the same entry point its own command calls (``train_sft(config)`` and so on);
this module only chooses their configs, skips what is already done, and writes the report.

Resuming. When a stage finishes, a record ``runs/<name>/pipeline/<stage>.json`` is written
(atomically) with a fingerprint of the stage's config and of every stage it depends on, and the
numbers the report needs. A stage is skipped when its record's fingerprint matches and its
outputs are there and pass their checksums; otherwise it runs again. So a changed config
upstream (a new seed, another preset, ``--set sft.steps=10``) invalidates everything that
depends on it, and a run killed at any point redoes only the stage it was in. Every stage is
seeded, so the resumed run ends with the same ``summary.json`` as an uninterrupted one.

Entry point: ``run_pipeline(config) -> PipelineResult``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from minirlhf.config import ConfigError, apply_overrides, validate
from minirlhf.evaluation import PolicyReport, policy_report
from minirlhf.lm.checkpoint import CheckpointError, _atomic_write, load_checkpoint, load_model
from minirlhf.stages.best_of_n import BestOfNConfig, run_best_of_n
from minirlhf.stages.dpo import DPOConfig, train_dpo
from minirlhf.stages.ppo import PPOConfig, train_ppo
from minirlhf.stages.preferences import PreferenceConfig, build_preference_data
from minirlhf.stages.pretrain import PretrainConfig, train_pretrain
from minirlhf.stages.reward import RewardConfig, held_out_count, train_reward
from minirlhf.stages.sft import SFTConfig, train_sft
from minirlhf.world import get_task

log = logging.getLogger("minirlhf.pipeline")

STAGES = ("pretrain", "sft", "preferences", "reward", "best_of_n", "ppo", "dpo")
DEPENDS_ON = {"pretrain": (), "sft": ("pretrain",), "preferences": ("sft",),
              "reward": ("sft", "preferences"), "best_of_n": ("sft", "reward"),
              "ppo": ("sft", "reward"), "dpo": ("sft", "preferences")}

# What a preset changes from each stage's defaults. "default" is the defaults themselves (the
# figures in the README); "tiny" is a one-minute smoke run of every stage (the tests use it).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {},
    "tiny": {
        "pretrain": dict(preset="tiny", steps=600, eval_every=300, eval_windows=32,
                         n_samples=32),
        "sft": dict(n_demos=1000, steps=100, eval_samples_per_prompt=1, max_new_tokens=60),
        "preferences": dict(n_pairs=1000, max_new_tokens=60),
        "reward": dict(epochs=1, norm_samples=128, corr_samples=128),
        "best_of_n": dict(ns="1,2,4,8", samples_per_prompt=8, prompts_per_eval=1,
                          max_new_tokens=60),
        "ppo": dict(iterations=10, rollout_size=32, minibatch_size=16, ppo_epochs=1,
                    max_new_tokens=60, eval_samples_per_prompt=1, table_every=0),
        "dpo": dict(max_pairs=512, eval_samples_per_prompt=1, max_new_tokens=60),
    },
}
CONFIG_CLASSES = {"pretrain": PretrainConfig, "sft": SFTConfig, "preferences": PreferenceConfig,
                  "reward": RewardConfig, "best_of_n": BestOfNConfig, "ppo": PPOConfig,
                  "dpo": DPOConfig}


class PipelineError(RuntimeError):
    """A stage failed; the message names the stage, what happened and what is still intact."""


@dataclass
class PipelineConfig:
    name: str = "default"  # the run's folder: runs/<name>
    preset: str = "default"  # a key of PRESETS: default (about 8 minutes) or tiny (under 1)
    runs_dir: str = "runs"  # where run folders go
    corpus: str = "data/reviews.txt"  # the pretraining corpus
    seed: int = 0  # every stage's seed
    force: bool = False  # redo every stage even when its record matches
    progress: bool = True  # tqdm bars
    overrides: list[str] = field(default_factory=list)  # "stage.key=value", e.g. "ppo.beta=0.1"


@dataclass
class PipelineResult:
    config: PipelineConfig
    report: str  # path of report.md
    summary: dict[str, Any]  # what summary.json holds
    ran: list[str] = field(default_factory=list)  # stages that ran
    skipped: list[str] = field(default_factory=list)  # stages whose records matched
    seconds: float = 0.0


# ------------------------------------------------------------------------ stage configs
def stage_configs(config: PipelineConfig) -> dict[str, Any]:
    """Every stage's config for this run, with paths under runs/<name>, the preset and the
    overrides applied, and each checked: errors are raised here, before any work starts."""
    if config.preset not in PRESETS:
        raise ConfigError(f"pipeline: preset {config.preset!r} is not one of "
                          f"{', '.join(PRESETS)}")
    root = Path(config.runs_dir) / config.name
    paths = {"pretrain": root / "pretrain" / "model.npz", "sft": root / "sft" / "model.npz",
             "preferences": root / "preferences.jsonl",
             "reward": root / "reward" / "model.npz"}
    common = dict(seed=config.seed, progress=config.progress)
    base: dict[str, dict[str, Any]] = {
        "pretrain": dict(corpus=config.corpus, out_dir=str(root / "pretrain")),
        "sft": dict(init=str(paths["pretrain"]), out_dir=str(root / "sft")),
        "preferences": dict(policy=str(paths["sft"]), out=str(paths["preferences"])),
        "reward": dict(preferences=str(paths["preferences"]), init=str(paths["sft"]),
                       out_dir=str(root / "reward")),
        "best_of_n": dict(policy=str(paths["sft"]), reward_model=str(paths["reward"]),
                          out_dir=str(root / "best_of_n")),
        "ppo": dict(init=str(paths["sft"]), reward_model=str(paths["reward"]),
                    out_dir=str(root / "ppo")),
        "dpo": dict(preferences=str(paths["preferences"]), init=str(paths["sft"]),
                    out_dir=str(root / "dpo")),
    }
    per_stage: dict[str, list[str]] = {s: [] for s in STAGES}
    for item in config.overrides:
        stage, dot, rest = item.partition(".")
        if not dot or stage not in STAGES:
            raise ConfigError(f"pipeline override {item!r} must look like stage.key=value with "
                              f"stage one of {', '.join(STAGES)}")
        per_stage[stage].append(rest)
    out = {}
    for stage in STAGES:
        cfg = CONFIG_CLASSES[stage](**{**base[stage], **PRESETS[config.preset].get(stage, {})})
        if "seed" in {f.name for f in dataclasses.fields(cfg)}:
            cfg = dataclasses.replace(cfg, **common)
        out[stage] = apply_overrides(cfg, per_stage[stage])
        validate(out[stage])
    _check_sizes(out)
    return out


def _check_sizes(cfgs: dict[str, Any]) -> None:
    """Batches that the data cannot fill are errors now, not an hour from now."""
    n_pairs = cfgs["preferences"].n_pairs
    rm = cfgs["reward"]
    used = min(n_pairs, rm.max_pairs) if rm.max_pairs else n_pairs
    train_pairs = used - held_out_count(n_pairs, rm)  # the split train_reward makes
    if rm.batch_size > train_pairs:
        raise ConfigError(f"reward.batch_size = {rm.batch_size} is larger than the "
                          f"{train_pairs} training pairs (preferences.n_pairs = {n_pairs}); "
                          f"allowed range [1, {train_pairs}]")
    dpo = cfgs["dpo"]
    dpo_pairs = min(n_pairs, dpo.max_pairs) if dpo.max_pairs else n_pairs
    if dpo.batch_size > dpo_pairs:
        raise ConfigError(f"dpo.batch_size = {dpo.batch_size} is larger than the {dpo_pairs} "
                          f"pairs it trains on; allowed range [1, {dpo_pairs}]")
    ppo = cfgs["ppo"]
    if ppo.minibatch_size > ppo.rollout_size or ppo.rollout_size % ppo.minibatch_size:
        raise ConfigError(f"ppo.minibatch_size = {ppo.minibatch_size} must divide "
                          f"ppo.rollout_size = {ppo.rollout_size}")
    sft = cfgs["sft"]
    if sft.batch_size > sft.n_demos:
        raise ConfigError(f"sft.batch_size = {sft.batch_size} is larger than the "
                          f"{sft.n_demos} demonstrations; allowed range [1, {sft.n_demos}]")


def fingerprints(cfgs: dict[str, Any], root: Path) -> dict[str, str]:
    """A hash of each stage's config and of its upstream stages' fingerprints. Paths inside the
    run folder count relative to it (a moved or copied run folder stays valid), and progress
    bars do not change results, so they are left out."""
    prefix = str(root) + os.sep
    out: dict[str, str] = {}
    for stage in STAGES:
        fields = {k: (v.replace(prefix, "<run>/") if isinstance(v, str) else v)
                  for k, v in asdict(cfgs[stage]).items() if k != "progress"}
        text = json.dumps({"stage": stage, "config": fields,
                           "upstream": [out[d] for d in DEPENDS_ON[stage]]}, sort_keys=True)
        out[stage] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return out


# ---------------------------------------------------------------------------- the stages
def _report_numbers(rep: PolicyReport, samples_per_prompt: int) -> dict[str, Any]:
    return {"gold_reward": rep.gold, "win_rate_vs_sft": rep.win_rate, "kl_to_ref": rep.kl,
            "mean_length": rep.mean_length, "valid_rate": rep.valid_rate,
            "sft_gold_reward": rep.reference_gold,
            "samples": [list(s) for s in rep.samples[::samples_per_prompt]]}


def _run_stage(stage: str, cfg: Any) -> tuple[dict[str, Any], list[str]]:
    """Run one stage; return (the numbers its record keeps, the files it must leave behind)."""
    if stage == "pretrain":
        r = train_pretrain(cfg)
        return ({"val_loss": r.val_loss, "grammatical_rate": r.grammatical_rate,
                 "plot": r.plot, "before": r.samples_before[:3], "after": r.samples[:3]},
                [r.checkpoint])
    if stage == "sft":
        r = train_sft(cfg)
        step = cfg.eval_samples_per_prompt
        return ({"gold_before": r.before.gold_mean, "gold_after": r.after.gold_mean,
                 "valid_after": r.after.valid_rate, "plot": r.plot,
                 "before": [f"{p}|{t}" for p, t, _ in r.before.samples[::step][:3]],
                 "after": [f"{p}|{t}" for p, t, _ in r.after.samples[::step][:3]]},
                [r.checkpoint])
    if stage == "preferences":
        r = build_preference_data(cfg)
        return {"stats": r.stats}, [r.path]
    if stage == "reward":
        r = train_reward(cfg)
        m = r.val_metrics
        return ({"accuracy": m["accuracy"], "ceiling": m.get("ceiling"),
                 "expected_accuracy": m.get("expected_accuracy"),
                 "gold_accuracy": m.get("gold_accuracy"), "gold_correlation": r.gold_correlation,
                 "ece": r.calibration["ece"][0], "train_pairs": r.train_pairs,
                 "plots": r.plots}, [r.checkpoint])
    if stage == "best_of_n":
        r = run_best_of_n(cfg)
        n = max(r.table)
        return ({"n": n, "table": {str(k): v for k, v in r.table.items()}, "plot": r.plot,
                 **_report_numbers(r.report, cfg.prompts_per_eval * (cfg.samples_per_prompt // n))},
                [str(Path(cfg.out_dir) / "summary.json")])
    if stage == "ppo":
        r = train_ppo(cfg)
        return ({**_report_numbers(r.report, cfg.eval_samples_per_prompt), "plot": r.plot,
                 "warnings": r.warnings}, [r.checkpoint])
    if stage == "dpo":
        r = train_dpo(cfg)
        return ({**_report_numbers(r.report, cfg.eval_samples_per_prompt), "plots": r.plots,
                 "warnings": r.warnings}, [r.checkpoint])
    raise KeyError(stage)


def _log_samples(stage: str, numbers: dict[str, Any]) -> None:
    """A few generations before and after the stage, so the log shows what it changed."""
    lines = []
    for when in ("before", "after"):
        if numbers.get(when):
            lines.append(f"  {when} {stage}:")
            lines += [f"    {text}" for text in numbers[when]]
    if numbers.get("samples"):  # a policy stage: its samples beside their gold reward
        lines.append(f"  after {stage} (gold reward, prompt|response):")
        lines += [f"    {gold:+6.2f}  {prompt}|{response}"
                  for prompt, response, gold in numbers["samples"][:3]]
    if lines:
        log.info("samples\n%s", "\n".join(lines))


def _outputs_intact(root: Path, outputs: list[str]) -> str | None:
    """None if every output (relative to the run folder) is there and passes its checksum,
    else what is wrong."""
    for name in outputs:
        path = str(root / name)
        if not Path(path).exists():
            return f"{path} is missing"
        if path.endswith(".npz"):
            try:
                load_checkpoint(path)
            except CheckpointError as e:
                return str(e)
    return None


def _finite(obj: Any) -> Any:
    """JSON has no NaN: a float that is not finite becomes None (null)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _write_json(path: Path, obj: Any) -> None:
    data = (json.dumps(_finite(obj), indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
    _atomic_write(path, lambda f: f.write(data))


def run_pipeline(config: PipelineConfig,
                 on_stage_done: Callable[[str], None] | None = None) -> PipelineResult:
    """Run every stage that is not already done, then write report.md and summary.json.
    ``on_stage_done(stage)`` is called after each stage's record is written."""
    t0 = time.time()
    cfgs = stage_configs(config)  # every config error surfaces here, before any work
    if not Path(cfgs["pretrain"].corpus).exists():
        raise FileNotFoundError(f"corpus {cfgs['pretrain'].corpus} does not exist (make it "
                                "with: python data/make_corpora.py)")
    root = Path(config.runs_dir) / config.name
    prints = fingerprints(cfgs, root)
    records: dict[str, dict[str, Any]] = {}
    result = PipelineResult(config=config, report="", summary={})
    last_good = "none yet"
    for i, stage in enumerate(STAGES):
        record_path = root / "pipeline" / f"{stage}.json"
        record = json.loads(record_path.read_text()) if record_path.exists() else None
        problem = None
        if record is not None and record.get("fingerprint") == prints[stage]:
            problem = _outputs_intact(root, record["outputs"])
            if problem is None and not config.force:
                log.info("[%d/%d] %s: done already (config %s), skipped", i + 1, len(STAGES),
                         stage, prints[stage])
                records[stage] = record
                result.skipped.append(stage)
                last_good = str(root / record["outputs"][0])
                continue
            if problem:
                log.warning("%s: %s; running the stage again", stage, problem)
        log.info("[%d/%d] %s ...", i + 1, len(STAGES), stage)
        t = time.time()
        try:
            numbers, outputs = _run_stage(stage, cfgs[stage])
        except FloatingPointError as e:
            raise PipelineError(f"stage {stage} stopped: {e}. The last good checkpoint, "
                                f"{last_good}, is intact; fix the config and run the pipeline "
                                "again to resume from there") from None
        outputs = [os.path.relpath(o, root) for o in outputs]  # the folder may move
        if "plot" in numbers:
            numbers["plot"] = os.path.relpath(numbers["plot"], root)
        if "plots" in numbers:
            numbers["plots"] = [os.path.relpath(p, root) for p in numbers["plots"]]
        record = {"stage": stage, "fingerprint": prints[stage], "outputs": outputs,
                  "config": asdict(cfgs[stage]), "numbers": numbers,
                  "seconds": round(time.time() - t, 1)}
        _write_json(record_path, record)
        records[stage] = record
        result.ran.append(stage)
        last_good = str(root / outputs[0])
        log.info("%s finished in %.0f s", stage, time.time() - t)
        _log_samples(stage, numbers)
        if on_stage_done is not None:
            on_stage_done(stage)

    from minirlhf.report import write_report

    sft_numbers = _sft_policy_numbers(cfgs)
    result.summary = _finite(build_summary(config, records, sft_numbers))
    _write_json(root / "summary.json", result.summary)
    result.seconds = time.time() - t0
    result.report = str(write_report(root, result.summary, records, result.seconds))
    return result


def _sft_policy_numbers(cfgs: dict[str, Any]) -> dict[str, Any]:
    """The SFT policy judged like the others (against its own, independently seeded samples:
    its win-rate is near 1/2 and its KL exactly 0)."""
    ppo = cfgs["ppo"]
    sft, tokenizer, _ = load_model(ppo.init)
    rep = policy_report(sft, sft, tokenizer, get_task(ppo.task), ppo.seed,
                        ppo.eval_samples_per_prompt, ppo.max_new_tokens)
    return _report_numbers(rep, ppo.eval_samples_per_prompt)


def build_summary(config: PipelineConfig, records: dict[str, dict[str, Any]],
                  sft_numbers: dict[str, Any]) -> dict[str, Any]:
    """The report's table numbers, machine-readable. No timings: the same seed gives the same
    file."""
    keys = ("gold_reward", "win_rate_vs_sft", "kl_to_ref", "mean_length", "valid_rate")
    policies = {"sft": {k: sft_numbers[k] for k in keys}}
    for stage in ("best_of_n", "ppo", "dpo"):
        policies[stage] = {k: records[stage]["numbers"][k] for k in keys}
    policies["best_of_n"]["n"] = records["best_of_n"]["numbers"]["n"]
    rm = records["reward"]["numbers"]
    return {
        "name": config.name, "preset": config.preset, "seed": config.seed,
        "pretrain": {k: records["pretrain"]["numbers"][k] for k in ("val_loss",
                                                                     "grammatical_rate")},
        "reward_model": {k: rm.get(k) for k in ("accuracy", "expected_accuracy", "ceiling",
                                                "gold_accuracy", "gold_correlation", "ece",
                                                "train_pairs")},
        "best_of_n_table": records["best_of_n"]["numbers"]["table"],
        "policies": policies,
        "samples": {"sft": sft_numbers["samples"],
                    **{s: records[s]["numbers"]["samples"] for s in ("best_of_n", "ppo", "dpo")}},
    }
