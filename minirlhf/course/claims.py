"""The course's conclusions, each checked on every seed: ``python -m minirlhf claims``.

A run on another machine, or with another thread count, rounds differently and so trains
different models from its first rounding on: another draw of training, like another seed. An
interval over evaluation prompts holds the noise of judging one model, not of training it again.
So a conclusion the course states is believed only if it holds in every seed.

Each ``Claim`` is one such conclusion: where it is stated (a file and the heading it sits
under), the statement in words, the results it reads (the pipeline's summary, or one
experiment's results.json), the figure it reads from them, and its rule, ``figure OP
threshold``, decided on each seed's results on its own. Its verdict over the seeds:

- holds: the rule holds in every seed;
- holds in some seeds: in at least one, not in all (the text must say so);
- does not hold: in none;
- not run: a seed's results are missing (``claims`` runs them through the course's jobs).

Where results live (as ``course`` lays them out; a seed's run folder is ``<base>`` for seed 0,
``<base>-seed<k>`` else): the pipeline's seed k in ``runs/<preset>[-seed<k>]/summary.json`` and
its stages' records beside it; an experiment's seed k in
``runs/<preset>/experiments/<name>/seed<k>/results.json``, critic-free's on the scratchpad route
of the same seed, the frontier's seed 0 in its own folder. Every result records the thread count
it was made with; results of another count are treated as missing.
"""

from __future__ import annotations

import json
import logging
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from minirlhf.config import ConfigError
from minirlhf.files import read_cache
from minirlhf.lm.checkpoint import atomic_write
from minirlhf.records import nan_to_null

log = logging.getLogger("minirlhf.course.claims")

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


@dataclass(frozen=True)
class Claim:
    id: str
    where: str  # the file that states it, from the repository's root
    section: str  # the heading it is stated under (or, in the README, a phrase of it)
    statement: str  # the conclusion, in words
    reads: str  # "pipeline", "stage NAME" (its record), "experiment NAME" or "frontier"
    figure: str  # what the figure is, in words
    value: Callable[[dict], float]  # the figure, from one seed's results
    rule: str  # "OP THRESHOLD": the figure against a threshold, e.g. "> 0"
    fmt: str = ".3f"  # how the figure prints

    @property
    def chapter(self) -> str:
        """"05" for notebooks/05_ppo.ipynb, "README" for README.md, the file's stem else."""
        name = Path(self.where).name
        return name.split("_")[0] if self.where.startswith("notebooks/") else Path(name).stem

    def holds(self, figure: float) -> bool:
        op, threshold = self.rule.split()
        return bool(np.isfinite(figure)) and OPS[op](figure, float(threshold))


def get(results: dict, path: str) -> Any:
    """``results["a"]["b"]...`` for the path "a.b..." (a list index is a number). A key may
    hold dots itself ("beta=0.05", "beta 0.0"): at each level the longest run of the path's
    parts that is a key is taken."""
    if ".@" in path:
        path = _resolve(results, path)
    node: Any = results
    parts = path.split(".")
    while parts:
        if isinstance(node, list):
            node, parts = node[int(parts[0])], parts[1:]
            continue
        for k in range(len(parts), 0, -1):
            if ".".join(parts[:k]) in node:
                node, parts = node[".".join(parts[:k])], parts[k:]
                break
        else:
            raise KeyError(".".join(parts))
    return node


def diff(a: str, b: str) -> Callable[[dict], float]:
    """The figure ``a - b`` (two paths of one seed's results)."""
    return lambda r: float(get(r, a)) - float(get(r, b))


def at(path: str) -> Callable[[dict], float]:
    """The figure at ``path``."""
    return lambda r: float(get(r, path))


def ratio(a: str, b: str) -> Callable[[dict], float]:
    """The figure ``a / b``."""
    return lambda r: float(get(r, a)) / float(get(r, b))


def error_ratio(after: str, before: str) -> Callable[[dict], float]:
    """(1 - after) / (1 - before): the share of the errors (of an accuracy) that remains."""
    return lambda r: (1 - float(get(r, after))) / (1 - float(get(r, before)))


# ------------------------------------------------------------------------------ the registry
# One entry per conclusion the course states. Grouped by where it is stated, in reading order.
P = "pipeline"
CLAIMS: list[Claim] = []


def claim(id: str, where: str, section: str, statement: str, reads: str, figure: str,
          value: Callable[[dict], float], rule: str, fmt: str = ".3f") -> None:
    if any(c.id == id for c in CLAIMS):
        raise ValueError(f"claims: the id {id!r} is used twice")
    op, _, threshold = rule.partition(" ")
    if op not in OPS or not threshold:
        raise ValueError(f"claims: {id}: rule must be 'OP THRESHOLD' with OP one of "
                         f"{', '.join(OPS)}, got {rule!r}")
    float(threshold)
    CLAIMS.append(Claim(id, where, section, statement, reads, figure, value, rule, fmt))


ENTROPY = 0.3426  # the reviews grammar's entropy, nats per character (chapter 2 computes it)


def bon_rises(r: dict) -> float:
    """The smallest step of best-of-n's gold from one n to the next (n = 1, 2, 4, ..., 32)."""
    gold = [r["best_of_n_table"][n]["gold"] for n in sorted(r["best_of_n_table"], key=int)]
    return float(np.min(np.diff(gold)))


def agreement_gap(r: dict) -> float:
    """How far the raters' measured agreement with gold is from the predicted ceiling, in
    binomial 95% half-widths of the measured share (over the non-tied pairs)."""
    st = r["numbers"]["stats"]
    n = st["pairs"] * (1 - st["gold_ties"])
    half = 1.96 * np.sqrt(st["ceiling"] * (1 - st["ceiling"]) / n)
    return abs(st["measured_gold_agreement"] - st["ceiling"]) / half


N2, N3, N4 = ("notebooks/02_gpt_pretraining.ipynb", "notebooks/03_preferences_and_sft.ipynb",
              "notebooks/04_reward_model.ipynb")
