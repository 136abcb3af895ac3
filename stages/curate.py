"""curate: demonstrations -> one verified, tokenized schema.

Input (from `load_source`): id, source, level, problem, demonstration, answer.
Output adds: prompt (chat messages), demo_verified, prompt_ids, demo_ids. Rows whose demonstration's
final answer math-verify does not match the reference are dropped (or kept flagged), as are rows with
an empty demonstration or over the token limits of the policy tokenizer.

    python -m pipeline.stage curate --output-dir runs/qs --step 0 --force
"""

from __future__ import annotations

import logging
from typing import Any

from datasets import Dataset

from pipeline import schema as S
from pipeline.config import DataConfig
from pipeline.prompts import build_messages, render_prompt_ids
from pipeline.rewards import math_verify_reward

log = logging.getLogger(__name__)

STAGE_VERSION = 1  # 1: toy source, math-verify check, token filters
REQUIRES = (S.ID, S.SOURCE, S.LEVEL, S.PROBLEM, S.DEMONSTRATION, S.ANSWER)
PRODUCES = S.CURATE_COLUMNS


def load_source(cfg: DataConfig) -> Dataset:
    """The raw rows of the configured source, normalised to the input schema."""
    from pipeline.embedded import task

    problems = task.train_split(cfg.toy_levels, cfg.toy_problems_per_level, cfg.toy_seed)
    return S.make_dataset({
        S.ID: [task.problem_id(p) for p in problems],
        S.SOURCE: ["toy"] * len(problems),
        S.LEVEL: [p.level for p in problems],
        S.PROBLEM: [p.text for p in problems],
        S.DEMONSTRATION: [p.demonstration for p in problems],
        S.ANSWER: [str(p.answer) for p in problems],
    })


def run(ds: Dataset, cfg: DataConfig, *, tokenizer: Any, report: dict[str, Any] | None = None) -> Dataset:
    """Verify, render and tokenize; drop rows that fail. `report` (if given) receives the counts."""
    S.require_columns(ds, REQUIRES, "curate")
    counts = {"rows_in": len(ds), "dropped_empty_demo": 0, "dropped_demo_mismatch": 0,
              "flagged_demo_mismatch": 0, "dropped_verifier_failed": 0, "dropped_prompt_too_long": 0,
              "dropped_demo_too_long": 0}
    rows = ds.to_dict()
    verdicts = math_verify_reward([d if isinstance(d, str) else "" for d in rows[S.DEMONSTRATION]],
                                  [str(a) for a in rows[S.ANSWER]])
    failed = sum(v[1] in ("error", "timeout") for v in verdicts)
    if verdicts and failed > len(verdicts) // 2:
        raise RuntimeError(f"curate: the verifier failed on {failed} of {len(verdicts)} demonstrations "
                           f"(statuses error/timeout); the scoring workers are broken, not the data")
    out: dict[str, list] = {c: [] for c in PRODUCES}
    for i in range(len(ds)):
        demo = rows[S.DEMONSTRATION][i]
        if not isinstance(demo, str) or not demo.strip():
            counts["dropped_empty_demo"] += 1
            continue
        if verdicts[i][1] in ("error", "timeout"):
            counts["dropped_verifier_failed"] += 1
            continue
        verified = verdicts[i][0] == 1.0
        if not verified:
            if cfg.on_demo_mismatch == "drop":
                counts["dropped_demo_mismatch"] += 1
                continue
            counts["flagged_demo_mismatch"] += 1
        messages = build_messages(rows[S.PROBLEM][i], cfg.instruction, cfg.system_prompt)
        prompt_ids = render_prompt_ids(tokenizer, messages)
        if len(prompt_ids) > cfg.max_prompt_tokens:
            counts["dropped_prompt_too_long"] += 1
            continue
        demo_ids = tokenizer(demo, add_special_tokens=False)["input_ids"]
        if len(demo_ids) > cfg.max_demo_tokens:
            counts["dropped_demo_too_long"] += 1
            continue
        for col in REQUIRES:
            out[col].append(rows[col][i])
        out[S.PROMPT].append(messages)
        out[S.DEMO_VERIFIED].append(verified)
        out[S.PROMPT_IDS].append(prompt_ids)
        out[S.DEMO_IDS].append(demo_ids)
    counts["rows_out"] = len(out[S.ID])
    if report is not None:
        report.update(counts)
    log.info("curate: %s", counts)
    return S.make_dataset(out)
