"""Stage 3, the reward model: turn comparisons into a number.

The reward model is the SFT model's trunk with a scalar head (``reward_head``, zero-initialised),
read at the response's EOS token: r(prompt, response) = head(h_EOS). Under the Bradley-Terry
model a rater prefers A to B with probability sigmoid(r_A - r_B), so the loss on a labelled pair
is the negative log-likelihood of the label:

    L = -log sigmoid(r_chosen - r_rejected - margin)   (+ c (r_chosen + r_rejected)^2)

The optional margin asks for a gap; the optional centering term (Eisenstein et al., 2023) keeps
rewards near zero, since BT only fixes differences. For rankings of K responses (preference
data made with ``ranking_size`` K), ``ranking_loss`` picks Plackett-Luce (the best is picked
first, then the best of the rest, ...) or InstructGPT's average over all K(K-1)/2 pairs; both
reduce to BT at K = 2. Held-out rankings are measured on the pairs they imply.

After training, a gain and a bias are fitted so that scores on the SFT policy's own samples have
mean 0 and standard deviation 1 (as Ziegler et al., 2019 did); they are saved with the model and
applied by ``RewardModel.score``.

Entry point: ``train_reward(config) -> RewardResult``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from minirlhf.autograd.tensor import Tensor
from minirlhf.config import (
    ConfigError,
    Stage,
    check_fits,
    run_path,
    setting,
)
from minirlhf.lm.checkpoint import held_writes, load_model
from minirlhf.lm.optim import AdamW, decayed_parameter_names
from minirlhf.lm.reward_model import READOUTS, RewardModel
from minirlhf.lm.sampling import generate_text
from minirlhf.lm.tokenizer import CharTokenizer
from minirlhf.objectives.reward import RANKING_LOSSES, bradley_terry_loss, ranking_loss
from minirlhf.plots import plot_calibration, plot_loss_curves
from minirlhf.streams import stream
from minirlhf.training import OfflineSettings, PreferenceInputs, Trainer, shuffled
from minirlhf.world import Task, get_task
from minirlhf.world.preference_data import (
    NO_GOLD,
    NO_LABEL_P,
    PreferenceDataError,
    PreferencePair,
    Ranking,
    UnpairedExample,
    encode_rankings,
    figure,
    has_gold,
    has_label_p,
    length_buckets,
    load_jsonl,
    pair_key,
    rankings_to_pairs,
)
from minirlhf.world.raters import ceiling

log = logging.getLogger("minirlhf.stages.reward")


# ----------------------------------------------------------------------------- metrics
def pair_scores(rm: RewardModel, pairs: list[PreferencePair]) -> tuple[np.ndarray, np.ndarray]:
    """The reward model's scores of every pair's chosen and of its rejected response.
    -> (N,), (N,)"""
    prompts = [p.prompt for p in pairs]
    return (rm.score(prompts, [p.chosen for p in pairs]),
            rm.score(prompts, [p.rejected for p in pairs]))


def pair_metrics(rm: RewardModel, pairs: list[PreferencePair],
                 scores: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
    """Accuracy against the rater labels and against gold, each beside its ceiling; margins.
    ``scores``: the pairs' ``pair_scores``, when already computed.

    When the pairs carry the raters' choice probability p, ``expected_accuracy`` is the mean
    chance that a fresh label agrees with the RM (p where it ranks the chosen response higher,
    1 - p where lower, 1/2 on a tie): the same quantity as ``accuracy`` without the noise of
    the one label drawn per pair, and the one the ceiling bounds (the ceiling is its maximum).
    """
    rc, rr = scores if scores is not None else pair_scores(rm, pairs)
    out = {"accuracy": float(np.mean(rc > rr)), "mean_margin": float(np.mean(rc - rr))}
    if all(p.p_chosen is not None for p in pairs):
        p = np.array([q.p_chosen for q in pairs])
        out["ceiling"] = ceiling(p)
        out["expected_accuracy"] = float(np.mean(np.where(rc > rr, p, np.where(rc < rr, 1 - p,
                                                                               0.5))))
    if all(p.chosen_gold is not None for p in pairs):
        gc = np.array([q.chosen_gold for q in pairs])
        gr = np.array([q.rejected_gold for q in pairs])
        decided = gc != gr
        gold_better_chosen = gc[decided] > gr[decided]
        if not decided.any():
            return out
        out["gold_accuracy"] = float(np.mean((rc[decided] > rr[decided]) == gold_better_chosen))
        if "ceiling" in out:  # the label-optimal guess (the likelier label) judged by gold
            likelier_chosen = p[decided] > 0.5
            out["gold_accuracy_ceiling"] = float(np.mean(likelier_chosen == gold_better_chosen))
    return out


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant."""
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def calibration(rm: RewardModel, pairs: list[PreferencePair], bins: int = 10,
                seed: int = 0, scores: tuple[np.ndarray, np.ndarray] | None = None
                ) -> dict[str, list[float]]:
    """Predicted P(A > B) = sigmoid(r_A - r_B) against how often A was in fact chosen, with each
    pair shown in a random order. Returns bin centres, mean predictions, observed frequencies,
    counts, and the expected calibration error (ECE). ``scores``: the pairs' ``pair_scores``,
    when already computed."""
    rng = stream(seed, "calibration")
    rc, rr = scores if scores is not None else pair_scores(rm, pairs)
    flip = rng.random(len(pairs)) < 0.5  # A is the rejected response for these pairs
    diff = np.where(flip, rr - rc, rc - rr) / rm.gain  # back to raw units: sigmoid(raw diff)
    pred = 1.0 / (1.0 + np.exp(-diff))
    observed = (~flip).astype(float)  # 1 when A was the chosen one
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(pred, edges) - 1, 0, bins - 1)
    centres, mean_pred, freq, counts = [], [], [], []
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if not sel.any():
            continue
        centres.append(float((edges[b] + edges[b + 1]) / 2))
        mean_pred.append(float(pred[sel].mean()))
        freq.append(float(observed[sel].mean()))
        counts.append(int(sel.sum()))
        ece += sel.mean() * abs(pred[sel].mean() - observed[sel].mean())
    return {"centres": centres, "predicted": mean_pred, "observed": freq, "counts": counts,
            "ece": [float(ece)]}


