"""A Prefix-RFT step vs an RFT step on `compare_toy`, alternating in one process; one JSON line.

Three runs of the same recipe from the same weights, stepped in turn (step 1 of each, then step 2 of
each, ...; the order rotates every step): `prefix_rft` (compare_toy as shipped: 1 hybrid of 8, the
demonstration prefix prefilled), `rft` (compare_toy with prefixes.hybrids_per_prompt=0) and
`prefix_rft_decoded` (Prefix-RFT with the prefix forced through the decode loop token by token, as
before prefill: `TransformersBackend.prefill_prefixes = False`). Each step is the whole step: prefixes,
generate, reward, update (with its checkpoint). train.total_steps is set to --steps so the cosine
prefix schedule sweeps 0.95 -> 0.05 over the measured steps, as it does over a full run. The first step
of each run is a warm-up; the figures are medians of the per-step ratios over the others.

    python scripts/bench_prefix_step.py [--steps 7 --threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout, not whatever is installed

STAGES = ("prefixes", "generate", "reward", "update")
VARIANTS = {"prefix_rft": [], "rft": ["prefixes.hybrids_per_prompt=0"], "prefix_rft_decoded": []}


def make_run(name: str, args, out: Path):
    import torch

    from pipeline.config import load_config
    from pipeline.run import Run, make_accelerator

    overrides = VARIANTS[name] + [f"model.name_or_path={args.model}", f"train.total_steps={args.steps}", f"train.num_threads={args.threads}",
                                  "eval.at_start=false", "eval.at_end=false", "train.seed=0"]
    cfg = load_config(args.recipe, overrides)
    run = Run(cfg, out / name, make_accelerator(cfg))
    torch.set_num_threads(args.threads)
    run.prepare_output_dir()
    run.run_stage("curate")
    run.load_policy(0, with_optimizer=True)
    if name == "prefix_rft_decoded":
        run.backend().prefill_prefixes = False  # built once per run; this run keeps the token-by-token path
    return run


def step(run, k: int) -> dict:
    times = {}
    t0 = time.perf_counter()
    for stage in STAGES:
        t = time.perf_counter()
        rec = run.run_stage(stage, k, strict=True)  # as pipeline.run.train steps (update writes its checkpoint)
        times[stage] = time.perf_counter() - t
        if stage == "generate":
            tokens = int(rec.meta["stats"]["completion_tokens"])
    times["step"] = time.perf_counter() - t0
    return {"s": times, "completion_tokens": tokens}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="compare_toy")
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default="embedded", help="model.name_or_path for all three runs")
    args = ap.parse_args()
    from pipeline.logs import setup_logging

    setup_logging()
    tmp = Path(tempfile.mkdtemp(prefix="bench_prefix_step_"))
    runs = {name: make_run(name, args, tmp) for name in VARIANTS}
    rec: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    names = list(VARIANTS)
    for k in range(1, args.steps + 1):
        order = names[k % 3:] + names[:k % 3]
        for name in order:
            rec[name].append(step(runs[name], k))

    def med_ratio(a: str, b: str, key: str) -> float:
        return round(statistics.median(x["s"][key] / y["s"][key] for x, y in zip(rec[a][1:], rec[b][1:])), 3)

    row = {
        "bench": "prefix_step", "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores (shared), CPU, {args.threads} thread(s)",
        "recipe": args.recipe, "model": args.model, "steps": args.steps, "warmup_steps_dropped": 1,
        "step_s": {n: [round(x["s"]["step"], 2) for x in rec[n]] for n in names},
        "generate_s": {n: [round(x["s"]["generate"], 2) for x in rec[n]] for n in names},
        "completion_tokens": {n: [x["completion_tokens"] for x in rec[n]] for n in names},
        "median_stage_s": {n: {s: round(statistics.median(x["s"][s] for x in rec[n][1:]), 3) for s in STAGES}
                           for n in names},
        "step_ratio_prefix_rft_vs_rft": med_ratio("prefix_rft", "rft", "step"),
        "step_ratio_decoded_vs_rft": med_ratio("prefix_rft_decoded", "rft", "step"),
        "generate_ratio_prefix_rft_vs_decoded": med_ratio("prefix_rft", "prefix_rft_decoded", "generate"),
        "goal_ratio_max": 1.0,
    }
    row["met"] = row["step_ratio_prefix_rft_vs_rft"] <= 1.0
    print(json.dumps(row))
    for r in runs.values():
        r.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
