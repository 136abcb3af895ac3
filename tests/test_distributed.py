"""Two CPU processes (gloo) give the same update as one process on the same global batch, through
accelerate's MULTI_CPU launch (DDP) and through accelerate's own FSDP2 preparation launched with the
shipped accelerate_configs/fsdp2.yaml (the path a GPU run takes), whose sharded checkpoint resumes to the
same weights. The processes run tests/distributed_worker.py."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test launches two processes (~30 s on 2 cores)
import torch

from tests import distributed_worker as W

ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-5


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _launch(cmd: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]


@pytest.fixture(scope="module")
def single_process():
    """Weights and stats after steps 1 and 2 of the same updates in this one process."""
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    state = W.fresh_state(acc)
    init = {k: v.detach().clone() for k, v in state.model.state_dict().items()}
    out = []
    for step in (1, 2):
        stats = W.one_step(state, acc, step)
        out.append(({k: v.detach().clone() for k, v in state.model.state_dict().items()}, stats))
    return init, out


def _max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b), set(a) ^ set(b)
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _check_step1(out: Path, single_process) -> None:
    init, ((ref, ref_stats), _) = single_process
    got = torch.load(out / "step1.pt")
    stats = json.loads((out / "stats.json").read_text())
    assert _max_diff(init, ref) > 1e-3  # the step moved the weights, so equality below means something
    assert _max_diff(got, ref) <= TOL
    rollout = torch.load(out / "rollout1.pt")  # the rollout engine's weights are the trained ones
    assert _max_diff({k: v for k, v in rollout.items() if k in got}, {k: got[k] for k in rollout if k in got}) == 0.0
    # the global gradient norm (before clipping) is the same, and above max_grad_norm=0.05: clipping engaged
    assert abs(stats["grad_norm"] - ref_stats["grad_norm"]) <= TOL * max(1.0, ref_stats["grad_norm"])
    assert ref_stats["grad_norm"] > W.UPDATE["max_grad_norm"]
    assert abs(stats["loss"] - ref_stats["loss"]) <= TOL


def test_accelerate_launch_two_cpu_processes_match_one(tmp_path, single_process):
    _launch([sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/cpu_2proc.yaml",
             "--main_process_port", _port(), "tests/distributed_worker.py", "ddp",
             str(tmp_path)])
    assert json.loads((tmp_path / "stats.json").read_text())["sharded"] is False
    _check_step1(tmp_path, single_process)


def _fsdp2_launch(mode: str, out: Path, *flags: str) -> None:
    """accelerate's launcher reads the shipped FSDP2 config (2 processes instead of 8)."""
    _launch([sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/fsdp2.yaml",
             "--num_processes", "2", "--main_process_port", _port(), *flags, "tests/distributed_worker.py", mode,
             str(out)])


def test_fsdp2_two_gloo_processes_match_one_and_resume(tmp_path, single_process):
    from transformers import AutoModelForCausalLM

    # fp32 here, so that the 2-process step can equal the 1-process step to 1e-5 (bf16: the next test)
    _fsdp2_launch("fsdp2", tmp_path, "--mixed_precision", "no")
    stats = json.loads((tmp_path / "stats.json").read_text())
    # accelerate prepared the model (its FSDP2 class, DTensor parameters) ...
    assert stats["is_fsdp2"] and stats["sharded"] and stats["model_class"] == "FSDPQwen2ForCausalLM", stats
    # ... and refuses the optimizer prepared alone, which is what the old pipeline.distributed did (accelerate 1.15:
    # "When using FSDP2, a model and optimizer must be passed together ..."; 1.16: "When using FSDP2, an optimizer
    # must be passed together with its model ...")
    assert re.search(r"When using FSDP2, .*optimizer.* must be passed together", stats["old_call_path_error"]), stats
    _check_step1(tmp_path, single_process)
    # the engine's stream (chunked gathers from the shards, cast to bf16) carries exactly the trained weights
    streamed, step1 = torch.load(tmp_path / "streamed1.pt"), torch.load(tmp_path / "step1.pt")
    assert set(streamed) == set(step1) - {"lm_head.weight"}  # tied head
    assert all(torch.equal(streamed[k], step1[k].to(torch.bfloat16)) for k in streamed)
    _, (_, (ref2, _)) = single_process
    # the transformers checkpoint of step 1 is the gathered full state: from_pretrained loads it
    ckpt = tmp_path / "checkpoints" / "step-000001"
    loaded = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).state_dict()
    assert _max_diff(loaded, torch.load(tmp_path / "step1.pt")) == 0.0
    sharded = tmp_path / "checkpoints" / "training-state-000001" / "sharded"
    assert (sharded / ".metadata").is_file() and len(list(sharded.glob("*.distcp"))) == 2  # one shard file per rank
    # step 2 from the sharded checkpoint (model + optimizer shards) equals step 2 continued in memory
    step2 = torch.load(tmp_path / "step2.pt")
    assert _max_diff(step2["resumed"], step2["continued"]) <= 1e-6
    assert _max_diff(step2["continued"], ref2) <= TOL


def test_fsdp2_bf16_policy_and_checkpoint_dtype(tmp_path):
    """The shipped config's bf16: bf16 compute and all-gather, fp32 reduce, fp32 sharded master weights;
    a model whose checkpoint was bf16 is saved back in bf16 (resume reads the fp32 shards)."""
    from safetensors import safe_open

    _fsdp2_launch("bf16", tmp_path)
    got = json.loads((tmp_path / "bf16.json").read_text())
    assert (got["param_dtype"], got["reduce_dtype"], got["output_dtype"]) == ("torch.bfloat16", "torch.float32",
                                                                              "torch.float32")
    assert got["master_dtypes"] == ["torch.float32"] and got["sharded"]
    assert got["loss"] == got["loss"] and 0 < got["grad_norm"] < float("inf")
    ckpt = tmp_path / "checkpoints" / "step-000001"
    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.bfloat16"}
    assert json.loads((ckpt / "config.json").read_text())["dtype"] == "bfloat16"
    assert (tmp_path / "checkpoints" / "training-state-000001" / "sharded" / ".metadata").is_file()
