"""Keep freed memory for reuse instead of returning it to the operating system.

NumPy allocates a fresh array for every intermediate result. With glibc's default settings, a
freed array of more than a few hundred kB goes straight back to the operating system, and the
next one must be mapped in again page by page. On some machines (virtual machines in
particular) those page faults can cost several times the arithmetic of an elementwise op.
Raising glibc's mmap and trim thresholds makes freed blocks stay in the heap, where the next
step's arrays reuse them.

It changes only how the allocator recycles memory, never a result. The command-line entry
points apply it (``runtime.configure``), on Linux with glibc; ``import minirlhf`` does not. Set
MINIRLHF_DEFAULT_MALLOC=1 to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_applied = False


def reuse_freed_memory(mmap_threshold: int = 256 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Ask glibc to serve blocks below ``mmap_threshold`` bytes from the heap and to keep up to
    ``trim_threshold`` bytes of freed heap. Returns True if the settings were applied."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("MINIRLHF_DEFAULT_MALLOC") == "1":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1 and ok
    except (OSError, AttributeError):  # not glibc (musl, for one, has no mallopt)
        return False
    _applied = ok
    return ok