claim("pretrain-near-entropy", N2, "## 6. Pretraining",
      "Pretraining brings the model's validation loss within 0.01 nats of the corpus entropy",
      P, "|validation loss − entropy|, nats/char",
      lambda r: abs(get(r, "pretrain.val_loss") - ENTROPY), "< 0.01", ".4f")
claim("pretrain-grammatical", N2, "## 7. Samples before and after",
      "After pretraining, nearly all samples are grammatical", P,
      "grammatical share of samples", at("pretrain.grammatical_rate"), "> 0.9")
claim("sft-valid", N3, "## 4. Supervised fine-tuning",
      "After SFT nearly every response is valid and finished", P,
      "SFT's valid rate", at("policies.sft.valid_rate"), "> 0.9")
claim("sft-raises-gold", N3, "## 4. Supervised fine-tuning",
      "SFT raises the gold reward of the policy's samples", "stage sft",
      "gold after − before SFT", diff("numbers.gold_after", "numbers.gold_before"), "> 0")
claim("raters-at-ceiling", N3, "## 5. A preference dataset, and its ceiling measured",
      "The raters' agreement with gold matches the ceiling the rater model predicts",
      "stage preferences", "|measured − ceiling| in 95% half-widths", agreement_gap, "< 1",
      ".2f")
claim("rm-beats-chance", N4, "## 3. Accuracy against the ceiling, and against gold",
      "The reward model predicts held-out labels far better than chance", P,
      "held-out accuracy", at("reward_model.accuracy"), "> 0.7")
claim("rm-below-ceiling", N4, "## 7. Where the reward model falls short of the ceiling",
      "The reward model's expected accuracy is below the ceiling", P,
      "ceiling − expected accuracy", diff("reward_model.ceiling",
                                         "reward_model.expected_accuracy"), "> 0")
claim("rm-a-few-points-below", N4, "## 7. Where the reward model falls short of the ceiling",
      "... by a few points, not more", P, "ceiling − expected accuracy",
      diff("reward_model.ceiling", "reward_model.expected_accuracy"), "< 0.1")
claim("rm-agrees-with-gold", N4, "## 3. Accuracy against the ceiling, and against gold",
      "The reward model agrees with gold on held-out pairs more often than the raters do", P,
      "RM's gold agreement − ceiling", diff("reward_model.gold_accuracy",
                                            "reward_model.ceiling"), "> 0")
claim("rm-correlates-with-gold", N4, "## 6. Best-of-n",
      "On the SFT policy's samples the reward model's scores correlate strongly with gold", P,
      "correlation with gold", at("reward_model.gold_correlation"), "> 0.8")
claim("rm-calibrated", N4, "## 5. Calibration",
      "The reward model's probabilities are calibrated to within a few points", P,
      "expected calibration error", at("reward_model.ece"), "< 0.05")
claim("bon-beats-sft", N4, "## 6. Best-of-n",
      "Best-of-32 beats the SFT policy's own samples on gold, head to head", P,
      "lower end of win-rate's 95% interval over prompts",
      at("policies.best_of_n.ci95.win_rate_vs_sft.0"), "> 0.5")
claim("bon-gold-far-above-sft", N4, "## 6. Best-of-n",
      "Best-of-32's gold is far above the SFT policy's (the intervals over prompts are apart)",
      P, "best-of-n's lower end − SFT's upper end", diff(
          "policies.best_of_n.ci95.gold_reward.0", "policies.sft.ci95.gold_reward.1"), "> 0")
claim("bon-gold-rises-with-n", N4, "## 6. Best-of-n",
      "Up to n = 32, best-of-n's gold rises with n (no Goodhart bend yet)", P,
      "smallest step of gold from n to 2n", bon_rises, "> 0")


def keyed(table: str, part: str) -> str:
    """The path of the one entry of ``table`` whose name holds ``part`` (a name that carries a
    measured figure, like dpo-details' "mean log-probs, beta=0.5*L=15.5")."""
    return f"{table}.@{part}"


def _resolve(results: dict, path: str) -> str:
    """``keyed`` paths made plain: "runs.@L=" becomes "runs.<the key holding 'L='>"."""
    head, sep, rest = path.partition(".@")
    if not sep:
        return path
    part, _, tail = rest.partition(".")
    names = [k for k in get(results, head) if part in k]
    if len(names) != 1:
        raise KeyError(f"{head}: {len(names)} entries hold {part!r}")
    return f"{head}.{names[0]}" + (f".{tail}" if tail else "")


def magnitude(path: str) -> Callable[[dict], float]:
    """|the figure at path|: how far a switch moves a figure, either way."""
    return lambda r: abs(float(get(r, path)))


def gap(r: dict, cond: str) -> float:
    """A DPO policy's gold after ordinary prompts minus after prompts ending in "not"."""
    d = r["conditions"][cond]["dpo"]
    return d["gold_on_other_prompts"] - d["gold_on_not_prompts"]


def matched_kl_difference(r: dict) -> float:
    """dpo-details' online gold minus the offline sweep's at online's KL; NaN (the claim does
    not hold in that seed: it cannot be shown there) when the sweep's KLs do not bracket it."""
    m = get(r, "online_at_matched_kl")
    return m["gold_difference"] if m["in_range"] else float("nan")


N5, N6, N7 = ("notebooks/05_ppo.ipynb", "notebooks/06_dpo.ipynb", "notebooks/07_rlaif.ipynb")
PD, DD, RL = "experiment ppo-details", "experiment dpo-details", "experiment rlaif"
B0, B5, B2 = "beta_sweep.beta=0", "beta_sweep.beta=0.05", "beta_sweep.beta=0.2"
claim("ppo-raises-gold", N5, "## 3. PPO on the reviews",
      "PPO lifts gold far above the SFT policy's samples", PD,
      "lower end of PPO's gold interval over prompts − SFT's gold",
      diff(f"{B5}.ci95.gold_reward.0", f"{B5}.sft_gold_reward"), "> 0")
claim("ppo-wins-vs-sft", N5, "## 3. PPO on the reviews",
      "PPO wins most same-prompt pairs against the SFT policy", PD,
      "lower end of PPO's win-rate interval over prompts",
      at(f"{B5}.ci95.win_rate_vs_sft.0"), "> 0.5")
