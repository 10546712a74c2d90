"""Where randomness comes from: a named stream per use, ``stream(seed, name)``.

This module imports nothing from the rest of the package: every floor may use it.
"""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, name: str) -> np.random.Generator:
    """The random stream ``name`` of a run seeded ``seed``: ``default_rng([seed, crc32(name)])``.

    Every use of randomness (a model's initial weights, a stage's batches, its evaluation
    samples, ...) draws from a stream of its own, so that using one more number in one place
    changes nothing elsewhere, and runs with seeds 0 and 1 never share a stream (with
    ``seed + k``, seed 1's training stream was seed 0's evaluation stream)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def stream_seed(seed: int, name: str) -> int:
    """An integer seed of its own for a sub-run (an experiment's reward model, say), drawn from
    the stream ``name``: a different run for every (seed, name)."""
    return int(stream(seed, name).integers(2**31))
