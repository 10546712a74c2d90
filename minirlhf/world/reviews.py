"""The reviews world: a tiny grammar of movie reviews with a hidden sentiment lexicon.

Grammar (every review is one line; the model sees it framed as BOS review EOS)::

    review    := sentence (" " sentence)*      (the corpus uses 1 to 3 sentences)
    sentence  := subject " " verb " " clause ((" and " | " but ") clause)? "."
    subject   := "the " noun          noun in NOUNS
    verb      := "was" | "is"
    clause    := (adverb " ")? adjective
    adverb    := "very" | "really" | "quite" | "not"

Examples: ``the plot was very good but slow.`` and
``the cast is not great. the music was fun and really charming.``

Each adjective has a hidden polarity in [-2, 2] (``LEXICON``). The corpus generator gives each
review a mood (positive or negative); each clause takes the mood's sign with probability 0.8,
and clauses are joined with "and" when their (negation-adjusted) signs agree, "but" when they
differ. Every choice's probability is known, so the corpus's exact entropy per character is
computable: it is the loss a perfect model would reach.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NOUNS = ("movie", "film", "plot", "acting", "story", "ending", "music", "cast")
VERBS = ("was", "is")
#: adverb -> probability in the corpus (None: no adverb)
ADVERB_PROBS = {None: 0.5, "very": 0.2, "really": 0.12, "quite": 0.1, "not": 0.08}
#: adjective -> hidden polarity in [-2, 2]
LEXICON = {
    "great": 2.0, "wonderful": 2.0, "brilliant": 2.0, "good": 1.0, "fun": 1.0,
    "charming": 1.0, "clever": 1.0, "fine": 0.5,
    "awful": -2.0, "terrible": -2.0, "boring": -1.5, "bad": -1.0, "dull": -1.0,
    "weak": -1.0, "messy": -1.0, "slow": -0.5,
}
POSITIVE = tuple(a for a, p in LEXICON.items() if p > 0)  # the constitution's kind words
NEGATIVE = tuple(a for a, p in LEXICON.items() if p < 0)  # and its harsh ones
SENTENCE_COUNT_PROBS = (0.4, 0.45, 0.15)  # P(1), P(2), P(3) sentences
P_SECOND_CLAUSE = 0.5
P_FOLLOW_MOOD = 0.8


@dataclass(frozen=True)
class Clause:
    adverb: str | None  # "very", "really", "quite", "not" or None
    adjective: str


@dataclass(frozen=True)
class Sentence:
    noun: str
    verb: str
    clauses: tuple[Clause, ...]  # one or two
    conjunction: str | None  # "and", "but" or None for one clause


def _sign(clause: Clause) -> float:
    s = np.sign(LEXICON[clause.adjective])
    return -s if clause.adverb == "not" else s


def sample_review(rng: np.random.Generator,
                  sentence_count_probs: tuple[float, ...] = SENTENCE_COUNT_PROBS,
                  ) -> tuple[str, float]:
    """One review from the corpus distribution, and the log-probability of drawing it."""
    sentences, logp = sample_sentences(rng, sentence_count_probs)
    return render(sentences), logp


def sample_sentences(rng: np.random.Generator,
                     sentence_count_probs: tuple[float, ...] = SENTENCE_COUNT_PROBS,
                     ) -> tuple[list[Sentence], float]:
    """A review's sentences drawn as the corpus draws them, and their log-probability."""
    logp = 0.0
    mood = 1.0 if rng.random() < 0.5 else -1.0
    logp += np.log(0.5)
    n = int(rng.choice(len(sentence_count_probs), p=sentence_count_probs))
    logp += np.log(sentence_count_probs[n])
    adverbs = list(ADVERB_PROBS)
    adverb_p = np.array(list(ADVERB_PROBS.values()))

    def clause() -> tuple[Clause, float]:
        lp = 0.0
        k = int(rng.choice(len(adverbs), p=adverb_p))
        adverb = adverbs[k]
        lp += np.log(adverb_p[k])
        want = mood if rng.random() < P_FOLLOW_MOOD else -mood  # the clause's effective sign
        lp += np.log(P_FOLLOW_MOOD if want == mood else 1 - P_FOLLOW_MOOD)
        lexical = -want if adverb == "not" else want  # "not" flips: "not good" is negative
        pool = POSITIVE if lexical > 0 else NEGATIVE
        lp += -np.log(len(pool))
        return Clause(adverb, pool[int(rng.integers(len(pool)))]), lp

    sentences = []
    for _ in range(n + 1):
        noun = NOUNS[int(rng.integers(len(NOUNS)))]
        verb = VERBS[int(rng.integers(len(VERBS)))]
        logp += -np.log(len(NOUNS)) - np.log(len(VERBS))
        first, lp = clause()
        logp += lp
        clauses, conj = (first,), None
        if rng.random() < P_SECOND_CLAUSE:
            second, lp = clause()
            logp += lp + np.log(P_SECOND_CLAUSE)
            clauses = (first, second)
            conj = "and" if _sign(first) == _sign(second) else "but"
        else:
            logp += np.log(1 - P_SECOND_CLAUSE)
        sentences.append(Sentence(noun, verb, clauses, conj))
    return sentences, float(logp)