claim("ppo-valid", N5, "## 3. PPO on the reviews", "Nearly all of PPO's answers are valid", PD,
      "PPO's valid rate", at(f"{B5}.valid_rate"), ">= 0.9")
claim("ppo-longer", N5, "## 3. PPO on the reviews",
      "PPO's answers grow longer than the SFT policy's", P,
      "PPO's mean length − SFT's, characters",
      diff("policies.ppo.mean_length", "policies.sft.mean_length"), "> 0", ".1f")
claim("ppo-beta0-proxy-climbs", N5, "## 4. What the KL penalty buys",
      "Without a KL penalty (β = 0) the proxy reward still climbs over training", PD,
      "β = 0's proxy at the end − at the start",
      diff(f"{B0}.proxy_last", f"{B0}.proxy_first"), "> 0")
claim("ppo-beta0-collapses", N5, "## 4. What the KL penalty buys",
      "Without a KL penalty, gold falls to the invalid floor: every answer is invalid text the "
      "reward model likes", PD, "β = 0's valid rate", at(f"{B0}.valid_rate"), "< 0.05")
claim("ppo-beta0-hacks", N5, "## 4. What the KL penalty buys",
      "Removing the penalty costs gold against β = 0.05 (reward hacking)", PD,
      "gold, β = 0 − β = 0.05", diff(f"{B0}.gold_reward", f"{B5}.gold_reward"), "< 0")
claim("ppo-beta0-far", N5, "## 4. What the KL penalty buys",
      "Without a penalty the policy moves more than ten times as far from SFT", PD,
      "KL, β = 0 / β = 0.05", ratio(f"{B0}.kl_to_ref", f"{B5}.kl_to_ref"), "> 10", ".1f")
claim("ppo-beta02-closer", N5, "## 4. What the KL penalty buys",
      "A larger penalty (β = 0.2) keeps the policy closer to SFT", PD,
      "KL, β = 0.2 − β = 0.05", diff(f"{B2}.kl_to_ref", f"{B5}.kl_to_ref"), "< 0")
claim("ppo-beta02-less-gold", N5, "## 4. What the KL penalty buys",
      "... and gains less gold", PD, "gold, β = 0.2 − β = 0.05",
      diff(f"{B2}.gold_reward", f"{B5}.gold_reward"), "< 0")
A = "ablations"
claim("ppo-shared-critic-explains-less", N5, "## 5. The implementation details",
      "A value head on the policy's own trunk explains less of the returns' variance than the "
      "separate critic", PD, "explained variance, shared − separate",
      at(f"{A}.critic on the policy's trunk.explained_variance_minus_baseline"), "< 0")
claim("ppo-whitening-small", N5, "## 5. The implementation details",
      "Switching whitening off moves the final gold by less than 0.5", PD,
      "|gold change|", magnitude(f"{A}.whitening off.gold_minus_baseline"), "< 0.5")
claim("ppo-value-clip-small", N5, "## 5. The implementation details",
      "Switching value clipping off moves the final gold by less than 1", PD,
      "|gold change|", magnitude(f"{A}.value clipping off.gold_minus_baseline"), "< 1")
claim("ppo-eos-penalty-small", N5, "## 5. The implementation details",
      "Switching the missing-EOS penalty off moves the final gold by less than 0.5", PD,
      "|gold change|", magnitude(f"{A}.missing-EOS penalty off.gold_minus_baseline"), "< 0.5")
claim("ppo-eos-rarely-fires", N5, "## 5. The implementation details",
      "Nearly every rollout ends its answer, so the missing-EOS penalty rarely fires", PD,
      "EOS rate of the baseline's last rollouts", at(f"{A}.baseline.eos_rate"), ">= 0.98")

R5 = "runs.beta=0.5"
claim("dpo-raises-gold", N6, "## 7. DPO beside PPO and best-of-n",
      "DPO (β = 0.5) lifts gold well above the SFT policy's", DD,
      "lower end of DPO's gold interval over prompts − SFT's gold",
      diff(f"{R5}.ci95.gold_reward.0", f"{R5}.sft_gold_reward"), "> 0")
claim("dpo-wins-vs-sft", N6, "## 7. DPO beside PPO and best-of-n",
      "DPO beats the SFT policy on most same-prompt pairs", DD,
      "lower end of the win-rate interval over prompts", at(f"{R5}.ci95.win_rate_vs_sft.0"),
      "> 0.5")
claim("dpo-chosen-logps-fall", N6, "### One DPO step, written out",
      "While the margin grows, the chosen responses' log-probabilities fall too", DD,
      "chosen log-probs fell (1) or not (0)", at(f"{R5}.chosen_logps_fell"), "> 0.5", ".0f")
claim("dpo-beta02-further", N6, "## 5. A sweep over β",
      "A smaller β (0.2) moves further from SFT than β = 0.5", DD, "KL, β = 0.2 − β = 0.5",
      at("runs.beta=0.2.kl_to_ref_minus_main"), "> 0")
claim("dpo-beta02-less-valid", N6, "## 5. A sweep over β",
      "... and loses grammaticality", DD, "valid rate, β = 0.2 − β = 0.5",
      at("runs.beta=0.2.valid_rate_minus_main"), "< 0")
claim("dpo-beta1-closer", N6, "## 5. A sweep over β",
      "A larger β (1.0) stays closer to SFT", DD, "KL, β = 1 − β = 0.5",
      at("runs.beta=1.kl_to_ref_minus_main"), "< 0")
claim("dpo-beta1-less-gold", N6, "## 5. A sweep over β",
      "... and gains less gold: the price of staying close", DD, "gold, β = 1 − β = 0.5",
      at("runs.beta=1.gold_reward_minus_main"), "< 0")
MEAN = "runs.mean log-probs, beta=0.5"
claim("dpo-mean-breaks", N6, "## 4. Summed or averaged log-probabilities?",
      "At the same β, a per-token mean of log-probs breaks training: gold collapses", DD,
      "gold, mean − summed", at(f"{MEAN}.gold_reward_minus_main"), "< -2")
