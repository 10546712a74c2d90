"""Stage configs are dataclasses; this module applies ``key=value`` overrides to them, checked.

An unknown key, or a value that does not parse as the field's type, is an error naming the key
and what it expects, raised before any work starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, TypeVar, get_type_hints

C = TypeVar("C")


class ConfigError(ValueError):
    """A config key or value is wrong; the message names the key and what it allows."""

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _parse(key: str, text: str, kind: Any) -> Any:
    if kind is bool:
        low = text.lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ConfigError(f"config key {key!r} expects true or false, got {text!r}")
    if kind in (int, float, str):
        try:
            return kind(text)
        except ValueError:
            raise ConfigError(f"config key {key!r} expects {kind.__name__}, got {text!r}") from None
    raise ConfigError(f"config key {key!r} has type {kind} that cannot be set from text")


def apply_overrides(config: C, overrides: Sequence[str]) -> C:
    """A copy of ``config`` with each ``key=value`` applied (values parsed by the field type)."""
    hints = get_type_hints(type(config))
    names = [f.name for f in dataclasses.fields(config)]
    changes: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"override {item!r} must look like key=value")
        if key not in names:
            raise ConfigError(f"unknown config key {key!r} for {type(config).__name__}; valid "
                             f"keys: {', '.join(names)}")
        changes[key] = _parse(key, value.strip(), hints[key])
    return dataclasses.replace(config, **changes)


def describe(config: Any) -> str:
    """One line per field: ``key = value``."""
    return "\n".join(f"  {f.name} = {getattr(config, f.name)!r}"
                     for f in dataclasses.fields(config))


# The allowed range of a config field, by name, shared by every stage config: "[" and "]" are
# closed ends, "(" and ")" open ones. A field not listed here is not range-checked.
RANGES: dict[str, str] = {
    **dict.fromkeys(("lr", "temperature", "value_clip"), "(0, inf)"),
    **dict.fromkeys(("min_lr", "beta", "vf_coef", "entropy_coef", "grad_clip", "weight_decay",
                     "margin", "center_coef", "missing_eos_penalty", "adaptive_kl_target"),
                    "[0, inf)"),
    **dict.fromkeys(("clip", "val_fraction"), "(0, 1)"),
    **dict.fromkeys(("gamma", "lam"), "[0, 1]"),
    "label_smoothing": "[0, 0.5)",
    **dict.fromkeys(("steps", "iterations", "epochs", "ppo_epochs", "batch_size",
                     "minibatch_size", "rollout_size", "n_pairs", "n_demos", "seq_len",
                     "max_new_tokens", "samples_per_prompt", "eval_samples_per_prompt",
                     "norm_samples", "corr_samples", "eval_every", "eval_windows", "n_samples",
                     "adaptive_kl_horizon", "prompts_per_eval"), "[1, inf)"),
    **dict.fromkeys(("warmup_steps", "max_pairs", "online_rounds", "seed", "table_every"),
                    "[0, inf)"),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "task": ("reviews", "arithmetic"),
    "kl_estimator": ("k1", "k3"),
    "critic": ("shared", "reward_model"),
    "loss_type": ("sigmoid", "ipo", "hinge"),
    "readout": ("eos", "sum"),
}


def _inside(value: float, spec: str) -> bool:
    lo_text, hi_text = spec[1:-1].split(",")
    lo, hi = float(lo_text), float(hi_text)
    above = value > lo if spec[0] == "(" else value >= lo
    below = value < hi if spec[-1] == ")" else value <= hi
    return above and below


def validate(config: Any) -> None:
    """Check every field of a stage config against its allowed range or choices; raise
    ConfigError naming the key, the value and what is allowed. Called before any work starts."""
    stage = type(config).__name__
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and value != value:
            raise ConfigError(f"{stage}: {f.name} is NaN")
        spec = RANGES.get(f.name)
        if spec and isinstance(value, int | float) and not isinstance(value, bool) \
                and not _inside(value, spec):
            raise ConfigError(f"{stage}: {f.name} = {value!r} is outside its allowed range "
                              f"{spec}")
        if f.name in CHOICES and value not in CHOICES[f.name]:
            raise ConfigError(f"{stage}: {f.name} = {value!r} is not one of "
                              f"{', '.join(CHOICES[f.name])}")
