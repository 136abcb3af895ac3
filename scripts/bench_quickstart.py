"""Run the quickstart end to end and print one JSON line: wall time (install excluded), the embedded
build time, base vs final held-out accuracy and the train-reward quarters, with the learning checks of
the quickstart (last-quarter reward above the first; final accuracy above the base).

    python scripts/bench_quickstart.py [--fresh-cache] [--output-dir DIR] [section.field=value ...]

--fresh-cache builds the embedded model into a new cache (what a first run on a new machine does).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fresh-cache", action="store_true")
    ap.add_argument("--output-dir", default=None)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_quickstart_"))
    out = Path(args.output_dir).resolve() if args.output_dir else tmp / "run"
    env = dict(os.environ)
    if args.fresh_cache:
        env["PREFIX_RFT_CACHE"] = str(tmp / "cache")
    t0 = time.time()
    res = subprocess.run([sys.executable, "-m", "pipeline.train", "--config", "quickstart", "--output-dir", str(out),
                          *args.overrides], env=env, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])  # this checkout, not whatever is installed
    wall = time.time() - t0
    if res.returncode != 0:
        print(res.stderr[-3000:], file=sys.stderr)
        return res.returncode
    summary = json.loads((out / "summary.json").read_text())
    toy = summary["eval"].get("toy", {})
    base, final = (toy.get("base") or {}).get("accuracy"), (toy.get("final") or {}).get("accuracy")
    cache_root = Path(env.get("PREFIX_RFT_CACHE", Path.home() / ".cache" / "prefix_rft"))
    reports = sorted((cache_root / "embedded").glob("default-*/embedded_report.json"))
    build = json.loads(reports[-1].read_text()) if reports else {}
    row = {
        "bench": "quickstart", "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} "
        f"{os.cpu_count()} cores", "fresh_cache": args.fresh_cache, "wall_seconds": round(wall, 1),
        "embedded_build_seconds": build.get("build_seconds") if args.fresh_cache else 0.0,
        "goal_seconds": 300, "base_accuracy": base, "final_accuracy": final,
        "reward_first_quarter": summary["reward_first_quarter"], "reward_last_quarter": summary["reward_last_quarter"],
        "reward_on_policy_first_quarter": summary.get("reward_on_policy_first_quarter"),
        "reward_on_policy_last_quarter": summary.get("reward_on_policy_last_quarter"),
        "reward_rose": summary["reward_last_quarter"] > summary["reward_first_quarter"],
        "accuracy_rose": final is not None and base is not None and final > base,
    }
    print(json.dumps(row))
    return 0 if row["reward_rose"] and row["accuracy_rose"] else 1


if __name__ == "__main__":
    sys.exit(main())
