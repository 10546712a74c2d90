"""Our exported folders against the real thing: transformers loads them with the same logits and
token ids, its text-classification pipeline gives our reward (less the stated offset), TRL's
DPOTrainer runs from them, a GPT-2 folder transformers 5 wrote loads here, our BPE agrees with
Hugging Face's tokenizers, and every code block of docs/trl.md runs: export, TRL's DPO, then
``import`` and ``evaluate`` of what TRL trained.

Optional: skipped unless torch and transformers are installed (the TRL cases also need trl and
datasets); ``.ci/run`` installs them at its end and runs this file. To run it yourself:
``pip install -e ".[hf]"`` (torch's CPU build is enough), then ``pytest tests/test_hf_interop.py``.
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


def test_a_gpt2_folder_transformers_5_wrote_loads_with_its_bpe(tmp_path):
    """transformers 5 saves a GPT-2 tokenizer as tokenizer.json alone (no vocab.json or
    merges.txt): from_pretrained reads it, with the same token ids and the same logits."""
    tokenizers = pytest.importorskip("tokenizers")
    from minirlhf.lm.pretrained import from_pretrained

    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["the cat sat on the mat", "naïve café", "12,345 dollars"] * 20,
                            trainer)
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe,
                                                  eos_token="<|endoftext|>",
                                                  bos_token="<|endoftext|>")
    config = transformers.GPT2Config(vocab_size=hf_tok.vocab_size, n_positions=32, n_embd=16,
                                     n_layer=2, n_head=2)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    folder = tmp_path / "gpt2"
    hf.save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    assert (folder / "tokenizer.json").exists()
    assert not (folder / "vocab.json").exists() and not (folder / "merges.txt").exists()
    model, tok = from_pretrained(folder)
    for text in ["the cat sat on the mat.", "naïve café's 12,345 dollars", "x y\nz"]:
        ids = tok.encode(text)
        assert ids == hf_tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            theirs = hf(torch.tensor([ids])).logits.numpy()[0]
        ours = model(np.array([ids])).data[0]
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


def _doc_blocks(path):
    import re

    return re.findall(r"```(python|bash)\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


def test_every_code_block_of_docs_trl_runs_and_the_round_trip_comes_back(tiny_run, tmp_path,
                                                                          monkeypatch):
    """docs/trl.md's blocks in order, on a copy of the tiny run standing in for runs/default:
    export, transformers' text-classification pipeline, TRL's DPO saved to a folder, then `evaluate`
    (a gold figure), `import` (TRL's logits) and a stage started from the folder."""
    import shlex
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("trl")
    pytest.importorskip("datasets")
    runs, _ = tiny_run
    shutil.copytree(runs / "tiny", tmp_path / "runs" / "default")
    monkeypatch.chdir(tmp_path)
    blocks = _doc_blocks(Path(__file__).parents[1] / "docs" / "trl.md")
    assert [lang for lang, _ in blocks].count("bash") >= 1 and len(blocks) >= 4
    printed = []
    for lang, code in blocks:
        if lang == "python":
            exec(compile(code, "docs/trl.md", "exec"), {"__name__": "docs_trl"})
            continue
        for line in code.splitlines():
            argv = shlex.split(line, comments=True)
            assert argv[:3] == ["python", "-m", "minirlhf"], line
            done = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True,
                                  timeout=900)
            assert done.returncode == 0, (line, done.stderr[-2000:])
            printed.append(done.stdout)
    evaluate = next(out for out in printed if "gold" in out)
    import re

    assert re.search(r"gold[^\n]*-?\d+\.\d+", evaluate), evaluate[-800:]
    print(evaluate[evaluate.index("the policy"):])  # shown with pytest -s
    for folder, stage in (("export/sft", "sft"), ("export/reward", "reward"),
                          ("export/trl_dpo", "dpo")):  # TRL's save keeps our record
        record = json.loads(Path(folder, "config.json").read_text())["minirlhf"]
        assert record["stage"] == stage and record["task"] == "reviews", (folder, record)
    ours, _, _ = load_model("runs/default/trl_dpo/model.npz")
    theirs = transformers.AutoModelForCausalLM.from_pretrained("export/trl_dpo").eval()
    idx = np.array([[1, 5, 6, 7, 8, 9]])
    with torch.no_grad():
        expected = theirs(torch.tensor(idx)).logits.numpy()
    np.testing.assert_allclose(ours(idx).data, expected, rtol=0, atol=1e-4)
    before, _, _ = load_model("runs/default/sft/model.npz")
    assert not np.allclose(ours(idx).data, before(idx).data)  # TRL's DPO moved it
    assert Path("runs/default/ppo_from_trl/model.npz").exists()
