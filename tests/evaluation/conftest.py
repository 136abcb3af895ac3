"""Small fixture copies of every suite, in the layouts of data (built in a tmp dir)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

LUFFY_SYSTEM = "You are a careful assistant. Put the answer in \\boxed{}."


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


def _luffy_row(source: str, user: str, truth: str) -> dict:
    return {"data_source": source, "prompt": [{"role": "system", "content": LUFFY_SYSTEM},
                                              {"role": "user", "content": user}],
            "ability": "math", "reward_model": {"ground_truth": truth, "style": "rule"},
            "extra_info": {"index": 0, "split": "default"}}


def write_eval_fixtures(root: Path) -> Path:
    """root/eval/<file> for all ten suites plus LUFFY's valid.all; returns root."""
    ev = root / "eval"
    ev.mkdir(parents=True)
    _jsonl(ev / "aime24.jsonl", [{"id": 60 + i, "problem": f"Find {i} + 200.", "answer": str(200 + i),
                                  "solution": "...", "url": "u"} for i in range(3)])
    _jsonl(ev / "aime25.jsonl", [{"question": "Find the sum of all bases.", "answer": "70"},
                                 {"question": "Find n.", "answer": "588"}])
    _jsonl(ev / "amc83.jsonl", [{"problem": "Find m+n.", "answer": 142.0}, {"problem": "Find x.", "answer": -4.0},
                                {"problem": "Find p.", "answer": 0.5}])
    _jsonl(ev / "amc23.jsonl", [{"id": 0, "problem": "How many miles?", "answer": 27.0}])
    _jsonl(ev / "math500.jsonl", [
        {"problem": "Convert the point.", "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "level": 2,
         "unique_id": "test/precalculus/807.json", "subject": "Precalculus", "solution": "..."},
        {"problem": "Who is fastest?", "answer": "\\text{Evelyn}", "level": 5, "unique_id": "test/x/1.json",
         "subject": "Algebra", "solution": "..."}])
    _jsonl(ev / "minerva_math.jsonl", [
        {"idx": 0, "problem": "Find the diameter.", "type": "Astronomy",
         "solution": "First \\boxed{3} is wrong; so $s=\\boxed{1.6} \\mathrm{~cm}$"},
        {"idx": 1, "problem": "Find the luminosity.", "type": "Astronomy", "solution": "L = \\boxed{4.5e33}."}])
    _jsonl(ev / "olympiadbench.jsonl", [
        {"id": 1606, "question": "How many moves?", "final_answer": ["2"], "is_multiple_answer": False,
         "context": None, "unit": None, "answer_type": "Numerical", "solution": ["..."]},
        {"id": 1700, "question": "Find all pairs.", "final_answer": ["$69$,$84$"], "is_multiple_answer": True,
         "context": "In a game,", "unit": None, "answer_type": "Numerical", "solution": ["..."]}])
    _parquet(ev / "arc_challenge.parquet", [
        _luffy_row("arc_c", "Which is shorter?\n\nA) a year\nB) a day\nC) a week\nD) a month\n", "B"),
        _luffy_row("arc_c", "What do fungi eat?\n\n1) sunlight\n2) oxygen\n3) dead organisms\n", "3")])
    _parquet(ev / "gpqa_diamond.parquet", [
        _luffy_row("gpqa", "Synthetic question one?\n\nA) alpha\nB) beta\nC) gamma\nD) delta", "D"),
        _luffy_row("gpqa", "Synthetic question two?\n\nA) first line\ncontinued\nB) b\nC) c\nD) d", "A")])
    _parquet(ev / "mmlu_pro_test.parquet", [
        {"question_id": 70, "question": "Pick the tenth.", "options": [f"option {i}" for i in range(10)],
         "answer": "J", "answer_index": 9, "cot_content": "", "category": "math", "src": "x"},
        {"question_id": 71, "question": "Pick the first.", "options": ["yes", "no", "maybe"],
         "answer": "A", "answer_index": 0, "cot_content": "", "category": "law", "src": "x"}])
    luffy = [_luffy_row("aime", "Find 0 + 200.", "200")] * 3 + [_luffy_row("math", "Convert the point.", "\\pi")]
    luffy += [_luffy_row("aime25", "Find n.", "588")] * 3 + [_luffy_row("amc", "Find m+n.", "142.0")] * 3
    luffy += [_luffy_row("minerva", "Find the diameter.", "1.6"), _luffy_row("olympiad_bench", "How many?", "2")]
    _parquet(ev / "luffy_valid_all.parquet", luffy)
    return root


@pytest.fixture()
def suites_dir(tmp_path) -> Path:
    return write_eval_fixtures(tmp_path / "data")
