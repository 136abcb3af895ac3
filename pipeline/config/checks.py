"""Validation helpers of the config sections: errors name the field and the allowed values."""

from __future__ import annotations

from pipeline.errors import ConfigError


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {msg}")


def _in_range(value: float, name: str, lo: float | None = None, hi: float | None = None) -> None:
    if lo is not None and value < lo or hi is not None and value > hi:
        bounds = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise ConfigError(f"{name}={value!r} is out of range: must be in {bounds}")