def render(sentences: list[Sentence] | tuple[Sentence, ...]) -> str:
    """Sentences -> review text."""

    def clause(c: Clause) -> str:
        return f"{c.adverb} {c.adjective}" if c.adverb else c.adjective

    parts = []
    for s in sentences:
        words = clause(s.clauses[0])
        if len(s.clauses) == 2:
            words += f" {s.conjunction} {clause(s.clauses[1])}"
        parts.append(f"the {s.noun} {s.verb} {words}.")
    return " ".join(parts)


def parse_review(text: str) -> tuple[Sentence, ...] | None:
    """The review's sentences if ``text`` follows the grammar (any number of sentences),
    else None. The conjunction may be "and" or "but" regardless of polarity."""
    if not text.endswith(".") or text != text.strip() or "  " in text:
        return None
    sentences = []
    for raw in text[:-1].split(". "):
        words = raw.split(" ")
        if len(words) < 4 or words[0] != "the" or words[1] not in NOUNS or words[2] not in VERBS:
            return None
        clauses, conj, rest = [], None, words[3:]
        while rest:
            if clauses:
                if rest[0] not in ("and", "but") or conj is not None:
                    return None
                conj, rest = rest[0], rest[1:]
            adverb = None
            if rest and rest[0] in ADVERB_PROBS:
                adverb, rest = rest[0], rest[1:]
            if not rest or rest[0] not in LEXICON:
                return None
            clauses.append(Clause(adverb, rest[0]))
            rest = rest[1:]
        if len(clauses) > 2 or (len(clauses) == 2) != (conj is not None):
            return None
        sentences.append(Sentence(words[1], words[2], tuple(clauses), conj))
    return tuple(sentences)


def is_grammatical(text: str) -> bool:
    """True if ``text`` follows the grammar: one or more well-formed sentences.

    The corpus never has more than three sentences, but a fourth is still grammatical: writing
    too much is a matter of taste (the gold reward penalises rambling), not of grammar."""
    parsed = parse_review(text)
    return parsed is not None and len(parsed) >= 1


def make_corpus(n_reviews: int, seed: int) -> tuple[list[str], float]:
    """``n_reviews`` reviews and the corpus's exact entropy in nats per token.

    Tokens per review = characters + 1 (the EOS the model must predict); BOS is given, not
    predicted.
    """
    rng = np.random.default_rng(seed)
    reviews, nats, tokens = [], 0.0, 0
    for _ in range(n_reviews):
        text, logp = sample_review(rng)
        reviews.append(text)
        nats -= logp
        tokens += len(text) + 1
    return reviews, nats / tokens


# ------------------------------------------------------------------ the RLHF task
#: Review openings the policy continues: "the <noun> <verb>", and the same followed by "not"
#: (the policy must then find something positive to say after a negation).
PROMPTS = tuple(f"the {n} {v}" for n in NOUNS for v in VERBS) + tuple(
    f"the {n} {v} not" for n in NOUNS for v in VERBS)
