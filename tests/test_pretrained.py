"""GPT-2 interop without torch: the safetensors reader/writer, Hugging Face model folders both
ways, the reward model's export, our tokenizer's tokenizer.json, and GPT-2's byte-level BPE.
(tests/test_hf_interop.py repeats the key checks against transformers and TRL when installed.)
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from minirlhf.lm.bpe import BPETokenizer, bytes_to_unicode, gpt2_pattern
from minirlhf.lm.model import GPT, PRESETS, GPTConfig
from minirlhf.lm.pretrained import (
    PretrainedError,
    char_tokenizer_from_json,
    from_pretrained,
    reward_model_from_pretrained,
    save_pretrained,
    save_reward_model,
    tokenizer_json,
)
from minirlhf.lm.reward_model import RewardModel
from minirlhf.lm.safetensors import SafetensorsError, load_file, read_header, save_file
from minirlhf.lm.sampling import generate
from minirlhf.lm.sequences import encode_pairs
from minirlhf.lm.tokenizer import CharTokenizer

TOK = CharTokenizer()


def tiny_gpt(seed: int = 0) -> GPT:
    return GPT(GPTConfig(vocab_size=TOK.vocab_size, seed=seed, **PRESETS["tiny"]))


# ------------------------------------------------------------------------------- safetensors

def test_safetensors_round_trip_keeps_values_dtypes_and_alignment(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"b.weight": rng.normal(size=(3, 5)).astype(np.float32),
               "a.ids": np.arange(7, dtype=np.int64), "c.scalar": np.array(2.5, np.float32)}
    path = tmp_path / "t.safetensors"
    save_file(path, tensors, metadata={"format": "pt"})
    back = load_file(path)
    assert sorted(back) == sorted(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        np.testing.assert_array_equal(back[k], v)
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert n % 8 == 0  # every tensor starts 8-byte aligned
    header, meta, start = read_header(path)
    assert meta == {"format": "pt"} and start == 8 + n
    assert load_file(path, names={"a.ids"}).keys() == {"a.ids"}


def test_safetensors_writer_refuses_float64(tmp_path):
    with pytest.raises(TypeError, match="'x' is float64"):
        save_file(tmp_path / "t.safetensors", {"x": np.zeros(3)})


def _raw_file(path, header: dict, data: bytes, pad: bool = True):
    text = json.dumps(header).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def test_float16_and_bfloat16_are_widened_to_float32(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, -61440.0], dtype=np.float32)  # exact in both
    f16 = values.astype(np.float16).tobytes()
    bf16 = (values.view(np.uint32) >> 16).astype("<u2").tobytes()  # the top 16 bits
    path = _raw_file(tmp_path / "h.safetensors", {
        "half": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]},
        "brain": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [8, 16]}}, f16 + bf16)
    back = load_file(path)
    assert back["half"].dtype == np.float32 and back["brain"].dtype == np.float32
    np.testing.assert_array_equal(back["half"], values)
    np.testing.assert_array_equal(back["brain"], values.reshape(2, 2))


@pytest.mark.parametrize("case, message", [
    ("empty", "too short for a safetensors file"),
    ("header_too_long", "the header claims"),
    ("not_json", "the header is not valid JSON"),
    ("unknown_dtype", "tensor 'w' has dtype 'F8_E4M3', which this reader does not know"),
    ("size_lies", "tensor 'w' (F32, shape [2, 3]) needs 24 bytes but its offsets [0, 16)"),
    ("truncated", "tensor 'w' ends at byte 24 of the data but the file holds only 20"),
    ("hole", "tensor 'v' starts at byte 16 of the data, expected 12"),
    ("trailing", "the tensors cover 24 bytes of data but the file holds 28"),
    ("no_offsets", "tensor 'w' lacks dtype, shape or data_offsets"),
])
def test_malformed_safetensors_are_refused_with_file_and_tensor(tmp_path, case, message):
    path = tmp_path / f"{case}.safetensors"
    w = {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}
    data = bytes(24)
    if case == "empty":
        path.write_bytes(b"\x01\x02")
    elif case == "header_too_long":
        path.write_bytes(struct.pack("<Q", 10_000) + b"{}")
    elif case == "not_json":
        path.write_bytes(struct.pack("<Q", 8) + b"{nope!!}")
    elif case == "unknown_dtype":
        _raw_file(path, {"w": dict(w, dtype="F8_E4M3")}, data)
    elif case == "size_lies":
        _raw_file(path, {"w": dict(w, data_offsets=[0, 16])}, data[:16])
    elif case == "truncated":
        _raw_file(path, {"w": w}, data[:20])
    elif case == "hole":
        _raw_file(path, {"w": dict(w, shape=[3], data_offsets=[0, 12]),
                         "v": dict(w, shape=[2], data_offsets=[16, 24])}, data)
    elif case == "trailing":
        _raw_file(path, {"w": w}, data + bytes(4))
    elif case == "no_offsets":
        _raw_file(path, {"w": {"dtype": "F32", "shape": [2, 3]}}, data)
    with pytest.raises(SafetensorsError) as e:
        load_file(path)
    assert message in str(e.value) and str(path) in str(e.value)


# ------------------------------------------------------------------------------- model folders

def test_save_pretrained_then_from_pretrained_gives_identical_tensors_and_logits(tmp_path):
    model = tiny_gpt(seed=3)
    save_pretrained(model, TOK, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["n_embd"] == 32 and cfg["n_positions"] == 128 and cfg["model_type"] == "gpt2"
    assert cfg["activation_function"] == "gelu_new" and cfg["pad_token_id"] == 0
    names = set(read_header(tmp_path / "model.safetensors")[0])
    assert "transformer.h.0.attn.c_attn.weight" in names and "lm_head.weight" not in names
    back, tok = from_pretrained(tmp_path)
    assert back.state_dict().keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v)
    idx = TOK.encode_batch(["the movie was great.", "what is 2+3? answer 5."])
    np.testing.assert_array_equal(back(idx).data, model(idx).data)
    assert isinstance(tok, CharTokenizer) and tok.chars == TOK.chars


def _openai_style(model: GPT, folder, prefix: str, extras: bool) -> None:
    """A GPT-2 folder as other tools write it: config.json with GPT-2's fields, tensors named
    with or without ``transformer.``, plus the causal-mask buffers and an explicit tied head."""
    T = model.config.block_size
    tensors = {prefix + k: v for k, v in model.state_dict().items()}
    if extras:
        for i in range(model.config.n_layer):
            tensors[f"{prefix}h.{i}.attn.bias"] = np.tril(np.ones((T, T), np.float32))[None, None]
            tensors[f"{prefix}h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
        tensors["lm_head.weight"] = model.wte.weight.data.copy()
    folder.mkdir(exist_ok=True)
    save_file(folder / "model.safetensors", tensors)
    c = model.config
    (folder / "config.json").write_text(json.dumps({
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "n_ctx": T,
        "n_positions": T, "n_embd": c.n_embd, "n_head": c.n_head, "n_layer": c.n_layer,
        "vocab_size": c.vocab_size, "layer_norm_epsilon": 1e-05, "model_type": "gpt2",
        "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1, "bos_token_id": 2,
        "eos_token_id": 2}))


@pytest.mark.parametrize("prefix, extras", [("", True), ("transformer.", True),
                                            ("transformer.", False)])
def test_gpt2_checkpoints_in_the_hugging_face_layout_load(tmp_path, prefix, extras):
    model = tiny_gpt(seed=5)
    _openai_style(model, tmp_path / "gpt2", prefix, extras)
    back, tok = from_pretrained(tmp_path / "gpt2", tokenizer=False)
    assert tok is None
    idx = TOK.encode_batch(["the plot is dull."])
    np.testing.assert_array_equal(back(idx).data, model(idx).data)


def test_a_folder_that_does_not_fit_says_which_key(tmp_path):
    model = tiny_gpt()
    folder = tmp_path / "gpt2"
    _openai_style(model, folder, "", True)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(cfg, activation_function="relu")))
    with pytest.raises(PretrainedError, match="activation_function = 'relu'"):
        from_pretrained(folder, tokenizer=False)
    (folder / "config.json").write_text(json.dumps(dict(cfg, n_embd=64)))
    with pytest.raises(PretrainedError, match=r"wte.weight has shape \(49, 32\)"):
        from_pretrained(folder, tokenizer=False)
    (folder / "config.json").write_text(json.dumps(dict(cfg, n_layer=2)))
    with pytest.raises(PretrainedError, match=r"missing \['h.1.attn.c_attn.bias'"):
        from_pretrained(folder, tokenizer=False)
    (folder / "config.json").write_text(json.dumps(cfg))
    tensors = load_file(folder / "model.safetensors")
    save_file(folder / "model.safetensors", dict(tensors, **{"lm_head.weight": np.zeros(
        tensors["wte.weight"].shape, np.float32)}))
    with pytest.raises(PretrainedError, match="lm_head.weight differs from wte.weight"):
        from_pretrained(folder, tokenizer=False)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(PretrainedError, match="pickled PyTorch file"):
        from_pretrained(folder, tokenizer=False)
    with pytest.raises(PretrainedError, match="no config.json"):
        from_pretrained(tmp_path, tokenizer=False)


def test_reward_model_exports_with_its_gain_folded_and_its_offset_recorded(tmp_path):
    model = tiny_gpt(seed=2)
    model.add_scalar_head("reward", std=0.1)
    model.reward_head.bias.data[:] = 0.3
    rm = RewardModel(model, TOK, gain=1.7, bias=-0.4)
    save_reward_model(rm, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["architectures"] == ["GPT2ForSequenceClassification"] and cfg["num_labels"] == 1
    assert cfg["minirlhf_reward_offset"] == pytest.approx(1.7 * 0.3 - 0.4)
    tensors = load_file(tmp_path / "model.safetensors")
    assert tensors["score.weight"].shape == (1, 32) and "score.bias" not in tensors
    prompts, responses = ["the movie was"] * 3, [" great.", " dull and bad, very bad.", " ok"]
    ours = rm.score(prompts, responses)
    # what GPT2ForSequenceClassification computes: score(h) at each row's last non-pad token
    tokens, _ = rm.encode(prompts, responses)
    h = model.hidden(tokens).data  # (B, T, C)
    last = (tokens != TOK.pad_id).sum(axis=1) - 1
    hf = h[np.arange(3), last] @ tensors["score.weight"][0]
    np.testing.assert_allclose(hf + cfg["minirlhf_reward_offset"], ours, rtol=0, atol=1e-5)
    back = reward_model_from_pretrained(tmp_path)
    np.testing.assert_allclose(back.score(prompts, responses), ours, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="readout 'sum' has no Hugging Face counterpart"):
        save_reward_model(RewardModel(model, TOK, readout="sum"), tmp_path / "sum")


def _hf_encode(spec: dict, text: str, pair: str | None = None) -> list[int]:
    """What Hugging Face's fast tokenizer does with ``spec`` (a tokenizer.json), written out:
    the pre-tokenizer's regex splits the text into pieces, each piece is looked up in the
    model's vocabulary (a Unigram model's id is the piece's position; no unknown token), and the
    post-processor's template puts its special tokens around the sequences."""
    import re

    assert spec["pre_tokenizer"]["type"] == "Split"
    assert spec["pre_tokenizer"]["behavior"] == "Isolated" and not spec["pre_tokenizer"]["invert"]
    model = spec["model"]
    vocab = ({piece: i for i, (piece, _) in enumerate(model["vocab"])}
             if model["type"] == "Unigram" else model["vocab"])
    pattern = spec["pre_tokenizer"]["pattern"]["Regex"]
    seqs = {"A": [vocab[c] for c in re.findall(pattern, text)],
            "B": [vocab[c] for c in re.findall(pattern, pair or "")]}
    proc = spec["post_processor"]
    assert proc["type"] == "TemplateProcessing"
    ids: list[int] = []
    for piece in proc["single" if pair is None else "pair"]:
        ((kind, body),) = piece.items()
        assert set(body) == {"id", "type_id"}
        ids += (seqs[body["id"]] if kind == "Sequence" else
                proc["special_tokens"][body["id"]]["ids"])
    return ids


