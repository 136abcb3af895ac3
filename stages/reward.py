"""reward: score every response (prefix + continuation) with the 0/1 math verifier (docs/method.md §4), or
with LUFFY's v3 reward under `reward.kind=luffy_v3` (pipeline/luffy_reward.py).

Input: the generate dataset. Output adds response_text, extracted_answer, reward and reward_status
(ok / no_answer / timeout / error). Grading runs in worker processes with a hard time limit.

    python -m pipeline.stage reward --output-dir runs/qs --step 3 --force
"""

from __future__ import annotations

import dataclasses
from typing import Any

from datasets import Dataset

from pipeline import cache, methods
from pipeline import schema as S
from pipeline.graph import StageSpec
from pipeline.config import RewardConfig
from pipeline.luffy_reward import luffy_v3_reward
from pipeline.rewards import math_verify_reward

STAGE_VERSION = 2  # 1: last \boxed{} after </think>, math-verify; 2: answer screen by magnitude, reward.kind
REQUIRES = (S.PREFIX_IDS, S.COMPLETION_IDS, S.ANSWER)
PRODUCES = (S.RESPONSE_TEXT, S.EXTRACTED_ANSWER, S.REWARD, S.REWARD_STATUS)


def run(ds: Dataset, cfg: RewardConfig, *, tokenizer: Any) -> Dataset:
    S.require_columns(ds, REQUIRES, "reward")
    src = S.column_lists(ds, S.PREFIX_IDS, S.COMPLETION_IDS, S.ANSWER)
    responses = [f + c for f, c in zip(src[S.PREFIX_IDS], src[S.COMPLETION_IDS])]
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    if cfg.kind == "luffy_v3":
        results = luffy_v3_reward(texts, src[S.ANSWER], timeout_s=cfg.timeout_s, num_workers=cfg.num_workers)
    else:
        results = math_verify_reward(texts, src[S.ANSWER], after_think=cfg.grade_after_think,
                                     timeout_s=cfg.timeout_s, num_workers=cfg.num_workers)
    errors = sum(status == "error" for _, status, _ in results)
    if results and errors > len(results) // 2:
        raise RuntimeError(f"reward: the verifier failed on {errors} of {len(results)} responses (status "
                           "error); the scoring workers are broken, refusing to write all-zero rewards")
    cols = ds.to_dict()
    cols[S.RESPONSE_TEXT] = texts
    cols[S.REWARD] = [r for r, _, _ in results]
    cols[S.REWARD_STATUS] = [s for _, s, _ in results]
    cols[S.EXTRACTED_ANSWER] = [e for _, _, e in results]
    return S.make_dataset(cols)


def config_slice(cfg: Any, step: int) -> tuple:
    return (dataclasses.asdict(cfg.reward),)


def compute(job: Any, step: int, inputs: dict[str, cache.StageRecord]) -> tuple[Dataset, dict[str, Any]]:
    ds = run(inputs["generate"].load(), job.cfg.reward, tokenizer=job.tokenizer)
    statuses = S.column_lists(ds, S.REWARD_STATUS)[S.REWARD_STATUS]
    return ds, {f"status_{s}": statuses.count(s) for s in sorted(set(statuses))}


def _inputs(cfg: Any, step: int) -> tuple[str, ...]:
    return ("generate",)


def _runs(cfg: Any, step: int) -> bool:
    return not methods.is_sft_step(cfg, step)


SPEC = StageSpec("reward", STAGE_VERSION, config_slice, _inputs, compute, runs=_runs, produces=PRODUCES)
