"""How good is a policy? Gold reward, win-rate against the SFT policy, and KL to the reference.

Every trained policy (best-of-n aside) is judged the same way, on the task's evaluation prompts:

- gold: the mean gold reward of its samples;
- win-rate vs SFT: for each prompt, sample i of the policy against sample i of the reference
  (the SFT policy), judged by gold; a tie counts one half;
- KL to the reference, in nats per response: the mean over the policy's samples of
  sum_t [log pi(y_t) - log pi_ref(y_t)], an unbiased estimate of KL(pi || pi_ref) per sequence.

Each figure carries a 95% percentile-bootstrap interval over the evaluation prompts (a prompt's
samples resampled together, since they are not independent): ``PolicyReport.intervals``, written
as ``ci95`` beside the figures. It measures the noise of judging one policy on these prompts, not
the noise of training it again (that takes seeds).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from minirlhf.autograd.tensor import no_grad
from minirlhf.config import (
    DEFAULT_RUN,
    SEEDS_RANGE,
    ConfigError,
    StageConfig,
    check_checkpoints,
    check_range,
    missing_input,
    output_hint,
    run_path,
    setting,
)
from minirlhf.files import CheckpointError, read_meta
from minirlhf.lm.model import GPT
from minirlhf.lm.sampling import generate_text, rollout
from minirlhf.lm.sequences import token_logprobs
from minirlhf.lm.tokenizer import CharTokenizer
from minirlhf.objectives.ppo import kl_estimate
from minirlhf.streams import stream
from minirlhf.world import TASK_NAMES, Task, get_task
from minirlhf.world.scratchpad import scratchpad_route


@dataclass
class PolicyReport:
    gold: float  # mean gold reward of the policy's samples
    reference_gold: float  # the same for the reference's samples
    win_rate: float  # share of same-prompt pairs the policy wins on gold (ties 1/2)
    kl: float  # KL(pi || pi_ref) in nats per response
    valid_rate: float  # share of well-formed, finished responses
    mean_length: float  # mean response length in characters
    samples: list[tuple[str, str, float]] = field(default_factory=list)  # prompt, response, gold
    reference_samples: list[tuple[str, str, float]] = field(default_factory=list)  # the same
    # 95% bootstrap intervals over the evaluation prompts, keyed like to_dict's figures
    # (gold_reward, win_rate_vs_sft, and kl_to_ref when KL was measured per sample)
    intervals: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The headline figures under the names every file uses (summary.json, the stages'
        summaries, the experiments' results): the one source of these key names. ``ci95``
        holds their intervals (when measured)."""
        out: dict[str, Any] = {
            "gold_reward": self.gold, "sft_gold_reward": self.reference_gold,
            "win_rate_vs_sft": self.win_rate, "kl_to_ref": self.kl,
            "valid_rate": self.valid_rate, "mean_length": self.mean_length}
        if self.intervals:
            out["ci95"] = dict(self.intervals)
        return out

    def describe(self, name: str, samples_per_prompt: int) -> str:
        """A trained policy's samples (one per evaluation prompt) and its headline figures."""
        ci = self.intervals
        return (f"samples after {name}:\n{sample_table(self.samples[::samples_per_prompt])}\n"
                f"\ngold {with_interval(self.gold, ci.get('gold_reward'))} (SFT "
                f"{self.reference_gold:.3f}); win-rate vs SFT "
                f"{with_interval(self.win_rate, ci.get('win_rate_vs_sft'), '.1%')}; KL to SFT "
                f"{with_interval(self.kl, ci.get('kl_to_ref'), '.2f')} nats/response; valid "
                f"{self.valid_rate:.1%}; length {self.mean_length:.1f}"
                + (" (± half-widths of 95% intervals over the evaluation prompts)" if ci else ""))


def with_interval(x: float, ci: list[float] | None, spec: str = ".3f") -> str:
    """``x`` formatted, with ± the half-width of its interval when there is one, about centred
    on x; else the interval itself (``59.0% [38.0%, 90.0%]``). For a percentage spec the half-width
    is in points (``77.3% ± 5.1``)."""
    if not ci:
        return format(x, spec)
    half = (ci[1] - ci[0]) / 2
    if abs((ci[0] + ci[1]) / 2 - x) > 0.1 * half:  # off centre: "± half" would mislead
        return f"{x:{spec}} [{ci[0]:{spec}}, {ci[1]:{spec}}]"
    if spec.endswith("%"):
        return f"{x:{spec}} ± {100 * half:.{spec[1:-1].lstrip('.') or '1'}f}"
    return f"{x:{spec}} ± {half:{spec}}"


