"""Our steps vs TRL GRPOTrainer steps at equal settings, alternating in one run; one JSON line.

Both sides: the embedded default weights and tokenizer, the same prompts in the same order (our
prefixes stage draws them; TRL gets the same texts through the same chat template), N = 8 samples,
temperature 1, every completion forced to exactly --max-new-tokens tokens (`min_new_tokens`), fp32 (`--precision bf16`: bf16 autocast on both sides),
one micro-batch of all P x N sequences, one optimizer step per step, AdamW with the same settings,
constant LR, grad clip 1.0, no KL. Ours is pure RFT (no prefixes), so the work is equal; it also
writes every stage to disk and a checkpoint per step, grades with math-verify in worker processes and
runs a separate pre-update log-prob pass (TRL skips it when num_iterations = 1), all counted.

TRL runs in its own environment (--trl-python, default .venv-trl/bin/python; `pip install trl` there
with the CPU torch) as a subprocess that waits for a `go` before each step (scripts/trl_worker.py);
our step runs in this process while TRL waits, then TRL's step while we wait. The first step of each
side is a warm-up; the figure is the median of the per-step ratios ours / TRL over the others.

    python scripts/bench_vs_trl.py [--steps 6 --prompts-per-step 8 --max-new-tokens 64] [--precision bf16]
    python scripts/bench_vs_trl.py --steps 4 --max-new-tokens 512       # the rollout-dominated shape
    python scripts/bench_vs_trl.py --max-new-tokens 512 --host-memory release     # ours without train.host_memory
    python scripts/bench_vs_trl.py --max-new-tokens 512 --trl-host-memory keep    # TRL given the same setting

Our side also reports its update's minor page faults, system time and peak resident size (what
train.host_memory changes, pipeline/hostmem.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout, not whatever is installed


def our_run(args, out: Path):
    from pipeline.config import load_config
    from pipeline.run import Run, make_accelerator

    overrides = [f"model.name_or_path={args.model}", f"prefixes.prompts_per_step={args.prompts_per_step}", "prefixes.samples_per_prompt=8",
                 "prefixes.hybrids_per_prompt=0", f"generate.max_response_tokens={args.max_new_tokens}",
                 f"generate.min_new_tokens={args.max_new_tokens}",
                 # forcing a completion past the model's own end masks its stop tokens, so the sampled log-probs
                 # are of a renormalised distribution: the engine/trainer agreement check would stop the run
                 "generate.max_logprob_mismatch=0", f"generate.precision={args.precision}",
                 "generate.temperature=1.0", f"update.micro_batch_size={args.prompts_per_step * 8}",
                 "update.mini_batches=1", f"update.precision={args.precision}", f"update.lr={args.lr}",
                 f"train.num_threads={args.threads}", f"train.host_memory={args.host_memory}",
                 f"train.total_steps={args.steps}", "train.seed=0", "eval.at_start=false", "eval.at_end=false"]
    cfg = load_config("quickstart", overrides)
    run = Run(cfg, out, make_accelerator(cfg))
    run.prepare_output_dir()
    run.run_stage("curate")
    run.load_policy(0, with_optimizer=True)
    return run, cfg


def trl_rows(run, cfg, steps: int) -> list[dict]:
    """The prompts of our steps 1..steps, in order, as TRL conversational rows."""
    from pipeline import schema as S
    from pipeline.prompts import build_messages

    curated = run.require_input("curate", 0).load()
    by_id = {i: (p, a) for i, p, a in zip(curated[S.ID], curated[S.PROBLEM], curated[S.ANSWER])}
    rows = []
    for step in range(1, steps + 1):
        ds = run.run_stage("prefixes", step).load()
        seen = set()
        for gid, pid in zip(ds[S.GROUP_ID], ds[S.ID]):
            if gid not in seen:
                seen.add(gid)
                problem, answer = by_id[pid]
                rows.append({"prompt": build_messages(problem, cfg.data.instruction, cfg.data.system_prompt),
                             "answer": answer})
    return rows


STAGES: dict[str, list[float]] = {}
UPDATE_RUSAGE: list[tuple[int, float]] = []  # (minor page faults, system seconds) of each update stage


def our_step(run, step: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    for stage in ("prefixes", "generate", "reward", "update"):
        t, r = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        rec = run.run_stage(stage, step, strict=True)  # as pipeline.run.train steps (update writes its checkpoint)
        STAGES.setdefault(stage, []).append(time.perf_counter() - t)
        if stage == "update":  # page faults and kernel time: what train.host_memory changes (pipeline/hostmem.py)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            UPDATE_RUSAGE.append((r1.ru_minflt - r.ru_minflt, r1.ru_stime - r.ru_stime))
        if stage == "generate":
            tokens = int(rec.meta["stats"]["completion_tokens"])
    return time.perf_counter() - t0, tokens


def trl_tunables(args) -> dict[str, str]:
    """The TRL process's environment for --trl-host-memory keep: glibc's tunables, read at its start, equal to
    what pipeline/hostmem.py sets in ours with mallopt."""
    from pipeline.hostmem import glibc_tunables

    return {} if args.trl_host_memory == "release" else {"GLIBC_TUNABLES": glibc_tunables()}


def trl_step(proc) -> tuple[float, int]:
    proc.stdin.write("go\n")
    proc.stdin.flush()
    for line in proc.stdout:
        if line.startswith("@@step"):
            _, secs, toks = line.split()
            return float(secs), int(toks)
    raise SystemExit(f"TRL worker ended early (exit {proc.wait()}); see its stderr above")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--prompts-per-step", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--model", default="embedded", help="model.name_or_path for both sides")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads on both sides (1: a loaded shared machine makes 2 OpenMP threads crawl)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="bf16: autocast on both sides (ours: generate/update.precision; TRL: bf16=True)")
    ap.add_argument("--host-memory", choices=["keep", "release"], default="keep",
                    help="our side's train.host_memory (pipeline/hostmem.py); keep is our default")
    ap.add_argument("--trl-host-memory", choices=["release", "keep"], default="release",
                    help="keep: the TRL process gets the same glibc setting through GLIBC_TUNABLES (mmap_max=0, "
                         "trim_threshold=2 GB); release: its default")
    ap.add_argument("--trl-python", default=str(ROOT / ".venv-trl" / "bin" / "python"))
    args = ap.parse_args()
    if args.precision == "bf16":  # equal work: our side would fall back to fp32 on a CPU without native bf16
        os.environ["PREFIX_RFT_CPU_BF16"] = "1"  # (pipeline/precision.py) while TRL's keeps emulating bf16
    if not Path(args.trl_python).exists():
        print(f"error: --trl-python {args.trl_python} does not exist; create it with `python -m venv .venv-trl && "
              ".venv-trl/bin/pip install torch==2.13.0+cpu trl`", file=sys.stderr)
        return 2
    from pipeline.logs import setup_logging
    from pipeline.policy import resolve_model_path

    setup_logging()
    tmp = Path(tempfile.mkdtemp(prefix="bench_vs_trl_"))
    run, cfg = our_run(args, tmp / "ours")
    u = cfg.update
    spec = {"model": resolve_model_path(cfg.model), "rows": trl_rows(run, cfg, args.steps), "seed": 0,
            "samples": 8, "prompts_per_step": args.prompts_per_step, "max_new_tokens": args.max_new_tokens,
            "temperature": 1.0, "lr": args.lr, "weight_decay": u.weight_decay, "betas": u.betas, "eps": u.eps,
            "max_grad_norm": u.max_grad_norm, "steps": args.steps, "threads": args.threads, "bf16": args.precision == "bf16", "output_dir": str(tmp / "trl")}
    (tmp / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.Popen([args.trl_python, str(ROOT / "scripts" / "trl_worker.py"), str(tmp / "spec.json")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tmp,
                            env={**os.environ, "OMP_NUM_THREADS": str(args.threads), **trl_tunables(args)})
    ours, trl = [], []
    try:
        for step in range(1, args.steps + 1):
            pair = [None, None]
            for side in ((0, 1) if step % 2 else (1, 0)):  # alternate who goes first
                pair[side] = our_step(run, step) if side == 0 else trl_step(proc)
            ours.append(pair[0])
            trl.append(pair[1])
    finally:
        proc.stdin.close()
        proc.wait(timeout=120)
    ratios = [o[0] / t[0] for o, t in zip(ours[1:], trl[1:])]
    goal = 0.6 if args.max_new_tokens >= 512 else 0.5  # rollout-dominated shape: 0.6 (issue 17); short: 0.5
    row = {
        "bench": "vs_trl", "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores (shared), CPU, {args.precision}, {args.threads} thread(s) per side",
        "trl": subprocess.run([args.trl_python, "-c", "import trl, transformers; print(trl.__version__, "
                               "transformers.__version__)"], capture_output=True, text=True).stdout.strip(),
        "host_memory": {"ours": args.host_memory, "trl": args.trl_host_memory},
        "model": args.model, "prompts_per_step": args.prompts_per_step, "samples": 8,
        "max_new_tokens": args.max_new_tokens, "steps": args.steps, "warmup_steps_dropped": 1,
        "ours_step_s": [round(o[0], 2) for o in ours], "trl_step_s": [round(t[0], 2) for t in trl],
        "ours_completion_tokens": [o[1] for o in ours], "trl_completion_tokens": [t[1] for t in trl],
        "ours_median_stage_s": {k: round(statistics.median(v[1:]), 3) for k, v in STAGES.items()},
        "ours_median_update_minor_faults": int(statistics.median(f for f, _ in UPDATE_RUSAGE[1:])),
        "ours_median_update_system_s": round(statistics.median(s for _, s in UPDATE_RUSAGE[1:]), 2),
        "ours_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "median_step_ratio": round(statistics.median(ratios), 3), "goal_ratio_max": goal,
    }
    row["met"] = row["median_step_ratio"] <= goal
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
