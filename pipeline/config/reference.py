"""The field reference (docs/config.md) generated from the attribute docstrings, and the command line
`python -m pipeline.config [RECIPE [overrides]]`."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import sys
import typing
from typing import Any

from pipeline.config.loader import _type_name, dump_yaml, load_config, to_dict
from pipeline.config.root import SECTIONS, Config
from pipeline.errors import ConfigError


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass: the string literal right under each annotated field."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def reference_markdown() -> str:
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    defaults = to_dict(Config())
    for section, cls in SECTIONS.items():
        lines += _reference_rows(section, cls, defaults[section])
    return "\n".join(lines)


def _reference_rows(prefix: str, cls: type, defaults: dict[str, Any]) -> list[str]:
    docs, rows = field_docs(cls), []
    for name, tp in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(tp):
            rows += _reference_rows(f"{prefix}.{name}", tp, defaults[name])
            continue
        t = _type_name(tp).replace("|", "\\|")
        rows.append(f"| `{prefix}.{name}` | {t} | `{defaults[name]!r}` | {docs.get(name, '')} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(reference_markdown())
        return 0
    try:
        print(dump_yaml(load_config(argv[0], argv[1:])), end="")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