# ---------------------------------------------------------------------------- training
@dataclass
class RewardConfig(PreferenceInputs, OfflineSettings):
    init: str = setting(
        run_path("sft", "model.npz"), "the SFT checkpoint whose trunk we start from")
    out_dir: str = setting(run_path("reward"), "where the model and plots go")
    max_pairs: int = setting(0, "use at most this many pairs (0: all)", "[0, 10_000_000]")
    val_fraction: float = setting(
        0.1, "held-out share of pairs for accuracy and calibration", "(0, 1)")
    epochs: int = 3
    lr: float = 1e-3
    weight_decay: float = setting(0.0, "AdamW decay on Linear weights", "[0, inf)")
    readout: str = setting(
        "eos", "score read at the EOS token ('eos') or summed over the response ('sum') "
        "", choices=READOUTS)
    margin: float = setting(0.0, "BT margin (pairs only)", "[0, inf)")
    ranking_loss: str = setting(
        "plackett_luce", "the loss on K-way rankings (unused for pairs): Plackett-Luce's "
        "likelihood or InstructGPT's mean over the K(K-1)/2 pairs", choices=tuple(RANKING_LOSSES))
    center_coef: float = setting(0.01, "reward-centering coefficient", "[0, inf)")
    norm_samples: int = setting(
        512, "SFT samples used to fit the normalization gain and bias (two at the least: "
        "a spread)", "[2, 100_000]")
    corr_samples: int = setting(
        512, "fresh SFT samples for the RM-gold correlation (two at the least)", "[2, 100_000]")
    max_new_tokens: int = setting(
        80, "response budget of those SFT samples (normalization and correlation)", "[1, 126]")

    def check(self, upstream: dict | None = None) -> None:
        """Every setting in its range; with the preference stage's config at hand (the
        pipeline's case), a batch its pairs can fill."""
        super().check(upstream)
        prefs = (upstream or {}).get("preferences")
        if prefs is not None:
            if getattr(prefs, "format", "pairs") == "unpaired":
                raise ConfigError("RewardConfig: reward training needs chosen/rejected pairs or "
                                  "rankings, and preferences.format = unpaired writes "
                                  "thumbs-up/down lines; set it to pairs")
            self.check_data(prefs.n_pairs, prefs.ranking_size > 2)

    def check_data(self, n_pairs: int, rankings: bool = False) -> None:
        """A batch that the training pairs (or rankings) of ``n_pairs`` labelled ones can fill;
        no margin with rankings (it is a pairwise setting)."""
        used = min(n_pairs, self.max_pairs) if self.max_pairs else n_pairs
        train = used - held_out_count(n_pairs, self)  # the split train_reward makes
        what = "rankings" if rankings else "pairs"
        check_fits(self, "batch_size", train, f"the {train} training {what} (of {n_pairs})")
        if rankings and self.margin:
            raise ConfigError(f"RewardConfig: margin = {self.margin} is a pairwise setting; "
                              "the preference data are rankings (set margin = 0)")


