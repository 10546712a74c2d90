"""What a run folder keeps so that the pipeline can trust it: each stage's record and the lock.

A stage's record, ``<run>/pipeline/<stage>.json``, is written last, atomically, holding the
SHA-256 of every file the stage wrote and read and a checksum of its own content: a record that
is missing, unreadable or altered, or whose files are no longer the ones it names, makes the
stage run again. ``RunLock`` keeps a second pipeline out of a folder in use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from minirlhf.lm.checkpoint import atomic_write, file_digest

log = logging.getLogger("minirlhf.pipeline")  # the pipeline's log: these are its warnings


class PipelineError(RuntimeError):
    """A stage failed, or the run folder is in use; the message names the stage or the folder,
    what happened and what is still intact."""


def record_path(root: Path, stage: str) -> Path:
    """Where the record of ``stage`` of the run at ``root`` is kept."""
    return root / "pipeline" / f"{stage}.json"


def digests(root: Path, names: list[str]) -> dict[str, str]:
    """{file relative to the run folder: its SHA-256, or "missing"}."""
    return {n: file_digest(root / n) if (root / n).exists() else "missing" for n in names}


def record_holds(root: Path, record: dict[str, Any], inputs: list[str]) -> str | None:
    """None if the files a stage's record names are the very files it wrote and read, else
    what differs: an output missing, truncated, altered or replaced by another file, or an
    input that is no longer what the stage read."""
    for kind, wanted in (("output", record.get("outputs")), ("input", record.get("inputs"))):
        if not isinstance(wanted, dict):
            return f"its record predates file hashes (no {kind} hashes)"
        for name, digest in digests(root, list(wanted)).items():
            if digest != wanted[name]:
                return f"{kind} {root / name} is " + (
                    "missing" if digest == "missing" else "not the file the stage "
                    + ("wrote" if kind == "output" else "read"))
    if sorted(record["inputs"]) != sorted(inputs):
        return "it read other inputs"
    return None


def read_record(path: Path) -> dict[str, Any] | None:
    """A stage's record, or None (the stage then runs again) if there is none or it is not a
    record the pipeline wrote (unreadable, truncated, not JSON, not an object): said in a
    warning."""
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        log.warning("%s: unreadable record (%s); running the stage again", path, e)
        return None
    if not isinstance(record, dict) or not isinstance(record.get("fingerprint"), str):
        log.warning("%s: not a stage record; running the stage again", path)
        return None
    if record.get("checksum") != _checksum(record):
        log.warning("%s: the record was altered since the stage wrote it (its checksum does "
                    "not match); running the stage again", path)
        return None
    return record


def write_record(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Add the record's checksum to it and write it (atomically); return it."""
    record["checksum"] = _checksum(record)
    write_json(path, record)
    return record


def _checksum(record: dict[str, Any]) -> str:
    """SHA-256 of a record's content, its own checksum left out."""
    body = {k: v for k, v in record.items() if k != "checksum"}
    text = json.dumps(nan_to_null(body), sort_keys=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def nan_to_null(obj: Any) -> Any:
    """JSON has no NaN: a float that is not finite becomes None (null)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_null(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [nan_to_null(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON with sorted keys (non-finite floats as null), atomically."""
    data = (json.dumps(nan_to_null(obj), indent=2, sort_keys=True, allow_nan=False)
            + "\n").encode()
    atomic_write(path, lambda f: f.write(data))


def remove_half_written(root: Path) -> None:
    """Delete the temporary files (``atomic_write``'s) a run killed while writing left."""
    for tmp in root.rglob(".*.tmp"):
        log.info("removing %s, left by a run that was killed while writing it", tmp)
        tmp.unlink()


class RunLock:
    """One pipeline at a time in a run folder: ``<run>/.lock`` holds the owner's PID. A lock
    whose process is gone (a killed run) is taken over, with a warning; a live one is an
    error naming its PID."""

    def __init__(self, root: Path):
        self.path = root / ".lock"

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and _alive(pid):
                    raise PipelineError(f"the run folder {self.path.parent} is in use by process "
                                        f"{pid} (its lock is {self.path}); wait for it to finish "
                                        "or choose another --name") from None
                log.warning("taking over %s: process %s that held it is gone", self.path, pid)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            return self
        raise PipelineError(f"could not take the lock {self.path}")

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
