"""Run ``python -m minirlhf ARGS`` with one fault planted, for the reliability catalogue.

    python tests/catalogue_driver.py FAULT -- ARGS...

FAULT is one of:

* ``kill-inside:STAGE``: SIGKILL the process at the stage's third optimizer step.
* ``kill-after:STAGE``: SIGKILL it once the stage's record is written (between two stages).
* ``kill-before-record:STAGE``: SIGKILL it after the stage wrote its output, before its record.
* ``kill-writing:NAME``: SIGKILL it when the file NAME (a path ending) is about to be renamed
  into place (the temporary file is written, the real one not yet replaced).
* ``nan:STAGE``: the stage's second loss is NaN.
* ``blow-up:STAGE``: the stage's weights are 1e28 when it saves them.
* ``none``: no fault.

A kill is ``kill -9``: nothing runs after it (no finally, no atexit), as when a laptop's battery
dies or the OOM killer strikes.
"""

from __future__ import annotations

import os
import signal
import sys


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def plant(fault: str) -> None:
    import importlib

    import minirlhf.pipeline as pipeline
    import minirlhf.records as records

    kind, _, target = fault.partition(":")
    if kind == "none":
        return
    if kind in ("kill-inside", "nan"):
        # the stage's own optimizer step, or the shared offline Trainer's (minirlhf.training)
        # when the stage trains through it; only the target stage's steps count ("where" names
        # the stage first: "dpo: step 3", "ppo: iteration 0")
        module = importlib.import_module(f"minirlhf.stages.{target}")
        if not hasattr(module, "optimizer_step"):
            module = importlib.import_module("minirlhf.training")
        real = module.optimizer_step
        calls = [0]

        def step(opt, loss, params, grad_clip, where, *args, **kw):
            if where.startswith(f"{target}:"):
                calls[0] += 1
                if kind == "kill-inside" and calls[0] == 3:
                    _die()
                if kind == "nan" and calls[0] == 2:
                    loss = loss * float("nan")
            return real(opt, loss, params, grad_clip, where, *args, **kw)

        module.optimizer_step = step
    elif kind == "kill-after":
        real_log = pipeline._log_samples

        def log_samples(stage, numbers):
            real_log(stage, numbers)
            if stage == target:
                _die()

        pipeline._log_samples = log_samples
    elif kind == "kill-before-record":
        real_write = records.write_json

        def write_json(path, obj):
            if path.name == f"{target}.json" and path.parent.name == "pipeline":
                _die()
            real_write(path, obj)

        records.write_json = write_json
    elif kind == "kill-writing":
        real_replace = os.replace

        def replace(src, dst, *args, **kw):
            if str(dst).endswith(target):
                _die()
            return real_replace(src, dst, *args, **kw)

        os.replace = replace
    elif kind == "blow-up":
        import numpy as np

        import minirlhf.lm.checkpoint as checkpoint

        real_save = checkpoint.save_checkpoint

        def save(path, arrays, meta):
            if f"{os.sep}{target}{os.sep}" in str(path):
                arrays = {k: (v * np.float32(1e28) if v.dtype.kind == "f" else v)
                          for k, v in arrays.items()}
            return real_save(path, arrays, meta)

        checkpoint.save_checkpoint = save
    else:
        raise SystemExit(f"catalogue_driver: unknown fault {fault!r}")


if __name__ == "__main__":
    fault, sep, *rest = sys.argv[1:]
    assert sep == "--", "usage: catalogue_driver.py FAULT -- ARGS..."
    plant(fault)
    from minirlhf.cli import main

    sys.exit(main(rest))
