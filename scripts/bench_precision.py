"""bf16 autocast against fp32 on this machine, alternating in one process; one JSON line.

One training forward + backward of a model of --preset's shapes (embedded default: ~1M parameters; random
weights, no build) on --rows sequences of --tokens tokens, under `torch.autocast(cpu, bfloat16)` and in fp32.
It is the measurement behind pipeline/precision.py: on a CPU without native bf16 (oneDNN's check, printed as
`native_bf16`) bf16 autocast is an emulation many times slower than fp32, so `precision: bf16` computes in
fp32 there.

    python scripts/bench_precision.py [--preset default --rows 64 --tokens 96 --threads 1 --repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
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
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from pipeline.embedded.build import random_model

    model = random_model(args.preset)
    ids = torch.randint(0, model.config.vocab_size, (args.rows, args.tokens))
    contexts = {"fp32": contextlib.nullcontext, "bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}

    def step(name: str) -> float:
        t0 = time.perf_counter()
        with contexts[name]():
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    for name in contexts:
        step(name)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in contexts}
    for r in range(args.repeats):
        for name in (("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")):
            times[name].append(step(name))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "bench": "precision", "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}",
        "native_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()), "model": f"embedded:{args.preset}",
        "shape": f"{args.rows}x{args.tokens}", "s_per_step": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "median_s_fp32": round(med["fp32"], 4), "median_s_bf16": round(med["bf16"], 4),
        "bf16_over_fp32": round(med["bf16"] / med["fp32"], 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
