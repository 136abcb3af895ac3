"""A 3-step Prefix-RFT run with `generate.backend: sglang` on the embedded default (quickstart recipe).

The engine is booted once, released before every update, re-synced (bucketed tensor push) before every
generation, and shut down at the end; each generate stage records the engine version and each update
the engine/trainer log-prob mismatch on the step's own tokens.
"""

from __future__ import annotations

import json
import os
import time

import psutil

from pipeline import cache
from pipeline.config import load_config
from pipeline.run import train
from tests.sglang.helpers import record


# Extra overrides, space-separated, e.g. "model.name_or_path=embedded:micro prefixes.prompts_per_step=8" where
# building the embedded default (400 warm-start steps) does not fit the time at hand.
EXTRA = os.environ.get("PREFIX_RFT_SGLANG_PIPELINE_OVERRIDES", "").split()


def test_three_step_run_with_the_sglang_backend(tmp_path):
    cfg = load_config("quickstart", ["train.total_steps=3", "generate.backend=sglang", "eval.at_start=false",
                                     "eval.at_end=false", "generate.sglang.engine_args={max_total_tokens: 32768}",
                                     *EXTRA])
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    t0 = time.perf_counter()
    summary = train(cfg, tmp_path / "run")
    seconds = time.perf_counter() - t0
    out = tmp_path / "run"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and len(summary["rewards"]) == 3
    for step in (1, 2, 3):
        gen = cache.read_stage(out / "steps" / f"{step:06d}" / "generate")
        assert gen.meta["stats"]["engine"] == "sglang-0.5.23"
        assert gen.meta["stats"]["completion_tokens"] > 0
        assert (out / "checkpoints" / f"step-{step:06d}" / "config.json").is_file() or step < 3
    for r in rows:  # engine (bf16) vs trainer (bf16 autocast over fp32 weights) on the step's own tokens
        assert r["logprob_mismatch_tokens"] > 0
        assert r["logprob_mismatch_mean"] <= cfg.generate.max_logprob_mismatch
    record("pipeline_3_steps", {"model": cfg.model.name_or_path, "overrides": EXTRA, "seconds": round(seconds, 1),
                                "seconds_stage_generate": [r["seconds_stage_generate"] for r in rows],
                                "logprob_mismatch_mean": [round(r["logprob_mismatch_mean"], 4) for r in rows],
                                "logprob_mismatch_max": [round(r["logprob_mismatch_max"], 4) for r in rows],
                                "reward_mean": [round(r["reward_mean"], 4) for r in rows]})
    time.sleep(2)
    left = {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE} - before
    assert not left, f"engine processes still running after the run: {left}"
