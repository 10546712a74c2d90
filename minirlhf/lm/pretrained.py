"""Hugging Face's GPT-2 folders, both ways: load GPT-2 (any size) into our GPT, and save our
models so that ``transformers`` (and TRL, which builds on it) opens them.

A Hugging Face model folder holds

    config.json          the architecture, with GPT-2's field names (n_embd, n_layer, ...)
    model.safetensors    the weights, by GPT-2's tensor names (minirlhf.lm.safetensors)
    tokenizer.json, tokenizer_config.json, special_tokens_map.json     (our character tokenizer)
    or vocab.json + merges.txt, or tokenizer.json alone (transformers 5) (GPT-2's BPE)
    generation_config.json, README.md    (ours: EOS and PAD for generate; the model card)

``load_folder`` reads either kind of folder as ``load_model`` reads a model.npz (what every
stage's ``init=`` / ``reward_model=`` and the ``import`` command use).

Our GPT already uses GPT-2's parameter names and layouts (Conv1D weights stored (in, out),
the head tied to ``wte``), so the mapping is only a prefix: ``transformer.h.0.attn.c_attn.weight``
in ``GPT2LMHeadModel`` is our ``h.0.attn.c_attn.weight``. OpenAI's own GPT-2 upload has no
prefix and carries buffers we do not use (``h.0.attn.bias``, the causal mask; ``masked_bias``);
both forms load.

The reward model exports as ``GPT2ForSequenceClassification``: its ``score`` is a (1, C) weight
with no bias, read at each row's last non-padding token (our EOS read-out; its tokenizer appends
EOS to every text, so transformers' text-classification pipeline reads the right token). Our
normalised score is gain * (h . w + b) + bias, so ``score.weight = gain * w`` and the constant
``gain * b + bias`` has nowhere to go: a Hugging Face reward is ours minus that constant
(``minirlhf_reward_offset`` in config.json, stated in the model card; our loader adds it
back). A constant changes no comparison (Bradley-Terry, best-of-n, GRPO's group advantages,
whitened PPO advantages) but does shift the raw reward PPO adds to the KL penalty.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from minirlhf.files import (
    HF_ARCHITECTURES,
    folder_extra,
    has_gpt2_tokenizer_files,
    no_config_json,
    no_tokenizer,
    other_tokenizer,
    read_json,
)
from minirlhf.lm.bpe import BPETokenizer
from minirlhf.lm.checkpoint import atomic_write
from minirlhf.lm.model import GPT, GPTConfig
from minirlhf.lm.reward_model import RewardModel
from minirlhf.lm.safetensors import load_file, read_header, save_file
from minirlhf.lm.tokenizer import BOS, EOS, PAD, SPECIALS, CharTokenizer

PREFIX = "transformer."  # GPT2LMHeadModel's name for the trunk
BUFFERS = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers in older GPT-2 files
# config.json fields we cannot honour, with the value our architecture has
FIXED = {"activation_function": ("gelu_new", "gelu_pytorch_tanh"), "n_inner": (None,),
         "layer_norm_epsilon": (1e-5,), "scale_attn_weights": (True,),
         "scale_attn_by_inverse_layer_idx": (False,), "add_cross_attention": (False,),
         "tie_word_embeddings": (True,)}


class PretrainedError(ValueError):
    """A model folder that does not hold a GPT-2 this engine can run: names the file and key."""


def _write_json(path: Path, obj: Any) -> None:
    text = (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    atomic_write(path, lambda f: f.write(text))


# ---------------------------------------------------------------------------------- config

def hf_config(config: GPTConfig, architecture: str = "GPT2LMHeadModel",
              special_ids: tuple[int, int, int] | None = (PAD, BOS, EOS)) -> dict[str, Any]:
    """Our GPTConfig as GPT-2's config.json (dropout off: we train without it)."""
    out: dict[str, Any] = {
        "architectures": [architecture], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": config.block_size,
        "n_embd": config.n_embd, "n_layer": config.n_layer, "n_head": config.n_head,
        "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "initializer_range": 0.02,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "tie_word_embeddings": True, "use_cache": True, "torch_dtype": "float32",
    }
    if special_ids is not None:
        out["pad_token_id"], out["bos_token_id"], out["eos_token_id"] = special_ids
    return out


