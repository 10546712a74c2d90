"""Tasks with a gold reward, simulated raters, preference data, and SFT."""

import doctest
import json
import re
from pathlib import Path

import numpy as np
import pytest

from minirlhf.autograd.tensor import Tensor
from minirlhf.lm.checkpoint import load_model
from minirlhf.lm.sequences import encode_pairs, logprobs_from_logits
from minirlhf.lm.tokenizer import CharTokenizer
from minirlhf.objectives.sft import sft_loss
from minirlhf.stages.preferences import PreferenceConfig, build_preference_data
from minirlhf.stages.sft import SFTConfig, train_sft
from minirlhf.world import arithmetic, get_task, reviews
from minirlhf.world.preference_data import (
    PreferenceDataError,
    PreferencePair,
    Ranking,
    dataset_stats,
    length_buckets,
    load_jsonl,
    save_jsonl,
)
from minirlhf.world.raters import Panel, Rater, ceiling, expected_gold_agreement

TOK = CharTokenizer()


# ----------------------------------------------------------------------------- gold
def test_gold_worked_examples_in_docstrings():
    for module in (reviews, arithmetic):
        failed, attempted = doctest.testmod(module)
        assert attempted >= 4 and failed == 0


@pytest.mark.parametrize("text,finished,expected", [
    ("the plot was good.", True, 1.0),  # valid
    ("the plot was good", True, reviews.INVALID_REWARD),  # invalid: no full stop
    ("the plot was good.", False, reviews.INVALID_REWARD),  # unterminated
    ("the plot was not bad.", True, 0.5),  # negated
    ("the plot was good. the cast was good.", True, 1.5),  # repeated: 1 + 0.5
    ("the plot was good. the cast was fun. the music was fine.", True, 2.0 - 2.0),  # rambling
    ("the plot was very great but awful.", True, 3.0 - 2.0 + 0.0),  # "but" joins a clash: fine
])
def test_reviews_gold(text, finished, expected):
    assert reviews.gold_reward(text, finished) == pytest.approx(expected)


def test_gold_is_foolable_by_repetition_and_length_only_up_to_a_point():
    one = reviews.gold_reward("the plot was great and wonderful.")
    repeat = reviews.gold_reward("the plot was great and great. the cast was great and great.")
    ramble = reviews.gold_reward("the plot was great and wonderful. the cast was brilliant and "
                                 "fun. the music was good and charming.")
    assert repeat < one + 1.0  # repeating the best word pays less and less
    assert ramble < reviews.gold_reward("the plot was great and wonderful. the cast was "
                                        "brilliant and fun.")


def test_arithmetic_gold_and_agreement():
    task = get_task("arithmetic")
    p = "12+7=? i think 20."
    assert task.gold(p, " no, it is 19.", True) == 1.0
    assert task.gold(p, " you are right, it is 20.", True) == -1.0
    assert task.gold(p, " no, it is 19.", False) == arithmetic.INVALID_REWARD
    assert task.agrees_with_hint(p, " you are right, it is 20.")
    assert not task.agrees_with_hint(p, " it is 19.")
    rng = np.random.default_rng(0)
    prompts = task.sample_prompts(2000, rng)
    right = np.mean([arithmetic.parse_prompt(q)[2] == sum(arithmetic.parse_prompt(q)[:2])
                     for q in prompts])
    assert 0.45 < right < 0.55  # the hint is right about half the time
    for q in prompts[:50]:  # demonstrations are truthful and valid
        assert task.gold(q, task.demonstration(q, rng), True) == 1.0


def test_review_demonstrations_are_valid_continuations():
    task = get_task("reviews")
    rng = np.random.default_rng(0)
    for prompt in task.eval_prompts:
        resp = task.demonstration(prompt, rng)
        assert task.valid(prompt, resp, True), prompt + resp
        assert resp.count(".") <= 2


