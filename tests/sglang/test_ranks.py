"""Two ranks of a 2-process launch, each booting its real `sgl.Engine` the way `pipeline.run` does
(`make_backend`, tests/sglang/rank_worker.py), at the same time on one machine, from a checkpoint whose
config says 64 positions while the policy is loaded with `model.rope_theta: 40000` and
`model.max_position_embeddings: 4096` (the Qwen2.5-Math situation: 4,096 positions in the checkpoint,
1,024 + 8,192 tokens per trajectory, RoPE base 40,000 in the recipes).

- each engine gets its own port and torch.distributed port, and its own random seed;
- the same requests sampled on the two engines give different samples (on today's main the engines
  shared seed and port, and sampled identically), greedy decoding still agrees;
- the engines serve the policy's config: they accept a prompt longer than the checkpoint's 64 positions,
  and decode exactly what the trainer's patched model decodes (not what the unpatched one does);
- rows are sharded one shard per engine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.backends import GenerationRequest, SamplingParams
from pipeline.backends.hf import TransformersBackend
from tests.sglang.helpers import ids, load_fp32, record

ROOT = Path(__file__).resolve().parents[2]
PATCH = {"rope_theta": 40000.0, "max_position_embeddings": 4096}


@pytest.fixture(scope="module")
def short_model(micro_path, tmp_path_factory):
    """The micro model with a 64-position config (weights unchanged)."""
    dst = tmp_path_factory.mktemp("short") / "model"
    shutil.copytree(micro_path, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["max_position_embeddings"] = 64
    (dst / "config.json").write_text(json.dumps(cfg, indent=1))
    return dst


@pytest.fixture(scope="module")
def requests_(micro_requests):
    long_prompt = [t for r in micro_requests[:4] for t in r.prompt_ids][:100]  # > 64 positions
    assert len(long_prompt) > 64
    return list(micro_requests) + [GenerationRequest(long_prompt, [], 12, seed=99)]


@pytest.fixture(scope="module")
def ranks(short_model, requests_, stop_ids, tmp_path_factory):
    from pipeline.backends.sglang_server import free_port

    work = tmp_path_factory.mktemp("ranks")
    base = free_port("127.0.0.1")
    spec = {"model": str(short_model), "model_patch": PATCH, "seed": 0,
            "engine_args": {"dtype": "float32", "max_total_tokens": 8192, "port": base},
            "requests": [vars(r) for r in requests_], "stop_ids": list(stop_ids)}
    (work / "spec.json").write_text(json.dumps(spec))
    procs = []
    t0 = time.perf_counter()
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2",
               "SGLANG_USE_CPU_ENGINE": "1"}
        log = open(work / f"rank{rank}.log", "w")
        procs.append(subprocess.Popen([sys.executable, "-m", "tests.sglang.rank_worker", str(work / "spec.json"),
                                       str(work / f"rank{rank}.json")], cwd=ROOT, env=env, stdout=log,
                                      stderr=subprocess.STDOUT))
    for rank, p in enumerate(procs):
        assert p.wait(600) == 0, (work / f"rank{rank}.log").read_text()[-3000:]
    record("two_engines_seconds", round(time.perf_counter() - t0, 1))
    return [json.loads((work / f"rank{r}.json").read_text()) | {"base": base} for r in range(2)]


def test_two_engines_on_a_node_have_their_own_ports_and_seeds(ranks):
    a, b = (r["info"] for r in ranks)
    assert (a["port"], b["port"]) == (ranks[0]["base"], ranks[0]["base"] + 16)
    assert (a["nccl_port"], b["nccl_port"]) == (a["port"] + 1, b["port"] + 1)
    assert a["random_seed"] != b["random_seed"]
    assert [r["shard"] for r in ranks] == [[0, 2], [1, 2]]


def test_two_ranks_sample_differently_and_decode_greedily_alike(ranks):
    a, b = ranks
    assert a["greedy"] == b["greedy"]  # same weights, same config
    differ = sum(x != y for x, y in zip(a["sampled"], b["sampled"]))
    record("two_engines_sampled_rows_differing", [differ, len(a["sampled"])])
    assert differ >= len(a["sampled"]) - 1  # identically seeded engines would agree on every row


def test_engines_serve_the_policy_config_patch(ranks, short_model, requests_, stop_ids):
    from pipeline.config import ModelConfig
    from pipeline.policy import load_model

    info = ranks[0]["info"]
    assert json.loads(info["json_model_override_args"]) == {"rope_parameters": {"rope_theta": 40000.0},
                                                           "max_position_embeddings": 4096}
    patched = load_model(str(short_model), ModelConfig(name_or_path=str(short_model), **PATCH))
    plain = load_fp32(short_model)
    greedy = SamplingParams(0.0, stop_token_ids=list(stop_ids))
    want = TransformersBackend(patched, pad_token_id=0).generate(requests_, greedy)
    unpatched = TransformersBackend(plain, pad_token_id=0).generate(requests_, greedy)
    # the long prompt (100 > 64 positions) included: an engine booted from the checkpoint's config alone
    # (today's main) refuses it, or with truncation allowed decodes with the wrong RoPE base
    assert ranks[0]["greedy"] == ids(want)
    assert sum(len(x) for x in ranks[0]["greedy"]) >= 2 * len(requests_)  # not a vacuous comparison
    # on the micro model the RoPE base moves log-probs more than it moves greedy tokens: compare log-probs
    engine_lps = ranks[0]["greedy_logprobs"]
    to_patched = _gap(engine_lps, [o.logprobs for o in want])
    to_plain = _gap(engine_lps, [o.logprobs for o in unpatched])
    record("rope_patch_greedy_logprob_gap", {"engine_vs_patched": to_patched, "engine_vs_unpatched": to_plain})
    assert to_patched < 1e-5  # float32 on both sides
    assert to_plain > 1e-3  # the patch matters: the comparison can fail


def _gap(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for p, q in zip(a, b) for x, y in zip(p, q))