def config_from_hf(cfg: dict[str, Any], where: str = "config.json") -> GPTConfig:
    """GPT-2's config.json -> GPTConfig, refusing what our GPT does not implement."""
    if cfg.get("model_type", "gpt2") != "gpt2":
        raise PretrainedError(f"{where}: model_type {cfg.get('model_type')!r} is not gpt2")
    for key, allowed in FIXED.items():
        value = cfg.get(key, allowed[0])
        if key == "n_inner" and value == 4 * cfg.get("n_embd", 0):
            continue
        if value not in allowed:
            raise PretrainedError(f"{where}: {key} = {value!r}; this engine implements only "
                                  f"{' or '.join(map(repr, allowed))}")
    try:
        return GPTConfig(vocab_size=int(cfg["vocab_size"]),
                         block_size=int(cfg.get("n_positions", cfg.get("n_ctx", 1024))),
                         n_layer=int(cfg["n_layer"]), n_head=int(cfg["n_head"]),
                         n_embd=int(cfg["n_embd"]))
    except KeyError as e:
        raise PretrainedError(f"{where}: missing key {e.args[0]!r}") from None
    except ValueError as e:
        raise PretrainedError(f"{where}: {e}") from None


# ---------------------------------------------------------------------------------- weights

def _read_weights(folder: Path) -> dict[str, np.ndarray]:
    """model.safetensors, or the shards a model.safetensors.index.json lists."""
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.exists():
        return load_file(single)
    if index.exists():
        shards = sorted(set(read_json(index)["weight_map"].values()))
        out: dict[str, np.ndarray] = {}
        for shard in shards:
            out.update(load_file(folder / shard))
        return out
    if (folder / "pytorch_model.bin").exists():
        raise PretrainedError(f"{folder}: only pytorch_model.bin, a pickled PyTorch file, which "
                              "we do not read (unpickling runs code); save it as safetensors "
                              "first: model.save_pretrained(folder, safe_serialization=True)")
    raise PretrainedError(f"{folder}: no model.safetensors (nor a sharded index)")


