"""Config keys that moved: the old flat keys of the grouped sections (`data.toy`, `data.decontam`,
`generate.sglang`, `eval.validation`) and where they live now.

`RENAMED` is the one declaration. `migrate` applies it to a raw nested mapping (each recipe file before it
is merged with its parent, and every mapping given to `config_from_dict`, a run directory's saved
config.yaml included); `renamed_key` applies it to an override key. An old key still works and logs one
line naming the new key; an old and a new key given together with different values are an error.
`fingerprint_view` gives a section as stage fingerprints hash it: the renamed fields under their old flat
keys, so cached stages and run directories made before the move stay valid.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

RENAMED: dict[tuple[str, ...], tuple[str, ...]] = {
    ("data", "toy_levels"): ("data", "toy", "levels"),
    ("data", "toy_problems_per_level"): ("data", "toy", "problems_per_level"),
    ("data", "toy_seed"): ("data", "toy", "seed"),
    ("data", "decontaminate"): ("data", "decontam", "suites"),
    ("data", "eval_data_dir"): ("data", "decontam", "data_dir"),
    ("data", "decontam_ngram"): ("data", "decontam", "ngram"),
    ("data", "decontam_threshold"): ("data", "decontam", "threshold"),
    ("generate", "engine_args"): ("generate", "sglang", "engine_args"),
    ("generate", "weight_sync"): ("generate", "sglang", "weight_sync"),
    ("generate", "weight_bucket_mb"): ("generate", "sglang", "weight_bucket_mb"),
    ("generate", "mem_fraction_static"): ("generate", "sglang", "mem_fraction_static"),
    ("generate", "server_urls"): ("generate", "sglang", "server_urls"),
    ("generate", "router_url"): ("generate", "sglang", "router_url"),
    ("generate", "weight_group_address"): ("generate", "sglang", "weight_group_address"),
    ("eval", "validation_every"): ("eval", "validation", "every"),
    ("eval", "validation_problems"): ("eval", "validation", "problems"),
    ("eval", "validation_suites"): ("eval", "validation", "suites"),
}
"""Old key path -> new key path (section first)."""

_MISSING = object()


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


def _warn(old: tuple[str, ...], new: tuple[str, ...], where: str) -> None:
    log.warning("%s: config key %s is deprecated; rename it to %s", where, _dotted(old), _dotted(new))


def migrate(raw: Any, where: str) -> Any:
    """A copy of the raw nested mapping `raw` with every old key moved to its new path (one warning per
    key); ConfigError when an old key and its new key are both given with different values. Anything
    that is not a mapping of sections is returned as it is, for the loader to report."""
    if not isinstance(raw, dict):
        return raw
    out = dict(raw)
    for old, new in RENAMED.items():
        section = out.get(old[0])
        if not isinstance(section, dict) or old[1] not in section:
            continue
        out[old[0]] = section = dict(section)  # copies along the path: the caller's mapping is not touched
        value = section.pop(old[1])
        node = section
        for name in new[1:-1]:
            child = node.get(name)
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{where}: {_dotted(new[:new.index(name) + 1])} must be a mapping, got "
                                  f"{type(child).__name__} {child!r}")
            node[name] = node = dict(child)
        given = node.get(new[-1], _MISSING)
        if given is not _MISSING and given != value:
            raise ConfigError(f"{where}: both {_dotted(old)} (deprecated) and {_dotted(new)} are given, with "
                              f"different values {value!r} and {given!r}; keep only {_dotted(new)}")
        _warn(old, new, where)
        node[new[-1]] = value
    return out


def renamed_key(parts: list[str], where: str) -> list[str]:
    """An override key (split on dots) with an old key path replaced by its new one (warning once)."""
    for old, new in RENAMED.items():
        if tuple(parts[:len(old)]) == old:
            _warn(old, new, where)
            return [*new, *parts[len(old):]]
    return parts


def fingerprint_view(section: str, cfg: Any) -> dict[str, Any]:
    """`dataclasses.asdict` of the section `section`, with each renamed field back under its old flat
    key (a group left empty is dropped): what stage fingerprints hash, unchanged by the move."""
    out = dataclasses.asdict(cfg)
    if section == "eval":  # when to stop training, not what an evaluation computes: no stage or evaluation hashes it
        out.get("validation", {}).pop("patience", None)
    for old, new in RENAMED.items():
        if old[0] != section:
            continue
        node = out
        for name in new[1:-1]:
            node = node[name]
        out[old[1]] = node.pop(new[-1])
    for group in {new[1] for old, new in RENAMED.items() if old[0] == section}:
        if out.get(group) == {}:
            del out[group]
    return out
