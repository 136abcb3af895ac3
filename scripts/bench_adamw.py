"""AdamW step time: torch's default implementation vs `fused=True`, alternating in one process; one JSON line.

The parameters are those of a model of --preset's shapes (embedded default: ~1M parameters in ~40
tensors; random weights, no build) with random gradients; the step is what `pipeline.policy.make_optimizer` runs once per
training step. Also reports the largest parameter difference after --steps steps of each (rounding only).

    python scripts/bench_adamw.py [--preset default --threads 1 --repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from pipeline.embedded.build import random_model

    base = random_model(args.preset)  # the embedded model's shapes; no build needed (weights are random)
    grads = [torch.randn_like(p) * 1e-3 for p in base.parameters()]
    params = {}
    opts = {}
    for name, fused in (("default", False), ("fused", True)):
        params[name] = [torch.nn.Parameter(p.detach().clone()) for p in base.parameters()]
        for p, g in zip(params[name], grads):
            p.grad = g.clone()
        opts[name] = torch.optim.AdamW(params[name], lr=1e-4, weight_decay=0.01, fused=fused)
    times: dict[str, list[float]] = {k: [] for k in opts}
    for r in range(args.repeats):
        for name in (("default", "fused") if r % 2 == 0 else ("fused", "default")):
            t0 = time.perf_counter()
            for _ in range(args.steps):
                opts[name].step()
            times[name].append((time.perf_counter() - t0) / args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    diff = max(float((a - b).abs().max()) for a, b in zip(params["default"], params["fused"]))
    print(json.dumps({
        "bench": "adamw", "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores (shared), torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads", "model": f"embedded:{args.preset}",
        "parameters": sum(p.numel() for p in base.parameters()), "tensors": len(grads),
        "ms_per_step": {k: [round(x * 1e3, 2) for x in v] for k, v in times.items()},
        "median_ms_default": round(med["default"] * 1e3, 2), "median_ms_fused": round(med["fused"] * 1e3, 2),
        "speedup": round(med["default"] / med["fused"], 2), "max_param_diff": diff,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
