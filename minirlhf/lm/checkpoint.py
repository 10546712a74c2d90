"""Checkpoints: one ``.npz`` file, written atomically, with its metadata and a checksum inside.

A checkpoint is a single file so that it is either the old one or the new one, never half of
each: we write to a temporary file in the same folder, flush it to disk, and ``os.replace`` it
over the old name (an atomic rename). A JSON copy of the metadata is written beside it for people
to read; loading never depends on it. The arrays' SHA-256 is stored in the metadata and checked
on load, so a truncated or altered file is named, never silently loaded.

Writing whole files (``atomic_write``, ``held_writes``) lives in ``minirlhf.files``.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from minirlhf.files import (  # noqa: F401  (re-exported: where checkpoints' readers look)
    META_KEY,
    CheckpointError,
    atomic_write,
    held_writes,
    what_file,
)


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write ``arrays`` and JSON-able ``meta`` to ``path`` (a .npz file) atomically."""
    path = Path(path)
    if META_KEY in arrays:
        raise KeyError(f"save_checkpoint: {META_KEY!r} is reserved")
    bad = non_finite(arrays)
    if bad:  # weights of 1e28 or NaN are a failed run, never a checkpoint
        raise FloatingPointError(f"{path} was not written: {bad} (whatever was there before is "
                                 "unchanged)")
    meta = dict(meta, sha256=_digest(arrays))
    meta_bytes = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays, **{META_KEY: meta_bytes}))
    sidecar = json.dumps(meta, indent=2, sort_keys=True).encode()
    atomic_write(path.with_suffix(".json"), lambda f: f.write(sidecar))


def load_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by ``save_checkpoint``: (arrays, meta). Raises CheckpointError
    naming the file if it is missing, unreadable, or its checksum does not match."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        z = np.load(path, allow_pickle=False)
        if not hasattr(z, "files"):  # a .npy: one array
            raise ValueError("not an archive")
        with z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise CheckpointError(f"checkpoint {path} cannot be read as a checkpoint: it is "
                              f"{what_file(path)}") from None
    if META_KEY not in arrays:
        raise CheckpointError(f"checkpoint {path} has no metadata: not a minirlhf checkpoint")
    meta = json.loads(arrays.pop(META_KEY).tobytes().decode())
    if meta.get("sha256") != _digest(arrays):
        raise CheckpointError(f"checkpoint {path} fails its checksum: the file was altered or "
                              "only partly written")
    bad = non_finite(arrays)
    if bad:
        raise CheckpointError(f"checkpoint {path} is unusable: {bad}")
    return arrays, meta


# Trained weights here stay within about +-2 (the default run's largest is 1.51). One above
# 1e6 is a run that blew up: still finite in float32, but two such factors in a matrix product
# overflow, so the next forward pass is NaN.
MAX_WEIGHT = 1e6


def non_finite(arrays: dict[str, np.ndarray]) -> str:
    """'' if every float array is finite and below MAX_WEIGHT in magnitude, else which array is
    not, and how many entries."""
    for name in sorted(arrays):
        a = arrays[name]
        if a.dtype.kind != "f":
            continue
        if not np.isfinite(a).all():
            return (f"parameter {name} holds {int((~np.isfinite(a)).sum())} non-finite values "
                    f"(of {a.size})")
        big = np.abs(a) > MAX_WEIGHT
        if big.any():
            return (f"parameter {name} holds {int(big.sum())} values beyond {MAX_WEIGHT:.0e} "
                    f"(largest {float(np.abs(a).max()):.3g}): the run blew up")
    return ""


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a file's bytes: what a pipeline record keeps of each file it names."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model(path: str | Path, model: Any, tokenizer: Any, extra: dict[str, Any] | None = None,
               ) -> None:
    """A GPT with its config, its tokenizer and any extra JSON-able metadata."""
    meta = {"kind": "gpt", "config": model.config.to_dict(),
            "scalar_heads": list(model.scalar_heads), "tokenizer": tokenizer.to_json(),
            "extra": extra or {}}
    save_checkpoint(path, model.state_dict(), meta)


def load_model(path: str | Path) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, extra) from a checkpoint written by ``save_model``, or from a Hugging
    Face model folder (``minirlhf.lm.pretrained.load_folder``: GPT2LMHeadModel a policy,
    GPT2ForSequenceClassification a reward model)."""
    from minirlhf.lm.model import GPT, GPTConfig
    from minirlhf.lm.tokenizer import CharTokenizer

    if Path(path).is_dir():
        from minirlhf.lm.pretrained import load_folder  # it imports this module

        return load_folder(path)
    arrays, meta = load_checkpoint(path)
    if meta.get("kind") != "gpt":
        raise CheckpointError(f"checkpoint {path} holds {meta.get('kind')!r}, not a GPT")
    model = GPT(GPTConfig(**meta["config"]), scalar_heads=tuple(
        n[: -len("_head")] for n in meta["scalar_heads"]))
    model.load_state_dict(arrays)
    return model, CharTokenizer.from_json(meta["tokenizer"]), meta["extra"]
