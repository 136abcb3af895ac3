"""Host memory of one weight sync to a rollout engine from FSDP2 shards: streamed vs today's full copy.

A randomly initialised Qwen2 (>= 100M parameters, built from a config; nothing downloaded), sharded by
accelerate's FSDP2 preparation over 2 gloo CPU processes launched with the shipped
accelerate_configs/fsdp2.yaml (bf16 mixed precision, fp32 master weights). On every rank, one sync each:
  streamed:  pipeline.distributed.engine_weights -> pipeline.backends.sglang_protocol.push_weights, the
             path the SGLang backends take: one tensor gathered at a time, cast to the engine dtype
             (bf16), in buckets of --bucket-mb, into a consumer that takes each bucket (the engine side);
  full_copy: what the previous code did before every sync: the full fp32 state gathered on every rank,
             an fp32 `from_config` copy of the model loaded from it, then pushed from that copy.
The figure is the peak RSS each sync adds over the RSS before it (/proc/self VmHWM, reset before each
path; after one unmeasured streamed sync, whose first collectives allocate gloo's buffers for both
paths; streamed is measured first, so freed-but-kept heap of the other path cannot hide in it). Prints one JSON
line: per-rank added peaks, the bucket size, the model's fp32 bytes, and whether streamed <= bucket + 10%.

    python scripts/bench_weight_sync.py [--layers 12 --hidden 768 --vocab 32000 --bucket-mb 64]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout, not whatever is installed


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def added_peak(fn) -> int:
    """Bytes of peak RSS `fn()` adds over the RSS before it."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    base = _status("VmRSS")
    fn()
    gc.collect()
    return _status("VmHWM") - base


def build(args):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                      num_hidden_layers=args.layers, num_attention_heads=12, num_key_value_heads=4,
                      max_position_embeddings=4096, tie_word_embeddings=False, use_cache=False)
    return Qwen2ForCausalLM(cfg)


def worker(args) -> None:
    from pipeline.backends.sglang_protocol import push_weights
    from pipeline.config import GenerateConfig, UpdateConfig
    from pipeline.distributed import engine_weights, make_accelerator, prepare_policy

    torch.set_num_threads(1)
    acc = make_accelerator()
    model = build(args)
    n_params = sum(p.numel() for p in model.parameters())
    model, _, _ = prepare_policy(acc, model, UpdateConfig())
    bucket = int(args.bucket_mb * 2 ** 20)
    taken = {"bytes": 0}

    def consume(b):  # the engine side: it receives the bucket (in another process it would copy it)
        taken["bytes"] += sum(t.numel() * t.element_size() for _, t in b)
        return None

    def streamed():
        src = engine_weights(GenerateConfig(backend="sglang", precision="bf16"), model, acc)
        push_weights(src, bucket, begin=lambda: None, push=consume, end=lambda: None)

    def full_copy():  # the previous pipeline.distributed.rollout_model + the push from its copy
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        from transformers import AutoModelForCausalLM

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=False))
        state = {k: v.cpu() for k, v in state.items()}
        copy = AutoModelForCausalLM.from_config(model.config, dtype=torch.float32)
        copy.load_state_dict(state, strict=False)
        push_weights(copy, bucket, begin=lambda: None, push=consume, end=lambda: None)
        del state, copy

    streamed()  # warm-up: the first collectives allocate gloo's buffers once per process (both paths share them)
    taken["bytes"] = 0
    s = added_peak(streamed)
    pushed = taken["bytes"]
    f = added_peak(full_copy)
    from accelerate.utils import gather_object

    rows = gather_object([{"rank": acc.process_index, "streamed_added_peak_bytes": s, "full_copy_added_peak_bytes": f}])
    if acc.is_main_process:
        worst = max(r["streamed_added_peak_bytes"] for r in rows)
        print(json.dumps({
            "model_params": n_params, "model_fp32_bytes": n_params * 4, "engine_dtype": "bfloat16",
            "bytes_pushed_per_sync": pushed, "bucket_bytes": bucket, "processes": acc.num_processes,
            "distributed_type": str(acc.distributed_type), "per_rank": rows,
            "streamed_max_added_peak_bytes": worst,
            "full_copy_max_added_peak_bytes": max(r["full_copy_added_peak_bytes"] for r in rows),
            "streamed_within_one_bucket_plus_10pct": worst <= 1.1 * bucket,
            "full_copy_over_streamed": round(max(r["full_copy_added_peak_bytes"] for r in rows) / max(worst, 1), 2),
        }), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--intermediate", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--bucket-mb", type=float, default=64.0)
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args()
    if "RANK" in os.environ:
        worker(args)
        return 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/fsdp2.yaml",
           "--num_processes", str(args.processes), "--main_process_port", port, str(Path(__file__).resolve()),
           *sys.argv[1:]]
    # a fixed mmap threshold: glibc then returns every large free to the OS at once instead of raising the
    # threshold and keeping freed blocks in its heap, which would make peaks depend on allocation history
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "MALLOC_MMAP_THRESHOLD_": str(2 ** 20)}
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
