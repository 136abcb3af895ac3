"""Score the hostile-completion corpus (tests/hostile_corpus.py) and print one JSON line.

    python scripts/bench_hostile.py [--timeout-s 5] [--workers 0]

Reports: items, statuses, items scored wrongly (a hostile answer scored correct, or a control scored
wrong), the slowest item's seconds (must stay under the limit plus kill overhead), total seconds, and
the worker timeouts/replacements. Exit code 1 when any item is wrong or over its limit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.rewards import grade_math  # noqa: E402
from pipeline.scoring import ScoringPool  # noqa: E402
from tests.hostile_corpus import corpus  # noqa: E402

KILL_SLACK_S = 2.0  # select wake-up + SIGKILL + reap on a loaded 2-core machine


def score_corpus(timeout_s: float, workers: int) -> dict:
    from pipeline.rewards import graded_region

    items = corpus()
    pool = ScoringPool(grade_math, num_workers=workers, timeout_s=timeout_s)
    try:
        pool.map([("\\boxed{1}", "1", True)])  # start the workers outside the timed region
        t0 = time.perf_counter()
        results = pool.map([(graded_region(h.completion), h.reference, True) for h in items])
        seconds = time.perf_counter() - t0
    finally:
        pool.close()
    wrong = [h.name for h, r in zip(items, results) if r[0] != h.expected]
    slowest = max(range(len(items)), key=lambda i: pool.item_seconds[i])
    return {"items": len(items), "statuses": dict(Counter(r[1] for r in results)), "wrong": len(wrong),
            "wrong_names": wrong[:10], "timeout_names": [h.name for h, r in zip(items, results) if r[1] == "timeout"], "max_item_s": round(pool.item_seconds[slowest], 3),
            "slowest": items[slowest].name, "limit_s": timeout_s,
            "over_limit": sum(s > timeout_s + KILL_SLACK_S for s in pool.item_seconds),
            "total_s": round(seconds, 2), "workers": pool.num_workers, "timeouts": pool.timeouts,
            "replaced": pool.replaced}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timeout-s", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=0, help="0: one per available core")
    args = ap.parse_args()
    report = score_corpus(args.timeout_s, args.workers)
    print(json.dumps(report))
    return 1 if report["wrong"] or report["over_limit"] else 0


if __name__ == "__main__":
    sys.exit(main())
