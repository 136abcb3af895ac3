"""Reading jsonl / json / parquet / Arrow files into records; one-line errors for missing files/columns."""

import json

import pytest

from pipeline.datafiles import MISSING, get_path, read_records, require_mapped_columns
from pipeline.errors import UserError

ROWS = [{"q": "a", "n": 1, "rm": {"gt": "x"}}, {"q": "b", "n": 2.5, "rm": {"gt": "y"}}]


def test_every_format_reads_the_same_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS) + "\n")
    (tmp_path / "list.json").write_text(json.dumps(ROWS))
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": ROWS}))
    (tmp_path / "columns.json").write_text(json.dumps({"q": ["a", "b"], "n": [1, 2.5], "rm": [{"gt": "x"}, {"gt": "y"}]}))
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "r.parquet")
    with pa.OSFile(str(tmp_path / "r.arrow"), "wb") as sink:
        table = pa.Table.from_pylist(ROWS)
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    for name in ("r.jsonl", "list.json", "wrapped.json", "columns.json", "r.parquet", "r.arrow", "saved"):
        assert read_records(tmp_path / name) == ROWS, name


def test_unreadable_lines_become_none(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"q": "a"}\nnot json\n[1, 2]\n{"q": "b"}\n')
    assert read_records(tmp_path / "bad.jsonl") == [{"q": "a"}, None, None, {"q": "b"}]


def test_missing_file_and_columns_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="nope.jsonl: no such file"):
        read_records(tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match=r"x.csv: unsupported file type '\.csv'"):
        (tmp_path / "x.csv").write_text("a,b\n")
        read_records(tmp_path / "x.csv")
    with pytest.raises(UserError) as e:
        require_mapped_columns(ROWS, {"problem": "question", "answer": "rm.gt", "demo": "sol"}, "f.jsonl")
    msg = str(e.value)
    assert "f.jsonl" in msg and "problem='question'" in msg and "demo='sol'" in msg and "answer" not in msg.split(";")[0]
    assert "\n" not in msg


def test_dotted_paths():
    assert get_path(ROWS[0], "rm.gt") == "x" and get_path(ROWS[0], "rm.nope") is MISSING
    assert get_path(ROWS[0], "q.x") is MISSING