def test_tokenizer_json_reproduces_our_ids_and_reads_back():
    spec = tokenizer_json(TOK)
    pieces = [p for p, _ in spec["model"]["vocab"]]
    assert len(pieces) == TOK.vocab_size and pieces[:3] == ["<pad>", "<bos>", "<eos>"]
    assert [TOK.stoi[c] for c in pieces[3:]] == list(range(3, TOK.vocab_size))
    text = "the movie was great, 12+7=19!"
    assert _hf_encode(spec, text) == TOK.encode(text, bos=True)  # a policy's: BOS, no EOS
    assert char_tokenizer_from_json(spec, "x").chars == TOK.chars
    bad = json.loads(json.dumps(spec))
    bad["model"]["vocab"][2][0] = "<end>"
    with pytest.raises(PretrainedError, match="not a minirlhf character vocabulary"):
        char_tokenizer_from_json(bad, "x/tokenizer.json")
    # an earlier minirlhf's folder (a WordLevel vocabulary) still reads back
    old = dict(spec, model={"type": "WordLevel", "unk_token": "<unk>",
                            "vocab": {p: i for i, p in enumerate(pieces)}})
    assert char_tokenizer_from_json(old, "x").chars == TOK.chars


@pytest.mark.parametrize("reward", [False, True])
def test_tokenizer_json_names_no_missing_unknown_token_and_a_reward_model_appends_eos(
        tmp_path, reward):
    model = tiny_gpt(seed=3)
    if reward:
        model.add_scalar_head("reward")
        save_reward_model(RewardModel(model, TOK), tmp_path)
    else:
        save_pretrained(model, TOK, tmp_path)
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    vocab = [p for p, _ in spec["model"]["vocab"]]
    # no dangling <unk>: an unknown token, if the model names one, is in the vocabulary
    assert spec["model"]["type"] == "Unigram" and spec["model"]["unk_id"] is None
    assert "<unk>" not in json.dumps(spec)
    unk = spec["model"].get("unk_token")
    assert unk is None or unk in vocab
    assert [t["content"] for t in spec["added_tokens"]] == vocab[:3]
    single = [next(iter(p.values()))["id"] for p in spec["post_processor"]["single"]]
    assert single == (["<bos>", "A", "<eos>"] if reward else ["<bos>", "A"])
    for text in ("the movie was great.", "12+7=? i think 20. 19.", ""):
        ids = _hf_encode(spec, text)
        assert ids == TOK.encode(text, bos=True, eos=reward)
        assert (ids[-1] == TOK.eos_id) == reward
    prompt, response = "the film is", " dull, very dull."
    tokens, _ = encode_pairs(TOK, [prompt], [response], eos=reward)
    assert _hf_encode(spec, prompt, response) == tokens[0].tolist()  # pipeline's text_pair
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    # GPT-2 adds wte(token_type_ids) to its input: the tokenizer must not return them
    assert cfg["model_input_names"] == ["input_ids", "attention_mask"]
    assert (cfg["pad_token"], cfg["bos_token"], cfg["eos_token"]) == ("<pad>", "<bos>", "<eos>")
    if reward:
        config = json.loads((tmp_path / "config.json").read_text())
        assert config["problem_type"] == "regression"  # the pipeline returns the raw score