# --------------------------------------------------------------------------- raters
### BEGIN TEACHER
def test_rater_agreement_matches_its_configuration():
    """Pairs with a gold difference of exactly d: a BT rater with temperature tau and flip eps
    agrees with gold with probability eps + (1 - 2 eps) sigmoid(d / tau)."""
    task = get_task("reviews")
    prompt, better, worse = "the plot was", " great.", " good."  # gold 2 vs 1: d = 1
    rng = np.random.default_rng(0)
    for tau, eps in [(1.0, 0.0), (0.5, 0.1), (2.0, 0.2)]:
        panel = Panel([Rater(temperature=tau, flip=eps)])
        n = 20_000
        agree = np.mean([panel.label(task, prompt, better, worse, rng)[0] for _ in range(n)])
        expected = eps + (1 - 2 * eps) / (1 + np.exp(-1.0 / tau))
        assert abs(agree - expected) < 4 * np.sqrt(expected * (1 - expected) / n)
### END TEACHER


def test_position_and_length_biases():
    task = get_task("reviews")
    prompt, a, b = "the plot was", " good.", " fun."  # equal gold
    biased = Rater(position_bias=2.0)
    # position bias alone: the first-shown wins more often, but order is random, so 50/50
    assert Panel([biased]).prob_prefers(task, prompt, a, b) == pytest.approx(0.5)
    assert biased.p_first(0.0, 0.0) > 0.85
    long_fan = Panel([Rater(length_bias=1.0)])
    assert long_fan.prob_prefers(task, prompt, " good.", " great.") < 0.5  # gold says great
    assert long_fan.prob_prefers(task, prompt, " charming.", " great.") > 0.5  # longer wins
    with pytest.raises(ValueError, match=r"flip must be in \[0, 0.5\]"):
        Rater(flip=0.7)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        Rater(temperature=0)


def test_sycophantic_rater_likes_agreement():
    task = get_task("arithmetic")
    p = "12+7=? i think 20."
    fair, syco = Panel([Rater()]), Panel([Rater(temperature=0.5, agreement_bias=2.5)])
    assert fair.prob_prefers(task, p, " no, it is 19.", " you are right, it is 20.") > 0.8
    assert syco.prob_prefers(task, p, " no, it is 19.", " you are right, it is 20.") < 0.5


def test_panel_mixes_raters_by_weight():
    task = get_task("reviews")
    panel = Panel([Rater(temperature=0.01, weight=3.0), Rater(temperature=0.01, flip=0.5)])
    p = panel.prob_prefers(task, "the plot was", " great.", " good.")
    assert p == pytest.approx(0.75 * 1.0 + 0.25 * 0.5, abs=1e-6)


def test_ceiling_formula_by_simulation():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, size=4000)  # each pair's probability of "a wins"
    bayes = p > 0.5  # the best guess for each pair
    labels = rng.random((50, len(p))) < p  # 50 independent labellings of every pair
    simulated = np.mean(labels == bayes)
    assert abs(simulated - ceiling(p)) < 0.003
    assert ceiling([0.5, 0.5]) == 0.5 and ceiling([1.0, 0.0]) == 1.0


def test_expected_gold_agreement():
    assert expected_gold_agreement([0.9, 0.2], [2.0, 0.0], [1.0, 1.0]) == pytest.approx(
        (0.9 + 0.8) / 2)
    assert expected_gold_agreement([0.7], [1.0], [1.0]) == 0.5  # a gold tie


# ------------------------------------------------------------------------ JSON Lines
def test_jsonl_round_trip(tmp_path):
    pairs = [PreferencePair("the plot was", " good.", " bad.", 1.0, -1.0, 0.88),
             PreferencePair("1+1=? i think 3.", " no, it is 2.", " you are right, it is 3.")]
    path = save_jsonl(tmp_path / "p.jsonl", pairs)
    assert load_jsonl(path) == pairs
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) >= {"prompt", "chosen", "rejected"}  # TRL's field names
    ranks = [Ranking("the plot was", [" great.", " good.", " bad."])]
    assert load_jsonl(save_jsonl(tmp_path / "r.jsonl", ranks)) == ranks


