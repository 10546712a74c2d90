"""Hugging Face folders coming back, without torch: ``import`` (a folder -> a checkpoint), a
folder given directly as a stage's ``init=`` / ``reward_model=`` (checked before any work, as a
model.npz is), GPT-2's BPE from tokenizer.json alone (transformers 5), and ``evaluate``, which
judges any policy as the pipeline does."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_pretrained import TOK, small_bpe, tiny_gpt

from minirlhf.cli import main
from minirlhf.config import ConfigError, check_checkpoints
from minirlhf.files import CheckpointError, model_kind, read_meta
from minirlhf.lm.checkpoint import load_model, save_model
from minirlhf.lm.model import GPT, GPTConfig
from minirlhf.lm.pretrained import (
    PretrainedError,
    from_pretrained,
    load_tokenizer,
)
from minirlhf.lm.reward_model import RewardModel
from minirlhf.lm.safetensors import save_file
from minirlhf.stages.sft import SFTConfig

PROMPTS = ["the film was", "i think the plot", "12+7=? i think 20."]
RESPONSES = [" good.", " dull and slow, not good.", " 19."]


def _export(tmp_path, checkpoint, name):
    assert main(["export", str(checkpoint), str(tmp_path / name)]) == 0
    return tmp_path / name


def test_a_policy_exported_then_imported_gives_the_same_logits(tmp_path, capsys):
    model = tiny_gpt(seed=7)
    save_model(tmp_path / "policy.npz", model, TOK, {"stage": "sft",
                                                      "config": {"task": "reviews"}})
    folder = _export(tmp_path, tmp_path / "policy.npz", "hf_policy")
    assert main(["import", str(folder), str(tmp_path / "back")]) == 0
    assert "a policy" in capsys.readouterr().out
    back, tok, extra = load_model(tmp_path / "back" / "model.npz")
    assert tok.to_json() == TOK.to_json() and back.scalar_heads == ()
    assert extra["stage"] == "sft" and extra["config"] == {"task": "reviews"}
    idx = TOK.encode_batch(PROMPTS)
    np.testing.assert_allclose(back(idx).data, model(idx).data, rtol=0,
                               atol=8 * np.finfo(np.float32).eps)
    direct, _, _ = load_model(folder)  # the same loader reads the folder itself
    np.testing.assert_array_equal(direct(idx).data, back(idx).data)
    # the folder's metadata, read without its weights, is a checkpoint's
    meta = read_meta(folder)
    assert model_kind(meta) == "policy" and meta["tokenizer"] == TOK.to_json()
    assert meta["extra"]["stage"] == "sft" and meta["config"]["n_embd"] == 32


def test_import_refuses_to_replace_a_checkpoint_and_names_a_broken_file(tmp_path, capsys):
    """Nothing already written is lost: an existing OUT is kept unless --force; a folder's
    malformed config.json or tokenizer.json is one line naming the file and the line."""
    save_model(tmp_path / "policy.npz", tiny_gpt(seed=7), TOK, {"stage": "sft"})
    folder = _export(tmp_path, tmp_path / "policy.npz", "hf_policy")
    kept = tmp_path / "kept.npz"
    kept.write_bytes(b"an earlier checkpoint")
    assert main(["import", str(folder), str(kept)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {kept} exists already: give another OUT, or --force to replace it\n"
    assert kept.read_bytes() == b"an earlier checkpoint"
    assert main(["import", str(folder), str(kept), "--force"]) == 0  # the hint, followed
    assert load_model(kept)[0].scalar_heads == ()
    for name in ("config.json", "tokenizer.json"):
        broken = tmp_path / f"broken_{name}"
        shutil.copytree(folder, broken)
        (broken / name).write_text('{"vocab_size": 10,\n  oops}')
        capsys.readouterr()
        assert main(["import", str(broken), str(tmp_path / f"{name}.npz")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {broken / name}:2: malformed JSON"), err
        assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_reward_model_exported_then_imported_scores_the_same(tmp_path, capsys):
    rm = RewardModel(tiny_gpt(seed=8), TOK, gain=1.7, bias=-0.4)
    head = rm.model.reward_head  # zero at first: give it weights, and a bias (the offset's)
    head.weight.data = np.random.default_rng(0).normal(0, 0.3, head.weight.data.shape).astype(
        np.float32)
    head.bias.data[:] = 0.25
    rm.save(tmp_path / "reward.npz")
    folder = _export(tmp_path, tmp_path / "reward.npz", "hf_rm")
    assert main(["import", str(folder), str(tmp_path / "rm.npz")]) == 0
    assert "a reward model" in capsys.readouterr().out
    back = RewardModel.load(tmp_path / "rm.npz")
    ours = rm.score(PROMPTS, RESPONSES)
    assert np.ptp(ours) > 0.05  # not trivially equal
    np.testing.assert_allclose(back.score(PROMPTS, RESPONSES), ours, rtol=0, atol=1e-5)
    np.testing.assert_allclose(RewardModel.load(folder).score(PROMPTS, RESPONSES), ours,
                               rtol=0, atol=1e-5)
    assert model_kind(read_meta(folder)) == "reward model"


@pytest.mark.parametrize("layout", ["strings", "pairs"])
def test_bpe_reads_tokenizer_json_alone_as_transformers_5_writes_it(tmp_path, layout):
    tok = small_bpe(["the cat sat on the mat", "naïve café", "12,345 dollars"] * 4, 40)
    merges = [m for m in sorted(tok.ranks, key=tok.ranks.get)]
    old = tmp_path / "old"  # vocab.json + merges.txt, transformers 4's files
    old.mkdir()
    (old / "vocab.json").write_text(json.dumps(tok.encoder), encoding="utf-8")
    (old / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges),
                                    encoding="utf-8")
    new = tmp_path / "new"  # tokenizer.json only
    new.mkdir()
    vocab = {s: i for s, i in tok.encoder.items() if s != "<|endoftext|>"}
    spec = {"version": "1.0", "added_tokens": [
        {"id": tok.encoder["<|endoftext|>"], "content": "<|endoftext|>", "special": True}],
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False},
        "model": {"type": "BPE", "vocab": vocab, "merges": [
            " ".join(m) if layout == "strings" else list(m) for m in merges]}}
    (new / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    config = GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=8)
    model = GPT(config)
    save_file(new / "model.safetensors", {"transformer." + k: v
                                          for k, v in model.state_dict().items()})
    (new / "config.json").write_text(json.dumps({
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": 32, "n_layer": 1, "n_head": 2,
        "n_embd": 8}))
    reference = load_tokenizer(old)
    back, loaded = from_pretrained(new)
    assert loaded.vocab_size == reference.vocab_size and loaded.eos_id == reference.eos_id
    for text in ["the cat sat on the mat.", "  naïve café's 12,345\n\nx", "dollars!"]:
        assert loaded.encode(text) == reference.encode(text) == tok.encode(text)
        assert loaded.decode(loaded.encode(text)) == text
    np.testing.assert_array_equal(back.state_dict()["wte.weight"], model.state_dict()["wte.weight"])
    # a stage refuses it before any work: the worlds' text is read as characters
    with pytest.raises(ConfigError, match="GPT-2's BPE tokenizer"):
        check_checkpoints(SFTConfig(init=str(new)))
    with pytest.raises(PretrainedError, match="BPE"):
        main(["--debug", "import", str(new), str(tmp_path / "x.npz")])
    spec["model"]["merges"][0] = ["a", "b", "c"]
    (new / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(PretrainedError, match=r"model.merges\[0\]"):
        load_tokenizer(new)


def test_a_stage_runs_from_a_folder_and_refuses_one_of_the_wrong_kind(tmp_path, capsys):
    save_model(tmp_path / "base.npz", tiny_gpt(seed=2), TOK)
    policy = _export(tmp_path, tmp_path / "base.npz", "hf_base")
    rm = RewardModel(tiny_gpt(seed=3), TOK)
    rm.save(tmp_path / "rm.npz")
    reward = _export(tmp_path, tmp_path / "rm.npz", "hf_rm")
    capsys.readouterr()
    budget = ["n_demos=32", "steps=2", "batch_size=8", "warmup_steps=1",
              "eval_samples_per_prompt=1", "max_new_tokens=8", "progress=false"]
    out = tmp_path / "sft"
    assert main(["sft", "-q", "--set", f"init={policy}", f"out_dir={out}", *budget]) == 0
    _, _, extra = load_model(out / "model.npz")
    assert extra["stage"] == "sft"
    # a reward model's folder as reward_model= (and a policy's as policy=)
    assert main(["best-of-n", "-q", "--set", f"policy={policy}", f"reward_model={reward}",
                 f"out_dir={tmp_path / 'bon'}", "ns=1,2", "samples_per_prompt=2",
                 "prompts_per_eval=1", "max_new_tokens=8"]) == 0
    assert (tmp_path / "bon" / "summary.json").exists()
    capsys.readouterr()
    # a reward model's folder as init=: refused before any work, in one line
    assert main(["sft", "-q", "--set", f"init={reward}", f"out_dir={tmp_path / 'no'}",
                 *budget]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"init = {reward} is a reward model" in err, err
    assert not (tmp_path / "no" / "model.npz").exists()
    # a folder that is no model folder
    (tmp_path / "empty").mkdir()
    assert main(["sft", "-q", "--set", f"init={tmp_path / 'empty'}",
                 f"out_dir={tmp_path / 'no'}", *budget]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "folder without config.json" in err, err
    with pytest.raises(CheckpointError, match="folder without config.json"):
        read_meta(tmp_path / "empty")


def test_evaluate_prints_the_pipelines_row_for_a_checkpoint_or_a_folder(tiny_run, tmp_path,
                                                                       capsys):
    from minirlhf.evaluation import EvaluateConfig, evaluate_checkpoint

    runs, _ = tiny_run
    run = runs / "tiny"
    summary = json.loads((run / "summary.json").read_text())
    dpo = summary["policies"]["dpo"]
    settings = dict(reference=str(run / "sft" / "model.npz"), samples_per_prompt=1,
                    max_new_tokens=60, seed=0)  # the tiny preset's DPO evaluation
    rep = evaluate_checkpoint(EvaluateConfig(policy=str(run / "dpo" / "model.npz"),
                                             **settings))
    figures = json.loads(json.dumps(rep.to_dict()))
    assert {k: figures[k] for k in dpo if k != "samples"} == {k: v for k, v in dpo.items()
                                                              if k != "samples"}
    report = (run / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| DPO "))
    folder = _export(tmp_path, run / "dpo" / "model.npz", "hf_dpo")
    capsys.readouterr()
    assert main(["evaluate", str(folder), "-q", "--set",
                 *(f"{k}={v}" for k, v in settings.items())]) == 0
    out = capsys.readouterr().out
    assert row.replace("| DPO |", f"| {folder} |") in out.splitlines(), out
    # the wrong world, or a reward model as the reference: one line each, before any work
    assert main(["evaluate", str(folder), "--set", "task=arithmetic",
                 f"reference={settings['reference']}"]) == 2
    assert "'reviews' world" in capsys.readouterr().err
    assert main(["evaluate", str(folder), "--set",
                 f"reference={run / 'reward' / 'model.npz'}"]) == 2
    assert "reference" in capsys.readouterr().err


def test_a_folder_without_a_tokenizer_or_of_another_head_is_named_by_import_and_evaluate(
        tmp_path, capsys):
    """A folder with no tokenizer file is said to have none (not to be GPT-2's BPE), and a GPT-2
    of another head (token classification) is refused by `import` as by `evaluate`: one line
    each, before any work."""
    save_model(tmp_path / "policy.npz", tiny_gpt(seed=7), TOK, {"stage": "sft"})
    folder = _export(tmp_path, tmp_path / "policy.npz", "hf_policy")
    notok = tmp_path / "notok"
    shutil.copytree(folder, notok)
    (notok / "tokenizer.json").unlink()
    other = tmp_path / "token_classification"
    shutil.copytree(folder, other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(
        {**cfg, "architectures": ["GPT2ForTokenClassification"]}))
    capsys.readouterr()
    for command in (["import", str(notok), str(tmp_path / "a.npz")],
                    ["evaluate", str(notok), "--set", f"reference={tmp_path / 'policy.npz'}"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.endswith(f"{notok}: no tokenizer: neither tokenizer.json (as `export` writes "
                            "it) nor GPT-2's vocab.json + merges.txt\n"), err
        assert len(err.splitlines()) == 1
    assert main(["import", str(other), str(tmp_path / "b.npz")]) == 2
    assert capsys.readouterr().err == (
        f"error: {other}: a Hugging Face GPT2ForTokenClassification; minirlhf reads "
        "GPT2LMHeadModel or GPT2Model (a policy) and GPT2ForSequenceClassification (a reward "
        "model)\n")
    assert not (tmp_path / "a.npz").exists() and not (tmp_path / "b.npz").exists()
    assert main(["evaluate", str(other), "--set", f"reference={tmp_path / 'policy.npz'}"]) == 2
    assert "GPT2ForTokenClassification (model_type 'gpt2'), not a policy (minirlhf reads GPT-2 " \
        "folders: GPT2LMHeadModel or GPT2Model for a policy, GPT2ForSequenceClassification for " \
        "a reward model)" in capsys.readouterr().err


def test_a_stage_folder_given_as_a_model_names_its_checkpoint(tmp_path, capsys):
    """`export runs/x/sft` (the folder, not its model.npz): the error names the checkpoint in it;
    the model card counts one layer as one."""
    stage = tmp_path / "sft"
    save_model(stage / "model.npz", tiny_gpt(seed=7), TOK, {"stage": "sft"})
    assert main(["export", str(stage), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        f"error: checkpoint {stage} is a folder without config.json: neither a checkpoint file "
        f"nor a Hugging Face model folder; the checkpoint in it is {stage / 'model.npz'}\n")
    assert main(["import", str(stage), str(tmp_path / "back.npz")]) == 2  # no import needed
    assert capsys.readouterr().err == (
        f"error: {stage}: a folder of a minirlhf run, not a Hugging Face one: its checkpoint "
        f"{stage / 'model.npz'} needs no import (the export command makes a Hugging Face folder "
        "of it)\n")
    assert main(["import", str(stage / "model.npz"), str(tmp_path / "back.npz")]) == 2
    assert capsys.readouterr().err.endswith("a file, not a Hugging Face model folder (a "
                                            "minirlhf checkpoint: it needs no import)\n")
    folder = _export(tmp_path, stage / "model.npz", "hf")  # the file it names
    card = (folder / "README.md").read_text()
    layers = tiny_gpt(seed=7).config.n_layer
    assert f"{layers} layer{'s' * (layers != 1)}, " in card and f'`"{TOK.chars}"`' in card