@dataclass
class RewardResult:
    config: RewardConfig
    checkpoint: str
    train_pairs: int  # training records: pairs, or rankings when ranking_size > 2
    ranking_size: int = 2  # 2 for pairs; K for K-way rankings
    val_metrics: dict[str, float] = field(default_factory=dict)  # held-out accuracy etc.
    train_accuracy: float = 0.0
    gold_correlation: float = 0.0  # Pearson r of RM score and gold on fresh SFT samples
    gain: float = 1.0
    bias: float = 0.0
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    calibration: dict[str, list[float]] = field(default_factory=dict)
    examples: list[tuple[str, str, str, float, float, float | None, float | None]] = field(
        default_factory=list)  # prompt, chosen, rejected, rm_c, rm_r, gold_c, gold_r
    data_gold: bool = True  # the held-out pairs carry gold (a public dataset's do not)
    data_label_p: bool = True  # ... and the raters' label probabilities p_chosen
    plots: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # for the log and the report
    seconds: float = 0.0


def _pair_batch(rm: RewardModel, pairs: list[PreferencePair]) -> tuple[Tensor, Tensor]:
    """Raw scores of chosen and rejected for a batch of pairs, in one forward pass."""
    prompts = [p.prompt for p in pairs] * 2
    responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    tokens, mask = rm.encode(prompts, responses)
    r = rm.raw(tokens, mask)  # (2B,)
    B = len(pairs)
    return r[:B], r[B:]


def _ranking_batch(rm: RewardModel, rankings: list[Ranking]) -> Tensor:
    """Raw scores of a batch of B rankings of K, in one forward pass -> (B, K), best first."""
    tokens, mask = encode_rankings(rm.tokenizer, rankings)  # (K * B, T), position-major
    r = rm.raw(tokens, mask)  # (K * B,)
    K, B = len(rankings[0].ranked), len(rankings)
    return r.reshape(K, B).transpose(1, 0)  # (B, K)


def fit_normalization(rm: RewardModel, prompts: list[str], responses: list[str],
                      finished: list[bool]) -> tuple[float, float]:
    """Gain and bias that give the samples' scores mean 0 and standard deviation 1."""
    rm.gain, rm.bias = 1.0, 0.0
    raw = rm.score(prompts, responses, finished)
    if not raw.std() >= 1e-6:  # (NaN included)
        raise FloatingPointError(
            f"reward: the reward model gives the {len(raw)} SFT samples one score (standard "
            f"deviation {raw.std():.3g}): it tells no response from another, and normalising "
            "its scores would divide by zero")
    gain = 1.0 / float(raw.std())
    return gain, -gain * float(raw.mean())