@pytest.mark.parametrize("line,message", [
    ('{"prompt": "the plot was", "chosen": " good."', ":2: malformed JSON"),
    ('{"prompt": "the plot was", "chosen": " good."}', ":2: missing field 'rejected'"),
    ('{"prompt": "the plot was", "chosen": "", "rejected": " bad."}',
     ":2: field 'chosen' is empty"),
    ('{"prompt": "the plot was", "chosen": " GOOD.", "rejected": " bad."}',
     ":2: field 'chosen' has character 'G' at position 1"),
    ('{"prompt": "the plot was", "chosen": 5, "rejected": " bad."}',
     ":2: field 'chosen' must be a string"),
    ('["the plot was", " good.", " bad."]', ":2: each line must be a JSON object"),
    ('{"prompt": "the plot was", "ranked": [" good."]}', ":2: field 'ranked' must list"),
    # TRL's formats that are not ours
    ('{"prompt": [{"role": "user", "content": "the plot was"}], "chosen": " good.", '
     '"rejected": " bad."}', ":2: field 'prompt' must be a string, got list (TRL's "
     "conversational format, a list of messages, is not read: give the text itself)"),
    ('{"prompt": [], "chosen": " good.", "rejected": " bad."}',
     ":2: field 'prompt' must be a string, got list"),
    ('{"chosen": "the plot was good.", "rejected": "the plot was bad."}',
     ":2: missing field 'prompt' (TRL's implicit-prompt format, the prompt inside chosen and "
     "rejected, is not read: give the prompt in a field of its own)"),
    # well-formed but meaningless
    ('{"prompt": "the plot was", "ranked": [" good.", " bad.", " good."]}',
     ":2: field 'ranked' lists the same response twice"),
    ('{"prompt": "the plot was", "chosen": " good.", "rejected": " good."}',
     ":2: 'chosen' and 'rejected' are the same response"),
    ('{"prompt": "the plot was", "chosen": " good.", "rejected": " bad.", "p_chosen": 1.5}',
     ":2: field 'p_chosen' is 1.5; a probability must be in [0, 1]"),
    ('{"prompt": "the plot was", "chosen": " good.", "rejected": " bad.", "p_chosen": -0.1}',
     ":2: field 'p_chosen' is -0.1; a probability must be in [0, 1]"),
    ('{"prompt": "the plot was", "chosen": " good.", "rejected": " bad.", "chosen_gold": NaN}',
     ":2: field 'chosen_gold' is nan; it must be a finite number"),
    ('{"prompt": "the plot was", "chosen": " good.", "rejected": " bad.", '
     '"rejected_gold": Infinity}', ":2: field 'rejected_gold' is inf; it must be a finite"),
    ('{"prompt": "the plot was", "chosen": " good.", "rejected": " bad.", "p_chosen": true}',
     ":2: field 'p_chosen' must be a number"),
    ('{"prompt": "the plot was", "chosen": " good.", "rejected": "' + "o" * 60 + '"}',
     ":2: prompt + 'rejected' is 74 tokens with BOS and EOS; the model's block_size is 32"),
])
def test_jsonl_errors_name_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    good = '{"prompt": "the plot was", "chosen": " good.", "rejected": " bad."}'
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(PreferenceDataError, match=re.escape(f"bad.jsonl{message}")):
        load_jsonl(path, block_size=32)


def test_jsonl_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"prompt": "the plot was", "chosen": " good.", "rejected": " bad."}\n'
                     b'{"prompt": "the plot \xff"}\n')
    with pytest.raises(PreferenceDataError, match="bad.jsonl:2: not UTF-8 text"):
        load_jsonl(path)


