"""Stage folders: fingerprints, atomic writes, completion markers.

A stage folder holds `data/` (an Arrow dataset written by `Dataset.save_to_disk`), `meta.json`
(fingerprint, inputs, config, stats) and `_COMPLETE`, written last, which records the fingerprint and
the size and sha256 of every file. Everything is first written to a hidden temporary sibling and
renamed into place, so a crash never leaves a folder that looks complete. A folder whose marker is
missing, whose files do not match the marker, or whose fingerprint differs from the expected one is
never read: it is named in a warning and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from datasets import Dataset, load_from_disk

log = logging.getLogger(__name__)

MARKER = "_COMPLETE"
META = "meta.json"
DATA = "data"
HASH_LIMIT_BYTES = 256 << 20  # larger files (model shards) are checked by size only


def fingerprint(*parts: Any) -> str:
    """sha256 of the canonical JSON of `parts`, first 16 hex digits."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest(root: Path) -> dict[str, list]:
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MARKER:
            size = p.stat().st_size
            files[str(p.relative_to(root))] = [size, _sha256(p) if size <= HASH_LIMIT_BYTES else None]
    return files


def folder_status(path: Path, expected_fp: str | None = None) -> str:
    """`missing`, `complete`, `stale` (complete but for other inputs) or `corrupt` (half-written or
    altered since it was completed)."""
    path = Path(path)
    if not path.exists():
        return "missing"
    marker = path / MARKER
    if not marker.is_file():
        return "corrupt"
    try:
        record = json.loads(marker.read_text())
        files = record["files"]
    except (ValueError, KeyError, TypeError):
        return "corrupt"
    for rel, (size, digest) in files.items():
        p = path / rel
        if not p.is_file() or p.stat().st_size != size:
            return "corrupt"
        if digest is not None and _sha256(p) != digest:
            return "corrupt"
    if expected_fp is not None and record.get("fingerprint") != expected_fp:
        return "stale"
    return "complete"


def is_complete(path: Path, expected_fp: str, what: str = "") -> bool:
    """True when `path` is complete for `expected_fp`; warns when it is corrupt or stale."""
    status = folder_status(path, expected_fp)
    if status == "corrupt":
        log.warning("%s %s is incomplete or corrupted (marker or file check failed); recomputing it",
                    what or "folder", path)
    elif status == "stale":
        log.info("%s %s was computed from other inputs; recomputing it", what or "folder", path)
    return status == "complete"


def clean_temporaries(parent: Path) -> None:
    """Remove leftovers of interrupted writes (hidden `.<name>.tmp-*` / `.trash-*` siblings)."""
    if parent.is_dir():
        for p in parent.iterdir():
            if p.name.startswith(".") and (".tmp-" in p.name or ".trash-" in p.name):
                shutil.rmtree(p, ignore_errors=True)


def write_folder(path: Path, fp: str, fill: Callable[[Path], None]) -> None:
    """Create `path` atomically: `fill(tmp)` writes the content, then the marker is written and the
    temporary folder renamed into place (replacing any previous folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a write of this folder that was killed
        shutil.rmtree(stale, ignore_errors=True)
    for stale in path.parent.glob(f".{path.name}.trash-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tag = uuid.uuid4().hex[:8]
    tmp = path.parent / f".{path.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        fill(tmp)
        record = {"fingerprint": fp, "written_at": time.time(), "files": _manifest(tmp)}
        (tmp / MARKER).write_text(json.dumps(record, indent=1, sort_keys=True))
        if path.exists():
            trash = path.parent / f".{path.name}.trash-{tag}"
            os.replace(path, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def stable_dataset(ds: Dataset, fp: str) -> Dataset:
    """The same rows with a fixed dataset fingerprint and no indices mapping, so that `save_to_disk`
    writes identical bytes for identical content."""
    if ds._indices is not None:
        ds = ds.flatten_indices()
    return Dataset(ds.data, info=ds.info, fingerprint=fp)


@dataclass
class StageRecord:
    path: Path
    fingerprint: str
    meta: dict[str, Any]

    def load(self) -> Dataset:
        return load_from_disk(str(self.path / DATA))


def write_stage(path: Path, fp: str, ds: Dataset, meta: dict[str, Any],
                extra: Callable[[Path], None] | None = None) -> StageRecord:
    """Write a stage folder: data, meta.json (with the fingerprint), marker last, atomically."""
    meta = {**meta, "fingerprint": fp}

    def fill(tmp: Path) -> None:
        stable_dataset(ds, fp).save_to_disk(str(tmp / DATA))
        (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
        if extra is not None:
            extra(tmp)

    write_folder(path, fp, fill)
    return StageRecord(Path(path), fp, meta)


def read_stage(path: Path) -> StageRecord:
    meta = json.loads((Path(path) / META).read_text())
    return StageRecord(Path(path), meta["fingerprint"], meta)
