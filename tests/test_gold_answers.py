"""Every reference answer of the six math suites through the real verifier (tests/data/gold_answers.jsonl:
suite, id and answer of the 1,496 single-answer problems of aime24, aime25, amc, math500, minerva and
olympiadbench, written by scripts/extract_gold_answers.py; answers only, no problem text).

- each gold, boxed at the end of a short worked solution, scores 1 against itself;
- the same after a misleading `<think>` block (holding other boxes and an unclosed one); after the cut
  at `</think>` the graded text is the worked solution above, so that grade comes from the cache;
- a seeded sample of cross pairs (each answer against the next one of a seeded shuffle: 1,496 pairs of
  different problems with different answer strings, not the 2.2 million of the full product) scores 0,
  except the listed pairs whose answers are mathematically equal.

scripts/check_gold_answers.py runs the same checks with more cross pairs and prints the figures.
"""

import pytest

from pipeline.rewards import graded_region, math_verify_reward
from tests.gold_answers import SOLUTION, THINK, cross_pairs, load
# cross pairs of the 1-shift sample that are mathematically equal (completion id, reference id): reviewed by hand
EQUAL_PAIRS = {
    ("olympiadbench-2860", "math500-test/algebra/2193.json"),  # 5 and x=5
}


@pytest.fixture(scope="module")
def rows():
    return load()


def test_fixture_covers_the_six_suites(rows):
    counts = {}
    for r in rows:
        counts[r["suite"]] = counts.get(r["suite"], 0) + 1
    assert counts == {"aime24": 30, "aime25": 30, "amc": 83, "math500": 500, "minerva": 272, "olympiadbench": 581}
    assert len({r["id"] for r in rows}) == 1496
    known = {r["answer"] for r in rows}
    assert {"11,\\! 111,\\! 111,\\! 100", "\\frac{100!}{2^{50}}", "\\frac{d !}{2 k(d-k) !}"} <= known


def test_every_gold_answer_scores_one_against_itself(rows):
    golds = [r["answer"] for r in rows]
    boxed = math_verify_reward([SOLUTION.format(g) for g in golds], golds)
    think_texts = [THINK.format(g) for g in golds]
    assert all(graded_region(t) == SOLUTION.format(g) for t, g in zip(think_texts, golds))
    think = math_verify_reward(think_texts, golds)
    failed = [(r["id"], r["answer"], b[1], t[1]) for r, b, t in zip(rows, boxed, think) if b[0] != 1.0 or t[0] != 1.0]
    assert failed == []


@pytest.mark.slow  # ~1,500 sympy comparisons, symbolic ones up to a second each on a loaded machine
def test_answers_of_different_problems_score_zero(rows):
    pairs = cross_pairs(rows, shifts=1)
    assert len(pairs) > 1400
    res = math_verify_reward([SOLUTION.format(rows[i]["answer"]) for i, _ in pairs],
                             [rows[j]["answer"] for _, j in pairs])
    ones = {(rows[i]["id"], rows[j]["id"]) for (i, j), r in zip(pairs, res) if r[0] == 1.0}
    assert ones == EQUAL_PAIRS
    # every answer parses as a completion and as a reference (a timeout is the machine's load, not the answer)
    assert [(rows[i]["id"], r[1]) for (i, _), r in zip(pairs, res) if r[1] not in ("ok", "timeout")] == []
