"""Write tests/data/gold_answers.jsonl: the reference answer of every single-answer problem of the six
math suites (aime24, aime25, amc, math500, minerva, olympiadbench), as the evaluation loads them.

    python scripts/extract_gold_answers.py --data-dir <folder with the suites' local copies>

Answers only (suite, id, answer): no problem text. OlympiadBench rows flagged `is_multiple_answer`
are left out (their reference is a list). Used by tests/test_gold_answers.py, which must not need
the data folder itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from evaluation.suites import GROUPS, SUITES, _rows

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "gold_answers.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--output", default=str(OUT))
    args = ap.parse_args()
    lines = []
    for name in GROUPS["math"]:
        suite = SUITES[name]
        rows = _rows(suite, args.data_dir)
        items = suite.load(args.data_dir)
        for row, item in zip(rows, items, strict=True):
            if row.get("is_multiple_answer"):
                continue
            lines.append(json.dumps({"suite": name, "id": item.id, "answer": item.answer}, ensure_ascii=False))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(json.dumps({"problems": len(lines), "output": args.output}))


if __name__ == "__main__":
    main()
