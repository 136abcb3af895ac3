"""Stage folders: atomic writes, markers, corruption and staleness detection, identical bytes."""

import json
import os

import pytest
from datasets import Dataset

from pipeline import cache


def _ds(n=5):
    return Dataset.from_dict({"a": list(range(n)), "b": [[i, i + 1] for i in range(n)]})


def test_fingerprint_is_stable_and_order_insensitive_for_dicts():
    assert cache.fingerprint({"x": 1, "y": [1, 2]}) == cache.fingerprint({"y": [1, 2], "x": 1})
    assert cache.fingerprint({"x": 1}) != cache.fingerprint({"x": 2})
    assert len(cache.fingerprint("a")) == 16


def test_write_and_read_stage(tmp_path):
    rec = cache.write_stage(tmp_path / "s", "fp1", _ds(), {"stats": {"rows": 5}})
    assert cache.folder_status(tmp_path / "s", "fp1") == "complete"
    assert rec.load()["a"] == [0, 1, 2, 3, 4]
    assert cache.read_stage(tmp_path / "s").meta["stats"] == {"rows": 5}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_same_content_same_bytes(tmp_path):
    cache.write_stage(tmp_path / "x", "fp", _ds(), {})
    cache.write_stage(tmp_path / "y", "fp", _ds(), {})
    for name in sorted(os.listdir(tmp_path / "x" / "data")):
        assert (tmp_path / "x" / "data" / name).read_bytes() == (tmp_path / "y" / "data" / name).read_bytes(), name


def test_stale_and_missing(tmp_path):
    cache.write_stage(tmp_path / "s", "fp1", _ds(), {})
    assert cache.folder_status(tmp_path / "s", "fp2") == "stale"
    assert cache.folder_status(tmp_path / "nope", "fp1") == "missing"


@pytest.mark.parametrize("damage", ["no_marker", "truncate", "flip", "extra_missing", "bad_marker"])
def test_corruption_is_detected(tmp_path, damage, caplog):
    path = tmp_path / "s"
    cache.write_stage(path, "fp", _ds(50), {})
    arrow = next((path / "data").glob("*.arrow"))
    if damage == "no_marker":
        (path / cache.MARKER).unlink()
    elif damage == "truncate":
        arrow.write_bytes(arrow.read_bytes()[:-10])
    elif damage == "flip":
        data = bytearray(arrow.read_bytes())
        data[len(data) // 2] ^= 0xFF
        arrow.write_bytes(bytes(data))
    elif damage == "extra_missing":
        (path / cache.META).unlink()
    else:
        (path / cache.MARKER).write_text("{not json")
    assert cache.folder_status(path, "fp") == "corrupt"
    assert not cache.is_complete(path, "fp", "test stage")
    assert "incomplete or corrupted" in caplog.text and str(path) in caplog.text


def test_failed_write_leaves_nothing_that_looks_complete(tmp_path):
    cache.write_stage(tmp_path / "s", "old", _ds(), {})

    def explode(tmp):
        (tmp / "partial").write_text("x")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        cache.write_folder(tmp_path / "s", "new", explode)
    assert cache.folder_status(tmp_path / "s", "old") == "complete"  # the previous output is untouched
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_clean_temporaries(tmp_path):
    (tmp_path / ".s.tmp-abc").mkdir()
    (tmp_path / ".s.trash-abc").mkdir()
    (tmp_path / "keep").mkdir()
    cache.clean_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]


def test_marker_lists_every_file(tmp_path):
    cache.write_stage(tmp_path / "s", "fp", _ds(), {"k": 1})
    record = json.loads((tmp_path / "s" / cache.MARKER).read_text())
    assert record["fingerprint"] == "fp"
    assert "meta.json" in record["files"] and any(k.startswith("data/") for k in record["files"])