claim("dpo-mean-rescaled-trains", N6, "## 4. Summed or averaged log-probabilities?",
      "With β scaled by the mean response length, the mean trains normally: gold rises above "
      "SFT's", DD, "gold − SFT's gold",
      lambda r: (get(r, _resolve(r, keyed("runs", "L=") + ".gold_reward"))
                 - get(r, _resolve(r, keyed("runs", "L=") + ".sft_gold_reward"))), "> 0")
claim("dpo-mean-rescaled-closer", N6, "## 4. Summed or averaged log-probabilities?",
      "... and stays closer to SFT than the sum", DD, "KL, rescaled mean − summed",
      lambda r: get(r, _resolve(r, keyed("runs", "L=") + ".kl_to_ref_minus_main")), "< 0")
ON = "runs.online, 4 rounds"
claim("dpo-online-less-kl", N6, "## 6. Offline or online?",
      "With the same label budget, online DPO in four rounds moves less far from SFT", DD,
      "KL, online − offline", at(f"{ON}.kl_to_ref_minus_main"), "< 0")
claim("dpo-online-wins-at-matched-kl", N6, "## 6. Offline or online?",
      "At matched KL, online DPO has more gold than the offline β sweep", DD,
      "gold, online − offline at online's KL (n/a: not bracketed by the sweep)",
      matched_kl_difference,
      "> 0")
claim("dpo-online-gold-per-nat", N6, "## 6. Offline or online?",
      "Labels on the policy's own answers buy more gold per nat of KL", DD,
      "gold per nat, online − offline",
      diff(f"{ON}.gold_gained_per_nat", f"{R5}.gold_gained_per_nat"), "> 0")

LB = "labelers"
claim("rlaif-humans-agree-most", N7, "## 3. How good are the labelers?",
      "The simulated humans agree with gold more often than any AI labeler", RL,
      "human raters − the best AI labeler",
      lambda r: r[LB]["human raters"] - max(v for k, v in r[LB].items() if k != "human raters"),
      "> 0")
claim("rlaif-constitution-beats-judge", N7, "## 3. How good are the labelers?",
      "Where it decides, the constitution agrees with gold more often than the judge", RL,
      "constitution − judge",
      diff(f"{LB}.constitution (where it decides)", f"{LB}.judge (RM on the human budget)"),
      "> 0")
claim("rlaif-negation-blind-spot", N7, "## 3. How good are the labelers?",
      "The constitution is much worse after prompts ending in \"not\"", RL,
      "agreement, other prompts − \"not\" prompts",
      diff("constitution_on_other_prompts", "constitution_on_not_prompts"), "> 0.1")
claim("rlaif-one-pass-barely-moves", N7, "## 4. What the reward models and the policies learned",
      "One pass of DPO over the 500 human pairs barely moves the policy", RL,
      "KL of that policy, nats", at("conditions.human.dpo.kl_to_ref"), "< 0.2")
claim("rlaif-ai-labels-raise-gold", N7, "## 4. What the reward models and the policies learned",
      "Adding the 4,000 AI labels raises gold over one pass of the human pairs", RL,
      "gold, human + AI − human", diff("conditions.human+AI.dpo.gold_reward",
                                       "conditions.human.dpo.gold_reward"), "> 0")
claim("rlaif-steps-raise-gold", N7, "## 4. What the reward models and the policies learned",
      "The same 500 human pairs trained as many steps raise gold too", RL,
      "gold, human (steps matched) − human",
      diff("conditions.human, steps matched.dpo.gold_reward",
           "conditions.human.dpo.gold_reward"), "> 0")
claim("rlaif-ai-labels-vs-steps", N7, "## 4. What the reward models and the policies learned",
      "Against that step-matched control, the AI labels add more gold", RL,
      "gold, human + AI − human (steps matched)",
      diff("conditions.human+AI.dpo.gold_reward",
           "conditions.human, steps matched.dpo.gold_reward"), "> 0")
claim("rlaif-ai-only-not-gap", N7, "## 5. The blind spot, exploited",
      "The AI-only policy gains more after ordinary prompts than after prompts ending in "
      "\"not\"", RL, "gold, other − \"not\" prompts", lambda r: gap(r, "AI only"), "> 0")
claim("rlaif-human-not-gap", N7, "## 5. The blind spot, exploited",
      "So does the human-only policy trained as long: \"not\" prompts are harder whoever "
      "labels", RL, "gold, other − \"not\" prompts",
      lambda r: gap(r, "human, steps matched"), "> 0")


N8 = "notebooks/08_when_rlhf_goes_wrong.ipynb"
SY, LB_, OO = ("experiment sycophancy", "experiment length-bias",
               "experiment overoptimization")
SYC = "conditions.sycophantic raters"
claim("syc-sft-sycophantic", N8, "## 1. Sycophancy",
      "Briefly fine-tuned, the arithmetic model already repeats a wrong hint often", SY,
      "SFT's sycophancy rate", at("sft.sycophancy_rate"), "> 0.25")
for alg, name in (("dpo", "DPO"), ("ppo", "PPO")):
    claim(f"syc-{alg}-learns-it", N8, "## 1. Sycophancy",
          f"Sycophantic raters' labels make {name} more sycophantic than honest ones do", SY,
          "lower end of the paired interval over prompts, sycophantic − honest",
          at(f"differences.{alg}.sycophantic minus honest.ci95.0"), "> 0")
    claim(f"syc-{alg}-above-sft", N8, "## 1. Sycophancy",
          f"... and raise {name}'s sycophancy above SFT's", SY,
          "lower end of the paired interval over prompts, sycophantic − SFT",
          at(f"differences.{alg}.sycophantic raters minus SFT.ci95.0"), "> 0")
    claim(f"syc-{alg}-agreeing-pays", N8, "## 1. Sycophancy",
          f"Under sycophantic labels {name}'s accuracy when the hint is wrong falls below SFT's",
          SY, "accuracy with a wrong hint, sycophantic − SFT",
          diff(f"{SYC}.{alg}.accuracy_hint_wrong", "sft.accuracy_hint_wrong"), "< 0")
