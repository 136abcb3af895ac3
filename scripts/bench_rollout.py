"""Rollout throughput: our transformers backend vs padded `model.generate` on the same model.

64 prompts of the embedded task x N = 8 samples, temperature 1, the same max new tokens; every
sample is forced to its full length on both sides (`min_new_tokens = max_new_tokens`, stop tokens
masked as transformers does) so both generate exactly the same number of tokens. Ours prefills each
prompt once and shares its KV cache across the group; the baseline left-pads the prompts and calls
`generate(num_return_sequences=N)` in the same batch size. The two alternate in one process (the
machine is shared, so only side-by-side ratios mean much); the median of --repeats runs each.

    python scripts/bench_rollout.py [--prompts 64 --samples 8 --max-new-tokens 96 --precision fp32]
    python scripts/bench_rollout.py --prompts 8 --max-new-tokens 512   # the long-completion shape
    python scripts/bench_rollout.py --profile   # adds each side's top operators (share of self CPU time)
    python scripts/bench_rollout.py --device cuda --model PATH_OR_HUB_ID   # a GPU, any causal LM
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout, not whatever is installed


def load(name: str, device: str):
    """`name` (`embedded[:preset]`, a local checkpoint or a hub id, as `model.name_or_path` takes it) in fp32 on
    `device`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.config import ModelConfig
    from pipeline.policy import resolve_model_path

    path = resolve_model_path(ModelConfig(name_or_path=name))
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_kernels=False).to(device).eval()
    return model, tok


def prompts(tok, count: int) -> list[list[int]]:
    from pipeline.config import DataConfig
    from pipeline.embedded import task
    from pipeline.prompts import build_messages, render_prompt_ids

    problems = task.train_split([2, 3, 4], max(1, count // 3 + 1), seed=0)[:count]
    instruction = DataConfig().instruction
    return [render_prompt_ids(tok, build_messages(p.text, instruction)) for p in problems]


def ours(model, tok, ids: list[list[int]], args) -> int:
    from pipeline.backends import GenerationRequest, SamplingParams
    from pipeline.backends.hf import TransformersBackend

    backend = TransformersBackend(model, pad_token_id=tok.pad_token_id, batch_size=args.batch_size,
                                  precision=args.precision, shared_prompt=args.shared_prompt == "on")
    reqs = [GenerationRequest(p, [], args.max_new_tokens, seed=1000 * i + s)
            for i, p in enumerate(ids) for s in range(args.samples)]
    sampling = SamplingParams(temperature=1.0, stop_token_ids=[tok.eos_token_id], min_new_tokens=args.max_new_tokens)
    out = backend.generate(reqs, sampling)
    return sum(len(c.token_ids) for c in out)


def padded_generate(model, tok, ids: list[list[int]], args) -> int:
    per = max(1, args.batch_size // args.samples)  # prompts per call: the same rows per batch as ours
    total = 0
    dev = model.device
    ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if args.precision == "bf16" else torch.no_grad()
    for start in range(0, len(ids), per):
        chunk = ids[start:start + per]
        width = max(len(p) for p in chunk)
        input_ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in chunk], device=dev)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=dev)
        with torch.inference_mode(), ctx:
            out = model.generate(input_ids=input_ids, attention_mask=mask, do_sample=True, temperature=1.0,
                                 top_p=1.0, top_k=0, num_return_sequences=args.samples,
                                 max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        total += int((out[:, width:] != -1).sum())  # every row runs to max_new_tokens
    return total


def top_ops(fn, model, tok, ids, args, count: int = 8) -> list[dict]:
    """One untimed run of `fn` under torch.profiler: its `count` costliest operators by self CPU time, each
    with its share of the run's total self CPU time and its call count."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(model, tok, ids, args)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:count]
    return [{"op": e.key, "share": round(e.self_cpu_time_total / total, 3), "calls": e.count} for e in top]


def device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--model", default="", help="a local checkpoint or hub id instead of the embedded preset "
                                                "(model.name_or_path's forms)")
    ap.add_argument("--device", default="cpu", help="torch device for both sides (cpu, cuda)")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=256, help="rows per forward (generate.batch_size)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--cache", choices=["preallocated", "dynamic"], default="preallocated",
                    help="our rollout KV cache: the default buffer, or transformers' DynamicCache (torch.cat per "
                         "token), to measure what the buffer buys")
    ap.add_argument("--shared-prompt", choices=["on", "off"], default="on",
                    help="ours keeps each prompt's KV once per group (shared-prompt attention, the default) or "
                         "copies it to every row (before), to measure what it buys")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile(dynamic=True) the model forward for both sides; the first repeat pays "
                         "the compilation")
    ap.add_argument("--profile", action="store_true",
                    help="after the timed repeats, run each side once more under torch.profiler and report its "
                         "top operators by self CPU time (where a decode step's time goes)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cache == "dynamic":
        from transformers import DynamicCache

        from pipeline.backends import hf

        hf.preallocated_cache = lambda config, capacity: DynamicCache(config=config)
    model_name = args.model or f"embedded:{args.preset}"
    model, tok = load(model_name, args.device)
    if args.compile:
        model.forward = torch.compile(model.forward, dynamic=True)
    ids = prompts(tok, args.prompts)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {"ours": [], "generate": []}
    tokens: dict[str, int] = {}
    fns = {"ours": ours, "generate": padded_generate}
    for r in range(args.repeats):
        for name in (("ours", "generate") if r % 2 == 0 else ("generate", "ours")):
            torch.manual_seed(r)
            sync()
            t0 = time.perf_counter()
            tokens[name] = fns[name](model, tok, ids, args)
            sync()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    tps = {k: tokens[k] / med[k] for k in med}
    row = {
        "bench": "rollout", "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads", "device": device_name(model.device),
        "model": model_name,
        "prompts": args.prompts, "samples": args.samples, "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size, "precision": args.precision, "repeats": args.repeats,
        "cache": args.cache, "shared_prompt": args.shared_prompt, "compile": args.compile, "seconds_each": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "tokens_ours": tokens["ours"], "tokens_generate": tokens["generate"],
        "seconds_ours": round(med["ours"], 2), "seconds_generate": round(med["generate"], 2),
        "tokens_per_s_ours": round(tps["ours"], 1), "tokens_per_s_generate": round(tps["generate"], 1),
        "speedup": round(tps["ours"] / tps["generate"], 3), "goal_speedup_min": 2.0,
    }
    row["met"] = row["speedup"] >= 2.0
    if args.profile:
        row["profile_top_ops"] = {name: top_ops(fns[name], model, tok, ids, args) for name in fns}
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