def held_out_count(n_pairs: int, config: RewardConfig) -> int:
    """How many of ``n_pairs`` labelled pairs ``split_pairs`` holds out (at least one), after
    ``max_pairs`` is applied. The pipeline checks batch sizes with it before any training."""
    used = min(n_pairs, config.max_pairs) if config.max_pairs else n_pairs
    return max(1, int(used * config.val_fraction))


def warn_if_at_chance(accuracy: float, n: int) -> str:
    """A loud warning, with the figures, when a held-out accuracy on ``n`` pairs is within two
    standard errors of a coin flip (every stage downstream would optimise noise); else ''.
    Pairs too few to tell even a perfect accuracy from a coin flip (two standard errors of 50
    points or more: four pairs or fewer) say only that, in the log: nothing is known."""
    margin = 2.0 * np.sqrt(0.25 / n)
    if margin >= 0.5:
        log.info("reward model: %d held-out pair%s cannot tell any accuracy from a coin flip "
                 "(two standard errors: %.1f points); hold out more pairs to check it "
                 "(val_fraction, max_pairs)", n, "s" * (n != 1), 100 * margin)
        return ""
    if accuracy - 0.5 >= margin:
        return ""
    message = (f"reward model at CHANCE: held-out accuracy {100 * accuracy:.1f}% on {n} pairs is "
               f"within two standard errors ({100 * margin:.1f} points) of 50%; best-of-n, PPO "
               "and the experiments downstream will optimise noise. Check the preference data "
               "and the reward settings (lr, epochs).")
    log.warning(message)
    return message


Records = list[PreferencePair] | list[Ranking]


def split_pairs(pairs: Records, config: RewardConfig, rng: np.random.Generator | None = None
                ) -> tuple[Records, Records]:
    """The (train, held-out) split ``train_reward`` makes: a shuffle by ``config.seed``, at most
    ``max_pairs`` kept, the first ``val_fraction`` of them held out, and with them every later
    copy of a held-out comparison (the same prompt and responses, see ``pair_key``), so that no
    comparison is both trained on and tested on. Pass ``rng`` to go on drawing from the same
    generator afterwards (training does, for its batches)."""
    rng = rng if rng is not None else stream(config.seed, "train")
    order = rng.permutation(len(pairs))
    if config.max_pairs:
        order = order[: config.max_pairs]
    n_val = held_out_count(len(pairs), config)
    held = {pair_key(pairs[i]) for i in order[:n_val]}
    copies = [i for i in order[n_val:] if pair_key(pairs[i]) in held]
    if copies:
        log.info("reward: %d training pairs repeat a held-out comparison; they are held out too",
                 len(copies))
    train = [pairs[i] for i in order[n_val:] if pair_key(pairs[i]) not in held]
    return train, [pairs[i] for i in order[:n_val]] + [pairs[i] for i in copies]


# What the reward command shows of a run: the training accuracy is measured on at most this
# many training pairs (a check against overfitting, not a figure the pipeline keeps), and this
# many held-out pairs are printed as examples.
TRAIN_ACCURACY_PAIRS = 2000
SHOWN_EXAMPLES = 8