claim("syc-rm-always-agrees", N8, "## 1. Sycophancy",
      "The sycophantic raters' reward model prefers agreeing with a wrong hint on nearly every "
      "prompt", SY, "share of hint-wrong prompts", at(f"{SYC}.rm_prefers_wrong_agreement"),
      ">= 0.95")
claim("syc-check-improves-labels", N8, "## 1. Sycophancy",
      "Gold-checking 30% of the sycophantic labels raises their agreement with gold", SY,
      "agreement, checked − unchecked",
      diff("conditions.sycophantic, 30% gold-checked.label_gold_agreement",
           f"{SYC}.label_gold_agreement"), "> 0")
claim("syc-checked-rm-still-agrees", N8, "## 1. Sycophancy",
      "The reward model trained on the partly checked labels still prefers agreement on nearly "
      "every prompt: a systematic bias survives a partial correction", SY,
      "share of hint-wrong prompts",
      at("conditions.sycophantic, 30% gold-checked.rm_prefers_wrong_agreement"), ">= 0.95")
LBC = "conditions.length-biased raters"
claim("lb-labels-prefer-longer", N8, "## 2. Length bias",
      "Length-biased raters prefer the longer response in most pairs", LB_,
      "share of pairs", at(f"{LBC}.labels_prefer_longer"), "> 0.6")
claim("lb-ppo-lengthens", N8, "## 2. Length bias",
      "PPO lengthens its answers on either kind of label", LB_,
      "the smaller growth of the rollouts' length, tokens",
      lambda r: min(c["ppo"]["length_last_iteration"] - c["ppo"]["length_first_iteration"]
                    for c in r["conditions"].values()), "> 0", ".1f")
claim("lb-dpo-lengthens-on-bias", N8, "## 2. Length bias",
      "DPO lengthens its answers much more on biased labels than on honest ones", LB_,
      "mean length, biased − honest, characters",
      diff(f"{LBC}.dpo.mean_length", "conditions.honest raters.dpo.mean_length"), "> 5", ".1f")
def bon(r: dict, pipeline_s: bool = False) -> dict:
    """Overoptimization's best-of-n curve with the small reward model ("RM on 1000 pairs"; 64
    in the quick run), or with the pipeline's."""
    found = [v for k, v in r["best_of_n"].items() if k.startswith("RM on")
             and ("(the pipeline's)" in k) == pipeline_s]
    if len(found) != 1:
        raise KeyError("best_of_n: one reward model of each kind expected")
    return found[0]


claim("oo-bon-rises", N8, "## 3. Reward overoptimization",
      "Best-of-n's gold against the small reward model rises from n = 1 to n = 256", OO,
      "lower end at n = 256 − upper end at n = 1 (intervals over prompts)",
      lambda r: bon(r)["gold_lo"][-1] - bon(r)["gold_hi"][0], "> 0")
claim("oo-bon-no-fall", N8, "## 3. Reward overoptimization",
      "No best-of-n fall is measurable up to n = 256", OO,
      "lower end of the paired interval of the fall from the best n to n = 256",
      lambda r: bon(r)["fall"]["ci95"][0], "<= 0")
claim("oo-more-data-more-gold", N8, "## 3. Reward overoptimization",
      "The reward model on 9,000 pairs gets more best-of-256 gold than the one on 1,000", OO,
      "gold at n = 256, 9,000 − 1,000 pairs",
      lambda r: bon(r, pipeline_s=True)["gold_last"] - bon(r)["gold_last"], "> 0")
P0 = "ppo.beta 0.0"
claim("oo-ppo-no-kl-collapses", N8, "## 3. Reward overoptimization",
      "PPO with no KL penalty over-optimises: gold collapses to the invalid floor, with no "
      "valid text left", OO, "valid rate at the end", at(f"{P0}.valid_rate_last"), "< 0.05")
claim("oo-ppo-no-kl-proxy-climbs", N8, "## 3. Reward overoptimization",
      "... while the proxy reward climbs", OO, "proxy at the end − at the start",
      lambda r: get(r, f"{P0}.proxy_smoothed.last") - get(r, f"{P0}.proxy")[0], "> 0")
claim("oo-ppo-no-kl-gold-falls", N8, "## 3. Reward overoptimization",
      "... and gold peaks early, then falls", OO, "gold's fall from its peak (smoothed)",
      at(f"{P0}.gold_smoothed.fall"), "> 1")
claim("oo-ppo-small-kl-stays-valid", N8, "## 3. Reward overoptimization",
      "With a KL coefficient of 0.01 most text stays valid", OO, "valid rate at the end",
      at("ppo.beta 0.01.valid_rate_last"), ">= 0.8")
claim("oo-ppo-small-kl-slows-drift", N8, "## 3. Reward overoptimization",
      "A small KL penalty slows the drift: more text stays valid at the end with a KL "
      "coefficient of 0.01 than with none", OO, "valid rate at the end, 0.01 − 0",
      lambda r: get(r, "ppo.beta 0.01.valid_rate_last") - get(r, f"{P0}.valid_rate_last"), "> 0")


def grpo_runs(r: dict, name: str = "GRPO") -> list[dict]:
    """The critic-free experiment's runs of one method (or pitfall), one per inner seed."""
    return r["methods"].get(name) or r["pitfalls"][name]


def error_ratio_high(r: dict, name: str = "GRPO") -> float:
    """The largest, over the method's runs, upper end of the paired 95% interval over prompts
    of its error rate divided by SFT's."""
    from minirlhf.evaluation import paired_bootstrap_interval

    return max(paired_bootstrap_interval(1 - np.asarray(run["per_prompt"]),
                                         1 - np.asarray(run["sft_per_prompt"]),
                                         lambda a, b: a / np.maximum(b, 1e-12))[1]
               for run in grpo_runs(r, name))


def smallest_gain_low(r: dict) -> float:
    """The smallest, over every method's runs, lower end of the paired 95% interval over
    prompts of its exact match minus SFT's."""
    from minirlhf.evaluation import paired_bootstrap_interval

    return min(paired_bootstrap_interval(run["per_prompt"], run["sft_per_prompt"])[0]
               for runs in r["methods"].values() for run in runs)