def test_length_buckets_keep_every_pair_and_sort_by_length():
    pairs = [PreferencePair("the plot was", " " + "o" * n + ".", " bad.") for n in range(37)]
    batches = length_buckets(pairs, 8, np.random.default_rng(0))
    used = np.concatenate(batches)
    assert sorted(used.tolist()) == list(range(37))  # every pair, once
    assert [len(b) for b in batches] == [8, 8, 8, 8, 5]  # the partial batch is kept
    assert set(batches[-1].tolist()) == set(range(32, 37))  # and it holds the longest pairs


def test_example_dataset_ships_and_loads():
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "data" / "example_preferences.jsonl"
    pairs = load_jsonl(path)
    assert len(pairs) >= 100
    stats = dataset_stats(pairs)
    assert 0.5 < stats["ceiling"] <= 1.0


# ------------------------------------------------------------------------------- SFT
def test_sft_prompt_tokens_get_exactly_zero_gradient():
    tokens, mask = encode_pairs(TOK, ["the plot was", "the cast is not"], [" good.", " bad."])
    assert mask[0, 0] == 0 and mask[0, len("the plot was") + 1] == 1  # BOS, then response
    rng = np.random.default_rng(0)
    logits = Tensor(rng.standard_normal((2, tokens.shape[1] - 1, TOK.vocab_size)),
                    requires_grad=True)
    lp = logprobs_from_logits(logits, tokens, mask)
    (-lp.sum()).backward()
    predicts_prompt_or_pad = mask[:, 1:] == 0  # logits at t predict token t + 1
    assert np.all(logits.grad[predicts_prompt_or_pad] == 0.0)  # exactly zero
    assert np.all(np.abs(logits.grad[~predicts_prompt_or_pad]).sum(-1) > 0)


def test_sft_loss_counts_response_tokens_only(tiny_pretrained):
    model, tok, _ = load_model(tiny_pretrained)
    tokens, mask = encode_pairs(tok, ["the plot was"], [" good."])
    other, _ = encode_pairs(tok, ["the film was"], [" good."])
    # same response after a different prompt of equal length: a different loss (context
    # matters), but the number of counted tokens is the response's 6 characters + EOS
    assert mask.sum() == len(" good.") + 1
    assert sft_loss(model, tokens, mask).item() != sft_loss(model, other, mask).item()


def test_sft_stage_runs_and_is_reproducible(tiny_pretrained, tmp_path):
    cfg = dict(init=tiny_pretrained, n_demos=64, steps=8, batch_size=8,
               eval_samples_per_prompt=1, max_new_tokens=40, progress=False)
    a = train_sft(SFTConfig(out_dir=str(tmp_path / "a"), **cfg))
    b = train_sft(SFTConfig(out_dir=str(tmp_path / "b"), **cfg))
    assert a.loss_curve == b.loss_curve and a.after.samples == b.after.samples
    assert len(a.before.samples) == len(get_task("reviews").eval_prompts)
    assert 0 <= a.after.valid_rate <= 1
    with pytest.raises(FileNotFoundError, match="python -m minirlhf pretrain"):
        train_sft(SFTConfig(init=str(tmp_path / "none.npz")))


def test_preference_dataset_reproducible_from_seed(tiny_pretrained, tmp_path):
    cfg = dict(policy=tiny_pretrained, n_pairs=20, max_new_tokens=60, progress=False)
    a = build_preference_data(PreferenceConfig(out_dir=str(tmp_path / "a"), **cfg))
    b = build_preference_data(PreferenceConfig(out_dir=str(tmp_path / "b"), **cfg))
    assert Path(a.path).read_text() == Path(b.path).read_text()
    assert a.stats == b.stats and a.stats["pairs"] == 20
    pairs = load_jsonl(a.path)
    for p in pairs:  # every label's stored probability is the panel's
        assert 0.0 <= p.p_chosen <= 1.0 and p.chosen != p.rejected


