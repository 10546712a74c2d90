"""Small job functions for tests/test_course.py: the course's workers import them by name."""

import os
import signal
import time
from pathlib import Path


def write(path: str, text: str = "done") -> None:
    Path(path).write_text(text)


def fail(message: str) -> None:
    raise ValueError(message)


def die_once(marker: str) -> None:
    """Killed (kill -9) the first time, as a worker out of memory is; fine the second."""
    if not Path(marker).exists():
        Path(marker).write_text("died once")
        os.kill(os.getpid(), signal.SIGKILL)


def wait_forever(pid_file: str) -> None:
    """Leaves its process id, then works until it is stopped."""
    Path(pid_file).write_text(str(os.getpid()))
    while True:
        time.sleep(0.1)


def write_seen(path: str, other: str) -> None:
    """Writes whether ``other`` was there when this job started."""
    Path(path).write_text("seen" if Path(other).exists() else "not there")


def write_later(path: str, seconds: float) -> None:
    """Writes ``path`` after ``seconds``: a job still running when others are ready."""
    time.sleep(seconds)
    Path(path).write_text("done")
