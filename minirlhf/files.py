"""Files a run writes and reads: written whole or not at all, and a checkpoint's label.

A file is written to a temporary name in its folder, flushed to disk and renamed over the old
name (``atomic_write``), so it is either the old file or the new one, never half of each. A
stage's files are one change too (``held_writes``): inside a stage each file waits under its
temporary name, and all are moved into place when the stage ends; a stage that fails (a refused
checkpoint, a NaN, Ctrl-C) leaves every file as it was.

``read_meta`` reads a checkpoint's metadata alone (of a Hugging Face model folder too:
``folder_meta``), which is what a stage checks of each input
before any work (``minirlhf.config.check_checkpoints``); ``what_file`` says what a file that is
not a checkpoint holds (a text file, an empty one, a cut-off archive), for the error.

``read_json`` is the one reader of the JSON files a run keeps (records, results, caches, a
stage's summary): a bad one is an ``InputError`` naming the file and the line. ``read_cache``
reads a file whose content can be made again (a cached point, a finished job's record): a bad
one is a warning naming file and line, and the work is done again.

This module imports nothing from the rest of the package: every floor may use it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

META_KEY = "__meta__"


class CheckpointError(Exception):
    """A checkpoint file is missing, truncated, or fails its checksum."""


class InputError(ValueError):
    """An input file (a corpus, a preference file, a record, a results file) is unusable; the
    message names the file and the line, and what is wrong with it."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# The files of the stages running now, innermost last: (temporary file, its real name) each,
# moved into place when the stage ends (see ``held_writes``).
_HELD: list[list[tuple[str, Path]]] = []


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temporary file, then rename it to ``path`` atomically (inside
    ``held_writes``: when the stage ends). The file gets the permissions any new file would
    (0644 under the usual umask), not mkstemp's 0600, so the others who read a run folder can
    read all of it."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path.absolute()}: a folder has that name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if _HELD:
            _HELD[-1].append((tmp, path))
        else:
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def held_writes() -> Iterator[None]:
    """All or nothing for the files written inside (every stage's entry point is wrapped in
    it): each ``atomic_write`` keeps its temporary file, and they are all moved into place when
    the block ends, after the checkpoint was accepted and every other output was made. If the
    block fails, the temporary files are deleted and every file is as it was (a refused
    checkpoint never leaves a new metrics.jsonl beside the old model.npz)."""
    held: list[tuple[str, Path]] = []
    _HELD.append(held)
    try:
        yield
    except BaseException:
        for tmp, _ in held:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise
    finally:
        _HELD.pop()  # this block's own list (blocks nest: an experiment runs stages)
    for tmp, path in held:
        os.replace(tmp, path)


def read_meta(path: str | Path) -> dict[str, Any]:
    """A checkpoint's metadata alone (kind, heads, tokenizer, extra), without loading or
    checking its arrays: what a stage reads of each input before any work. CheckpointError
    naming the file when it cannot be read."""
    path = Path(path)
    if path.is_dir():
        return folder_meta(path)
    try:
        z = np.load(path, allow_pickle=False)
        try:
            if not hasattr(z, "files"):  # a .npy: one array
                raise CheckpointError(f"checkpoint {path} cannot be read as a checkpoint: it "
                                      f"is {what_file(path)}")
            if META_KEY not in z.files:  # a plain .npz
                raise CheckpointError(f"checkpoint {path} has no metadata: not a minirlhf "
                                      "checkpoint")
            return json.loads(z[META_KEY].tobytes().decode())
        finally:
            if hasattr(z, "close"):
                z.close()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise CheckpointError(f"checkpoint {path} cannot be read as a checkpoint: it is "
                              f"{what_file(path)}") from None


# A Hugging Face GPT-2 folder's architecture (config.json) -> the scalar heads our GPT gets
HF_ARCHITECTURES = {"GPT2LMHeadModel": [], "GPT2Model": [],
                    "GPT2ForSequenceClassification": ["reward_head"]}


