"""One update step run by every process of a 2-process CPU (gloo) launch; tests/test_distributed.py
launches it and compares the result with the same step in one process.

    accelerate launch --config_file accelerate_configs/cpu_2proc.yaml tests/distributed_worker.py ddp OUT
    accelerate launch --config_file accelerate_configs/fsdp2.yaml --num_processes 2 --mixed_precision no \
        tests/distributed_worker.py fsdp2 OUT

`ddp`: accelerate's MULTI_CPU (DistributedDataParallel) path. `fsdp2`: the shipped FSDP2 config, read by
accelerate's launcher into the environment and by `pipeline.distributed.make_accelerator` into
accelerate's FSDP plugin; `accelerator.prepare(model, optimizer, scheduler)` shards (transformer-based
wrap, activation checkpointing), accelerate's DTensor-aware clip, the full-state gather and the sharded
checkpoint save + resume. Writes the weights after step 1, the step-1 transformers checkpoint, and the
weights after step 2 both continued in memory and resumed from the sharded checkpoint; also the
ValueError accelerate raises for an optimizer prepared without its model (the old call path).
`bf16`: the same launch with `mixed_precision: bf16` as shipped: the FSDP2 policy, parameter and
checkpoint dtypes (a bf16 starting checkpoint is saved back in bf16).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import ObjectiveConfig, UpdateConfig  # noqa: E402
from pipeline.checkpoint import load_training_state, save_checkpoint  # noqa: E402
from pipeline.distributed import full_state_dict, make_accelerator, prepare_policy, rollout_model  # noqa: E402
from pipeline.policy import TrainState  # noqa: E402
from stages import update  # noqa: E402
from tests.conftest import tiny_qwen2  # noqa: E402

# 4 groups x 4 samples, 2 PPO mini-batches (two optimizer steps per update), 2 sequences per micro-batch
# (gradient accumulation), a grad clip small enough to engage, the gate ranked over the whole step.
UPDATE = dict(lr=1e-2, weight_decay=0.01, mini_batches=2, micro_batch_size=2, max_grad_norm=0.05)
OBJECTIVE = dict(gate="top", gate_scope="step")
GROUPS = 4


class _NoTokenizer:
    """The checkpoint test needs weights only."""

    def save_pretrained(self, path) -> None:
        pass


def reward_ds(step: int):
    from tests.stages.test_update import _reward_ds

    return _reward_ds(groups=GROUPS, n=4, seed=step)


def one_step(state: TrainState, acc, step: int) -> dict[str, float]:
    ctx = update.UpdateContext(policy=state, accelerator=acc, pad_id=0, temperature=1.0, max_response_tokens=16,
                               seed=0, step=step)
    _, stats = update.run(reward_ds(step), UpdateConfig(**UPDATE), ObjectiveConfig(**OBJECTIVE), ctx)
    state.step = step
    return stats


def fresh_state(acc, dtype: torch.dtype | None = None) -> TrainState:
    model = tiny_qwen2(vocab_size=40)
    if dtype is not None:
        model.checkpoint_dtype = dtype  # as pipeline.policy.load_model records it for a bf16 checkpoint
    model, opt, sched = prepare_policy(acc, model, UpdateConfig(**UPDATE))
    return TrainState(model, opt, sched, 0, "base", restored=True)


def old_call_path(acc) -> str:
    """What pipeline.distributed did before: prepare the optimizer (and scheduler) without the model."""
    from pipeline.policy import make_optimizer

    opt, sched = make_optimizer(tiny_qwen2(vocab_size=40), UpdateConfig(**UPDATE))
    try:
        acc.prepare(opt, sched)
    except ValueError as e:
        return str(e)
    return ""


def bf16(acc, out_dir: Path) -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy

    state = fresh_state(acc, torch.bfloat16)
    stats = one_step(state, acc, 1)
    policy = acc.state.fsdp_plugin.mixed_precision_policy
    assert isinstance(policy, MixedPrecisionPolicy), policy
    state.policy_fp = "fp-step-1"
    save_checkpoint(acc, state, _NoTokenizer(), out_dir, {"seed": 0})
    if acc.is_main_process:
        params = {str(p.dtype) for p in state.model.parameters()}
        (out_dir / "bf16.json").write_text(json.dumps({
            "param_dtype": str(policy.param_dtype), "reduce_dtype": str(policy.reduce_dtype),
            "output_dtype": str(policy.output_dtype), "master_dtypes": sorted(params),
            "sharded": all(hasattr(p, "full_tensor") for p in state.model.parameters()),
            "loss": stats["loss"], "grad_norm": stats["grad_norm"]}))
    acc.wait_for_everyone()


def main(mode: str, out: str) -> None:
    torch.set_num_threads(1)
    out_dir = Path(out)
    acc = make_accelerator()
    assert acc.num_processes == 2, acc.distributed_type
    if mode == "bf16":
        return bf16(acc, out_dir)
    old_error = old_call_path(acc) if mode == "fsdp2" else ""
    state = fresh_state(acc)
    stats = one_step(state, acc, 1)
    weights = full_state_dict(state.model, acc)
    rollout = rollout_model(state.model, acc)  # what the transformers backend decodes with (a gathered copy when sharded)
    from pipeline.backends.weights import buckets, full_tensors

    # what an SGLang engine receives: streamed from the shards in small buckets, in bf16
    streamed = {n: t.clone() for b in buckets(full_tensors(state.model, torch.bfloat16), 4096) for n, t in b}
    if acc.is_main_process:
        torch.save(weights, out_dir / "step1.pt")
        torch.save(rollout.state_dict(), out_dir / "rollout1.pt")
        torch.save(streamed, out_dir / "streamed1.pt")
        (out_dir / "stats.json").write_text(json.dumps({
            "grad_norm": stats["grad_norm"], "loss": stats["loss"], "old_call_path_error": old_error,
            "distributed_type": str(acc.distributed_type), "is_fsdp2": bool(getattr(acc, "is_fsdp2", False)),
            "model_class": type(state.model).__name__,
            "sharded": all(hasattr(p, "full_tensor") for p in state.model.parameters())}))
    if mode != "fsdp2":
        return
    state.policy_fp = "fp-step-1"
    save_checkpoint(acc, state, _NoTokenizer(), out_dir, {"seed": 0})
    one_step(state, acc, 2)
    continued = full_state_dict(state.model, acc)
    resumed = fresh_state(acc)
    load_training_state(resumed, out_dir, 1)
    one_step(resumed, acc, 2)
    again = full_state_dict(resumed.model, acc)
    if acc.is_main_process:
        torch.save({"continued": continued, "resumed": again}, out_dir / "step2.pt")
    acc.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