@held_writes()
def train_reward(config: RewardConfig) -> RewardResult:
    """Train a Bradley-Terry reward model on labelled pairs; measure it against the ceiling
    and against gold; fit its normalization on SFT samples; save it."""
    STAGE.begin(config)
    t0 = time.time()
    task = get_task(config.task)
    model, tokenizer, _ = load_model(config.init)
    pairs = _load_comparisons(config, tokenizer, model.config.block_size)
    ranked = isinstance(pairs[0], Ranking)
    rng = stream(config.seed, "train")
    train, val = split_pairs(pairs, config, rng)
    check_fits(config, "batch_size", len(train), _training_left(config, pairs, train, val))

    rm = RewardModel(model, tokenizer, readout=config.readout)
    opt = AdamW(model.named_parameters(), lr=config.lr, weight_decay=config.weight_decay,
                decay=decayed_parameter_names(model))
    batches = length_buckets(train, config.batch_size, rng)
    result = RewardResult(config=config, checkpoint="", train_pairs=len(train),
                          ranking_size=len(pairs[0].ranked) if ranked else 2)

    def loss(idx: np.ndarray) -> tuple[Tensor, dict[str, float]]:
        """The Bradley-Terry loss on a batch of pairs (or the ranking loss on rankings)."""
        batch = [train[i] for i in idx]
        if ranked:
            return ranking_loss(_ranking_batch(rm, batch), config.ranking_loss,
                                config.center_coef), {}
        rc, rr = _pair_batch(rm, batch)
        return bradley_terry_loss(rc, rr, config.margin, config.center_coef), {}

    trainer = Trainer("reward", model, config, len(batches) * config.epochs, optimizer=opt)
    trainer.epochs(shuffled(batches), loss, rng)
    result.loss_curve = [(m["step"] - 1, m["loss"]) for m in trainer.close()]

    result.gold_correlation = _normalize_on_sft_samples(rm, task, config)
    result.gain, result.bias = rm.gain, rm.bias
    if ranked:  # measured on the pairs the rankings imply
        train, val = rankings_to_pairs(train), rankings_to_pairs(val)
    _measure(rm, train, val, config, result)
    _save(rm, config, result)
    result.seconds = time.time() - t0
    log.info("reward model: held-out accuracy %.3f (ceiling %s), gold r %.3f",
             result.val_metrics["accuracy"], _ceiling_text(result.val_metrics,
                                                           result.data_label_p, ".3f"),
             result.gold_correlation)
    return result


def _load_comparisons(config: RewardConfig, tokenizer: CharTokenizer, block_size: int
                      ) -> Records:
    """The labelled pairs (or rankings) of ``config.preferences``, checked: unpaired examples
    are refused, and a batch must fit in the training share."""
    pairs = load_jsonl(config.preferences, tokenizer, block_size)
    if isinstance(pairs[0], UnpairedExample):
        raise PreferenceDataError(f"{config.preferences}: reward training needs chosen/rejected "
                                  "pairs or rankings; this file holds unpaired thumbs-up/down "
                                  "examples")
    config.check_data(len(pairs), isinstance(pairs[0], Ranking))
    return pairs


def _training_left(config: RewardConfig, pairs: Records, train: Records, val: Records) -> str:
    """What is left to train on after the split, with the counts that explain it."""
    kind = "rankings" if isinstance(pairs[0], Ranking) else "pairs"
    n_val = held_out_count(len(pairs), config)
    used = f", max_pairs = {config.max_pairs}" if config.max_pairs else ""
    distinct = len({pair_key(p) for p in pairs})
    return (f"the {len(train)} training {kind} left in {config.preferences} ({len(pairs)} rows"
            f"{used}, {distinct} distinct comparison{'s' * (distinct != 1)}; held out: {n_val} "
            f"and {len(val) - n_val} copies of them)")


def _normalize_on_sft_samples(rm: RewardModel, task: Task, config: RewardConfig) -> float:
    """Fit the gain and bias on ``norm_samples`` SFT samples, then return the Pearson
    correlation of the normalized scores with gold on ``corr_samples`` fresh ones."""
    sample_rng = stream(config.seed, "samples")
    sft_model, _, _ = load_model(config.init)
    prompts = task.sample_prompts(config.norm_samples + config.corr_samples, sample_rng)
    outs = generate_text(sft_model, rm.tokenizer, prompts, config.max_new_tokens, sample_rng)
    norm = slice(0, config.norm_samples)
    fresh = slice(config.norm_samples, None)
    rm.gain, rm.bias = fit_normalization(rm, prompts[norm], [r for r, _ in outs[norm]],
                                         [f for _, f in outs[norm]])
    scores = rm.score(prompts[fresh], [r for r, _ in outs[fresh]], [f for _, f in outs[fresh]])
    golds = np.array([task.gold(p, r, f) for p, (r, f) in zip(prompts[fresh], outs[fresh],
                                                               strict=True)])
    return _pearson(scores, golds)