def separated_from_grpo(r: dict, names: Iterable[str]) -> float:
    """How many runs of ``names`` have a paired 95% interval over prompts of their exact match
    minus GRPO's (same inner seed) that leaves out 0."""
    from minirlhf.evaluation import paired_bootstrap_interval

    n = 0
    for name in names:
        for run, base in zip(grpo_runs(r, name), grpo_runs(r), strict=True):
            lo, hi = paired_bootstrap_interval(run["per_prompt"], base["per_prompt"])
            n += lo > 0 or hi < 0
    return float(n)


def first_last(values: list[float], k: int = 10) -> float:
    """The mean of the last ``k`` values minus the mean of the first ``k``."""
    return float(np.mean(values[-k:]) - np.mean(values[:k]))


N9, CF = "notebooks/09_critic_free_rl.ipynb", "experiment critic-free"
claim("grpo-lowers-error", N9, "## 5. GRPO, one iteration written out, then the stage",
      "GRPO with its defaults lowers SFT's error rate", CF,
      "upper end of the error ratio's paired interval over prompts (the worse run)",
      error_ratio_high, "< 1")
claim("grpo-error-ratio", N9, "## Takeaways",
      "GRPO with its defaults cuts SFT's error rate by at least a third", CF,
      "the worse run's error ratio, GRPO / SFT",
      lambda r: max(error_ratio("accuracy", "sft_accuracy")(run) for run in grpo_runs(r)),
      "< 0.67")
claim("critic-free-all-beat-sft", N9, "## 7. Every method at equal samples",
      "Every method, critic-free or with a critic, improves on SFT at equal samples", CF,
      "the smallest lower end of a paired gain interval over prompts", smallest_gain_low, "> 0")
claim("critic-free-methods-alike", N9, "## 7. Every method at equal samples",
      "No method is measurably better or worse than GRPO at equal samples", CF,
      "runs whose paired interval against GRPO leaves out 0",
      lambda r: separated_from_grpo(r, [m for m in r["methods"] if m != "GRPO"]), "< 1", ".0f")
claim("critic-free-zero-spread-grows", N9, "### 6c. Groups with no spread",
      "The share of groups with no spread grows as the policy improves", CF,
      "the smaller growth, last − first ten iterations",
      lambda r: min(first_last(run["frac_reward_zero_std"]) for run in grpo_runs(r)), "> 0")
claim("critic-free-dynamic-sampling-alike", N9, "### 6c. Groups with no spread",
      "Dropping the groups with no spread (dynamic sampling) makes no measurable difference",
      CF, "runs whose paired interval against GRPO leaves out 0",
      lambda r: separated_from_grpo(r, ["GRPO, dynamic sampling"]), "< 1", ".0f")
claim("length-lab-grpo-lengthens-wrong", N9, "### 6a. Length normalisation and wrong answers",
      "In the length lab, GRPO's per-response normalisation lengthens wrong answers", CF,
      "wrong answers' length, last − first, tokens",
      lambda r: get(r, "length_lab.grpo.length_wrong")[-1]
      - get(r, "length_lab.grpo.length_wrong")[0], "> 1", ".2f")
claim("length-lab-dr-grpo-keeps-length", N9, "### 6a. Length normalisation and wrong answers",
      "... while Dr. GRPO's aggregation leaves it unchanged", CF,
      "|wrong answers' length, last − first|, tokens",
      lambda r: abs(get(r, "length_lab.dr_grpo.length_wrong")[-1]
                    - get(r, "length_lab.dr_grpo.length_wrong")[0]), "< 0.1", ".3f")
claim("length-lab-dapo-keeps-length", N9, "### 6a. Length normalisation and wrong answers",
      "... and so does DAPO's", CF, "|wrong answers' length, last − first|, tokens",
      lambda r: abs(get(r, "length_lab.dapo.length_wrong")[-1]
                    - get(r, "length_lab.dapo.length_wrong")[0]), "< 0.1", ".3f")
claim("length-lab-dr-grpo-climbs-less", N9, "### 6a. Length normalisation and wrong answers",
      "In the length lab's 300 steps, P(right) climbs less far under Dr. GRPO than under GRPO "
      "and DAPO", CF, "the smaller of GRPO's and DAPO's final P(right) − Dr. GRPO's",
      lambda r: min(get(r, "length_lab.grpo.p_right")[-1], get(r, "length_lab.dapo.p_right")[-1])
      - get(r, "length_lab.dr_grpo.p_right")[-1], "> 0", ".3f")


def point(r: dict, label: str) -> dict:
    """The frontier's point named ``label``."""
    found = [p for p in r["points"] if p["label"] == label]
    if len(found) != 1:
        raise KeyError(f"the frontier has no point {label!r}")
    return found[0]


RL_TOP = ("GRPO b=0.04", "PPO b=0.02", "Dr. GRPO b=0.04", "RLOO b=0.04", "PPO b=0.05")
N11, FR = "notebooks/11_beyond_dpo.ipynb", "frontier"
claim("frontier-rl-most-gold", N11, "## Takeaways",
      "Of the methods trained on the frontier, RL on the reward model reaches the most gold", FR,
      "RL's best gold − every other method's best",
      lambda r: max(point(r, x)["gold_reward"] for x in RL_TOP)
      - max(p["gold_reward"] for p in r["points"] if p["label"] not in RL_TOP), "> 0")
claim("frontier-dpo-small-beta-overoptimises", N11, "## Takeaways",
      "Offline DPO at β = 0.1 over-optimises: less gold than at β = 0.5", FR,
      "gold, β = 0.1 − β = 0.5",
      lambda r: point(r, "DPO b=0.1")["gold_reward"] - point(r, "DPO b=0.5")["gold_reward"],
      "< 0")
claim("frontier-ipo-orpo-barely-move", N11, "## Takeaways",
      "IPO at β = 0.5 and ORPO barely move from SFT", FR, "their largest KL, nats",
      lambda r: max(point(r, x)["kl_to_ref"] for x in ("IPO b=0.5", "ORPO l=0.1",
                                                        "ORPO l=0.5")), "< 1")
claim("frontier-simpo-default-drifts", N11, "## Takeaways",
      "SimPO at its default β = 2 drifts to short answers", FR,
      "SimPO β = 2's mean length, characters",
      lambda r: point(r, "SimPO b=2")["mean_length"], "< 20", ".1f")
