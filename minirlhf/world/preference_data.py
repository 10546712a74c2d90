"""Preference data: pairs (and rankings) of responses, labelled by simulated raters, in JSON Lines.

Each line is one JSON object with TRL's (and Hugging Face datasets') field names::

    {"prompt": "the plot was", "chosen": " very good.", "rejected": " dull.", ...}

``chosen`` and ``rejected`` are the text after the prompt, without the EOS that ended them (only
finished responses enter a dataset). Optional fields record what the simulation knows and a
reward model must not see: ``chosen_gold`` and ``rejected_gold`` (gold rewards) and
``p_chosen`` (the probability the raters had of labelling the pair this way). A K-way ranking is
stored as ``{"prompt": ..., "ranked": [best, ..., worst]}``, optionally with ``ranked_gold`` (the
gold reward of each ranked response, in the same order); every ranking of a file ranks the same
number K of responses. Rankings are made by ``label_rankings`` (Plackett-Luce raters, see
``minirlhf.world.raters``) and read by the reward stage.

Loading validates every line and names the file, line and field of any problem.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from minirlhf.config import InputError, missing_input, output_hint
from minirlhf.lm.checkpoint import atomic_write
from minirlhf.lm.sequences import encode_pairs
from minirlhf.lm.tokenizer import CharTokenizer
from minirlhf.world import Task
from minirlhf.world.raters import Panel, ceiling, expected_gold_agreement


@dataclass
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    chosen_gold: float | None = None  # known to the simulation only
    rejected_gold: float | None = None
    p_chosen: float | None = None  # P(the raters label the pair this way)


@dataclass
class Ranking:
    prompt: str
    ranked: list[str]  # best first
    ranked_gold: list[float] | None = None  # gold of each ranked response; simulation only


@dataclass
class UnpairedExample:
    """One response with a thumbs-up (``label`` True) or down, as KTO learns from (TRL's
    unpaired format: ``{"prompt", "completion", "label"}``)."""

    prompt: str
    completion: str
    label: bool
    gold: float | None = None  # known to the simulation only
    p_label: float | None = None  # P(the raters give this label)


# What a report says of a figure the data cannot give: a public dataset (plain prompt / chosen /
# rejected, as TRL's) has no gold and no label probabilities, which only a simulation knows.
NO_GOLD = "not available (the data has no gold)"
NO_LABEL_P = "not available (the data has no label probabilities)"


def has_gold(pairs: list[PreferencePair]) -> bool:
    """Whether every pair carries the gold of both responses (the simulation's files do)."""
    return all(p.chosen_gold is not None and p.rejected_gold is not None for p in pairs)


def has_label_p(pairs: list[PreferencePair]) -> bool:
    """Whether every pair carries ``p_chosen``, the raters' probability of its label."""
    return all(p.p_chosen is not None for p in pairs)


def figure(x: float | None, spec: str, missing: str = "n/a") -> str:
    """A number formatted, or ``missing`` when there is none (NO_GOLD, say)."""
    return missing if x is None else format(x, spec)


class PreferenceDataError(InputError):
    """A preference file has a malformed line; the message names file, line and field."""


# ------------------------------------------------------------------------- JSON Lines
def save_jsonl(path: str | Path, records: list[PreferencePair] | list[Ranking]
               | list[UnpairedExample]) -> Path:
    """Write records one JSON object per line (None fields are left out)."""
    path = Path(path)
    lines = [json.dumps({k: v for k, v in asdict(r).items() if v is not None}) for r in records]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    atomic_write(path, lambda f: f.write(data))
    return path


def _text_field(obj: dict, name: str, where: str, tokenizer: CharTokenizer,
                allow_empty: bool = False) -> str:
    if name not in obj:
        implicit = name == "prompt" and {"chosen", "rejected"} <= set(obj)
        raise PreferenceDataError(f"{where}: missing field {name!r}" + (
            " (TRL's implicit-prompt format, the prompt inside chosen and rejected, is not "
            "read: give the prompt in a field of its own)" if implicit else ""))
    value = obj[name]
    if not isinstance(value, str):
        chat = isinstance(value, list) and bool(value) and all(
            isinstance(m, dict) and "content" in m for m in value)
        raise PreferenceDataError(f"{where}: field {name!r} must be a string, got "
                                  f"{type(value).__name__}" + (
                                      " (TRL's conversational format, a list of messages, is "
                                      "not read: give the text itself)" if chat else ""))
    if not value and not allow_empty:
        raise PreferenceDataError(f"{where}: field {name!r} is empty")
    for pos, ch in enumerate(value):
        if ch not in tokenizer.stoi:
            raise PreferenceDataError(f"{where}: field {name!r} has character {ch!r} at "
                                      f"position {pos}, outside the tokenizer's alphabet")
    return value


def load_jsonl(path: str | Path, tokenizer: CharTokenizer | None = None,
               block_size: int | None = None) -> list[PreferencePair] | list[Ranking]:
    """Read a preference file written by ``save_jsonl`` (or by hand, or by TRL tooling).

    Every line must be a JSON object with a non-empty ``prompt`` and either two different
    non-empty strings ``chosen`` and ``rejected``, or a ``ranked`` list of at least two different
    non-empty strings (every ranking of a file the same length, its optional ``ranked_gold``
    one finite number per response); every character must be in the tokenizer's alphabet.
    ``chosen_gold`` and ``rejected_gold``, when present, are finite numbers; ``p_chosen`` is a
    probability in [0, 1].
    With ``block_size``, every sequence BOS + prompt + response + EOS must fit in it. The first
    problem raises PreferenceDataError naming the file, the line number and the field.
    """
    path = Path(path)
    if not path.exists():
        raise missing_input("preference file", path, output_hint("preferences", path))
    tokenizer = tokenizer or CharTokenizer()
    records: list = []
    first: dict[type, int] = {}  # each kind of record: the line it first appears on
    seen, at = 0, 0  # records counted so far; the last line that held one
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if len(records) > seen:  # line ``at`` added a record
                first.setdefault(type(records[-1]), at)
                seen = len(records)
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise PreferenceDataError(f"{where}: not UTF-8 text ({e.reason} at byte "
                                          f"{e.start})") from None
            if not line.strip():
                continue
            at = lineno
            if lineno == 1 and line.startswith("\ufeff"):
                raise PreferenceDataError(f"{where}: starts with a byte-order mark "
                                          "(U+FEFF); save it as UTF-8 without one")
            try:
                obj = json.loads(line.strip())
            except json.JSONDecodeError as e:
                array = not records and line.lstrip().startswith("[")  # the first line read
                raise PreferenceDataError(f"{where}: " + (
                    "a JSON array; the file must be JSON Lines, one object per line "
                    "(datasets: to_json(path, lines=True))" if array else
                    f"malformed JSON ({e.msg} at column {e.colno})")) from None
            if not isinstance(obj, dict):
                raise PreferenceDataError(f"{where}: each line must be a JSON object" + (
                    " (the file holds a JSON array; write JSON Lines, one object per line)"
                    if isinstance(obj, list) and not records else ""))
            prompt = _text_field(obj, "prompt", where, tokenizer)
            if "completion" in obj or "label" in obj:  # unpaired, for KTO
                records.append(_unpaired(obj, prompt, where, tokenizer, block_size))
                continue
            if "ranked" in obj:
                ranked = obj["ranked"]
                if not isinstance(ranked, list) or len(ranked) < 2:
                    raise PreferenceDataError(f"{where}: field 'ranked' must list at least two "
                                              "responses")
                texts = [_text_field({"ranked": r}, "ranked", where, tokenizer) for r in ranked]
                if len(set(texts)) < len(texts):
                    raise PreferenceDataError(f"{where}: field 'ranked' lists the same response "
                                              "twice; a ranking orders different responses")
                for text in texts:
                    _check_fits(where, "ranked", prompt, text, block_size)
                if records and isinstance(records[0], Ranking) and \
                        len(texts) != len(records[0].ranked):
                    raise PreferenceDataError(
                        f"{where}: field 'ranked' lists {len(texts)} responses, the file's first "
                        f"ranking {len(records[0].ranked)}; every ranking of a file ranks the "
                        "same number of responses")
                records.append(Ranking(prompt, texts, _ranked_gold(obj, len(texts), where)))
                continue
            chosen = _text_field(obj, "chosen", where, tokenizer)
            rejected = _text_field(obj, "rejected", where, tokenizer)
            if chosen == rejected:
                raise PreferenceDataError(f"{where}: 'chosen' and 'rejected' are the same "
                                          "response; a pair compares two different responses")
            _check_fits(where, "chosen", prompt, chosen, block_size)
            _check_fits(where, "rejected", prompt, rejected, block_size)
            extra = {}
            for name in ("chosen_gold", "rejected_gold", "p_chosen"):
                if name in obj:
                    value = obj[name]
                    if not isinstance(value, (int, float)) or isinstance(value, bool):
                        raise PreferenceDataError(f"{where}: field {name!r} must be a number")
                    if not np.isfinite(value):
                        raise PreferenceDataError(f"{where}: field {name!r} is {value}; it must "
                                                  "be a finite number")
                    extra[name] = float(value)
            if "p_chosen" in extra and not 0.0 <= extra["p_chosen"] <= 1.0:
                raise PreferenceDataError(f"{where}: field 'p_chosen' is {extra['p_chosen']}; "
                                          "a probability must be in [0, 1]")
            records.append(PreferencePair(prompt, chosen, rejected, **extra))
    if not records:
        raise PreferenceDataError(f"{path}: no records")
    first.setdefault(type(records[-1]), at)
    kinds = {type(r) for r in records}
    if len(kinds) > 1:
        names = {PreferencePair: "a pair", Ranking: "a ranking", UnpairedExample: "an unpaired "
                 "example"}
        (a, a_line), (b, b_line) = sorted(first.items(), key=lambda kv: kv[1])[:2]
        raise PreferenceDataError(f"{path}:{b_line}: {names[b]}, in a file of "
                                  f"{names[a].split(' ', 1)[1]}s from line {a_line}: a file holds "
                                  "one kind of record")
    return records


def _ranked_gold(obj: dict, k: int, where: str) -> list[float] | None:
    """The optional ``ranked_gold`` of a ranking line: ``k`` finite numbers."""
    if "ranked_gold" not in obj:
        return None
    gold = obj["ranked_gold"]
    if not isinstance(gold, list) or len(gold) != k:
        raise PreferenceDataError(f"{where}: field 'ranked_gold' must list {k} numbers, one per "
                                  "ranked response")
    for value in gold:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or \
                not np.isfinite(value):
            raise PreferenceDataError(f"{where}: field 'ranked_gold' holds {value!r}; each must "
                                      "be a finite number")
    return [float(v) for v in gold]


def _unpaired(obj: dict, prompt: str, where: str, tokenizer: CharTokenizer,
              block_size: int | None) -> UnpairedExample:
    """An unpaired line: a non-empty ``completion``, a JSON boolean ``label``, and optionally a
    finite ``gold`` and a probability ``p_label``."""
    completion = _text_field(obj, "completion", where, tokenizer)
    if "label" not in obj:
        raise PreferenceDataError(f"{where}: missing field 'label'")
    if not isinstance(obj["label"], bool):
        raise PreferenceDataError(f"{where}: field 'label' must be true or false (a thumbs-up "
                                  f"or down), got {obj['label']!r}")
    _check_fits(where, "completion", prompt, completion, block_size)
    extra = {}
    for name in ("gold", "p_label"):
        if name in obj:
            value = obj[name]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or \
                    not np.isfinite(value):
                raise PreferenceDataError(f"{where}: field {name!r} must be a finite number, got "
                                          f"{value!r}")
            extra[name] = float(value)
    if "p_label" in extra and not 0.0 <= extra["p_label"] <= 1.0:
        raise PreferenceDataError(f"{where}: field 'p_label' is {extra['p_label']}; a probability "
                                  "must be in [0, 1]")
    return UnpairedExample(prompt, completion, obj["label"], **extra)


def require_pairs(records: list, path: str | Path, who: str) -> list[PreferencePair]:
    """``records`` if they are chosen/rejected pairs; otherwise a PreferenceDataError saying
    what ``who`` (a stage) needs and what the file holds."""
    if records and not isinstance(records[0], PreferencePair):
        kind = "rankings" if isinstance(records[0], Ranking) else \
            "unpaired thumbs-up/down examples"
        raise PreferenceDataError(f"{path}: {who} needs chosen/rejected pairs; this file holds "
                                  f"{kind}")
    return records


def _check_fits(where: str, name: str, prompt: str, response: str, block_size: int | None
                ) -> None:
    """BOS + prompt + response + EOS must fit the model's context (CharTokenizer: one token per
    character)."""
    if block_size is None:
        return
    n = len(prompt) + len(response) + 2
    if n > block_size:
        raise PreferenceDataError(f"{where}: prompt + {name!r} is {n} tokens with BOS and EOS; "
                                  f"the model's block_size is {block_size} (shorten the "
                                  "response or leave the line out)")


def _responses(record: PreferencePair | Ranking) -> list[str]:
    return record.ranked if isinstance(record, Ranking) else [record.chosen, record.rejected]


def length_buckets(pairs: list[PreferencePair] | list[Ranking], batch_size: int,
                   rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of pair (or ranking) indices with similar lengths, so little compute goes to
    padding.

    Pairs are shuffled, then sorted by their longest sequence (a stable sort keeps the shuffle
    among equal lengths), and cut into batches of ``batch_size``. Every pair is kept: when
    ``batch_size`` does not divide the number of pairs, the last batch (the longest pairs) is
    smaller. Dropping it would never train on the longest ``N mod batch_size`` pairs, a length
    bias. Callers shuffle the order of the batches.
    """
    lengths = np.array([len(p.prompt) + max(map(len, _responses(p))) for p in pairs])
    order = rng.permutation(len(pairs))
    order = order[np.argsort(lengths[order], kind="stable")]
    return [order[i:i + batch_size] for i in range(0, len(pairs), batch_size)]


def encode_chosen_rejected(tokenizer: CharTokenizer, pairs: list[PreferencePair]
                           ) -> tuple[np.ndarray, np.ndarray]:
    """One batch for a pairwise loss: the chosen responses in its first half, the rejected in
    its second, each after its prompt and ended by EOS. -> tokens, response_mask (2B, T)"""
    prompts = [p.prompt for p in pairs] * 2
    responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    return encode_pairs(tokenizer, prompts, responses)


def unpaired_buckets(examples: list[UnpairedExample], batch_size: int,
                     rng: np.random.Generator) -> list[np.ndarray]:
    """``length_buckets`` for unpaired examples: shuffled, sorted by length, cut into batches
    (the last one smaller when ``batch_size`` does not divide the count; none dropped)."""
    lengths = np.array([len(e.prompt) + len(e.completion) for e in examples])
    order = rng.permutation(len(examples))
    order = order[np.argsort(lengths[order], kind="stable")]
    return [order[i:i + batch_size] for i in range(0, len(examples), batch_size)]


def encode_rankings(tokenizer: CharTokenizer, rankings: list[Ranking]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """One batch for a ranking loss over B rankings of K: position-major, the best responses
    of all B rankings first, then the second best, ... (so scores of shape (K * B,) reshape to
    (K, B)). -> tokens, response_mask (K * B, T)"""
    K = len(rankings[0].ranked)
    prompts = [r.prompt for r in rankings] * K
    responses = [r.ranked[k] for k in range(K) for r in rankings]
    return encode_pairs(tokenizer, prompts, responses)


def pair_key(pair: PreferencePair | Ranking) -> tuple[str, ...]:
    """What makes two pairs the same comparison: the prompt and the two responses, in either
    order (the same two responses labelled the other way round are still one comparison). For
    a ranking: the prompt and its responses, in any order."""
    return (pair.prompt, *sorted(_responses(pair)))


def rankings_to_pairs(rankings: list[Ranking]) -> list[PreferencePair]:
    """Every pair a ranking implies: K (K - 1) / 2 per ranking, the higher-ranked response
    chosen (gold carried; no p_chosen, since the pair was never labelled on its own)."""
    out = []
    for r in rankings:
        gold = r.ranked_gold or [None] * len(r.ranked)
        for i in range(len(r.ranked)):
            for j in range(i + 1, len(r.ranked)):
                out.append(PreferencePair(r.prompt, r.ranked[i], r.ranked[j], gold[i], gold[j]))
    return out


# ------------------------------------------------------------------------ building data
def label_pairs(task: Task, panel: Panel, prompts: list[str], first: list[str],
                second: list[str], rng: np.random.Generator) -> list[PreferencePair]:
    """One rater label per (prompt, first, second) triple."""
    pairs = []
    for prompt, a, b in zip(prompts, first, second, strict=True):
        a_chosen, p_a = panel.label(task, prompt, a, b, rng)
        chosen, rejected = (a, b) if a_chosen else (b, a)
        pairs.append(PreferencePair(prompt, chosen, rejected, task.gold(prompt, chosen, True),
                                    task.gold(prompt, rejected, True),
                                    p_a if a_chosen else 1.0 - p_a))
    return pairs


def label_rankings(task: Task, panel: Panel, prompts: list[str], responses: list[list[str]],
                   rng: np.random.Generator) -> list[Ranking]:
    """One rater ranking per prompt of its K responses (``Panel.rank``), gold carried."""
    out = []
    for prompt, texts in zip(prompts, responses, strict=True):
        order = panel.rank(task, prompt, texts, rng)
        ranked = [texts[i] for i in order]
        out.append(Ranking(prompt, ranked, [task.gold(prompt, t, True) for t in ranked]))
    return out


def pairs_to_unpaired(pairs: list[PreferencePair]) -> list[UnpairedExample]:
    """Unpaired data from pairs, as KTO's paper does: each chosen response a thumbs-up, each
    rejected one a thumbs-down (gold carried; the pair's probability is not a label's)."""
    out = []
    for pair in pairs:
        out.append(UnpairedExample(pair.prompt, pair.chosen, True, pair.chosen_gold))
        out.append(UnpairedExample(pair.prompt, pair.rejected, False, pair.rejected_gold))
    return out


def label_thumbs(task: Task, panel: Panel, prompts: list[str], completions: list[str],
                 rng: np.random.Generator, threshold: float = 0.0) -> list[UnpairedExample]:
    """One thumbs-up or -down per (prompt, completion), from the rater panel (``Rater.
    p_thumbs_up``: the response against a neutral one of utility ``threshold``)."""
    out = []
    for prompt, completion in zip(prompts, completions, strict=True):
        up, p_up = panel.thumbs(task, prompt, completion, rng, threshold)
        out.append(UnpairedExample(prompt, completion, up, task.gold(prompt, completion, True),
                                   p_up if up else 1.0 - p_up))
    return out


def ranking_stats(rankings: list[Ranking]) -> dict[str, float]:
    """For rankings: their count and size, and the measured agreement with gold of the pairs
    they imply (ties in gold count one half). No ceiling: a pair a ranking implies was never
    labelled on its own, so its label probability is not a simple sigmoid."""
    pairs = rankings_to_pairs(rankings)
    return {"rankings": len(rankings), "ranking_size": len(rankings[0].ranked),
            "implied_pairs": len(pairs), **_gold_order(pairs)}


def _gold_order(pairs: list[PreferencePair]) -> dict[str, float]:
    """How often the recorded order agrees with gold (gold ties count one half), and the share
    of gold ties."""
    gc = np.array([r.chosen_gold for r in pairs])
    gr = np.array([r.rejected_gold for r in pairs])
    return {"measured_gold_agreement": float(np.where(gc > gr, 1.0,
                                                      np.where(gc < gr, 0.0, 0.5)).mean()),
            "gold_ties": float(np.mean(gc == gr))}


def dataset_stats(pairs: list[PreferencePair]) -> dict[str, float]:
    """The ceiling, the expected and the measured agreement of labels with gold."""
    p = [r.p_chosen for r in pairs]
    gc = np.array([r.chosen_gold for r in pairs])
    gr = np.array([r.rejected_gold for r in pairs])
    return {"pairs": len(pairs), "ceiling": ceiling(p),
            "expected_gold_agreement": expected_gold_agreement(p, gc, gr), **_gold_order(pairs)}


