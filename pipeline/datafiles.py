"""Reading tabular data files and hub datasets into plain Python records.

One reader for the formats users bring (used by curation sources and evaluation suites):

- `.jsonl`: one JSON object per line; a line that is not valid JSON (or not an object) becomes `None`
  so the caller can count it as a malformed row instead of stopping;
- `.json`: a list of objects, an object with one list of objects (e.g. `{"data": [...]}`), or a
  mapping of equally long columns;
- `.parquet`, `.arrow` (IPC file or stream), a `save_to_disk` directory, or a directory of such files;
- `hub:<id>[:<config>]` (or a bare `org/name` that is not a local path) through `datasets.load_dataset`.

Values are kept as they are (numbers stay numbers, lists stay lists): deciding what is malformed is the
caller's job. Column paths may be dotted (`reward_model.ground_truth`) to reach into structs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

log = logging.getLogger(__name__)

TABLE_SUFFIXES = (".jsonl", ".json", ".parquet", ".arrow")
MISSING = object()  # a column path that a record does not have


def read_records(path: str | Path) -> list[dict[str, Any] | None]:
    """All rows of a local file or directory; unreadable rows are None. Missing file -> UserError."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{p}: no such file or directory")
    if p.is_dir():
        return _read_dir(p)
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(p)
    if suffix == ".json":
        return _read_json(p)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(p).to_pylist()
    if suffix == ".arrow":
        return _read_arrow(p)
    raise UserError(f"{p}: unsupported file type {suffix!r}; use one of {', '.join(TABLE_SUFFIXES)}, "
                    "a save_to_disk directory, or hub:<dataset id>")


def read_hub(dataset_id: str, config: str | None = None, split: str = "train",
             revision: str | None = None) -> list[dict[str, Any]]:
    """Rows of a hub dataset split; a failure (offline, gated, unknown id) is one UserError line."""
    from datasets import load_dataset

    try:
        ds = load_dataset(dataset_id, config, split=split, revision=revision)
    except Exception as e:  # connection, auth, missing config/split: all fixed the same way
        where = f"{dataset_id}" + (f" (config {config})" if config else "") + f" split {split}"
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"could not load hub dataset {where}: {first}. Without hub access pass a local copy "
                        "(a file path, or a data_dir with the documented layout)") from None
    return ds.to_list()


def _read_jsonl(p: Path) -> list[dict[str, Any] | None]:
    rows: list[dict[str, Any] | None] = []
    with open(p, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            rows.append(obj if isinstance(obj, dict) else None)
    return rows


def _read_json(p: Path) -> list[dict[str, Any] | None]:
    try:
        obj = json.loads(p.read_text(encoding="utf-8", errors="replace"))
    except ValueError as e:
        raise UserError(f"{p}: not valid JSON ({e}); use one object per line (.jsonl) or a list of objects") from None
    if isinstance(obj, dict):
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) == 1 and all(isinstance(r, dict) for r in lists[0]):
            obj = lists[0]
        elif obj and all(isinstance(v, list) for v in obj.values()) and len({len(v) for v in obj.values()}) == 1:
            keys = list(obj)
            obj = [dict(zip(keys, vals)) for vals in zip(*obj.values())]
    if not isinstance(obj, list):
        raise UserError(f"{p}: expected a list of objects (or a mapping of equally long columns), got "
                        f"{type(obj).__name__}")
    return [r if isinstance(r, dict) else None for r in obj]


def _read_arrow(p: Path) -> list[dict[str, Any] | None]:
    import pyarrow as pa

    for opener in (pa.ipc.open_file, pa.ipc.open_stream):
        try:
            with pa.memory_map(str(p)) as source:
                return opener(source).read_all().to_pylist()
        except pa.ArrowInvalid:
            continue
    raise UserError(f"{p}: not an Arrow IPC file or stream")


def _read_dir(p: Path) -> list[dict[str, Any] | None]:
    if (p / "dataset_info.json").is_file() or (p / "state.json").is_file():
        from datasets import load_from_disk

        ds = load_from_disk(str(p))
        if hasattr(ds, "keys"):  # a DatasetDict: take its only split, or `train`
            ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
        return ds.to_list()
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in TABLE_SUFFIXES)
    if not files:
        raise UserError(f"{p}: directory holds no {'/'.join(TABLE_SUFFIXES)} files and is not a save_to_disk "
                        "dataset")
    rows: list[dict[str, Any] | None] = []
    for f in files:
        rows += read_records(f)
    return rows


def get_path(record: dict[str, Any], path: str) -> Any:
    """`record[a][b]` for the dotted path `a.b`; MISSING when any part is absent."""
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def columns_of(records: list[dict[str, Any] | None], sample: int = 1000) -> list[str]:
    """Top-level column names seen in (the first `sample`) records, in first-seen order."""
    seen: dict[str, None] = {}
    for r in records[:sample]:
        if isinstance(r, dict):
            seen.update(dict.fromkeys(r))
    return list(seen)


def require_mapped_columns(records: list[dict[str, Any] | None], mapping: dict[str, str], where: str) -> None:
    """UserError naming `where` and every mapped column path that no record has."""
    valid = [r for r in records if isinstance(r, dict)]
    if not valid:
        raise UserError(f"{where}: no readable rows (empty, or no line is a JSON object)")
    missing = [f"{field}={col!r}" for field, col in mapping.items()
               if not any(get_path(r, col) is not MISSING for r in valid)]
    if missing:
        raise UserError(f"{where}: missing mapped column(s) {', '.join(missing)}; the file has columns "
                        f"{columns_of(records)}. Map each field to one of them in the source's column mapping")


def reference_text(value: Any) -> str | None:
    """A reference answer as a string: numbers without a spurious `.0`, the first entry of a list
    (OlympiadBench's `final_answer`), None when missing or empty."""
    if isinstance(value, list):
        return reference_text(value[0]) if value else None
    if isinstance(value, bool) or value is None or value is MISSING:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    return text or None
