"""A 2-process CPU run of the pipeline (accelerate launch, gloo): completes, merges every rank's
generations into one dataset per step, and resumes after all its processes are killed mid-run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.test_distributed import ROOT, _port
from tests.test_pipeline import MICRO

pytestmark = pytest.mark.slow


def _cmd(out) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/cpu_2proc.yaml",
            "--main_process_port", _port(), "-m", "pipeline.train", "--config", "quickstart", "--output-dir", str(out),
            *MICRO, "train.total_steps=3", "eval.at_start=false", "train.num_threads=1"]


def _kill_tree(proc: subprocess.Popen) -> None:
    import psutil

    procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for p in procs:
        p.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=30)
    proc.wait()


def test_two_process_run_is_killed_and_resumes(tmp_path, micro_path):
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = tmp_path / "first.log"  # a file, not a pipe nobody reads while polling
    proc = subprocess.Popen(_cmd(out), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"),
                            start_new_session=True)
    marker = out / "checkpoints" / "training-state-000001" / "_COMPLETE"
    deadline = time.time() + 600  # generous: CI machines may be loaded
    while not marker.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert marker.is_file(), log.read_text()[-3000:]
    _kill_tree(proc)  # the launcher and both workers (torchrun starts them in sessions of their own)
    assert not (out / "summary.json").exists() and not (out / "steps" / "000003" / "update" / "_COMPLETE").exists()
    step1 = json.loads((out / "steps" / "000001" / "update" / "_COMPLETE").read_text())["written_at"]

    res = subprocess.run(_cmd(out), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    # killed right after step 1's training state; on a loaded machine step 2 may complete before the kill lands
    resumed = re.search(r"resuming \S+ after step (\d+)", res.stderr)
    assert resumed and int(resumed.group(1)) in (1, 2), res.stderr[-3000:]
    assert json.loads((out / "steps" / "000001" / "update" / "_COMPLETE").read_text())["written_at"] == step1
    gen = load_from_disk(str(out / "steps" / "000003" / "generate" / "data"))
    assert len(gen) == 2 * 4  # prompts_per_step x samples_per_prompt: both ranks' shares, merged once
    assert list(zip(gen["group_id"], gen["slot"])) == sorted(zip(gen["group_id"], gen["slot"]))
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert AutoModelForCausalLM.from_pretrained(out / "checkpoints" / "step-000003") is not None


def test_fsdp2_launch_runs_the_pipeline_and_evaluates_on_every_rank(tmp_path, micro_path):
    """The shipped accelerate_configs/fsdp2.yaml (bf16, activation checkpointing), 2 gloo processes: the
    run trains sharded (torch.distributed.checkpoint shards in its training states), evaluates with both
    ranks decoding, and writes transformers checkpoints in the model's dtype."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/fsdp2.yaml",
           "--num_processes", "2", "--main_process_port", _port(), "-m", "pipeline.train", "--config", "quickstart",
           "--output-dir", str(out), *MICRO, "train.num_threads=1", "train.process_group_timeout_s=300"]
    res = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    for step in (1, 2):
        assert (out / "checkpoints" / f"training-state-{step:06d}" / "sharded" / ".metadata").is_file()
    # base and final evaluation: 6 problems x 1 sample, 3 decoded by each rank
    assert res.stderr.count("evaluation: 6 requests decoded by 2 ranks ([3, 3])") == 2, res.stderr[-3000:]
    assert (out / "eval" / "base" / "toy").is_dir() and (out / "eval" / "step-000002" / "toy").is_dir()
    assert AutoModelForCausalLM.from_pretrained(out / "checkpoints" / "step-000002") is not None


def test_fsdp2_run_with_sparse_training_states(tmp_path, micro_path):
    """train.state_every=2 on the shipped FSDP2 config, 2 gloo processes: step 1 writes nothing (its collective
    gather and sharded save are skipped on every rank alike), step 2 a sharded state and weights, step 3 (the
    last) both again; the run completes and its final checkpoint loads."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/fsdp2.yaml",
           "--num_processes", "2", "--main_process_port", _port(), "-m", "pipeline.train", "--config", "quickstart",
           "--output-dir", str(out), *MICRO, "train.total_steps=3", "train.save_every=3", "train.state_every=2",
           "eval.at_start=false", "eval.at_end=false", "train.num_threads=1", "train.process_group_timeout_s=300"]
    res = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["step-000002", "step-000003", "training-state-000002", "training-state-000003"], names
    for step in (2, 3):
        assert (out / "checkpoints" / f"training-state-{step:06d}" / "sharded" / ".metadata").is_file()
    assert AutoModelForCausalLM.from_pretrained(out / "checkpoints" / "step-000003") is not None