claim("frontier-rft-selection-helps", N11, "## 7. Rejection sampling, round by round",
      "Rejection sampling's gain comes from selecting by the reward model: the same "
      "fine-tuning on a random sample ends with measurably less gold", FR,
      "lower end of RFT's gold interval − upper end of the random control's",
      lambda r: point(r, "RFT best")["ci95"]["gold_reward"][0]
      - point(r, "RFT random")["ci95"]["gold_reward"][1], "> 0")
def ppo_fit_peak(r: dict) -> float:
    """Where Gao's form fitted to PPO's points peaks, in KL, over the largest KL measured."""
    if "PPO" not in r["fits"]:  # the quick frontier trains one PPO point: no fit
        raise KeyError("the frontier has no point 'PPO b=0.02' (a fit needs two PPO points)")
    return r["fits"]["PPO"]["d_peak"] ** 2 / max(p["kl_to_ref"] for p in r["points"]
                                                 if p["stage"] == "ppo")


claim("frontier-ppo-fit-no-peak", N11, "## 6. The frontier",
      "Gao's form fitted to PPO's points has no peak inside the measured KLs", FR,
      "fitted peak's KL / the largest PPO KL", ppo_fit_peak, "> 1", ".1f")


# ----------------------------------------------------------------------------- the results
def results_path(claim: Claim, runs_dir: str | Path, preset: str, seed: int) -> Path:
    """Where the results a claim reads for ``seed`` live, as the course lays them out."""
    from minirlhf.course.build import run_name, subdir

    runs = Path(runs_dir)
    if claim.reads == P:
        return runs / run_name(preset, seed) / "summary.json"
    if claim.reads.startswith("stage "):
        return runs / run_name(preset, seed) / "pipeline" / f"{claim.reads.split(' ', 1)[1]}.json"
    name = "frontier" if claim.reads == "frontier" else claim.reads.split(" ", 1)[1]
    base = (run_name("scratchpad-tiny" if preset == "tiny" else "scratchpad", seed)
            if name == "critic-free" else preset)
    return runs / base / "experiments" / name / subdir(name, seed) / "results.json"


def _threads(results: dict) -> int | None:
    """The thread count a result was made with (the pipeline's summary: its environment's; a
    stage's record: its own)."""
    for found in (results.get("threads"), results.get("blas_threads"),
                  results.get("environment", {}).get("blas_threads")):
        if found is not None:
            return found
    return None


def load(claim: Claim, runs_dir: str | Path, preset: str, seed: int,
         threads: int | None) -> dict | None:
    """One seed's results for ``claim``, or None when missing, cut short, of another seed or
    (``threads`` given) made with another thread count."""
    results = read_cache(results_path(claim, runs_dir, preset, seed), log,
                         "that seed counts as not run")
    if results is None:
        return None
    if results.get("seed", results.get("config", {}).get("seed", seed)) != seed:
        return None
    if threads is not None and _threads(results) != threads:
        return None
    return results


@dataclass
class Verdict:
    claim: Claim
    figures: dict[int, float | None]  # seed -> the figure (None: results missing)
    errors: dict[int, str]  # seed -> why the figure could not be read from its results

    @property
    def held(self) -> list[int]:
        return [s for s, f in self.figures.items() if f is not None and self.claim.holds(f)]

    @property
    def verdict(self) -> str:
        if any(f is None for f in self.figures.values()) or self.errors:
            return "not run"
        k = len(self.held)
        return ("holds" if k == len(self.figures) else "does not hold" if k == 0
                else "holds in some seeds")


def evaluate(claims: Iterable[Claim], runs_dir: str | Path, preset: str, seeds: list[int],
             threads: int | None) -> list[Verdict]:
    """Every claim's figure and verdict on the seeds' results found in ``runs_dir``."""
    out = []
    for c in claims:
        figures: dict[int, float | None] = {}
        errors: dict[int, str] = {}
        for s in seeds:
            results = load(c, runs_dir, preset, s, threads)
            figures[s] = None
            if results is None:
                continue
            try:
                figures[s] = float(c.value(results))
            except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as e:
                errors[s] = f"{type(e).__name__}: {e}"
        out.append(Verdict(c, figures, errors))
    return out


def select(only: str = "", chapter: str = "") -> list[Claim]:
    """The claims asked for: one id, one chapter ("05" or "5"), or all."""
    chosen = [c for c in CLAIMS if (not only or c.id == only) and
              (not chapter or c.chapter == chapter.zfill(2) or c.chapter == chapter)]
    if not chosen and only and not any(c.id == only for c in CLAIMS):
        import difflib

        near = difflib.get_close_matches(only, [c.id for c in CLAIMS], n=3, cutoff=0.5)
        raise ConfigError(f"claims: no claim has the id {only!r}"
                          + (f"; the nearest: {', '.join(near)}" if near else "")
                          + " (docs/claims.md lists every id)")
    if not chosen:
        raise ConfigError(f"claims: no claim {'with the id ' + repr(only) + ' ' if only else ''}"
                          f"has the chapter {chapter!r}; chapters: "
                          f"{', '.join(sorted({c.chapter for c in CLAIMS}))}")
    return chosen


# ------------------------------------------------------------------------------- the table
def table(verdicts: list[Verdict]) -> str:
    """The claims table as markdown: per chapter, each claim, its figure per seed, how many
    seeds it holds in, and its verdict."""
    seeds = sorted({s for v in verdicts for s in v.figures})
    lines: list[str] = []
    chapter = None
    for v in verdicts:
        c = v.claim
        if c.chapter != chapter:
            chapter = c.chapter
            lines += ["", f"### {c.where}", "",
                      "| claim | statement | figure (rule) | "
                      + " | ".join(f"seed {s}" for s in seeds) + " | holds in | verdict |",
                      "|---|---|---|" + "---:|" * len(seeds) + "---|---|"]
        cells = [cell(v.figures[s], c.fmt) for s in seeds]
        lines.append(f"| `{c.id}` | {c.statement} | {c.figure} ({c.rule}) | "
                     + " | ".join(cells) + f" | {len(v.held)} of {len(seeds)} | "
                     f"{v.verdict} |")
    return "\n".join(lines).lstrip("\n") + "\n"


