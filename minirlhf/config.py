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
