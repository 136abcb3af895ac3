"""Training-data sources for the curate stage: real files and hub sets, normalised to one schema.

A source (`data.sources`, used when `data.source: files`) is a mapping of strings:

    - {path: data/train/math_train.jsonl, format: math}
    - {path: data/train/gsm8k_train.jsonl, format: gsm8k, weight: "0.5"}
    - {path: hub:Elliott/Openr1-Math-46k-8192, format: openr1}
    - {path: my.parquet, format: columns, problem: question, demonstration: response, answer: gt}

`path`: a .jsonl / .json / .parquet / .arrow file, a directory of them, a `save_to_disk` directory, or
`hub:<dataset id>[:<config>]` (split `train`). `name` (default: the file stem) becomes the `source`
column and the id prefix. `weight` in (0, 1]: the fraction of the source's rows kept (seeded sample,
`data.seed`), how sources are mixed. Formats and where each field comes from:

| format | problem | demonstration | reference answer | level |
|---|---|---|---|---|
| `math` (MATH train) | `problem` | `solution` | last `\\boxed{}` of `solution` | `level` "Level 3" -> 3 |
| `gsm8k` | `question` | `answer` with `<<calc>>` removed, `#### X` -> `The final answer is $\\boxed{X}$.` | text after `####`, commas removed | -1 |
| `aime` (AIME 1983-2023) | `problem` | `solution` | `answer` | -1 |
| `openr1` (OpenR1-Math-46k-8192, LUFFY layout) | last user turn of `prompt` (or `problem`) | assistant turn of `target` (or `solution`) | `reward_model.ground_truth` (or `answer`) | -1 |
| `columns` | column named by `problem` | by `demonstration` | by `answer`; unmapped: last `\\boxed{}` of the demonstration | by `level` (optional) |

`id` names the column with a row id (default `id`, else the row index); dotted paths reach into structs (`reward_model.ground_truth`).
Malformed rows never stop the stage: each is counted under its reason (`malformed_row`: unreadable line
or not an object; `missing_problem`, `missing_answer`, `empty_demonstration`, `non_string_field`). A
missing file, or a file that has none of a mapped column, stops with one line naming the file and columns.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from datasets import Dataset

from pipeline import schema as S
from pipeline.datafiles import MISSING, get_path, read_hub, read_records, reference_text, require_mapped_columns
from pipeline.errors import ConfigError
from pipeline.rewards import last_boxed

SOURCE_KEYS = ("path", "format", "name", "weight", "problem", "demonstration", "answer", "id", "level")
_CALC = re.compile(r"<<[^<>]*>>")
_LEVEL = re.compile(r"(\d+)")
_OPENR1_INSTRUCTION = re.compile(r"\s*Please reason step by step, and put your final answer within \\boxed\{\}\.?\s*$")


class Malformed(Exception):
    """A row that cannot become a training example; `args[0]` is the reason counted in the report."""


def _text(row: dict[str, Any], path: str, reason: str) -> str:
    value = get_path(row, path)
    if value is MISSING or value is None:
        raise Malformed(reason)
    if not isinstance(value, str):
        raise Malformed("non_string_field")
    if not value.strip():
        raise Malformed(reason)
    return value


def _level(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _LEVEL.search(value) if isinstance(value, str) else None
    return int(m.group(1)) if m else -1


def _answer(value: Any) -> str:
    if value is not MISSING and value is not None and not isinstance(value, (str, int, float, list)):
        raise Malformed("non_string_field")
    ref = reference_text(value)
    if ref is None:
        raise Malformed("missing_answer")
    return ref


Row = tuple[str, str, str, int]  # problem, demonstration, answer, level


def _math(row: dict[str, Any], spec: dict[str, str]) -> Row:
    problem, solution = _text(row, "problem", "missing_problem"), _text(row, "solution", "empty_demonstration")
    return problem, solution, _answer(last_boxed(solution)), _level(row.get("level"))


def _gsm8k(row: dict[str, Any], spec: dict[str, str]) -> Row:
    problem, text = _text(row, "question", "missing_problem"), _text(row, "answer", "empty_demonstration")
    work, sep, final = text.rpartition("####")
    answer = final.strip().replace(",", "")
    if not sep or not answer:
        raise Malformed("missing_answer")
    work = _CALC.sub("", work).strip()
    if not work:
        raise Malformed("empty_demonstration")
    return problem, f"{work}\nThe final answer is $\\boxed{{{answer}}}$.", answer, -1


def _aime(row: dict[str, Any], spec: dict[str, str]) -> Row:
    problem, solution = _text(row, "problem", "missing_problem"), _text(row, "solution", "empty_demonstration")
    return problem, solution, _answer(row.get("answer")), -1


def _turn(messages: Any, role: str, reason: str) -> str:
    if not isinstance(messages, list):
        raise Malformed(reason if messages is MISSING or messages is None else "non_string_field")
    turns = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == role]
    if not turns or not isinstance(turns[-1], str):
        raise Malformed(reason)
    if not turns[-1].strip():
        raise Malformed(reason)
    return turns[-1]


def _openr1(row: dict[str, Any], spec: dict[str, str]) -> Row:
    if "prompt" in row:
        problem = _OPENR1_INSTRUCTION.sub("", _turn(row["prompt"], "user", "missing_problem"))
    else:
        problem = _text(row, "problem", "missing_problem")
    demo = (_turn(row["target"], "assistant", "empty_demonstration") if "target" in row
            else _text(row, "solution", "empty_demonstration"))
    gt = get_path(row, "reward_model.ground_truth")
    return problem, demo, _answer(gt if gt is not MISSING else row.get("answer")), -1


def _columns(row: dict[str, Any], spec: dict[str, str]) -> Row:
    problem = _text(row, spec["problem"], "missing_problem")
    demo = _text(row, spec["demonstration"], "empty_demonstration")
    answer = _answer(get_path(row, spec["answer"]) if "answer" in spec else last_boxed(demo))
    return problem, demo, answer, _level(get_path(row, spec["level"])) if "level" in spec else -1


FORMATS: dict[str, tuple[Callable[[dict[str, Any], dict[str, str]], Row], dict[str, str]]] = {
    # format -> (row parser, the columns a file must have at least once)
    "math": (_math, {"problem": "problem", "demonstration": "solution"}),
    "gsm8k": (_gsm8k, {"problem": "question", "demonstration": "answer"}),
    "aime": (_aime, {"problem": "problem", "demonstration": "solution", "answer": "answer"}),
    "openr1": (_openr1, {}),
    "columns": (_columns, {}),
}


def check_source(spec: dict[str, str], where: str) -> None:
    """ConfigError for an unknown key or format, a missing path, a bad weight or an incomplete mapping."""
    unknown = sorted(set(spec) - set(SOURCE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; a source takes {', '.join(SOURCE_KEYS)}")
    if not spec.get("path"):
        raise ConfigError(f"{where}: needs a `path` (a file, a directory or hub:<dataset id>)")
    fmt = spec.get("format", "columns")
    if fmt not in FORMATS:
        raise ConfigError(f"{where}: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "columns" and not ("problem" in spec and "demonstration" in spec):
        raise ConfigError(f"{where}: format `columns` needs `problem` and `demonstration` column names "
                          "(and `answer`, else the last \\boxed{} of the demonstration is the reference)")
    try:
        weight = float(spec.get("weight", "1"))
    except ValueError:
        raise ConfigError(f"{where}: weight {spec['weight']!r} is not a number") from None
    if not 0.0 < weight <= 1.0:
        raise ConfigError(f"{where}: weight {weight} must be in (0, 1] (the fraction of the source's rows kept)")


def source_name(spec: dict[str, str]) -> str:
    if spec.get("name"):
        return spec["name"]
    path = spec["path"]
    return path.split(":")[1].split("/")[-1] if path.startswith("hub:") else Path(path).name.split(".")[0]


def _read(spec: dict[str, str]) -> list[dict[str, Any] | None]:
    path = spec["path"]
    if path.startswith("hub:"):
        dataset_id, _, config = path[4:].partition(":")
        return read_hub(dataset_id, config or None, "train")
    return read_records(path)


def load_sources(sources: list[dict[str, str]], seed: int = 0) -> tuple[Dataset, dict[str, Any]]:
    """All sources in the input schema of curate, and the counts: rows read, malformed per reason,
    rows sampled away by `weight`, rows kept, per source."""
    out: dict[str, list] = {c: [] for c in (S.ID, S.SOURCE, S.LEVEL, S.PROBLEM, S.DEMONSTRATION, S.ANSWER)}
    report: dict[str, Any] = {}
    for k, spec in enumerate(sources):
        check_source(spec, f"data.sources[{k}]")
        name, fmt = source_name(spec), spec.get("format", "columns")
        parse, required = FORMATS[fmt]
        records = _read(spec)
        mapping = required if fmt != "columns" else {f: spec[f] for f in ("problem", "demonstration", "answer", "level")
                                                     if f in spec}
        require_mapped_columns(records, mapping, f"{spec['path']} (format {fmt})")
        counts: Counter[str] = Counter(rows_read=len(records))
        kept: list[tuple[int, Row]] = []
        for i, row in enumerate(records):
            try:
                if not isinstance(row, dict):
                    raise Malformed("malformed_row")
                kept.append((i, parse(row, spec)))
            except Malformed as e:
                counts[f"dropped_{e.args[0]}"] += 1
        weight = float(spec.get("weight", "1"))
        if weight < 1.0:
            n = round(weight * len(kept))
            chosen = sorted(random.Random(f"{seed}-{name}").sample(range(len(kept)), n))
            counts["dropped_by_weight"] = len(kept) - n
            kept = [kept[j] for j in chosen]
        for i, (problem, demo, answer, level) in kept:
            native = get_path(records[i], spec.get("id", "id"))
            out[S.ID].append(f"{name}-{native if native not in (None, MISSING, '') else i}")
            out[S.SOURCE].append(name)
            out[S.LEVEL].append(level)
            out[S.PROBLEM].append(problem)
            out[S.DEMONSTRATION].append(demo)
            out[S.ANSWER].append(answer)
        counts["rows_kept"] = len(kept)
        report[name] = dict(counts)
    return S.make_dataset(out), report