def state_from_hf(tensors: dict[str, np.ndarray], config: GPTConfig, where: str
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Hugging Face GPT-2 tensors -> (our GPT's state dict, other tensors such as ``score``).
    Accepts names with or without ``transformer.``; drops the causal-mask buffers; a separate
    ``lm_head.weight`` must equal ``wte.weight`` (GPT-2 ties them, and so do we)."""
    state, other = {}, {}
    # exercise hf-names: for each (name, value) of ``tensors``: drop the prefix PREFIX if present,
    # skip the buffers (names ending with one of BUFFERS), put the trunk's tensors (wte., wpe.,
    # h., ln_f.) in ``state`` and every other tensor in ``other``, both keyed by the short name
    ### BEGIN SOLUTION
    for name, value in tensors.items():
        short = name[len(PREFIX):] if name.startswith(PREFIX) else name
        if short.endswith(BUFFERS):
            continue
        if short.startswith(("wte.", "wpe.", "h.", "ln_f.")):
            state[short] = value
        else:
            other[short] = value
    ### END SOLUTION
    head = other.pop("lm_head.weight", None)
    if head is not None and not np.array_equal(head, state.get("wte.weight")):
        raise PretrainedError(f"{where}: lm_head.weight differs from wte.weight; this engine "
                              "ties the output head to the token embedding, as GPT-2 does")
    expected = _expected_shapes(config)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise PretrainedError(f"{where}: tensors do not match config.json: missing {missing[:6]}"
                              f"{' ...' if len(missing) > 6 else ''}, unexpected "
                              f"{unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}")
    for name, shape in expected.items():
        if state[name].shape != shape:
            raise PretrainedError(f"{where}: tensor {name} has shape {state[name].shape}; "
                                  f"config.json implies {shape}")
    return state, other


def _expected_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter of a GPT with ``config``, by name, with its shape."""
    C, V = config.n_embd, config.vocab_size
    shapes = {"wte.weight": (V, C), "wpe.weight": (config.block_size, C),
              "ln_f.weight": (C,), "ln_f.bias": (C,)}
    for i in range(config.n_layer):
        for name, shape in (("ln_1.weight", (C,)), ("ln_1.bias", (C,)),
                            ("attn.c_attn.weight", (C, 3 * C)), ("attn.c_attn.bias", (3 * C,)),
                            ("attn.c_proj.weight", (C, C)), ("attn.c_proj.bias", (C,)),
                            ("ln_2.weight", (C,)), ("ln_2.bias", (C,)),
                            ("mlp.c_fc.weight", (C, 4 * C)), ("mlp.c_fc.bias", (4 * C,)),
                            ("mlp.c_proj.weight", (4 * C, C)), ("mlp.c_proj.bias", (C,))):
            shapes[f"h.{i}.{name}"] = shape
    return shapes


def _trunk(model: GPT) -> dict[str, np.ndarray]:
    """Our GPT's parameters under GPT2LMHeadModel's names (the scalar heads left out)."""
    return {PREFIX + name: value for name, value in model.state_dict().items()
            if not name.split(".")[0].endswith("_head")}


# ---------------------------------------------------------------------------------- tokenizer

def _template(eos: bool) -> dict[str, Any]:
    """The post-processor: BOS before the text, and EOS after it when ``eos`` (a reward model,
    whose score is read at EOS). A pair of texts (prompt, response) is joined as one."""
    bos_tok, eos_tok = SPECIALS[BOS], SPECIALS[EOS]
    head = [{"SpecialToken": {"id": bos_tok, "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}}]
    pair = [*head, {"Sequence": {"id": "B", "type_id": 1}}]
    specials = {bos_tok: {"id": bos_tok, "ids": [BOS], "tokens": [bos_tok]}}
    if eos:
        head = [*head, {"SpecialToken": {"id": eos_tok, "type_id": 0}}]
        pair = [*pair, {"SpecialToken": {"id": eos_tok, "type_id": 1}}]
        specials[eos_tok] = {"id": eos_tok, "ids": [EOS], "tokens": [eos_tok]}
    return {"type": "TemplateProcessing", "single": head, "pair": pair,
            "special_tokens": specials}


def tokenizer_json(tokenizer: CharTokenizer, eos: bool = False) -> dict[str, Any]:
    """Our character tokenizer as a Hugging Face fast-tokenizer file: the pre-tokenizer splits
    the text into characters, each looked up in a vocabulary of single characters with ids equal
    to ours; the post-processor prepends BOS (and appends EOS when ``eos``: a reward model).

    The vocabulary is a ``Unigram`` model with no unknown token (``unk_id`` null): as our own
    tokenizer, it refuses a character outside the alphabet ("Encountered an unknown token")
    rather than mapping it to a token the model never saw. (A ``WordLevel`` model must name an
    unknown token, and our vocabulary has none to name.) Every piece is one character, so the
    scores (all 0) never choose between segmentations."""
    vocab = [*SPECIALS, *tokenizer.chars]  # id = position, as ours
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": s, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for i, s in enumerate(SPECIALS)],
        "normalizer": None,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "."}, "behavior": "Isolated",
                          "invert": False},
        "post_processor": _template(eos),
        "decoder": {"type": "Fuse"},
        "model": {"type": "Unigram", "unk_id": None, "vocab": [[s, 0.0] for s in vocab],
                  "byte_fallback": False},
    }


def char_tokenizer_from_json(spec: dict[str, Any], where: str) -> CharTokenizer:
    """Read back a tokenizer.json written by ``tokenizer_json`` (or by an earlier minirlhf, whose
    vocabulary was a ``WordLevel`` model)."""
    model = spec.get("model", {})
    if model.get("type") == "Unigram":
        pieces = model.get("vocab", [])
        vocab = {p[0]: i for i, p in enumerate(pieces) if isinstance(p, list) and p}
        if len(vocab) != len(pieces):
            vocab = {}
    else:
        vocab = model.get("vocab", {})
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))) or \
            tuple(s for s, _ in by_id[:len(SPECIALS)]) != SPECIALS:
        raise PretrainedError(f"{where}: not a minirlhf character vocabulary (ids 0.."
                              f"{len(SPECIALS) - 1} must be {', '.join(SPECIALS)}, then one "
                              "character per id)")
    chars = [s for s, _ in by_id[len(SPECIALS):]]
    if any(len(c) != 1 for c in chars):
        raise PretrainedError(f"{where}: a vocabulary with multi-character words")
    return CharTokenizer("".join(chars))