def _measure(rm: RewardModel, train: list[PreferencePair], val: list[PreferencePair],
             config: RewardConfig, result: RewardResult) -> None:
    """Held-out metrics (with a warning when at chance), the training accuracy, the
    calibration and a few held-out examples, in normalized units; into ``result``."""
    val_scores = pair_scores(rm, val)  # scored once: the metrics and the calibration share them
    result.val_metrics = pair_metrics(rm, val, val_scores)
    result.data_gold = has_gold(val)  # rankings: no ceiling whatever their fields (no flag)
    result.data_label_p = has_label_p(val) or result.ranking_size > 2
    result.warnings = [w for w in [warn_if_at_chance(result.val_metrics["accuracy"], len(val))]
                       if w]
    result.train_accuracy = pair_metrics(rm, train[:TRAIN_ACCURACY_PAIRS])["accuracy"]
    result.calibration = calibration(rm, val, seed=config.seed, scores=val_scores)
    for p in val[:SHOWN_EXAMPLES]:
        rc, rr = rm.score([p.prompt] * 2, [p.chosen, p.rejected])
        result.examples.append((p.prompt, p.chosen, p.rejected, float(rc), float(rr),
                                p.chosen_gold, p.rejected_gold))


def _save(rm: RewardModel, config: RewardConfig, result: RewardResult) -> None:
    """The checkpoint (with its config and held-out metrics) and the plots; into ``result``."""
    out = Path(config.out_dir)
    result.checkpoint = str(out / "model.npz")
    rm.save(result.checkpoint, extra={"config": asdict(config), "val": result.val_metrics})
    result.plots = [
        str(plot_loss_curves(out / "loss.png", result.loss_curve, [], title="reward model")),
        str(plot_calibration(out / "calibration.png", result.calibration)),
    ]


# ------------------------------------------------------------------ the stage's record
SUMMARY_KEYS = ("accuracy", "expected_accuracy", "ceiling", "gold_accuracy", "gold_correlation",
                "ece", "train_pairs")


def record(r: RewardResult, config: RewardConfig) -> dict:
    """What the pipeline keeps of a run (its record's numbers)."""
    m = r.val_metrics
    return {"accuracy": m["accuracy"], "ceiling": m.get("ceiling"),
            "expected_accuracy": m.get("expected_accuracy"),
            "gold_accuracy": m.get("gold_accuracy"), "gold_correlation": r.gold_correlation,
            "ece": r.calibration["ece"][0], "train_pairs": r.train_pairs, "plots": r.plots,
            "warnings": r.warnings, "ranking_size": r.ranking_size,
            "data_gold": r.data_gold, "data_label_p": r.data_label_p}


def _num(x: float | None, spec: str, missing: str = "n/a") -> str:
    """A number formatted, or ``missing`` when it could not be measured: "n/a" (e.g. no gold
    differences) unless the reason is that the data has no gold (NO_GOLD, NO_LABEL_P)."""
    return figure(x, spec, missing)


def _ceiling_text(m: dict, data_label_p: bool, spec: str) -> str:
    """The ceiling of held-out metrics ``m``, or why there is none."""
    return _num(m.get("ceiling"), spec, "n/a" if data_label_p else NO_LABEL_P)


