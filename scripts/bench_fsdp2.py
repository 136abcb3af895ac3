"""FSDP2 update-step benchmark on GPUs: a randomly initialised Qwen2.5-1.5B-shaped policy, bf16, activation
checkpointing, the real update stage (pipeline.distributed + stages.update) on synthetic scored rollouts.
Prints one JSON line (main process): tokens/s over the timed steps, MFU (pipeline.accounting: model FLOPs
over the measured bf16 matmul peak of the device) and peak GPU memory per rank.

    accelerate launch --config_file accelerate_configs/fsdp2.yaml --num_processes 8 scripts/bench_fsdp2.py
    accelerate launch --config_file accelerate_configs/fsdp2.yaml --num_processes 2 scripts/bench_fsdp2.py \
        --layers 4 --steps 3            # a quick smoke run

Needs CUDA (exits 2 with a JSON error line otherwise); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def qwen25_15b_shaped(layers: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=layers,
                      num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
                      rope_theta=1e6, tie_word_embeddings=True, use_cache=False)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg)


def rollouts(groups: int, samples: int, prompt_len: int, response_len: int, step: int, vocab: int = 151936):
    """Synthetic scored rollouts with every column the update stage requires (`stages.update.REQUIRES`):
    random token ids in [10, vocab), the last slot of each group a hybrid whose prefix is half the response."""
    from pipeline import schema as S
    from stages import update

    g = torch.Generator().manual_seed(step)
    cols = {c: [] for c in (*update.REQUIRES, S.PREFIX_LEN)}
    for gi in range(groups):
        prompt = torch.randint(10, vocab, (prompt_len,), generator=g).tolist()
        demo = torch.randint(10, vocab, (response_len,), generator=g).tolist()
        for slot in range(samples):
            hybrid = slot == samples - 1
            prefix = demo[:response_len // 2] if hybrid else []
            comp = torch.randint(10, vocab, (response_len - len(prefix),), generator=g).tolist()
            row = {S.STEP: step, S.GROUP_ID: gi, S.SLOT: slot, S.IS_HYBRID: hybrid, S.HINT_LEN: 0,
                   S.PROMPT_IDS: prompt, S.PREFIX_IDS: prefix, S.PREFIX_LEN: len(prefix), S.COMPLETION_IDS: comp,
                   S.REWARD: float(torch.rand((), generator=g) < 0.5)}
            for k in cols:
                cols[k].append(row[k])  # a KeyError names a column the update now requires and this lacks
    return S.make_dataset(cols)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--response-len", type=int, default=1024)
    ap.add_argument("--micro-batch-size", type=int, default=4)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"error": "bench_fsdp2 needs CUDA GPUs"}))
        return 2
    from pipeline.accounting import update_flops
    from pipeline.config import ObjectiveConfig, UpdateConfig
    from pipeline.distributed import is_sharded, make_accelerator, prepare_policy
    from pipeline.policy import TrainState
    from stages import update

    acc = make_accelerator()  # the run's own: accelerate's FSDP2 plugin from the launch, bf16 with fp32 reduce
    ucfg = UpdateConfig(lr=1e-6, precision="bf16", micro_batch_size=args.micro_batch_size)
    model, opt, sched = prepare_policy(acc, qwen25_15b_shaped(args.layers), ucfg)
    state = TrainState(model, opt, sched, 0, "bench", restored=True)
    n_params = sum(p.numel() for p in model.parameters())  # a DTensor's numel is the full tensor's
    times, tokens = [], 0
    for step in range(args.steps + 1):
        ds = rollouts(args.groups, args.samples, args.prompt_len, args.response_len, step)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        update.run(ds, ucfg, ObjectiveConfig(), update.UpdateContext(
            policy=state, accelerator=acc, pad_id=0, temperature=1.0, max_response_tokens=args.response_len,
            seed=0, step=step + 1))
        torch.cuda.synchronize()
        if step:  # the first step compiles kernels and allocates: not timed
            times.append(time.perf_counter() - t0)
            tokens += len(ds) * (args.prompt_len + args.response_len)
    flops = update_flops(model, tokens, args.steps * args.groups * args.samples, sum(times), "bf16")
    peak = torch.tensor(torch.cuda.max_memory_allocated() / 2**30, device=acc.device)
    peak = acc.gather(peak.reshape(1)).max().item()
    if acc.is_main_process:
        print(json.dumps({"benchmark": "fsdp2_update", "world_size": acc.num_processes,
                          "distributed_type": str(acc.distributed_type), "sharded": is_sharded(model),
                          "params": n_params, "layers": args.layers, "sequences_per_step": args.groups * args.samples,
                          "tokens_per_sequence": args.prompt_len + args.response_len,
                          "seconds_per_step": round(sum(times) / len(times), 3),
                          "tokens_per_s": round(tokens / sum(times), 1), "peak_gpu_mem_gib_max_rank": round(peak, 2),
                          "mfu": flops["mfu"], "flops_per_s": flops["flops_per_s"],
                          "peak_flops_per_s": flops["peak_flops_per_s"],
                          "device": torch.cuda.get_device_name()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