def save_tokenizer(tokenizer: CharTokenizer, folder: str | Path, max_length: int,
                   eos: bool = False) -> None:
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json for ``folder``
    (``eos``: the tokenizer appends EOS to every text, for a reward model). The tokenizer
    returns input_ids and attention_mask only: GPT-2 adds the embedding of any token_type_ids
    it is given to every position, which our models never saw."""
    folder = Path(folder)
    pad, bos, eos_tok = SPECIALS
    _write_json(folder / "tokenizer.json", tokenizer_json(tokenizer, eos))
    _write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length,
        "pad_token": pad, "bos_token": bos, "eos_token": eos_tok, "padding_side": "right",
        "model_input_names": ["input_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False})
    _write_json(folder / "special_tokens_map.json",
                {"pad_token": pad, "bos_token": bos, "eos_token": eos_tok})


def bpe_from_json(spec: dict[str, Any], where: str) -> BPETokenizer:
    """GPT-2's BPE from a tokenizer.json's ``model`` (type BPE): ``vocab`` (symbol -> id) and
    ``merges``, best first, either as "a b" strings (transformers 4) or as [a, b] pairs
    (transformers 5, which writes no vocab.json / merges.txt beside it)."""
    model = spec.get("model", {})
    vocab, merges = model.get("vocab"), model.get("merges")
    if not isinstance(vocab, dict) or not isinstance(merges, list):
        raise PretrainedError(f"{where}: a BPE model needs model.vocab (an object) and "
                              "model.merges (a list)")
    pairs = []
    for k, merge in enumerate(merges):
        pair = merge.split(" ") if isinstance(merge, str) else merge
        if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(x, str)
                                                                    for x in pair):
            raise PretrainedError(f"{where}: model.merges[{k}] = {merge!r} is not two symbols "
                                  '("a b" or ["a", "b"])')
        pairs.append((pair[0], pair[1]))
    for token in spec.get("added_tokens", []):  # <|endoftext|>, when only listed there
        vocab.setdefault(token.get("content"), token.get("id"))
    try:
        return BPETokenizer(vocab, pairs)
    except ValueError as e:
        raise PretrainedError(f"{where}: {e}") from None


def load_tokenizer(folder: str | Path) -> CharTokenizer | BPETokenizer:
    """Our character tokenizer (tokenizer.json of word-level kind) or GPT-2's BPE: from
    tokenizer.json alone (its model.vocab and model.merges, as transformers 5 writes it), else
    from vocab.json + merges.txt."""
    folder = Path(folder)
    path = folder / "tokenizer.json"
    if path.exists():
        spec = read_json(path)
        kind = spec.get("model", {}).get("type")
        if kind in ("Unigram", "WordLevel"):
            return char_tokenizer_from_json(spec, str(path))
        if kind == "BPE":
            return bpe_from_json(spec, str(path))
        raise ValueError(other_tokenizer(path, kind))
    if not has_gpt2_tokenizer_files(folder):
        raise FileNotFoundError(no_tokenizer(folder))
    return BPETokenizer.from_folder(folder)


# ---------------------------------------------------------------------------------- the folder

# The files a model folder of ours, or of GPT-2 in the Hugging Face layout, consists of; the
# weights may also be shards named by model.safetensors.index.json (SHARD, their usual names).
MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json",
               "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "vocab.json", "merges.txt", "generation_config.json", "README.md")
SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


def model_files(folder: str | Path) -> list[Path]:
    """The files of the model in ``folder`` (see MODEL_FILES), its shards included: what
    ``export --force`` removes before writing. Nothing else in the folder is listed."""
    folder = Path(folder)
    names = set(MODEL_FILES)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
            names.update(Path(v).name for v in weight_map.values() if isinstance(v, str))
        except (ValueError, AttributeError, UnicodeDecodeError):
            pass  # an unreadable index: the shards are still found by their names
    return sorted(p for p in folder.iterdir() if p.is_file() and
                  (p.name in names or SHARD.fullmatch(p.name)))


def generation_config(pad: int = PAD, bos: int = BOS, eos: int = EOS) -> dict[str, Any]:
    """generation_config.json: transformers' ``generate`` stops at EOS and pads with PAD."""
    return {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad}


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def model_card(title: str, lines: list[str], about: dict[str, Any] | None) -> str:
    """README.md: ``title``, what the folder is and how to use it (``lines``), then what
    ``about`` records: ``task`` and ``task_note``, the ``stage`` and its ``settings``, and
    ``figures`` (a list of {"from": where, "values": {name: number}, "ci95": {name: [lo, hi]}}).
    No dates or timings: the same checkpoint gives the same card."""
    about = about or {}
    out = [f"# {title}", "", *lines, ""]
    task, stage = about.get("task"), about.get("stage")
    out += ["## Task", ""]
    out += [f"`{task}`" + (f": {about['task_note']}" if about.get("task_note") else "") + "."
            if task else "Not recorded in the checkpoint.", ""]
    out += ["## Training", ""]
    if stage:
        out += [f"Stage `{stage}` of minirlhf, with these settings:", "",
                "| setting | value |", "|---|---|"]
        out += [f"| `{k}` | `{json.dumps(v)}` |"
                for k, v in sorted(about.get("settings", {}).items())]
    else:
        out += ["The checkpoint records no stage or settings."]
    out += ["", "## Figures", ""]
    figures = about.get("figures") or []
    if not figures:
        out += ["The checkpoint and its run folder record no figures for it."]
    for fig in figures:
        ci = fig.get("ci95", {})
        out += [f"From {fig['from']}:", "", "| figure | value | 95% interval |", "|---|---:|---|"]
        out += [f"| `{k}` | {_fmt(v)} | "
                + (f"[{_fmt(ci[k][0])}, {_fmt(ci[k][1])}]"
                   if isinstance(ci.get(k), list) and len(ci[k]) == 2 else "") + " |"
                for k, v in fig["values"].items()]
        out += [""]
    return "\n".join(out).rstrip() + "\n"


