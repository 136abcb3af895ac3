"""Chaos test of exact resume: K trials, each SIGKILLs the training command at a random moment,
re-runs it to the end, and compares with one uninterrupted run. Prints one JSON line.

    python scripts/chaos.py --trials 20 [--seed 0] [--work-dir runs/chaos]

A trial passes when the final weights, the metrics (less wall-clock fields) and every stage's Arrow
data equal the reference byte for byte; `corrupt` counts folders left half-written after the resume.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_crash_resume import _data_bytes, _metrics, _train  # noqa: E402

FINAL = "checkpoints/step-000002/model.safetensors"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work-dir", default=None)
    args = ap.parse_args()
    root = Path(args.work_dir or tempfile.mkdtemp(prefix="chaos-"))
    rng = random.Random(args.seed)
    t0 = time.monotonic()
    _train(root / "ref")
    ref_s = time.monotonic() - t0
    ref = root / "ref"
    passed, mismatches, corrupt, kill_points = 0, 0, 0, []
    for trial in range(args.trials):
        out = root / f"trial-{trial}"
        at = rng.uniform(0.0, ref_s)
        start = time.monotonic()
        _train(out, lambda _out: time.monotonic() - start >= at)
        kill_points.append(round(at, 2))
        _train(out)
        same = ((out / FINAL).read_bytes() == (ref / FINAL).read_bytes() and _metrics(out) == _metrics(ref)
                and _data_bytes(out) == _data_bytes(ref))
        bad = len(list(out.rglob(".*.tmp-*")))
        passed += same and not bad
        mismatches += not same
        corrupt += bad
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({"trials": args.trials, "passed": passed, "mismatches": mismatches, "corrupt": corrupt,
                      "reference_run_s": round(ref_s, 1), "kill_at_s": kill_points,
                      "total_s": round(time.monotonic() - t0, 1)}))
    return 0 if passed == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
