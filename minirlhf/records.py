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
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minirlhf.config import command_hint
from minirlhf.files import InputError, read_json
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
        record = read_json(path, kind=None)
    except (OSError, InputError) as e:
        log.warning("unreadable record %s; running the stage again", e)
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


def remove_half_written(root: Path, folders: list[Path]) -> None:
    """Delete the temporary files (``atomic_write``'s) a run killed while writing left in
    ``root`` itself and in ``folders`` (its own: other processes write the run's other folders
    while it runs, an experiment, the course's records, the claims)."""
    for tmp in [*root.glob(".*.tmp"), *(t for f in folders for t in f.rglob(".*.tmp"))]:
        log.info("removing %s, left by a run that was killed while writing it", tmp)
        tmp.unlink()


class RunLock:
    """One pipeline at a time in a run folder: ``<run>/.lock`` says who holds it (``Owner``:
    the process id, its start time as the system counts it, the machine's boot and host name).
    A lock whose holder is gone is taken over, with a warning: a killed run's, whose process
    has ended, or whose process id now belongs to another program (started after the lock was
    taken), or that was taken before the machine restarted. A live holder is an error naming
    it; a holder on another host, which this machine cannot see, too, saying how to free the
    folder when that run is gone."""

    def __init__(self, root: Path, instead: str = "choose another --name"):
        self.path = root / ".lock"
        self.instead = instead  # what else than waiting the error offers ("": nothing)

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mine = json.dumps(Owner.this_process().__dict__, sort_keys=True) + "\n"
        for _ in range(3):
            if _create(self.path, mine):
                return self
            why = Owner.read(self.path).stale_because(self.path, self.instead)
            log.warning("taking over %s: %s", self.path, why)
            self.path.unlink(missing_ok=True)
        raise PipelineError(f"could not take the lock {self.path}: other runs keep taking it")

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def _create(path: Path, text: str) -> bool:
    """Make ``path`` holding ``text`` if no file has that name, in one step (a hard link from
    a temporary file: no other run ever sees the lock empty; where the file system has no hard
    links, an exclusive create, then the text); False if one is there."""
    for _ in range(3):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except FileNotFoundError:  # the run holding the folder removed it as half-written
            continue
        except OSError:  # no hard links here
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(text)
            return True
        finally:
            Path(tmp).unlink(missing_ok=True)
    raise PipelineError(f"could not write the lock {path}")


@dataclass
class Owner:
    """Who holds a lock: enough to tell its process from a later one with the same id."""

    pid: int = 0
    host: str = ""  # socket.gethostname()
    boot: str = ""  # the boot's id (/proc/sys/kernel/random/boot_id), "" where unknown
    started: str = ""  # the process's start, in clock ticks after boot (/proc/PID/stat)
    since: str = ""  # when the lock was taken, for people

    @classmethod
    def this_process(cls) -> Owner:
        return cls(os.getpid(), socket.gethostname(), _boot_id(), _start_ticks(os.getpid()),
                   time.strftime("%Y-%m-%d %H:%M:%S"))

    @classmethod
    def read(cls, path: Path) -> Owner:
        """The owner a lock names; a lock of the older kind holds a process id alone (its
        ``host`` is then ""), and one that cannot be read names none (pid 0)."""
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return cls()
        if text.isdigit():
            return cls(pid=int(text))
        try:
            obj = json.loads(text)
            fields = {k: obj[k] for k in ("pid", "host", "boot", "started", "since")}
            return cls(int(fields.pop("pid")), **{k: str(v) for k, v in fields.items()})
        except (ValueError, TypeError, KeyError):
            return cls()

    def stale_because(self, path: Path, instead: str = "choose another --name") -> str:
        """Why the lock at ``path`` may be taken over; PipelineError when its holder may be
        running (saying to wait for it, or to do ``instead``)."""
        folder = path.parent
        if self.pid <= 0:
            return "it names no process (unreadable: cut off, or not a lock)"
        if self.host and self.host != socket.gethostname():
            raise PipelineError(
                f"the run folder {folder} is in use by process {self.pid} on host {self.host} "
                f"(since {self.since}), which this machine cannot see; wait for that run to "
                f"finish{', or ' + instead if instead else ''}; if it is gone, free the folder "
                "with "
                f"{command_hint(['rm', str(path.absolute())])}")
        if self.boot and _boot_id() and self.boot != _boot_id():
            return f"process {self.pid} held it before the machine restarted"
        if not _alive(self.pid):
            return f"process {self.pid} that held it is gone"
        now = _start_ticks(self.pid)
        if self.started and now and now != self.started:
            return (f"process {self.pid} that held it is gone: that id is now another "
                    "program's, started after the lock was taken")
        started = _start_time(self.pid)
        if not self.started and started is not None and started > path.stat().st_mtime + 2:
            return (f"process {self.pid} that held it is gone: that id is now another "
                    "program's, started after the lock was written")
        raise PipelineError(f"the run folder {folder} is in use by process {self.pid}"
                            + (f" since {self.since}" if self.since else "")
                            + f" (its lock is {path}); wait for it to finish"
                            + (f" or {instead}" if instead else ""))


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> str:
    """When process ``pid`` started, in clock ticks after boot ("" where /proc does not say):
    a later process with the same id has another."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2:].split()[19]  # field 22, starttime


def _start_time(pid: int) -> float | None:
    """When process ``pid`` started, in seconds since the epoch (None where unknown)."""
    ticks = _start_ticks(pid)
    try:
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text()
                    .splitlines() if line.startswith("btime"))
    except (OSError, StopIteration, ValueError):
        return None
    return boot + int(ticks) / os.sysconf("SC_CLK_TCK") if ticks else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
