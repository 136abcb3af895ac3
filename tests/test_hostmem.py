"""train.host_memory: freed host memory kept in the process on CPU runs (pipeline/hostmem.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from pipeline import hostmem
from pipeline.config import load_config
from pipeline.config.training import TrainConfig

# allocate, touch and free a 64 MB tensor 16 times; minor page faults of each round
_ROUNDS = """
import json, resource, sys, torch
sys.path.insert(0, {root!r})
from pipeline import hostmem
if sys.argv[1] == "keep":
    hostmem.keep_freed_memory()
kept = hostmem.kept()
faults = []
for _ in range(16):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(16 * 2**20)
    t.fill_(1.0)
    del t
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({{"kept": kept, "faults": faults}}))
"""


def _rounds(mode: str, env: dict | None = None) -> dict:
    import os
    from pathlib import Path

    code = _ROUNDS.format(root=str(Path(__file__).resolve().parent.parent))
    out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(hostmem._glibc() is None, reason="glibc (Linux) only")
def test_kept_memory_is_reused_without_page_faults():
    # 64 MB is 16,384 pages of 4 KB: with glibc's default each round maps fresh pages and faults on all of them
    default, kept = _rounds("release"), _rounds("keep")
    assert not default["kept"] and kept["kept"]
    assert min(default["faults"][-4:]) > 10_000, default
    # kept: after the first rounds (glibc's aligned blocks settle) a round reuses pages already mapped
    assert max(kept["faults"][-4:]) < 1_000, kept
    # the same setting given at start-up (what bench_vs_trl --trl-host-memory keep passes to TRL's process)
    tuned = _rounds("release", {"GLIBC_TUNABLES": hostmem.glibc_tunables()})
    assert not tuned["kept"] and max(tuned["faults"][-4:]) < 1_000, tuned


def test_configure_host_applies_on_cpu_runs_only(monkeypatch):
    calls = []
    monkeypatch.setattr(hostmem, "keep_freed_memory", lambda: calls.append(1) or True)
    threads = torch.get_num_threads()
    try:
        assert hostmem.configure_host(TrainConfig(num_threads=1), torch.device("cpu")) is True
        assert torch.get_num_threads() == 1 and len(calls) == 1
        assert hostmem.configure_host(TrainConfig(), "cuda") is False  # GPU runs: the C library's default
        assert hostmem.configure_host(TrainConfig(host_memory="release"), "cpu") is False
        assert len(calls) == 1
    finally:
        torch.set_num_threads(threads)


def test_host_memory_value_is_checked():
    assert load_config("quickstart", []).train.host_memory == "keep"
    with pytest.raises(Exception, match="train.host_memory"):
        load_config("quickstart", ["train.host_memory=always"])