POLICY_KEYS = ("gold_reward", "win_rate_vs_sft", "kl_to_ref", "mean_length", "valid_rate")

POLICY_TABLE_HEADER = [
    "| policy | gold reward | win-rate vs SFT | KL to SFT | mean length | valid |",
    "|---|---:|---:|---:|---:|---:|"]


def policy_row(name: str, p: dict[str, Any]) -> str:
    """One policy's row of the report's table (markdown): its figures as ``to_dict`` names
    them, each with the half-width of its 95% interval (``ci95``) where it has one."""
    ci = p.get("ci95", {})
    return (f"| {name} | {with_interval(p['gold_reward'], ci.get('gold_reward'))} "
            f"| {with_interval(p['win_rate_vs_sft'], ci.get('win_rate_vs_sft'), '.1%')} "
            f"| {with_interval(p['kl_to_ref'], ci.get('kl_to_ref'), '.2f')} | "
            f"{p['mean_length']:.1f} | {p['valid_rate']:.1%} |")


def policy_table(policies: dict[str, dict[str, Any]]) -> str:
    """The report's policy table (markdown) of ``policies`` (name -> figures)."""
    return "\n".join([*POLICY_TABLE_HEADER,
                      *(policy_row(name, p) for name, p in policies.items())])


def policy_numbers(rep: PolicyReport, samples_per_prompt: int) -> dict:
    """A policy stage's numbers for its record: the headline figures and one sample per
    evaluation prompt."""
    return {**rep.to_dict(), "samples": [list(s) for s in rep.samples[::samples_per_prompt]]}