def test_generation_config_and_the_model_card(tmp_path):
    model = tiny_gpt(seed=5)
    about = {"stage": "dpo", "task": "reviews", "task_note": "short movie reviews",
             "settings": {"beta": 0.5, "init": "sft/model.npz"},
             "figures": [{"from": "the run's summary.json", "values": {"gold_reward": 1.25},
                          "ci95": {"gold_reward": [1.0, 1.5]}}]}
    save_pretrained(model, TOK, tmp_path / "policy", about)
    gen = json.loads((tmp_path / "policy" / "generation_config.json").read_text())
    assert gen == {"bos_token_id": TOK.bos_id, "eos_token_id": TOK.eos_id,
                   "pad_token_id": TOK.pad_id}
    card = (tmp_path / "policy" / "README.md").read_text()
    assert "GPT2LMHeadModel" in card and "`reviews`: short movie reviews" in card
    assert "Stage `dpo`" in card and "| `beta` | `0.5` |" in card
    assert "| `gold_reward` | 1.25 | [1, 1.5] |" in card
    model.add_scalar_head("reward")
    model.reward_head.bias.data[:] = 0.3
    rm = RewardModel(model, TOK, gain=2.0, bias=-0.1)
    save_reward_model(rm, tmp_path / "reward")
    assert json.loads((tmp_path / "reward" / "generation_config.json").read_text()) == gen
    card = (tmp_path / "reward" / "README.md").read_text()
    offset = json.loads((tmp_path / "reward" / "config.json").read_text())[
        "minirlhf_reward_offset"]
    assert "GPT2ForSequenceClassification" in card and 'pipeline("text-classification"' in card
    assert repr(offset) in card and "minirlhf_reward_offset" in card
    assert "Not recorded in the checkpoint." in card and "records no stage" in card