def cell(figure: float | None, fmt: str) -> str:
    """A seed's figure in a table: "—" when its results are missing, "n/a" when its rule
    found no figure to judge (NaN: the claim does not hold in that seed)."""
    if figure is None:
        return "—"
    return "n/a" if figure != figure else format(figure, fmt)


def counts(verdicts: list[Verdict]) -> dict[str, int]:
    names = ("holds", "holds in some seeds", "does not hold", "not run")
    return {n: sum(v.verdict == n for v in verdicts) for n in names}


def write(verdicts: list[Verdict], out_dir: str | Path, header: dict[str, Any]) -> tuple[Path,
                                                                                       Path]:
    """``claims.json`` (every figure) and ``claims.md`` (the table) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = {**header, "counts": counts(verdicts), "claims": [
        {"id": v.claim.id, "where": v.claim.where, "section": v.claim.section,
         "statement": v.claim.statement, "reads": v.claim.reads, "figure": v.claim.figure,
         "rule": v.claim.rule,
         "figures": nan_to_null({str(s): f for s, f in v.figures.items()}),  # NaN: null
         "errors": {str(s): e for s, e in v.errors.items()}, "held_in": v.held,
         "verdict": v.verdict} for v in verdicts]}
    text = (json.dumps(data, indent=1) + "\n").encode()
    atomic_write(out / "claims.json", lambda f: f.write(text))
    summary = ", ".join(f"{n} {k}" for k, n in counts(verdicts).items() if n)
    env = header.get("environment", {})
    made = (f" on {env.get('cpu', 'a machine')} ({env.get('numpy', '')} NumPy, "
            f"{env.get('blas', '')}), {header.get('date', '')}, in "
            f"{header.get('seconds', 0) / 60:.0f} min; the runs it read took "
            f"{header.get('job_seconds', 0) / 60:.0f} min of job time in the course's records "
            "(a job that reused a finished run counts its own seconds only)"
            ) if env else ""
    md = (f"# Claims\n\nEvery conclusion the course states, checked on each seed "
          f"({', '.join(map(str, header['seeds']))}) with {header['threads']} engine "
          f"thread(s): {summary}. A figure is one seed's; the rule decides each seed on its "
          f"own. Made by `{header.get('command') or made_by(header)}`{made}.\n\n"
          + table(verdicts)).encode()
    atomic_write(out / "claims.md", lambda f: f.write(md))
    return out / "claims.json", out / "claims.md"


def made_by(header: dict[str, Any]) -> str:
    """The claims command that judges as ``header`` says: its seeds and thread count."""
    return (f"python -m minirlhf claims --seeds {len(header['seeds'])} --threads "
            f"{header['threads']}")


def job_seconds(runs_dir: str | Path, preset: str) -> float:
    """The seconds the course's finished jobs took, by their own clocks (their records)."""
    total = 0.0
    for path in (Path(runs_dir) / preset / "course").glob("*.json"):
        record = read_cache(path, log, "its seconds are not counted")
        total += float(record.get("seconds", 0.0)) if record is not None else 0.0
    return total


def needed_jobs(claims: list[Claim], preset: str, seeds: int, runs_dir: str) -> list:
    """The course's jobs that make what ``claims`` read, with the jobs they need."""
    from minirlhf.course.build import plan

    jobs = plan(preset, seeds, runs_dir)
    reads = {c.reads for c in claims}
    wanted = set()
    for j in jobs:
        name = j.name.split(":")[0]
        if (P in reads and name == "pipeline") or f"experiment {name}" in reads or (
                name == "frontier" and "frontier" in reads):
            if not j.name.endswith(":seeds"):
                wanted.add(j.name)
    by_name = {j.name: j for j in jobs}
    stack = list(wanted)
    while stack:  # and what they need
        for n in by_name[stack.pop()].needs:
            if n not in wanted:
                wanted.add(n)
                stack.append(n)
    return [j for j in jobs if j.name in wanted]


def measured(chapter: str, runs_dir: str | Path = "runs", preset: str = "default") -> str:
    """A chapter's "Measured" table: its claims as the last ``claims`` or ``course`` run judged
    them, from ``runs_dir/<preset>/claims/claims.json`` (beside the repository's root or one
    folder up, as a chapter runs in notebooks/) when the reader has made one, else the table
    committed with the course (docs/claims.json). Returns the text (a chapter prints it)."""
    chapter = chapter if chapter == "README" else chapter.zfill(2)
    local = [Path(d) / preset / "claims" / "claims.json"  # from the repository or notebooks/
             for d in (runs_dir, Path("..") / runs_dir)]
    committed = Path(__file__).resolve().parents[2] / "docs" / "claims.json"
    for path, source in ((local[0], "your runs"), (local[1], "your runs"),
                         (committed, "the course's runs")):
        data = read_cache(path, log, "it is not read")
        if data is None:
            continue
        rows = [c for c in data["claims"] if Claim(c["id"], c["where"], "", "", "", "",
                                                   float, "> 0").chapter == chapter]
        if rows:
            whose = source
            break
    else:
        return ("No claims table yet: `python -m minirlhf course` (or `claims`) judges every "
                "conclusion on seeds 0-2 and writes it.")
    seeds = data["seeds"]
    shown = "docs/claims.json" if path == committed else path
    lines = [f"Judged on {whose} ({shown}): seeds {', '.join(map(str, seeds))}, "
             f"{data['threads']} engine thread(s) each; a figure is one seed's.", ""]
    for c in rows:
        missing = "—" if c["verdict"] == "not run" else "n/a"  # null in a judged claim: NaN
        figures = ", ".join(missing if c["figures"].get(str(s)) is None
                            else f"{c['figures'][str(s)]:.3g}" for s in seeds)
        lines.append(f"- {c['statement']}: {c['verdict']} ({len(c['held_in'])} of "
                     f"{len(seeds)}; {c['figure']} {c['rule']}: {figures})")
    return "\n".join(lines)