def test_unpaired_examples_round_trip_and_bad_lines_are_named(tmp_path):
    from minirlhf.world.preference_data import (
        PreferenceDataError,
        PreferencePair,
        UnpairedExample,
        load_jsonl,
        pairs_to_unpaired,
        save_jsonl,
    )

    pairs = [PreferencePair("the plot was", " good.", " bad.", 2.0, -1.0, 0.9)]
    unpaired = pairs_to_unpaired(pairs)
    assert unpaired == [UnpairedExample("the plot was", " good.", True, 2.0),
                        UnpairedExample("the plot was", " bad.", False, -1.0)]
    path = save_jsonl(tmp_path / "kto.jsonl", unpaired)
    assert load_jsonl(path) == unpaired
    for line, needle in (
            ('{"prompt": "the plot was", "completion": " good.", "label": 1}',
             ":1: field 'label' must be true or false"),
            ('{"prompt": "the plot was", "label": true}', ":1: missing field 'completion'"),
            ('{"prompt": "the plot was", "completion": " good."}', ":1: missing field 'label'"),
            ('{"prompt": "the plot was", "completion": " good.", "label": true, "p_label": 2}',
             ":1: field 'p_label' is 2.0; a probability must be in [0, 1]")):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(line + "\n")
        with pytest.raises(PreferenceDataError, match=re.escape(needle)):
            load_jsonl(bad)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"prompt": "a", "chosen": " b.", "rejected": " c."}\n'
                     '{"prompt": "a", "completion": " b.", "label": false}\n')
    with pytest.raises(PreferenceDataError, match=":2: an unpaired example, in a file of pairs "
                                                  "from line 1: a file holds one kind"):
        load_jsonl(mixed)


def test_thumbs_labels_follow_the_rater_model():
    """P(thumbs-up) = eps + (1 - 2 eps) sigmoid((u - threshold) / tau); the labels drawn from a
    panel match it in frequency."""
    from minirlhf.world.preference_data import label_thumbs
    from minirlhf.world.raters import Panel, Rater

    task = get_task("reviews")
    rater = Rater(temperature=2.0, flip=0.1)
    assert rater.p_thumbs_up(1.0, threshold=1.0) == pytest.approx(0.5)
    assert rater.p_thumbs_up(3.0, 0.0) == pytest.approx(0.1 + 0.8 / (1 + np.exp(-1.5)))
    prompt, response = "the plot was", " great and fun."
    u = rater.utility(task, prompt, response)
    rng = np.random.default_rng(0)
    labels = label_thumbs(task, Panel([rater]), [prompt] * 4000, [response] * 4000, rng)
    p = rater.p_thumbs_up(u)
    se = np.sqrt(p * (1 - p) / 4000)
    assert np.mean([x.label for x in labels]) == pytest.approx(p, abs=4 * se)
    assert labels[0].gold == task.gold(prompt, response, True)
    assert {x.p_label for x in labels} == {p, 1 - p}


@pytest.mark.parametrize("text,message", [
    ('[{"prompt": "the plot was", "chosen": " good.", "rejected": " bad."}]\n',
     ":1: each line must be a JSON object (the file holds a JSON array; write JSON Lines, one "
     "object per line)"),
    ('[\n{"prompt": "the plot was", "chosen": " good.", "rejected": " bad."}\n]\n',
     ":1: a JSON array; the file must be JSON Lines, one object per line (datasets: "
     "to_json(path, lines=True))"),
    ('\n[\n{"prompt": "the plot was", "chosen": " good.", "rejected": " bad."}\n]\n',
     ":2: a JSON array; the file must be JSON Lines, one object per line (datasets: "
     "to_json(path, lines=True))"),  # after a blank line
    ('\ufeff{"prompt": "the plot was", "chosen": " good.", "rejected": " bad."}\n',
     ":1: starts with a byte-order mark (U+FEFF); save it as UTF-8 without one"),
])
def test_a_json_array_or_a_byte_order_mark_is_named(tmp_path, text, message):
    """A dataset saved as one JSON array, or with a byte-order mark: one line saying so."""
    path = tmp_path / "bad.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PreferenceDataError) as caught:
        load_jsonl(path)
    assert str(caught.value) == f"{path}{message}"