def _write_text(path: Path, text: str) -> None:
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


# ---------------------------------------------------------------------------------- the API

def provenance(extra: dict[str, Any] | None) -> dict[str, Any]:
    """What config.json keeps (under ``minirlhf``) of a checkpoint's making: its stage and its
    task, so that a stage given the folder checks them as it checks a model.npz's."""
    extra = extra or {}
    made = {"stage": extra.get("stage"), "task": (extra.get("config") or {}).get("task")}
    return {k: v for k, v in made.items() if v}


def _shape_words(c: GPTConfig, tokenizer: CharTokenizer) -> str:
    """A model card's words for the model's shape and its tokens (its characters quoted, so a
    space shows; in a code span that a backtick among them does not end)."""
    chars = json.dumps(tokenizer.chars, ensure_ascii=False)
    span = f"`` {chars} ``" if "`" in chars else f"`{chars}`"
    return (f"{c.n_layer} layer{'s' * (c.n_layer != 1)}, {c.n_head} head"
            f"{'s' * (c.n_head != 1)}, width {c.n_embd}, context {c.block_size} tokens, one "
            f"token per character ({c.vocab_size} tokens: `<pad>` 0, `<bos>` 1, `<eos>` 2, then "
            f"one for each of the {len(tokenizer.chars)} characters of {span}; any other "
            "character is unknown to it)")


