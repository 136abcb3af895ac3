"""One update step run by every process of a 2-process CPU (gloo) launch; tests/test_distributed.py
launches it and compares the result with the same step in one process.

    accelerate launch --config_file accelerate_configs/cpu_2proc.yaml tests/distributed_worker.py ddp OUT
    torchrun --nproc_per_node 2 tests/distributed_worker.py fsdp2 OUT

`ddp`: accelerate's MULTI_CPU (DistributedDataParallel) path. `fsdp2`: the FSDP2 path the GPU run uses
(pipeline.distributed: fully_shard, cross-shard grad clipping, full-state gather, sharded checkpoint
save + resume); writes the weights after step 1, the step-1 transformers checkpoint, and the weights
after step 2 both continued in memory and resumed from the sharded checkpoint.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import ObjectiveConfig, UpdateConfig  # noqa: E402
from pipeline.distributed import ShardSettings, full_state_dict, prepare_policy, rollout_model  # noqa: E402
from pipeline.checkpoint import load_training_state, save_checkpoint  # noqa: E402
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


def fresh_state(acc, shard: ShardSettings | None) -> TrainState:
    model, opt, sched = prepare_policy(acc, tiny_qwen2(vocab_size=40), UpdateConfig(**UPDATE), shard)
    return TrainState(model, opt, sched, 0, "base", restored=True)


def main(mode: str, out: str) -> None:
    from accelerate import Accelerator

    torch.set_num_threads(1)
    out_dir = Path(out)
    acc = Accelerator(cpu=True)
    assert acc.num_processes == 2, acc.distributed_type
    shard = ShardSettings() if mode == "fsdp2" else None
    state = fresh_state(acc, shard)
    stats = one_step(state, acc, 1)
    weights = full_state_dict(state.model, acc)
    rollout = rollout_model(state.model, acc)  # what the generate stage runs (a gathered copy when sharded)
    if acc.is_main_process:
        torch.save(weights, out_dir / "step1.pt")
        torch.save(rollout.state_dict(), out_dir / "rollout1.pt")
        (out_dir / "stats.json").write_text(json.dumps({"grad_norm": stats["grad_norm"], "loss": stats["loss"],
                                                        "sharded": mode == "fsdp2"}))
    if mode != "fsdp2":
        return
    state.policy_fp = "fp-step-1"
    save_checkpoint(acc, state, _NoTokenizer(), out_dir, {"seed": 0})
    one_step(state, acc, 2)
    continued = full_state_dict(state.model, acc)
    resumed = fresh_state(acc, ShardSettings())
    load_training_state(resumed, out_dir, 1)
    one_step(resumed, acc, 2)
    again = full_state_dict(resumed.model, acc)
    if acc.is_main_process:
        torch.save({"continued": continued, "resumed": again}, out_dir / "step2.pt")
    acc.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
