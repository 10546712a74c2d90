"""Files a run writes and reads: written whole or not at all, and a checkpoint's label.

A file is written to a temporary name in its folder, flushed to disk and renamed over the old
name (``atomic_write``), so it is either the old file or the new one, never half of each. A
stage's files are one change too (``held_writes``): inside a stage each file waits under its
temporary name, and all are moved into place when the stage ends; a stage that fails (a refused
checkpoint, a NaN, Ctrl-C) leaves every file as it was.

``read_meta`` reads a checkpoint's metadata alone, which is what a stage checks of each input
before any work (``minirlhf.config.check_checkpoints``).

This module imports nothing from the rest of the package: every floor may use it.
"""

from __future__ import annotations

import json
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
    try:
        z = np.load(path, allow_pickle=False)
        try:
            if META_KEY not in getattr(z, "files", ()):  # a plain .npy or .npz
                raise CheckpointError(f"checkpoint {path} has no metadata: not a minirlhf "
                                      "checkpoint")
            return json.loads(z[META_KEY].tobytes().decode())
        finally:
            if hasattr(z, "close"):
                z.close()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupted or truncated ({e})") from None


def model_kind(meta: dict[str, Any]) -> str:
    """What a checkpoint's metadata says it holds: "reward model" (a GPT with a reward head),
    "policy" (any other GPT: pretrained, SFT, or trained by a policy stage), or its own kind."""
    if meta.get("kind") != "gpt":
        return str(meta.get("kind"))
    return "reward model" if "reward_head" in meta.get("scalar_heads", []) else "policy"