def report(n: dict) -> list[str]:
    """The reward model's section of report.md."""
    k = n.get("ranking_size", 2)
    bare = all(n.get(key) is None for key in ("ceiling", "expected_accuracy", "gold_accuracy"))
    no_p = "n/a" if n.get("data_label_p", not bare) else NO_LABEL_P  # a record written before
    no_gold = "n/a" if n.get("data_gold", not bare) else NO_GOLD  # these flags: by its nulls
    data = f"{n['train_pairs']} labelled pairs" if k == 2 else \
        f"{n['train_pairs']} rankings of {k} responses (held out: the pairs they imply)"
    return [
        "## The reward model", "",
        f"Trained on {data}. Held-out accuracy against the raters' "
        f"labels: **{_num(n['accuracy'], '.1%')}**, beside the ceiling "
        f"**{_num(n['ceiling'], '.1%', no_p)}** (the best any model can do on labels this "
        "noisy); expected accuracy against a fresh label "
        f"{_num(n.get('expected_accuracy'), '.1%', no_p)} (the same without the noise of one "
        f"label per pair). Against gold preferences: {_num(n['gold_accuracy'], '.1%', no_gold)}"
        ". Correlation with gold on fresh SFT samples: "
        f"{_num(n['gold_correlation'], '.3f')}; calibration error (ECE) "
        f"{_num(n['ece'], '.3f')}.", ""]


def show(r: RewardResult, config: RewardConfig) -> str:
    """What ``python -m minirlhf reward`` prints after training."""
    m = r.val_metrics
    lines = ["example held-out pairs (RM scores normalized; gold is the hidden truth):",
             f"    {'RM chosen':>9} {'RM rej.':>8} {'gold ch.':>8} {'gold rej.':>9}  "
             "prompt|chosen  vs  rejected"]
    if not r.data_gold:
        lines[0] = f"example held-out pairs (RM scores normalized; gold: {NO_GOLD}):"
    for prompt, c, rj, sc, sr, gc, gr in r.examples:
        lines.append(f"    {sc:>9.2f} {sr:>8.2f} {_num(gc, '.2f'):>8} {_num(gr, '.2f'):>9}  "
                     f"{prompt}|{c}  vs  {rj}")
    data = f"{r.train_pairs} pairs" if r.ranking_size == 2 else \
        f"{r.train_pairs} rankings of {r.ranking_size} (measured on the pairs they imply)"
    lines += [f"\ntrained on {data} in {r.seconds:.0f} s",
              f"held-out accuracy vs rater labels: {m['accuracy']:.2%}"
              + (f" (ceiling {m['ceiling']:.2%})" if "ceiling" in m else
                 "" if r.data_label_p else f" (ceiling {NO_LABEL_P})")
              + f"; on the training pairs: {r.train_accuracy:.2%}"]
    if "expected_accuracy" in m:
        lines.append(f"expected accuracy vs a fresh rater label: {m['expected_accuracy']:.2%} "
                     "(the same measure without the noise of one label per pair; the ceiling "
                     "is its best)")
    if "gold_accuracy" in m:
        lines.append(f"held-out accuracy vs gold: {m['gold_accuracy']:.2%}" + (
            f" (a perfect label predictor would get {m['gold_accuracy_ceiling']:.2%})"
            if "gold_accuracy_ceiling" in m else ""))
    elif not r.data_gold:
        lines.append(f"held-out accuracy vs gold: {NO_GOLD}")
    lines += [f"mean margin {m['mean_margin']:.3f}; RM-gold correlation on fresh SFT samples "
              f"{r.gold_correlation:.3f}; calibration ECE {r.calibration['ece'][0]:.3f}",
              f"normalization: score = {r.gain:.3f} * raw + {r.bias:.3f}",
              f"checkpoint: {r.checkpoint}; plots: {', '.join(r.plots)}"]
    return "\n".join(lines)


STAGE = Stage(
    name="reward", title="reward model", help="train the reward model", config=RewardConfig,
    run=train_reward, record=record, show=show, report=report,
    summary=lambda n: {"reward_model": {k: n.get(k) for k in SUMMARY_KEYS}},
    inputs={"preferences": "preferences", "init": "sft"},
    presets={"tiny": dict(epochs=1, norm_samples=128, corr_samples=128)},
    work=lambda c, cfgs: c.epochs * min(c.max_pairs or math.inf, cfgs["preferences"].n_pairs)
    * cfgs["preferences"].ranking_size / 2,
    seconds={"tiny": 2.4, "default": 115.6},  # on the reference 2-core laptop
)
