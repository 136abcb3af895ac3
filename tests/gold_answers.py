"""The suites' reference answers as completions: shared by tests/test_gold_answers.py and
scripts/check_gold_answers.py. tests/data/gold_answers.jsonl holds suite, id and answer of the 1,496
single-answer problems of aime24, aime25, amc, math500, minerva and olympiadbench (answers only, no
problem text; written by scripts/extract_gold_answers.py from the suites' local copies)."""

from __future__ import annotations

import json
import random
from pathlib import Path

ANSWERS = Path(__file__).parent / "data" / "gold_answers.jsonl"
SOLUTION = ("We work through the problem step by step.\nCombining the steps above gives the result.\n"
            "The final answer is $\\boxed{{{}}}$.")
# a misleading reasoning block before the same solution: boxes and an unclosed one that must not be graded
THINK = "<think>\nFirst guess: \\boxed{{0}}. No; maybe \\boxed{{-1}}, or \\boxed{{{{}}\n</think>" + SOLUTION


def load(path: str | Path = ANSWERS) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def cross_pairs(rows: list[dict], shifts: int, seed: int = 0) -> list[tuple[int, int]]:
    """(i, j) index pairs of different problems with different answer strings: each row against the
    row `s` places further down a seeded shuffle, s = 1..shifts."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    pairs = []
    for s in range(1, shifts + 1):
        for k, i in enumerate(order):
            j = order[(k + s) % len(order)]
            if rows[i]["answer"].strip() != rows[j]["answer"].strip():
                pairs.append((i, j))
    return pairs