# ------------------------------------------------------------------------------- GPT-2's BPE

def small_bpe(words: list[str], n_merges: int) -> BPETokenizer:
    """A byte-level BPE trained inside the test: the 256 byte symbols, then the most frequent
    adjacent pair merged, n_merges times (ties broken by the pair itself), as GPT-2 was."""
    b2u = bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(b2u.values())}
    corpus = [[b2u[b] for b in chunk.encode()] for w in words for chunk in
              gpt2_pattern().findall(w)]
    merges = []
    for _ in range(n_merges):
        counts: dict[tuple[str, str], int] = {}
        for seq in corpus:
            for pair in zip(seq, seq[1:], strict=False):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = max(counts, key=lambda p: (counts[p], p))
        merges.append(best)
        vocab[best[0] + best[1]] = len(vocab)
        for k, seq in enumerate(corpus):
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            corpus[k] = out
    vocab["<|endoftext|>"] = len(vocab)
    return BPETokenizer(vocab, merges)


def test_bytes_to_unicode_is_gpt2s_table():
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord("A")] == "A" and table[32] == "\u0120" and table[10] == "\u010a"
    assert table[0] == "\u0100" and table[0xAD] == "\u0143" and table[0xFF] == "\xff"
    assert not any(c.isspace() for c in table.values())