def metrics_table(metrics: list[dict[str, float]], columns: list[tuple[str, str, str]],
                  every: int = 10) -> str:
    """A policy stage's metrics as aligned text: about ``every`` rows spread over training, and
    the last. columns: (header, metrics key, format spec with width, e.g. ">8.2f"); a key a
    row lacks prints as 0."""
    widths = [int("".join(c for c in fmt.split(".")[0] if c.isdigit()) or 8)
              for _, _, fmt in columns]
    lines = ["".join(f"{h:>{w}}" for (h, _, _), w in zip(columns, widths, strict=True))]
    shown = metrics[:: max(1, len(metrics) // every)]
    for m in shown + ([metrics[-1]] if metrics and shown[-1] is not metrics[-1] else []):
        lines.append("".join(f"{m.get(key, 0.0):{fmt}}" for _, key, fmt in columns))
    return "\n".join(lines)


def sample_table(rows: list[tuple[str, str, float]], n: int = 6) -> str:
    """(prompt, response, gold) rows as aligned text."""
    lines = [f"    {'gold':>6}  text"]
    lines += [f"    {gold:>6.2f}  {prompt}|{response}" for prompt, response, gold in rows[:n]]
    return "\n".join(lines)


def policy_report(policy: GPT, reference: GPT, tokenizer: CharTokenizer, task: Task,
                  seed: int = 0, samples_per_prompt: int = 4, max_new_tokens: int = 80
                  ) -> PolicyReport:
    """Sample the policy and the reference on the evaluation prompts and compare them.

    The reference is sampled from its own seeded generator, so every policy evaluated with the
    same seed meets the very same reference samples."""
    prompts = evaluation_prompts(task, samples_per_prompt)
    roll = rollout(policy, tokenizer, prompts, max_new_tokens, stream(seed, "eval"))
    g = roll.generation
    with no_grad():
        ref_lp = token_logprobs(reference, g.tokens, g.response_mask).data
    kl = kl_estimate(g.logprobs, ref_lp, "k1").data.sum(axis=1)  # (N,) one estimate per sample
    return report_from_samples(prompts, roll.texts, roll.finished, kl, reference, tokenizer,
                               task, seed, max_new_tokens)


@dataclass
class EvaluateConfig(StageConfig):
    """What ``python -m minirlhf evaluate POLICY`` judges, and against what."""

    policy: str = setting("", "the policy judged: a model.npz or a Hugging Face folder")
    task: str = setting("reviews", "the world whose evaluation prompts and gold judge it",
                        choices=TASK_NAMES)
    reference: str = setting(run_path("sft", "model.npz"), "the reference SFT policy: the "
                             "win-rate's opponent and the KL's reference (a model.npz or a "
                             "Hugging Face folder)")
    samples_per_prompt: int = setting(4, "samples per evaluation prompt (a policy stage's "
                                      "eval_samples_per_prompt)", "[1, 1000]")
    max_new_tokens: int = setting(80, "response budget when sampling", "[1, 126]")


def evaluate_checkpoint(config: EvaluateConfig) -> PolicyReport:
    """``policy_report`` of the checkpoint (or Hugging Face folder) ``config.policy`` against
    ``config.reference``, after the checks every stage makes of its inputs (settings, files,
    kinds, task, one tokenizer)."""
    from minirlhf.lm.checkpoint import load_model

    check_evaluation(config)
    policy, tokenizer, _ = load_model(config.policy)
    reference, _, _ = load_model(config.reference)
    return policy_report(policy, reference, tokenizer, get_task(config.task), config.seed,
                         config.samples_per_prompt, config.max_new_tokens)


def check_evaluation(config: EvaluateConfig) -> None:
    """What ``evaluate_checkpoint`` checks before any work: its settings, both files there, and
    both checkpoints policies of the task, read with one tokenizer."""
    config.check()
    for key in ("policy", "reference"):
        if not str(getattr(config, key)).strip():  # "" would be read as the current folder
            raise ConfigError(f"EvaluateConfig: {key} is empty: give a policy's model.npz or "
                              "Hugging Face folder")
    if not Path(config.policy).exists():
        raise missing_input("policy", config.policy)
    if not Path(config.reference).exists():
        raise missing_input("reference", config.reference, _reference_hint(config))
    if _default_reference(config):  # the reviews world's, read with another world's task?
        try:
            made_for = read_meta(config.reference).get("extra", {}).get("config", {}).get("task")
        except (CheckpointError, ValueError, OSError):
            made_for = None  # check_checkpoints names an unreadable file
        if made_for and made_for != config.task:
            raise ConfigError(f"EvaluateConfig: reference = {config.reference}, the default, "
                              f"was trained for the {made_for!r} world, and task = "
                              f"{config.task!r}: {_reference_hint(config)}")
    check_checkpoints(config)


def _default_reference(config: EvaluateConfig) -> bool:
    """Whether the reference is the default one (however its path is written), in another
    world than the reviews world it belongs to."""
    return config.task != "reviews" and \
        Path(config.reference).absolute() == Path(EvaluateConfig.reference).absolute()


def _reference_hint(config: EvaluateConfig) -> str:
    """How to get a reference: an SFT policy of the task's world. The default
    reference is the reviews world's; another world's has a run of its own (``runs/TASK``, the
    scratchpad route's for scratchpad), which is given as the reference once it is there."""
    def made(path: Path) -> str:
        if config.task == "scratchpad":
            return scratchpad_route(path)
        return output_hint("sft", path, **({"task": config.task}
                                          if config.task != "reviews" else {}))

    given = Path(config.reference)
    if not _default_reference(config):
        return made(given)
    own = Path(run_path("sft", "model.npz", Path(DEFAULT_RUN).parent / config.task)).absolute()
    give = f"give it as the reference (--set reference={own})"
    if own.is_file():
        return f"the {config.task} world's SFT policy is {own}: {give}"
    return f"give an SFT policy of the {config.task} world: {made(own)}, then {give}"


def evaluation_prompts(task: Task, samples_per_prompt: int) -> list[str]:
    """The task's evaluation prompts, each repeated ``samples_per_prompt`` times in a row."""
    return [p for p in task.eval_prompts for _ in range(samples_per_prompt)]


def report_from_samples(prompts: list[str], texts: list[str], finished: list[bool],
                        kl: float | np.ndarray, reference: GPT, tokenizer: CharTokenizer,
                        task: Task, seed: int, max_new_tokens: int) -> PolicyReport:
    """Judge a policy's samples (one per entry of ``prompts``, as ``evaluation_prompts`` lays
    them out) against the reference's samples for the same prompts, drawn from the seeded
    generator every report shares. ``kl`` is the policy's KL to the reference: known (a float)
    or measured, one estimate per sample ((N,), then its interval is reported too)."""
    ref = rollout(reference, tokenizer, prompts, max_new_tokens,
                  stream(seed, "eval_reference"))
    gold = np.array([task.gold(p, t, f) for p, t, f in zip(prompts, texts, finished,
                                                           strict=True)])
    ref_gold = np.array([task.gold(p, t, f) for p, t, f in zip(prompts, ref.texts, ref.finished,
                                                               strict=True)])
    wins = np.where(gold > ref_gold, 1.0, np.where(gold < ref_gold, 0.0, 0.5))
    valid = [task.valid(p, t, f) for p, t, f in zip(prompts, texts, finished, strict=True)]
    rows = [(p, t + ("" if f else "~"), float(s))
            for p, t, f, s in zip(prompts, texts, finished, gold, strict=True)]
    ref_rows = [(p, t + ("" if f else "~"), float(s))
                for p, t, f, s in zip(prompts, ref.texts, ref.finished, ref_gold, strict=True)]
    per_sample = {"gold_reward": gold, "win_rate_vs_sft": wins}
    if isinstance(kl, np.ndarray):
        per_sample["kl_to_ref"] = kl.astype(np.float64)
        kl = float(kl.mean())
    intervals = {}
    if len(set(prompts)) >= 2:
        intervals = {k: list(bootstrap_interval(by_prompt(prompts, v), seed=seed))
                     for k, v in per_sample.items()}
    return PolicyReport(float(gold.mean()), float(ref_gold.mean()), float(wins.mean()), kl,
                        float(np.mean(valid)), float(np.mean([len(t) for t in texts])), rows,
                        ref_rows, intervals)


def by_prompt(prompts: list[str], values: np.ndarray) -> np.ndarray:
    """Per-prompt means of per-sample values, in the order prompts first appear. prompts: N
    entries (any layout), values: (N,) -> (P,), P the number of distinct prompts."""
    index = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
    which = np.array([index[p] for p in prompts])
    sums = np.bincount(which, weights=np.asarray(values, dtype=np.float64), minlength=len(index))
    return sums / np.bincount(which, minlength=len(index))


@dataclass
class PolicyEval:
    """A policy's samples on the task's evaluation prompts, scored by gold."""

    gold_mean: float  # mean gold reward
    valid_rate: float  # share of well-formed, finished responses
    mean_length: float  # mean response length in characters
    samples: list[tuple[str, str, float]] = field(default_factory=list)  # (prompt, response, gold)


def evaluate_policy(model: GPT, tokenizer: CharTokenizer, task: Task, rng: np.random.Generator,
                    samples_per_prompt: int = 4, max_new_tokens: int = 80,
                    temperature: float = 1.0) -> PolicyEval:
    """Sample each evaluation prompt ``samples_per_prompt`` times and score with gold."""
    prompts = [p for p in task.eval_prompts for _ in range(samples_per_prompt)]
    outs = generate_text(model, tokenizer, prompts, max_new_tokens, rng, temperature)
    golds, valid, lengths, rows = [], [], [], []
    for prompt, (resp, finished) in zip(prompts, outs, strict=True):
        g = task.gold(prompt, resp, finished)
        golds.append(g)
        valid.append(task.valid(prompt, resp, finished))
        lengths.append(len(resp))
        rows.append((prompt, resp + ("" if finished else "~"), g))
    return PolicyEval(float(np.mean(golds)), float(np.mean(valid)), float(np.mean(lengths)), rows)


def write_summary(out_dir: str | Path, summary: dict) -> Path:
    """A stage's headline numbers as ``summary.json`` in its output folder (atomically)."""
    from minirlhf.lm.checkpoint import atomic_write

    path = Path(out_dir) / "summary.json"
    data = (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))
    return path


def finish_policy_stage(stage: str, out_dir: str | Path, config: object, policy: GPT,
                        reference: GPT, tokenizer: CharTokenizer, task: Task,
                        metrics: list[dict[str, float]], seed: int, samples_per_prompt: int,
                        max_new_tokens: int) -> tuple[str, PolicyReport]:
    """What every policy-training stage (PPO, DPO) does at the end: save the policy (refused
    if its weights blew up), write its per-step metrics as JSON Lines, evaluate it against the
    reference, and write the summary the comparison tables read. Returns (checkpoint path,
    report). The files move into place together when the stage ends (``held_writes``)."""
    from dataclasses import asdict

    from minirlhf.lm.checkpoint import atomic_write, save_model

    out = Path(out_dir)
    checkpoint = str(out / "model.npz")
    save_model(checkpoint, policy, tokenizer, extra={"stage": stage, "config": asdict(config)})
    rows = "".join(json.dumps(m) + "\n" for m in metrics).encode()
    atomic_write(out / "metrics.jsonl", lambda f: f.write(rows))
    rep = policy_report(policy, reference, tokenizer, task, seed, samples_per_prompt,
                        max_new_tokens)
    write_summary(out, rep.to_dict())
    return checkpoint, rep


# --------------------------------------------------------------------------- intervals
def bootstrap_interval(per_prompt: np.ndarray, level: float = 0.95, n_boot: int = 4000,
                       seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval for a mean over prompts: prompts are resampled with
    replacement (their samples stay together, since samples of one prompt are not
    independent). per_prompt: (P,) a number per prompt, or (P, K) K samples per prompt.
    Returns (low, high) of the mean."""
    x = np.asarray(per_prompt, dtype=np.float64)
    x = x.mean(axis=1) if x.ndim == 2 else x
    if x.ndim != 1 or len(x) < 2:
        raise ValueError(f"bootstrap_interval: need (P,) or (P, K) values with P >= 2, got "
                         f"shape {np.shape(per_prompt)}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap_interval: level must be in (0, 1), got {level}")
    rng = stream(seed, "bootstrap")
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)  # (n_boot,)
    lo, hi = np.quantile(means, [(1.0 - level) / 2, (1.0 + level) / 2])
    return float(lo), float(hi)


# Student's t quantile t_{0.975, df} for df = 1..30 (beyond 30 the normal's 1.96 is within 4%)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


# A figure named like this, with every seed's value in [0, 1], is a proportion (a share of
# samples, pairs or prompts): its interval over seeds must stay inside [0, 1].
PROPORTION = re.compile(r"(^|_)(rate|accuracy|agreement|share|coverage|ceiling|prefer)")


def is_proportion(key: str, values: list[float]) -> bool:
    """Whether ``key``'s values over seeds are a proportion (not a difference of two)."""
    return (bool(PROPORTION.search(key)) and "minus" not in key and "difference" not in key
            and all(0.0 <= v <= 1.0 for v in values))


def seed_interval(values: np.ndarray, proportion: bool = False) -> tuple[float, float, float]:
    """Mean and 95% interval over independent runs (seeds): mean +- t_{0.975, n-1} s / sqrt(n),
    Student's t since n is small. A ``proportion`` gets a percentile bootstrap over the seeds
    instead, which stays inside [0, 1] (and inside the seeds' own range: with few seeds it is
    narrow, so read it with the number of seeds). values: (n,) one figure per seed, n >= 2 ->
    (mean, low, high)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) < 2:
        raise ValueError(f"seed_interval: need (n,) values from n >= 2 seeds, got shape "
                         f"{np.shape(values)}")
    if proportion:
        lo, hi = bootstrap_interval(x)
        return float(x.mean()), lo, hi
    df = len(x) - 1
    half = (_T975[df - 1] if df <= len(_T975) else 1.96) * x.std(ddof=1) / np.sqrt(len(x))
    m = float(x.mean())
    return m, m - float(half), m + float(half)


def _over_seeds(runs: list[dict[str, Any]]) -> tuple[dict, dict, dict]:
    """(means, 95% intervals, per-seed values) of the keys whose value is a finite number in
    every run (a fit's peak at infinity, say, has no mean over seeds)."""
    per_seed = {}
    for key in runs[0]:
        values = [r.get(key) for r in runs]
        if all(isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
               for v in values):
            per_seed[key] = [float(v) for v in values]
    means, cis = {}, {}
    for key, values in per_seed.items():
        m, lo, hi = seed_interval(np.array(values), is_proportion(key, values))
        means[key], cis[key] = m, [lo, hi]
    return means, cis, per_seed


def figures_over_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of several runs (one dict per seed, the same keys) over seeds: every key
    whose value is a number in each run becomes its mean (today's key, so a reader of one
    run's figures keeps working), and beside them ``mean``, ``ci95`` (``seed_interval``) and
    ``per_seed``. Other values (text, lists, nested dicts) are left out."""
    means, cis, per_seed = _over_seeds(runs)
    return {**means, "mean": means, "ci95": cis, "per_seed": per_seed}


def nested_over_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The same at every level of nested results (an experiment's results.json, whose own
    dicts may already be named mean, ci95 or per_seed): at each level the numbers' means under
    their keys and, beside them, ``over_seeds`` holding their ``mean``, ``ci95`` and
    ``per_seed``; each dict that every run has, the same way. Left out: a run's ``seed`` and
    ``threads`` (settings, not figures) and its own ``ci95`` intervals over prompts (each seed's
    results.json keeps them; an interval's ends are no figure to average)."""
    means, cis, per_seed = _over_seeds([{k: v for k, v in r.items()
                                         if k not in ("seed", "threads")} for r in runs])
    out: dict[str, Any] = {**means, "over_seeds": {"mean": means, "ci95": cis,
                                                   "per_seed": per_seed}}
    for key, value in runs[0].items():
        if key != "ci95" and isinstance(value, dict) and all(isinstance(r.get(key), dict)
                                                             for r in runs):
            out[key] = nested_over_seeds([r[key] for r in runs])
    return out


R = TypeVar("R")


def run_over_seeds(first: int, n: int, run: Callable[[int], R],
                   aggregate: Callable[[list[R]], dict[str, Any]], command: str = ""
                   ) -> tuple[list[int], list[R], dict[str, Any]]:
    """What every ``--seeds N`` does: ``run(seed)`` for the seeds ``first`` .. ``first + n - 1``
    (every random stream derives from the seed, so the runs are independent), then
    ``aggregate(runs)``. Returns (seeds, runs, aggregate). An ``n`` below 2 is a ConfigError,
    prefixed with ``command`` ("pipeline", say) when there is one."""
    if n < 2:
        raise ConfigError(f"{command + ': ' if command else ''}--seeds must be at least 2 to "
                          f"aggregate over seeds (1, the default, is one run), got {n}")
    check_range(command or "run_over_seeds", "--seeds", n, SEEDS_RANGE)
    seeds = [first + k for k in range(n)]
    runs = [run(seed) for seed in seeds]
    return seeds, runs, aggregate(runs)


def per_prompt_gold(samples: list[tuple[str, str, float]]) -> np.ndarray:
    """A report's samples (prompt, response, gold), as ``evaluation_prompts`` lays them out
    (each prompt's samples in a row), as a (P, K) array of gold rewards."""
    prompts = [p for p, _, _ in samples]
    order = list(dict.fromkeys(prompts))
    K = len(prompts) // len(order)
    if K * len(order) != len(prompts) or prompts != [p for p in order for _ in range(K)]:
        raise ValueError("per_prompt_gold: samples are not K consecutive rows per prompt")
    return np.array([g for _, _, g in samples], dtype=np.float64).reshape(len(order), K)


def paired_bootstrap_interval(x: np.ndarray, y: np.ndarray, statistic=lambda a, b: a - b,
                              level: float = 0.95, n_boot: int = 4000, seed: int = 0
                              ) -> tuple[float, float]:
    """A percentile bootstrap interval for ``statistic(mean x, mean y)`` of two policies judged
    on the same prompts: the prompts are resampled together, so what the prompts share cancels
    (a difference of accuracies, say, or a ratio of error rates). x, y: (P,) or (P, K) per
    prompt, the same P prompts in the same order. Returns (low, high)."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    a = a.mean(axis=1) if a.ndim == 2 else a
    b = b.mean(axis=1) if b.ndim == 2 else b
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"paired_bootstrap_interval: x {np.shape(x)} and y {np.shape(y)} must "
                         f"hold the same P >= 2 prompts")
    rng = stream(seed, "bootstrap")
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))  # (n_boot, P)
    stats = np.asarray(statistic(a[idx].mean(axis=1), b[idx].mean(axis=1)))  # (n_boot,)
    lo, hi = np.quantile(stats, [(1.0 - level) / 2, (1.0 + level) / 2])
    return float(lo), float(hi)
