"""Our exported folders against the real thing: transformers loads them with the same logits and
token ids, its text-classification pipeline gives our reward (less the stated offset), TRL's
DPOTrainer runs from them, and our BPE agrees with Hugging Face's tokenizers.

Optional: skipped unless torch and transformers are installed (CI installs neither). To run:
``pip install torch==2.13.0 transformers trl datasets`` in a separate environment, then
``pytest tests/test_hf_interop.py``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from minirlhf.lm.checkpoint import load_model  # noqa: E402
from minirlhf.lm.pretrained import save_pretrained, save_reward_model  # noqa: E402
from minirlhf.lm.reward_model import RewardModel  # noqa: E402
from minirlhf.lm.sequences import encode_pairs, sequence_logps  # noqa: E402
from minirlhf.world.preference_data import load_jsonl  # noqa: E402


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """The tiny pipeline's SFT policy and reward model, saved as Hugging Face folders, and its
    preference pairs."""
    runs, _ = tiny_run
    run = runs / "tiny"
    policy, tok, _ = load_model(run / "sft" / "model.npz")
    out = tmp_path_factory.mktemp("hf")
    save_pretrained(policy, tok, out / "policy")
    rm = RewardModel.load(run / "reward" / "model.npz")
    save_reward_model(rm, out / "reward")
    pairs = load_jsonl(run / "preferences" / "preferences.jsonl")
    return policy, tok, rm, pairs, out


def test_transformers_gives_our_logits_and_token_ids(exported):
    policy, tok, _, pairs, out = exported
    hf = transformers.GPT2LMHeadModel.from_pretrained(out / "policy").eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out / "policy")
    texts = [p.prompt + p.chosen for p in pairs] + [p.prompt + p.rejected for p in pairs]
    for text in texts:
        assert hf_tok(text)["input_ids"] == tok.encode(text, bos=True)
        assert hf_tok.decode(tok.encode(text, bos=True), skip_special_tokens=True) == text
    assert (hf_tok.pad_token_id, hf_tok.bos_token_id, hf_tok.eos_token_id) == (
        tok.pad_id, tok.bos_id, tok.eos_id)
    idx = tok.encode_batch(texts[:16])
    real = idx != tok.pad_id
    with torch.no_grad():
        theirs = hf(torch.tensor(idx), attention_mask=torch.tensor(real)).logits.numpy()
    ours = policy(idx).data
    # float32 rounding: a few ulps of the largest logit, through a few dozen summations
    bound = 64 * np.finfo(np.float32).eps * max(float(np.abs(ours[real]).max()), 1.0)
    assert np.abs(theirs[real] - ours[real]).max() <= bound


def test_transformers_scores_like_our_reward_model(exported):
    _, _, rm, pairs, out = exported
    hf = transformers.GPT2ForSequenceClassification.from_pretrained(out / "reward").eval()
    offset = json.loads((out / "reward" / "config.json").read_text())["minirlhf_reward_offset"]
    prompts = [p.prompt for p in pairs[:16]]
    responses = [p.chosen for p in pairs[:16]]
    tokens, _ = rm.encode(prompts, responses)
    with torch.no_grad():
        theirs = hf(torch.tensor(tokens)).logits.numpy()[:, 0] + offset
    np.testing.assert_allclose(theirs, rm.score(prompts, responses), rtol=0, atol=1e-4)


def test_the_text_classification_pipeline_gives_our_reward_less_the_stated_offset(exported):
    """Plain transformers, no minirlhf code: the pipeline tokenizes the text (its tokenizer adds
    <bos> and <eos>), runs GPT2ForSequenceClassification and returns the raw score (problem_type
    regression: no sigmoid); adding the offset the model card states gives our reward."""
    _, tok, rm, pairs, out = exported
    folder = out / "reward"
    offset = json.loads((folder / "config.json").read_text())["minirlhf_reward_offset"]
    assert repr(offset) in (folder / "README.md").read_text()  # the card states the offset
    pipe = transformers.pipeline("text-classification", model=str(folder), device="cpu")
    hf_tok = pipe.tokenizer
    text = pairs[0].prompt + pairs[0].chosen
    enc = hf_tok(text)
    assert enc["input_ids"] == tok.encode(text, bos=True, eos=True)  # ends with <eos>
    assert "token_type_ids" not in enc  # GPT-2 would add their embedding to every position
    batch = pairs[:16]
    prompts = [p.prompt for p in batch] + [p.prompt for p in batch]
    responses = [p.chosen for p in batch] + [p.rejected for p in batch]
    ours = rm.score(prompts, responses)

    def scores(results):  # one {"label", "score"} per input (a list of one in some versions)
        return np.array([(r[0] if isinstance(r, list) else r)["score"] for r in results])

    whole = scores(pipe([p + r for p, r in zip(prompts, responses, strict=True)]))
    np.testing.assert_allclose(whole + offset, ours, rtol=0, atol=1e-5)
    as_pairs = scores(pipe([{"text": p, "text_pair": r}
                            for p, r in zip(prompts, responses, strict=True)]))
    np.testing.assert_allclose(as_pairs + offset, ours, rtol=0, atol=1e-5)


def test_trl_dpo_trainer_runs_from_the_exported_folder(exported, tmp_path):
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    policy, tok, _, pairs, out = exported
    batch = pairs[:4]  # one batch of 4: TRL's first step sees all of them, shuffled or not
    rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in batch]
    model = transformers.AutoModelForCausalLM.from_pretrained(out / "policy")
    # bf16=False: TRL's configs default to bfloat16 mixed precision where the CPU supports it,
    # which moves its summed log-probs by ~0.01 nats from float32's
    args = trl.DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=2,
                         logging_steps=1, report_to=[], beta=0.1, use_cpu=True, bf16=False,
                         save_strategy="no")
    trainer = trl.DPOTrainer(model=model, args=args,
                             train_dataset=datasets.Dataset.from_list(rows),
                             processing_class=transformers.AutoTokenizer.from_pretrained(
                                 out / "policy"))
    for row, pair in zip(trainer.train_dataset, batch, strict=True):
        for side in ("chosen", "rejected"):
            tokens, _ = encode_pairs(tok, [pair.prompt], [getattr(pair, side)], True)
            assert row["prompt_ids"] + row[f"{side}_ids"] == tokens[0].tolist()
    trainer.train()
    first = trainer.state.log_history[0]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)  # policy == reference
    for side in ("chosen", "rejected"):  # TRL logs the batch mean of summed log-probs
        tokens, mask = encode_pairs(tok, [p.prompt for p in batch],
                                    [getattr(p, side) for p in batch], True)
        ours = float(sequence_logps(policy, tokens, mask).data.mean())
        assert first[f"logps/{side}"] == pytest.approx(ours, abs=1e-4)


def test_our_bpe_agrees_with_hugging_face_tokenizers_on_a_test_vocabulary():
    tokenizers = pytest.importorskip("tokenizers")
    from test_pretrained import small_bpe

    tok = small_bpe(["the cat sat on the mat", "naïve café", "12,345 dollars"] * 4, 40)
    hf = tokenizers.Tokenizer(tokenizers.models.BPE(
        tok.encoder, [tuple(m) for m in sorted(tok.ranks, key=tok.ranks.get)]))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    rng = np.random.default_rng(1)
    texts = ["the cat sat on the mat.", "  the  mat\n\nnaïve café's 12,345", "x\u3000y\x1c!z"]
    for _ in range(200):
        cps = rng.choice([rng.integers(32, 127), rng.integers(0, 0x3000)], size=rng.integers(30))
        texts.append("".join(chr(int(c)) for c in cps if not 0xD800 <= c < 0xE000))
    for text in texts:
        assert tok.encode(text) == hf.encode(text).ids, repr(text)
