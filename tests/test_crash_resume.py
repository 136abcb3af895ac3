"""SIGKILL the real training command (a subprocess) at chosen moments, re-run the same command, and
check the final weights, metrics (less wall-clock fields) and stage data equal an uninterrupted run's,
byte for byte."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_pipeline import MICRO

CMD = [sys.executable, "-m", "pipeline.train", "--config", "quickstart", *MICRO,
       "eval.at_start=false", "eval.at_end=false"]
TIMING = ("seconds", "tokens_per_s", "peak_rss", "flops_per_s", "peak_flops_per_s", "mfu")  # measurements, not results


def _train(out: Path, kill_when=None, timeout_s: float = 600) -> int:
    """Run the training command; SIGKILL it as soon as `kill_when(out)` is true. Returns the exit code."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(CMD + ["--output-dir", str(out)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        if kill_when is not None and kill_when(out):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    try:
        proc.wait(timeout=60)
    finally:
        proc.kill()
    err = proc.stderr.read().decode(errors="replace")
    assert kill_when is not None or proc.returncode == 0, err[-3000:]
    return proc.returncode


def _metrics(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(TIMING) and "seconds" not in k} for r in rows]


def _data_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("steps/*/*/data/*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, micro_path):
    out = tmp_path_factory.mktemp("crash") / "ref"
    _train(out)
    return out


def _during_checkpoint_write(out: Path) -> bool:
    return any((out / "checkpoints").glob(".step-000001.tmp-*"))


def _mid_generate_step_2(out: Path) -> bool:
    return (out / "steps" / "000002" / "prefixes" / "_COMPLETE").is_file()


def _between_steps(out: Path) -> bool:
    return (out / "steps" / "000001" / "update" / "_COMPLETE").is_file()


def _mid_update_step_2(out: Path) -> bool:
    return (out / "steps" / "000002" / "reward" / "_COMPLETE").is_file()


@pytest.mark.parametrize("kill_when", [
    _during_checkpoint_write,
    pytest.param(_mid_generate_step_2, marks=pytest.mark.slow),
    pytest.param(_between_steps, marks=pytest.mark.slow),
    pytest.param(_mid_update_step_2, marks=pytest.mark.slow),
])
def test_sigkill_then_resume_equals_uninterrupted(reference, tmp_path, kill_when):
    out = tmp_path / "killed"
    code = _train(out, kill_when)
    assert code == -signal.SIGKILL  # killed, not finished before the moment came
    _train(out)
    final = "checkpoints/step-000002/model.safetensors"
    assert (out / final).read_bytes() == (reference / final).read_bytes()
    assert _metrics(out) == _metrics(reference)
    assert _data_bytes(out) == _data_bytes(reference)
    assert not list(out.rglob(".*.tmp-*"))  # no half-written folder left behind
