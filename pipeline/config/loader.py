"""Loading a config: a YAML recipe (path or shipped name, `inherit:` resolved), `section.field=value`
overrides, coercion of every value to its annotated type, validation; and dumping it back to YAML."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.config.renamed import migrate, renamed_key
from pipeline.config.root import SECTIONS, Config
from pipeline.errors import ConfigError

RECIPE_DIR = Path(__file__).parent.parent / "recipes"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, name: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], name)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {type(value).__name__} {value!r}")
        return build_section(tp, value, name, "config")
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{name}={value!r} is not allowed; choose one of {allowed}")
        return value
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, args[0], f"{name}[]") for v in value]
    if tp is Any:
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {type(value).__name__} {value!r}")
        return {str(k): _coerce(v, args[1], f"{name}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"unsupported config type {_type_name(tp)} for {name}")


def _unknown(key: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(known))}"
    return ConfigError(f"unknown key {key!r} in {where}; {hint}")


def build_section(cls: type, raw: dict[str, Any], section: str, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = list(hints)
    kwargs = {}
    for key, value in raw.items():
        if key not in hints:
            raise _unknown(key, known, f"section {section!r} of {where}")
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key}")
    return cls(**kwargs)


def config_from_dict(raw: dict[str, Any], where: str = "config") -> Config:
    """Build and validate a Config from a nested mapping (old key names moved to their new ones, see
    `renamed`); errors name the key and `where`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a recipe must be a mapping of sections, got {type(raw).__name__}")
    raw = migrate(raw, where)
    sections = {}
    for name, body in raw.items():
        if name not in SECTIONS:
            raise _unknown(name, list(SECTIONS), where)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ConfigError(f"section {name!r} of {where} must be a mapping, got {body!r}")
        sections[name] = build_section(SECTIONS[name], body, name, where)
    return Config(**sections)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def resolve_recipe_path(config: str) -> Path:
    """A path to a YAML file, or the name of a shipped recipe."""
    path = Path(config)
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in config:
        if not path.is_file():
            raise ConfigError(f"config file {config} does not exist; pass a YAML path or one of the shipped "
                              f"recipes: {', '.join(list_recipes())}")
        return path
    shipped = RECIPE_DIR / f"{config}.yaml"
    if not shipped.is_file():
        close = difflib.get_close_matches(config, list_recipes(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"no recipe named {config!r}; {hint}shipped recipes: {', '.join(list_recipes())}")
    return shipped


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections, got {type(raw).__name__}")
    return raw


def merge_recipes(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`, mappings merged recursively (nested sections such as update.lora too); copies. A
    null section in `top` (a bare `update:` in YAML) changes nothing: it does not wipe `base`'s section."""
    out = {k: merge_recipes(v, {}) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in top.items():
        if isinstance(out.get(key), dict) and (value is None or isinstance(value, dict)):
            out[key] = merge_recipes(out[key], value or {})
        else:
            out[key] = value
    return out


def read_recipe(config: str, _seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], str]:
    """The raw nested mapping of a recipe with `inherit:` resolved, and the file it came from. Each file's
    old key names are moved to their new ones before it is merged, so a child's old key overrides its
    parent's new one."""
    path = resolve_recipe_path(config)
    if str(path.resolve()) in _seen:
        raise ConfigError(f"{path}: `inherit` forms a cycle")
    raw = migrate(_read_yaml(path), str(path))
    parent = raw.pop("inherit", None)
    if parent is not None:
        if not isinstance(parent, str):
            raise ConfigError(f"{path}: `inherit` must name a recipe, got {parent!r}")
        base, _ = read_recipe(parent, _seen + (str(path.resolve()),))
        raw = merge_recipes(base, raw)
    return raw, str(path)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.field=value` strings (values parsed as YAML) to a raw recipe mapping; an old key name
    is moved to its new one (see `renamed`)."""
    out = merge_recipes(migrate(raw, "config"), {})
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"override key {key!r} must look like section.field (e.g. train.total_steps)")
        parts = renamed_key(parts, f"override {item!r}")
        if parts[0] not in SECTIONS:
            raise _unknown(parts[0], list(SECTIONS), f"override {item!r}")
        cls, node = SECTIONS[parts[0]], out
        for depth, name in enumerate(parts[1:], start=1):
            hints = typing.get_type_hints(cls) if cls is not None else {}
            if name not in hints:
                raise _unknown(name, list(hints), f"override {item!r}")
            if node.get(parts[depth - 1]) is None:
                node[parts[depth - 1]] = {}
            node = node[parts[depth - 1]]
            cls = hints[name] if dataclasses.is_dataclass(hints[name]) and depth < len(parts) - 1 else None
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        node[parts[-1]] = value
    return out


def load_config(config: str, overrides: list[str] | None = None) -> Config:
    """Load a recipe (path or shipped name), apply overrides, validate."""
    raw, where = read_recipe(config)
    raw = apply_overrides(raw, overrides or [])
    return config_from_dict(raw, where)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, width=110)


def with_defaults(raw: dict) -> dict:
    """A stored config mapping with the fields it does not name at their defaults (a run directory written
    before a field existed compares equal to today's config when the new field keeps its default). A mapping
    that is not a valid config is returned as it is, for the caller's comparison to report."""
    try:
        return to_dict(config_from_dict(raw, "the stored config"))
    except (ConfigError, TypeError, ValueError):
        return raw


def config_changes(old: dict, new: dict) -> str:
    """`key: old -> new` for up to five fields that differ between two config mappings."""
    changed = _changes(old, new, "")
    return "; ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")


def _changes(old: dict, new: dict, prefix: str) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changes(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out