@pytest.mark.parametrize("text, chunks", [
    ("Hello world!", ["Hello", " world", "!"]),
    ("I've been  there", ["I", "'ve", " been", " ", " there"]),
    ("they'll pay 1,234.50$", ["they", "'ll", " pay", " 1", ",", "234", ".", "50", "$"]),
    ("  lead\n\n tail  ", [" ", " lead", "\n\n", " tail", "  "]),
    ("naïve café 東京 ½", ["naïve", " café", " 東京", " ½"]),
    ("x\u3000y\x1c!z", ["x", "\u3000", "y", "\x1c!", "z"]),  # U+001C: not White_Space
    ("A's 'quoted'", ["A", "'s", " '", "quoted", "'"]),
])
def test_pre_tokenizer_splits_as_gpt2(text, chunks):
    """The expected chunks are those Hugging Face's ``tokenizers`` ByteLevel pre-tokenizer gave
    (GPT-2's regex), checked by hand; Python's own \\s would cut U+001C off the '!'."""
    assert gpt2_pattern().findall(text) == chunks


def test_bpe_merges_by_rank_and_round_trips_any_utf8():
    tok = small_bpe(["the cat sat on the mat", "the hat", "that thing"] * 5, n_merges=20)
    merges = sorted(tok.ranks, key=tok.ranks.get)
    assert merges[:5] == [("t", "h"), ("a", "t"), ("th", "e"), ("\u0120", "the"),
                          ("\u0120", "th")]
    assert tok.vocab_size == len(tok.encoder) == 256 + len(merges) + 1

    def pieces(text):
        return [tok.decoder[i] for i in tok.encode(text)]

    # " the": t+h (rank 0), then th+e (rank 2) before Ġ+th (rank 4), then Ġ+the (rank 3)
    assert pieces(" the") == ["\u0120the"]
    assert pieces("the mat") == ["the", "\u0120mat"] and pieces("thethe") == ["the", "the"]
    assert pieces("bat") == ["b", "at"]  # no merge for (b, at): stops there
    rng = np.random.default_rng(0)
    for _ in range(200):
        cps = rng.choice([rng.integers(32, 127), rng.integers(0, 0x3000),
                          rng.integers(0x1F300, 0x1F700)], size=rng.integers(0, 30))
        text = "".join(chr(int(c)) for c in cps if not 0xD800 <= c < 0xE000)
        assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode("abc", bos=True, eos=True)) == "<|endoftext|>abc<|endoftext|>"
    e_acute = tok.encode("é")  # two bytes, no merge for them in this vocabulary
    assert len(e_acute) == 2
    assert tok.decode(e_acute[:1]) == "\ufffd"  # half a character: U+FFFD, as GPT-2 does


