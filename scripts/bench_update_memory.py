"""Update-step memory and throughput: naive full-vocabulary logits vs our chunked log-probs/entropy.

A randomly initialised Qwen2 with Qwen's vocabulary (151,936) and a small hidden size; one batch of
right-padded sequences; the same loss (advantage-weighted log-prob plus an entropy bonus over the
response tokens) through
  naive:   model(...).logits [B, T, V] -> log_softmax -> gather + entropy  (what a plain HF trainer does)
  chunked: pipeline.logprobs.sequence_logprobs(..., chunk_tokens=C)          (what the update stage does)
Memory: each path runs once in its own fresh process; the figure is the step's extra peak memory over
the memory held before the step (CPU: peak RSS via /proc VmHWM after resetting it; CUDA: max allocated).
Throughput: both paths alternate in one process (timings on a shared machine are noisy, ratios are
taken side by side), median of --repeats steps each. Prints one JSON line.

    python scripts/bench_update_memory.py [--batch 4 --seq 256 --chunk 128 --hidden 64 --repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout, not whatever is installed

VOCAB = 151936


def build_model(args):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                      num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=4096, tie_word_embeddings=False)
    return Qwen2ForCausalLM(cfg).to(args.device).train()


def build_batch(args):
    """input_ids, attention_mask, score_mask [B, T]; adv [B]. Prompt of `prompt` tokens, responses of
    varying length (the longest fills T)."""
    g = torch.Generator().manual_seed(1)
    B, T = args.batch, args.seq
    ids = torch.randint(0, VOCAB, (B, T), generator=g)
    lengths = torch.linspace(T // 2, T, B).long()  # [B]
    pos = torch.arange(T)[None, :]
    mask = (pos < lengths[:, None]).long()  # [B, T]
    score = (pos >= args.prompt - 1) & (pos < lengths[:, None] - 1)  # position j scores token j+1
    adv = torch.randn(B, generator=g)
    d = args.device
    return ids.to(d), mask.to(d), score.to(d), adv.to(d)


def naive_logprobs(model, ids, mask, score):
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()  # [B, T, V]
    logp_all = torch.log_softmax(logits, dim=-1)  # [B, T, V]
    targets = torch.roll(ids, shifts=-1, dims=1)
    logp = logp_all.gather(-1, targets[..., None]).squeeze(-1)  # [B, T]
    entropy = -(logp_all.exp() * logp_all).sum(-1)  # [B, T]
    return logp * score, entropy * score


def step(model, batch, path: str, chunk: int) -> None:
    from pipeline.logprobs import sequence_logprobs

    ids, mask, score, adv = batch
    if path == "naive":
        logp, ent = naive_logprobs(model, ids, mask, score)
    else:
        logp, ent = sequence_logprobs(model, ids, mask, score, 1.0, chunk)
    loss = -(logp * adv[:, None]).sum() / score.sum() - 0.001 * ent.sum() / score.sum()
    loss.backward()
    model.zero_grad(set_to_none=True)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_memory(args) -> dict:
    """Run in a fresh process: one step of `args.path`; its extra peak memory in MiB."""
    model, batch = build_model(args), build_batch(args)
    if args.device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(model, batch, args.path, args.chunk)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return {"before_mib": before / 2**20, "extra_peak_mib": (peak - before) / 2**20}
    before = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS high-water mark (VmHWM)
    step(model, batch, args.path, args.chunk)
    peak = _status_kb("VmHWM")
    return {"before_mib": before / 1024, "extra_peak_mib": (peak - before) / 1024}


def _child_memory(args, path: str) -> dict:
    cmd = [sys.executable, __file__, "--child-memory", path, *_forward_args(args)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"memory child ({path}) failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _forward_args(args) -> list[str]:
    return [f"--batch={args.batch}", f"--seq={args.seq}", f"--prompt={args.prompt}", f"--chunk={args.chunk}",
            f"--hidden={args.hidden}", f"--layers={args.layers}", f"--device={args.device}"]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure_throughput(args) -> dict:
    model, batch = build_model(args), build_batch(args)
    times = {"naive": [], "chunked": []}
    for path in times:  # warm-up
        step(model, batch, path, args.chunk)
    for r in range(args.repeats):
        order = ("naive", "chunked") if r % 2 == 0 else ("chunked", "naive")
        for path in order:
            _sync(args.device)
            t0 = time.perf_counter()
            step(model, batch, path, args.chunk)
            _sync(args.device)
            times[path].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--child-memory", dest="path", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.path:
        print(json.dumps(measure_memory(args)))
        return 0
    mem = {p: _child_memory(args, p) for p in ("naive", "chunked")}
    secs = measure_throughput(args)
    _, _, score, _ = build_batch(args)
    tokens = int(args.batch * args.seq)
    mem_ratio = mem["chunked"]["extra_peak_mib"] / mem["naive"]["extra_peak_mib"]
    tput_ratio = secs["naive"] / secs["chunked"]
    row = {
        "bench": "update_memory", "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, {args.device}, "
                   f"{torch.get_num_threads()} threads",
        "vocab": VOCAB, "hidden": args.hidden, "layers": args.layers, "batch": args.batch, "seq": args.seq,
        "scored_tokens": int(score.sum()), "chunk_tokens": args.chunk,
        "naive_extra_peak_mib": round(mem["naive"]["extra_peak_mib"], 1),
        "chunked_extra_peak_mib": round(mem["chunked"]["extra_peak_mib"], 1),
        "model_and_batch_mib": round(mem["naive"]["before_mib"], 1),
        "naive_step_s": round(secs["naive"], 3), "chunked_step_s": round(secs["chunked"], 3),
        "naive_tokens_per_s": round(tokens / secs["naive"], 1), "chunked_tokens_per_s": round(tokens / secs["chunked"], 1),
        "peak_memory_ratio": round(mem_ratio, 3), "throughput_ratio": round(tput_ratio, 3),
        "goal_peak_memory_ratio_max": 0.25, "goal_throughput_ratio_min": 0.9,
    }
    row["met"] = mem_ratio <= 0.25 and tput_ratio >= 0.9
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