ADVERB_WEIGHT = {None: 1.0, "very": 1.5, "really": 1.5, "quite": 1.25, "not": -0.5}
INVALID_REWARD = -5.0  # text that does not parse, or that never ends (no EOS)
MAX_SENTENCES_READ = 2  # a reader counts the sentiment of the first two sentences only
RAMBLING_PENALTY = 2.0  # ... and is annoyed by each sentence after them
INCOHERENCE_PENALTY = 0.5  # "and" joining clashing clauses, or "but" joining agreeing ones


def clause_sentiment(clause: Clause) -> float:
    """Polarity of the adjective times the adverb's weight ("not" flips and halves it)."""
    return LEXICON[clause.adjective] * ADVERB_WEIGHT[clause.adverb]


def gold_reward(text: str, finished: bool = True) -> float:
    """The hidden "human" preference for a whole review (prompt + response).

    - Invalid (does not parse) or unfinished (no EOS) text scores ``INVALID_REWARD`` (-5).
    - Sentiment: the sum over the clauses of the first two sentences of polarity x adverb
      weight (very/really 1.5, quite 1.25, none 1, not -0.5), where the k-th use of an
      adjective counts only 0.5^(k-1): saying "great" again is worth less each time.
    - Rambling: -2 for each sentence after the second (and those sentences' sentiment is
      ignored: the reader has stopped reading).
    - Coherence: -0.5 for each "and" joining clauses of opposite sign, or "but" joining
      clauses of the same sign.

    Worked examples (the doctests run in the test suite):

    >>> gold_reward("the plot was very good.")  # 1 x 1.5
    1.5
    >>> gold_reward("the plot was great and really wonderful.")  # 2 + 2 x 1.5
    5.0
    >>> gold_reward("the plot was not awful.")  # -2 x -0.5
    1.0
    >>> gold_reward("the plot was great. the cast was great.")  # 2 + 2 x 0.5: repeated
    3.0
    >>> gold_reward("the plot was great. the cast was good. the music was fun.")  # 2 + 1 - 2
    1.0
    >>> gold_reward("the plot was great and bad.")  # 2 - 1 - 0.5 ("and" joins a clash)
    0.5
    >>> gold_reward("the plot was great but")  # does not parse
    -5.0
    >>> gold_reward("the plot was great.", finished=False)  # never emitted EOS
    -5.0
    """
    parsed = parse_review(text) if finished else None
    if not parsed:
        return INVALID_REWARD
    score, uses = 0.0, {}
    for sentence in parsed[:MAX_SENTENCES_READ]:
        for clause in sentence.clauses:
            k = uses.get(clause.adjective, 0)
            uses[clause.adjective] = k + 1
            score += clause_sentiment(clause) * 0.5**k
        if sentence.conjunction is not None:
            agree = _sign(sentence.clauses[0]) == _sign(sentence.clauses[1])
            if agree != (sentence.conjunction == "and"):
                score -= INCOHERENCE_PENALTY
    score -= RAMBLING_PENALTY * max(0, len(parsed) - MAX_SENTENCES_READ)
    return float(score)


def demonstration(prompt: str, rng: np.random.Generator) -> str:
    """A demonstrator's continuation of ``prompt``: a well-formed review of one or two
    sentences in a random mood (demonstrators show the format, not the preference).
    Returns the response text (what follows the prompt, EOS not included)."""
    words = prompt.split(" ")
    if len(words) not in (3, 4) or words[0] != "the" or words[1] not in NOUNS or \
            words[2] not in VERBS or (len(words) == 4 and words[3] != "not"):
        raise ValueError(f"reviews: not a review opening: {prompt!r}")
    sentences, _ = sample_sentences(rng, (0.5, 0.5))
    first = sentences[0]
    clauses = list(first.clauses)
    if len(words) == 4:  # the opening ends in "not": the first clause is negated
        clauses[0] = Clause("not", clauses[0].adjective)
    conj = None if len(clauses) == 1 else (
        "and" if _sign(clauses[0]) == _sign(clauses[1]) else "but")
    sentences[0] = Sentence(words[1], words[2], tuple(clauses), conj)
    text = render(sentences)
    assert text.startswith(prompt + " "), (prompt, text)
    return text[len(prompt):]
