"""Every command line the documentation shows (`python -m ...`, `prefix-rft ...`, `accelerate launch ... -m
...`, in README.md, docs/, recipe headers and module docstrings) parses with the CLI it names, and its
recipe and overrides load: the documented commands run as written up to the point where they would start
working, with no renamed config key. Synopses with placeholders (`<recipe>`, `[--force]`, `...`) and shell
variables (`$proto`) are skipped."""

import argparse
import ast
import logging
import re
import shlex
from pathlib import Path

import pytest

from evaluation import run as eval_cli
from pipeline import config as config_cli
from pipeline import stage as stage_cli
from pipeline import train as train_cli
from pipeline.config import load_config, resolve_recipe_path
from stages import curate as curate_cli

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ([ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))
           + sorted((ROOT / "pipeline/recipes").glob("*.yaml"))
           + sorted(p for d in ("pipeline", "stages", "evaluation") for p in (ROOT / d).rglob("*.py")))
MAINS = {"pipeline.train": train_cli.main, "pipeline.stage": stage_cli.main, "evaluation.run": eval_cli.main,
         "stages.curate": curate_cli.main, "pipeline.config": config_cli.main}
SUBCOMMANDS = {"train": "pipeline.train", "stage": "pipeline.stage", "eval": "evaluation.run"}
START = re.compile(r"(?:python -m |prefix-rft |-m )((?:pipeline|stages|evaluation)\.[\w.]+|train|stage|eval)\b")
PLACEHOLDER = re.compile(r"<|\[-|\[section|\.\.\.|\bN\b|\bDIR\b|\bRECIPE\b|\||\$")


def _lines(path: Path) -> list[str]:
    """Text lines (of a module: its docstring) with comment markers removed and backslash continuations
    joined."""
    text = path.read_text()
    if path.suffix == ".py":
        text = ast.get_docstring(ast.parse(text), clean=False) or ""
    out, pending = [], ""
    for raw in text.splitlines():
        line = re.sub(r"^\s*#\s?", "", raw) if path.suffix == ".yaml" else raw
        if pending:
            line = pending + " " + line.strip()
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1].rstrip()
            continue
        pending = ""
        out.append(line)
    return out


def documented_commands() -> list[tuple[str, str, str]]:
    """(where, module, argument string) of every concrete documented command."""
    found = []
    for path in SOURCES:
        for n, line in enumerate(_lines(path), 1):
            for m in START.finditer(line):
                module = SUBCOMMANDS.get(m.group(1), m.group(1))
                if module not in MAINS:
                    continue
                rest = line[m.end():]
                if line[:m.start()].count("`") % 2:  # inside an inline code span: it ends at the next backtick
                    rest = rest.split("`", 1)[0]
                rest = rest.split("  #", 1)[0].split(" # ", 1)[0]  # trailing shell comments
                rest = re.split(r"\s(?:&&|;|\|)\s", rest, maxsplit=1)[0]
                if PLACEHOLDER.search(rest) or (not rest.strip() and module != "pipeline.config"):
                    continue  # a synopsis, or the command named in prose
                found.append((f"{path.relative_to(ROOT)}:{n}", module, rest.strip()))
    return found


COMMANDS = documented_commands()


class Parsed(Exception):
    pass


def _parse(module: str, argv: list[str], monkeypatch) -> argparse.Namespace:
    """Run the CLI's own argument parsing and stop right after it."""
    def stop(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    original = argparse.ArgumentParser.parse_args
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop)
    with pytest.raises(Parsed) as caught:
        MAINS[module](argv)
    return caught.value.args[0]


def test_the_docs_show_commands_of_every_cli():
    modules = {module for _, module, _ in COMMANDS}
    assert {"pipeline.train", "pipeline.stage", "evaluation.run", "stages.curate"} <= modules
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("where,module,args", COMMANDS, ids=[w for w, _, _ in COMMANDS])
def test_documented_command_parses(where, module, args, monkeypatch, caplog):
    with caplog.at_level(logging.WARNING):
        _check_command(where, module, args, monkeypatch)
    old = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert not old, f"{where}: the documentation uses renamed config keys: {old}"


def _check_command(where: str, module: str, args: str, monkeypatch) -> None:
    argv = shlex.split(args)
    if module == "pipeline.config":  # positional recipe + overrides, no argparse
        if argv:
            load_config(argv[0], argv[1:])
        return
    ns = _parse(module, argv, monkeypatch)
    if module == "pipeline.train":
        assert ns.output_dir or ns.dry_run, f"{where}: --output-dir is required to train"
    own_file = str(getattr(ns, "config", "")).endswith((".yaml", ".yml")) and not (ROOT / ns.config).is_file()
    if getattr(ns, "config", None) and not own_file:  # a shipped recipe (or file) with the shown overrides
        resolve_recipe_path(ns.config)
        load_config(ns.config, ns.overrides)
    if module == "evaluation.run":
        eval_cli._eval_config(ns.overrides)
    if module == "pipeline.stage":
        assert ns.stage in stage_cli.STAGES, where
