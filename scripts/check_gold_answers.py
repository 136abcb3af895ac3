"""Every gold answer against itself, and against other problems' answers, through the real verifier.

    python scripts/check_gold_answers.py [--answers tests/data/gold_answers.jsonl] [--shifts 4]

For every reference answer g of the fixture (the single-answer problems of the six math suites,
scripts/extract_gold_answers.py) it scores `\\boxed{g}` at the end of a short worked solution and
after a misleading `<think>` block with `pipeline.rewards.math_verify_reward` against g (all must be
1), then pairs each answer with the answer `s` places further down a seeded shuffle for each of
`--shifts` shifts (different problems, different answer strings; all must be 0 except where the two
answers are mathematically equal). Prints one JSON object: counts, failures, the equal pairs, seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.rewards import math_verify_reward  # noqa: E402
from tests.gold_answers import ANSWERS, SOLUTION, THINK, cross_pairs, load  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--answers", default=str(ANSWERS))
    ap.add_argument("--shifts", type=int, default=4)
    ap.add_argument("--timeout-s", type=float, default=5.0)
    args = ap.parse_args()
    rows = load(args.answers)
    golds = [r["answer"] for r in rows]
    out: dict = {"problems": len(rows)}
    t0 = time.perf_counter()
    for name, template in (("boxed", SOLUTION), ("after_think", THINK)):
        res = math_verify_reward([template.format(g) for g in golds], golds, timeout_s=args.timeout_s)
        bad = [{"suite": r["suite"], "id": r["id"], "answer": r["answer"], "status": s[1]}
               for r, s in zip(rows, res) if s[0] != 1.0]
        out[name] = {"scored_1": len(rows) - len(bad), "failures": bad}
    out["self_seconds"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    pairs = cross_pairs(rows, args.shifts)
    res = math_verify_reward([SOLUTION.format(rows[i]["answer"]) for i, _ in pairs],
                             [rows[j]["answer"] for _, j in pairs], timeout_s=args.timeout_s)
    ones = [{"completion": f"{rows[i]['id']}: {rows[i]['answer']}",
             "reference": f"{rows[j]['id']}: {rows[j]['answer']}"}
            for (i, j), s in zip(pairs, res) if s[0] == 1.0]
    statuses: dict[str, int] = {}
    for s in res:
        statuses[s[1]] = statuses.get(s[1], 0) + 1
    out["cross"] = {"pairs": len(pairs), "scored_0": len(pairs) - len(ones), "scored_1": ones, "statuses": statuses,
                    "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