# GPT-2's tokenizer as two files: Hugging Face's names, then OpenAI's
GPT2_TOKENIZER_FILES = (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe"))


def has_gpt2_tokenizer_files(folder: Path) -> bool:
    """Whether ``folder`` holds GPT-2's tokenizer as two files (``GPT2_TOKENIZER_FILES``)."""
    return any((folder / a).is_file() and (folder / b).is_file() for a, b in GPT2_TOKENIZER_FILES)


def no_tokenizer(folder: Path) -> str:
    """The error of a model folder with no tokenizer file."""
    return (f"{folder}: no tokenizer: neither tokenizer.json (as `export` writes it) nor GPT-2's "
            "vocab.json + merges.txt")


def other_tokenizer(path: Path, kind: Any) -> str:
    """The error of a tokenizer.json of a kind minirlhf does not read."""
    return (f"{path}: a tokenizer of kind {kind!r}, neither ours (characters, as `export` writes "
            "it) nor GPT-2's BPE")


def folder_extra(cfg: dict[str, Any], folder: str | Path) -> dict[str, Any]:
    """A Hugging Face folder's ``extra``, as a checkpoint's metadata holds it: the folder it
    came from (``hugging_face``), and the stage and task our ``export`` kept in config.json
    (under ``minirlhf``) when it wrote the folder."""
    made = cfg.get("minirlhf") if isinstance(cfg.get("minirlhf"), dict) else {}
    extra: dict[str, Any] = {"hugging_face": str(folder)}
    if made.get("stage"):
        extra["stage"] = made["stage"]
    if made.get("task"):
        extra["config"] = {"task": made["task"]}
    return extra


def no_config_json(folder: Path) -> str:
    """What a folder given as a model, without config.json, is: a stage's folder names its
    model.npz."""
    inside = folder / "model.npz"
    return (f"checkpoint {folder.absolute()} is a folder without config.json: neither a "
            "checkpoint file nor a Hugging Face model folder"
            + (f"; the checkpoint in it is {inside.absolute()}" if inside.is_file() else ""))


def folder_meta(folder: str | Path) -> dict[str, Any]:
    """A Hugging Face model folder's config.json (and tokenizer.json) read as a checkpoint's
    metadata, without loading its weights: kind "gpt" with a reward head for
    GPT2ForSequenceClassification (a reward model) and none for GPT2LMHeadModel (a policy);
    another architecture's name as its kind. ``tokenizer`` is our character tokenizer's JSON
    (as ``CharTokenizer.to_json`` writes it) for a word-level tokenizer.json of characters, so
    that a folder and a checkpoint made with one tokenizer compare equal; ``hf_tokenizer`` says
    which kind it is ("char" or "bpe"). ``extra`` holds what ``export`` recorded of the model's
    making (its stage and task) under config.json's ``minirlhf``."""
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(no_config_json(folder))
    try:
        cfg = read_json(path)
    except InputError as e:
        raise CheckpointError(f"checkpoint {folder}: {e}") from None
    arch = (cfg.get("architectures") or ["GPT2LMHeadModel"])[0]
    if cfg.get("model_type", "gpt2") != "gpt2" or arch not in HF_ARCHITECTURES:
        return {"kind": f"Hugging Face {arch} (model_type {cfg.get('model_type')!r})"}
    extra = folder_extra(cfg, folder)
    config = {"vocab_size": cfg.get("vocab_size"),
              "block_size": cfg.get("n_positions", cfg.get("n_ctx")),
              "n_layer": cfg.get("n_layer"), "n_head": cfg.get("n_head"),
              "n_embd": cfg.get("n_embd")}
    tokenizer, kind = None, None
    spec_path = folder / "tokenizer.json"
    if spec_path.is_file():
        try:
            model = read_json(spec_path).get("model", {})
        except InputError as e:
            raise CheckpointError(f"checkpoint {folder}: {e}") from None
        if model.get("type") == "BPE":
            kind = "bpe"
        elif model.get("type") in ("Unigram", "WordLevel"):  # ours (WordLevel: an older export)
            vocab = model.get("vocab", {})
            if model.get("type") == "Unigram":  # [[piece, score], ...] in id order
                vocab = {p[0]: i for i, p in enumerate(vocab) if isinstance(p, list) and p}
            by_id = sorted(vocab.items(), key=lambda kv: kv[1])
            specials = [s for s, _ in by_id if s.startswith("<") and len(s) > 1]
            chars = "".join(s for s, _ in by_id[len(specials):])
            tokenizer = json.dumps({"type": "char", "chars": chars, "specials": specials})
            kind = "char"
        else:
            raise CheckpointError("checkpoint " + other_tokenizer(spec_path, model.get("type")))
    elif has_gpt2_tokenizer_files(folder):
        kind = "bpe"
    else:
        raise CheckpointError("checkpoint " + no_tokenizer(folder))
    return {"kind": "gpt", "scalar_heads": HF_ARCHITECTURES[arch], "config": config,
            "tokenizer": tokenizer, "hf_tokenizer": kind, "extra": extra}


def model_kind(meta: dict[str, Any]) -> str:
    """What a checkpoint's metadata says it holds: "reward model" (a GPT with a reward head),
    "policy" (any other GPT: pretrained, SFT, or trained by a policy stage), or its own kind."""
    if meta.get("kind") != "gpt":
        return str(meta.get("kind"))
    return "reward model" if "reward_head" in meta.get("scalar_heads", []) else "policy"


def what_file(path: str | Path) -> str:
    """What a file that does not open as a checkpoint holds, from its first bytes: "an empty
    file", "a text file (its first line: ...)", "a cut-off or damaged .npz archive (N bytes)",
    "a NumPy .npy array, not a .npz archive", or "N bytes that are not a .npz archive". Said in
    the error instead of NumPy's guess at a cause (allow_pickle, a bad zip)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        return f"it cannot be read ({e.strerror})"
    if size == 0:
        return "an empty file"
    if head.startswith(b"PK"):
        return f"a cut-off or damaged .npz archive ({size:,} bytes)"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy array, not a .npz archive"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        text = head[:e.start].decode("utf-8") if e.start > len(head) - 4 else None
    if text is not None and text.strip() and all(c.isprintable() or c in "\t\r\n"
                                                  for c in text):
        first = text.strip().splitlines()[0]
        return (f"a text file of {size:,} bytes (its first line: "
                f"{first[:60] + ('...' if len(first) > 60 else '')!r})")
    return f"{size:,} bytes that are not a .npz archive"


def _line_of(text: str, pos: int) -> tuple[int, int]:
    """(line, column), from 1, of character ``pos`` of ``text``."""
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def read_json(path: str | Path, kind: type | None = dict) -> Any:
    """The JSON value a file holds: the one reader of the JSON files a run keeps (records,
    results, caches, a stage's summary). An ``InputError`` naming the file and the line when it
    is not UTF-8, not JSON (cut off by a kill, say) or, with ``kind``, not a value of that type
    (an object, by default); FileNotFoundError when it is not there."""
    path = Path(path).absolute()
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start})"
                         ) from None
    if text.startswith("\ufeff"):
        raise InputError(f"{path}:1: starts with a byte-order mark (U+FEFF); save it as UTF-8 "
                         "without one")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        what = "empty" if not text.strip() else f"malformed JSON (column {e.colno}: {e.msg})"
        raise InputError(f"{path}:{e.lineno}: {what}") from None
    if kind is not None and not isinstance(value, kind):
        names = {dict: "an object", list: "a list"}
        raise InputError(f"{path}:1: holds a JSON {type(value).__name__}, not "
                         f"{names.get(kind, kind.__name__)}")
    return value


def read_cache(path: str | Path, log: logging.Logger, redo: str) -> Any:
    """A file whose content can be made again (a cached point, a finished job's record, a
    results file): its JSON object, or None when it is not there, or when it is unusable, which
    a warning says (the file and the line, then ``redo``: what is done instead)."""
    try:
        return read_json(path)
    except FileNotFoundError:
        return None
    except (InputError, OSError) as e:
        log.warning("%s; %s", e, redo)
        return None