def save_pretrained(model: GPT, tokenizer: CharTokenizer, folder: str | Path,
                    about: dict[str, Any] | None = None, *,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (its language model; scalar heads are not part of one) and ``tokenizer``
    as a Hugging Face GPT2LMHeadModel folder, with generation_config.json and a README.md model
    card (``about``: what ``model_card`` reads); ``extra`` (a checkpoint's) gives its stage and
    task to config.json. Returns the folder."""
    folder = Path(folder)
    save_file(folder / "model.safetensors", _trunk(model),
              metadata={"format": "pt", "written_by": "minirlhf"})
    _write_json(folder / "config.json", {**hf_config(model.config),
                                         "minirlhf": provenance(extra)})
    save_tokenizer(tokenizer, folder, model.config.block_size)
    _write_json(folder / "generation_config.json", generation_config())
    c = model.config
    _write_text(folder / "README.md", model_card("A minirlhf policy", [
        f"A GPT-2-shaped language model trained with minirlhf (RLHF from scratch in NumPy), "
        f"exported as `GPT2LMHeadModel`: {model.num_parameters():,} parameters, "
        f"{_shape_words(c, tokenizer)}.",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        'model = AutoModelForCausalLM.from_pretrained("FOLDER")',
        'tok = AutoTokenizer.from_pretrained("FOLDER")  # prepends <bos>',
        'ids = tok("the movie was", return_tensors="pt")',
        "out = model.generate(**ids, do_sample=True, max_new_tokens=80)  # stops at <eos>",
        "print(tok.decode(out[0], skip_special_tokens=True))",
        "```",
        "",
        "The tokenizer knows only the alphabet: another character is an error, as in minirlhf.",
    ], about))
    return folder


def _load(folder: Path) -> tuple[GPT, dict[str, np.ndarray], dict[str, Any]]:
    path = folder / "config.json"
    if not path.exists():
        raise PretrainedError(f"{folder}: no config.json (is it a Hugging Face model folder?)")
    cfg = read_json(path)
    config = config_from_hf(cfg, str(path))
    state, other = state_from_hf(_read_weights(folder), config, str(folder))
    model = GPT(config)
    model.load_state_dict(state)
    return model, other, cfg


def from_pretrained(folder: str | Path, tokenizer: bool = True
                    ) -> tuple[GPT, CharTokenizer | BPETokenizer | None]:
    """(GPT, tokenizer) from a GPT-2 folder in the Hugging Face layout: the real GPT-2 (any
    size) or one ``save_pretrained`` wrote. ``tokenizer=False`` skips the tokenizer (and
    returns None for it)."""
    folder = Path(folder)
    tok = load_tokenizer(folder) if tokenizer else None  # before the weights: the quick check
    model, other, _ = _load(folder)
    if other:
        print(f"from_pretrained: {folder} also holds {sorted(other)[:4]}, not part of a "
              "language model (ignored)")
    return model, tok


def save_reward_model(rm: RewardModel, folder: str | Path,
                      about: dict[str, Any] | None = None, *,
                      extra: dict[str, Any] | None = None) -> Path:
    """``rm`` as a GPT2ForSequenceClassification folder (num_labels 1, its score read at the
    last non-padding token, our EOS read-out, which its tokenizer appends), with
    generation_config.json and a README.md model card (``about``: what ``model_card`` reads).
    See the module docstring for the offset."""
    if rm.readout != "eos":
        raise ValueError(f"save_reward_model: readout {rm.readout!r} has no Hugging Face "
                         "counterpart (GPT2ForSequenceClassification reads one token)")
    head = rm.model.reward_head  # weight (C, 1), bias (1,); rm.gain and rm.bias are floats
    # exercise reward-export: set ``score``, the (1, C) float32 weight of
    # GPT2ForSequenceClassification, and ``offset``, the float such that rm's normalised score =
    # h . score[0] + offset
    ### BEGIN SOLUTION
    score = (rm.gain * head.weight.data[:, 0])[None, :].astype(np.float32)  # (1, C)
    offset = float(rm.gain * float(head.bias.data[0]) + rm.bias)
    ### END SOLUTION
    folder = Path(folder)
    save_file(folder / "model.safetensors", {**_trunk(rm.model), "score.weight": score},
              metadata={"format": "pt", "written_by": "minirlhf"})
    cfg = hf_config(rm.model.config, "GPT2ForSequenceClassification")
    # problem_type "regression": transformers' text-classification pipeline then returns the
    # raw score (with one label and no problem type it would apply a sigmoid)
    cfg.update(num_labels=1, id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0},
               problem_type="regression", minirlhf_reward_offset=offset,
               minirlhf=provenance({"stage": "reward", **(extra or {})}))
    _write_json(folder / "config.json", cfg)
    save_tokenizer(rm.tokenizer, folder, rm.model.config.block_size, eos=True)
    _write_json(folder / "generation_config.json", generation_config())
    c = rm.model.config
    _write_text(folder / "README.md", model_card("A minirlhf reward model", [
        f"A reward model trained with minirlhf (RLHF from scratch in NumPy), exported as "
        f"`GPT2ForSequenceClassification` with one label: {rm.model.num_parameters():,} "
        f"parameters, {_shape_words(c, rm.tokenizer)}.",
        "",
        "```python",
        "from transformers import pipeline",
        'rm = pipeline("text-classification", model="FOLDER")',
        'rm("the movie was great.")  # or rm({"text": prompt, "text_pair": response})',
        "```",
        "",
        "The tokenizer puts `<bos>` before the text and `<eos>` after it, and the score is read "
        "at that `<eos>`, as minirlhf reads it; the text is the prompt followed by the response. "
        "The pipeline returns the raw score (`problem_type` is `regression`, so no sigmoid).",
        "",
        f"**Offset.** The score is minirlhf's reward minus a constant, {offset!r} "
        "(`minirlhf_reward_offset` in config.json): `score` has no bias to hold it. Add it back "
        "for minirlhf's figures; rankings, best-of-n and Bradley-Terry probabilities do not "
        "change, PPO's raw reward does. The tokenizer knows only the alphabet: another "
        "character is an error, as in minirlhf.",
    ], about))
    return folder


def reward_model_from_pretrained(folder: str | Path) -> RewardModel:
    """A RewardModel from a GPT2ForSequenceClassification folder with one label: the head's
    weight is ``score``, its bias 0, gain 1, and the bias ``minirlhf_reward_offset`` (0 for a
    folder we did not write)."""
    folder = Path(folder)
    tok = load_tokenizer(folder)  # before the weights: the quick check
    if not isinstance(tok, CharTokenizer):
        raise PretrainedError(f"{folder}: a minirlhf reward model reads characters; this "
                              "folder's tokenizer is GPT-2's BPE")
    model, other, cfg = _load(folder)
    score = other.pop("score.weight", None)
    if score is None or score.shape != (1, model.config.n_embd):
        raise PretrainedError(f"{folder}: a reward model needs score.weight of shape "
                              f"(1, {model.config.n_embd}); found "
                              f"{None if score is None else score.shape}")
    model.add_scalar_head("reward")
    model.reward_head.weight.data = score.T.astype(np.float32).copy()
    return RewardModel(model, tok, gain=1.0, bias=float(cfg.get("minirlhf_reward_offset", 0.0)))


def load_folder(folder: str | Path) -> tuple[GPT, CharTokenizer | BPETokenizer, dict[str, Any]]:
    """(model, tokenizer, extra) from a Hugging Face folder, as ``load_model`` gives them from a
    model.npz: a GPT2ForSequenceClassification folder is a reward model (a GPT with a reward
    head; ``extra`` holds its gain 1, bias the offset and the EOS read-out), any other GPT-2
    folder a policy. ``extra`` also keeps the stage and task ``export`` recorded, and the
    folder it came from (``hugging_face``)."""
    folder = Path(folder)
    path = folder / "config.json"
    if not path.exists():
        raise PretrainedError(no_config_json(folder))
    cfg = read_json(path)
    arch = (cfg.get("architectures") or ["GPT2LMHeadModel"])[0]
    if cfg.get("model_type", "gpt2") == "gpt2" and arch not in HF_ARCHITECTURES:
        raise PretrainedError(f"{folder}: a Hugging Face {arch}; minirlhf reads "
                              "GPT2LMHeadModel or GPT2Model (a policy) and "
                              "GPT2ForSequenceClassification (a reward model)")
    extra = folder_extra(cfg, folder)
    if arch == "GPT2ForSequenceClassification":
        rm = reward_model_from_pretrained(folder)
        extra.update(stage=extra.get("stage", "reward"), gain=rm.gain, bias=rm.bias,
                     readout=rm.readout)
        return rm.model, rm.tokenizer, extra
    model, tokenizer = from_pretrained(folder)
    return model, tokenizer, extra


def import_folder(folder: str | Path, out: str | Path, force: bool = False
                  ) -> tuple[Path, str, GPT]:
    """A Hugging Face folder saved as a minirlhf checkpoint: ``out`` itself when it ends in .npz,
    else ``out``/model.npz (a stage's folder), which must not exist yet unless ``force``.
    Returns (the checkpoint's path, what it holds, the model). Only a folder with our character
    tokenizer imports: a checkpoint keeps a character tokenizer (a BPE folder is read with
    ``from_pretrained`` in Python)."""
    from minirlhf.lm.checkpoint import save_model

    out = Path(out)
    path = out if out.suffix == ".npz" else out / "model.npz"
    folder = Path(folder)
    ours = folder if folder.suffix == ".npz" else folder / "model.npz"
    if not folder.is_dir():
        raise PretrainedError(f"{folder}: " + (
            "a file, not a Hugging Face model folder" + (
                " (a minirlhf checkpoint: it needs no import)" if ours == folder else "")
            if folder.exists() else "no such folder"))
    if not (folder / "config.json").exists() and ours.is_file():
        raise PretrainedError(f"{folder}: a folder of a minirlhf run, not a Hugging Face one: "
                              f"its checkpoint {ours} needs no import (the export command "
                              "makes a Hugging Face folder of it)")
    if path.is_dir():
        raise PretrainedError(f"{path} is a folder: give a .npz file, or a folder for "
                              "FOLDER/model.npz")
    if path.exists() and not force:
        raise PretrainedError(f"{path} exists already: give another OUT, or --force to replace "
                              "it")
    model, tokenizer, extra = load_folder(folder)
    if not isinstance(tokenizer, CharTokenizer):
        raise PretrainedError(f"{folder}: its tokenizer is GPT-2's BPE; a minirlhf checkpoint "
                              "keeps a character tokenizer (read this folder in Python with "
                              "minirlhf.lm.pretrained.from_pretrained)")
    save_model(path, model, tokenizer, extra)
    kind = "a reward model" if "reward_head" in model.scalar_heads else "a policy"
    return path, kind, model


def describe(folder: str | Path) -> str:
    """One line per tensor of a folder's weights (name, dtype, shape), without loading them."""
    header, _, _ = read_header(Path(folder) / "model.safetensors")
    return "\n".join(f"{name:40s} {e['dtype']:5s} {tuple(e['shape'])}"
                     for name, e in sorted(header.items()))