def test_bpe_reads_both_file_layouts_and_names_bad_lines(tmp_path):
    tok = small_bpe(["hello hello help"], n_merges=5)
    merges = "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in
                                           sorted(tok.ranks, key=tok.ranks.get)) + "\n"
    for vocab_name, merges_name in (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")):
        folder = tmp_path / vocab_name
        folder.mkdir()
        (folder / vocab_name).write_text(json.dumps(tok.encoder))
        (folder / merges_name).write_text(merges)
        again = BPETokenizer.from_folder(folder)
        assert again.encode("hello help") == tok.encode("hello help")
    (folder / merges_name).write_text("#version: 0.2\nh e\nthree parts here\n")
    with pytest.raises(ValueError, match=r"vocab.bpe:3: a merge is two symbols"):
        BPETokenizer.from_folder(folder)
    with pytest.raises(FileNotFoundError, match="no GPT-2 tokenizer files"):
        BPETokenizer.from_folder(tmp_path)


def test_generate_stops_at_the_eos_id_it_is_given():
    model = tiny_gpt(seed=1)
    prompt = [TOK.encode("the", bos=True)]
    free = generate(model, prompt, 20, rng=np.random.default_rng(0), eos_id=None)
    assert free.response_mask.sum() == 20 and not free.finished[0]
    first = int(free.tokens[0, 4])  # the first sampled token, made the stop token
    stop = generate(model, prompt, 20, rng=np.random.default_rng(0), eos_id=first)
    assert stop.finished[0] and stop.response_mask.sum() == 1


def test_the_export_command_writes_a_policy_or_a_reward_model(tmp_path, capsys):
    from minirlhf.cli import main
    from minirlhf.lm.checkpoint import save_model

    model = tiny_gpt(seed=4)
    save_model(tmp_path / "policy.npz", model, TOK)
    assert main(["export", str(tmp_path / "policy.npz"), str(tmp_path / "hf_policy")]) == 0
    assert "GPT2LMHeadModel" in capsys.readouterr().out
    back, _ = from_pretrained(tmp_path / "hf_policy")
    idx = TOK.encode_batch(["the end."])
    np.testing.assert_array_equal(back(idx).data, model(idx).data)
    rm = RewardModel(tiny_gpt(seed=6), TOK, gain=2.0, bias=0.5)
    rm.save(tmp_path / "reward.npz")
    assert main(["export", str(tmp_path / "reward.npz"), str(tmp_path / "hf_rm")]) == 0
    assert "GPT2ForSequenceClassification" in capsys.readouterr().out
    assert json.loads((tmp_path / "hf_rm" / "config.json").read_text())["architectures"] == [
        "GPT2ForSequenceClassification"]
    assert main(["export", str(tmp_path / "missing.npz"), str(tmp_path / "x")]) == 2
    assert "missing.npz does not exist" in capsys.readouterr().err


def _snapshot(folder):
    """{relative path: bytes} of every file under ``folder`` (folders as None)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def test_export_refuses_a_folder_that_is_not_empty_unless_forced(tmp_path, capsys):
    from minirlhf.cli import main
    from minirlhf.lm.checkpoint import save_model

    save_model(tmp_path / "policy.npz", tiny_gpt(seed=4), TOK)
    out = tmp_path / "hf"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    (out / "config.json").write_text("{}\n")
    before = _snapshot(out)
    assert main(["export", str(tmp_path / "policy.npz"), str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "--force" in lines[0], lines
    assert lines[0].startswith("error: ") and captured.out == ""
    assert _snapshot(out) == before  # byte for byte
    (tmp_path / "afile").write_text("x")
    assert main(["export", str(tmp_path / "policy.npz"), str(tmp_path / "afile")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    # an empty folder is fine
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "policy.npz"), str(tmp_path / "empty")]) == 0


def test_export_force_removes_the_old_models_files_shards_included_and_nothing_else(
        tmp_path, capsys):
    from minirlhf.cli import main
    from minirlhf.lm.checkpoint import save_model

    model = tiny_gpt(seed=4)
    save_model(tmp_path / "policy.npz", model, TOK)
    out = tmp_path / "hf"
    out.mkdir()
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": shards[0], "b": shards[1], "c": "extra-shard.safetensors"}}))
    for name in [*shards, "extra-shard.safetensors", "model-00003-of-00003.safetensors",
                 "vocab.json", "merges.txt", "README.md", "generation_config.json",
                 "config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"]:
        (out / name).write_text("old")
    (out / "notes.txt").write_text("mine\n")
    (out / "other.safetensors").write_text("not the model's")
    (out / "sub").mkdir()
    (out / "sub" / "config.json").write_text("kept")
    assert main(["export", "--force", str(tmp_path / "policy.npz"), str(out)]) == 0
    assert "removed the previous model's 13 files" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert names == {"notes.txt", "other.safetensors", "sub", "config.json", "model.safetensors",
                     "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                     "generation_config.json", "README.md"}
    assert (out / "notes.txt").read_text() == "mine\n"
    assert (out / "sub" / "config.json").read_text() == "kept"
    assert (out / "other.safetensors").read_text() == "not the model's"
    back, _ = from_pretrained(out)
    idx = TOK.encode_batch(["the end."])
    np.testing.assert_array_equal(back(idx).data, model(idx).data)


def test_the_model_card_gives_the_runs_figures_only_for_the_very_file_the_run_made(
        tmp_path, capsys):
    from minirlhf.cli import main
    from minirlhf.lm.checkpoint import file_digest, save_model

    run = tmp_path / "run"
    (run / "sft").mkdir(parents=True)
    (run / "pipeline").mkdir()
    ckpt = run / "sft" / "model.npz"
    save_model(ckpt, tiny_gpt(seed=4), TOK, extra={
        "stage": "sft", "config": {"task": "reviews", "lr": 0.001, "steps": 300,
                                   "out_dir": "/somewhere/run/sft",
                                   "init": "/somewhere/run/pretrain/model.npz"}})
    (run / "pipeline" / "sft.json").write_text(json.dumps(
        {"stage": "sft", "outputs": {"sft/model.npz": file_digest(ckpt)}}))
    (run / "summary.json").write_text(json.dumps({"policies": {"sft": {
        "gold_reward": -0.125, "win_rate_vs_sft": 0.5, "ci95": {"gold_reward": [-0.5, 0.25]}}},
        "reward_model": {"accuracy": 0.75}}))
    assert main(["export", str(ckpt), str(tmp_path / "a")]) == 0
    card = (tmp_path / "a" / "README.md").read_text()
    assert "`reviews`: short movie reviews" in card and "Stage `sft`" in card
    assert "| `lr` | `0.001` |" in card and "| `init` | `\"pretrain/model.npz\"` |" in card
    assert "out_dir" not in card and "/somewhere" not in card
    assert "| `gold_reward` | -0.125 | [-0.5, 0.25] |" in card
    assert "accuracy" not in card
    # another file at the same place (retrained since): the run's figures are not its figures
    save_model(ckpt, tiny_gpt(seed=5), TOK, extra={"stage": "sft", "config": {"task": "reviews"}})
    assert main(["export", str(ckpt), str(tmp_path / "b")]) == 0
    card = (tmp_path / "b" / "README.md").read_text()
    assert "gold_reward" not in card and "record no figures" in card
    capsys.readouterr()
