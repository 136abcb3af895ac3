"""prefixes: pick the step's prompts and lay out N slots per prompt, k of them hybrid (docs/method.md §3).

For step t (1-based) a seeded sampler that walks epochs picks B prompts. Each prompt gets N slots;
the last k hold demonstration tokens, as `prefixes.layout` says:
- `partial` (Prefix-RFT, docs/method.md §3): l ~ U(low_t, high), prefix = the first
  L = min(max(floor(l * |y*|), min_prefix_tokens), |y*| - 1, L_max - 1) tokens of y*;
- `full` (LUFFY's off-policy member, docs/method.md §10; SFT rows): prefix = y* + end of turn (cut at L_max),
  `is_demo` set, nothing is generated;
- `hint` (UFT, docs/method.md §10): one hint per group, y*[:round(c/n |y*|)] with c ~ Binomial(n, p_t),
  n = min(hint_chunks, |y*|), p_t = low_t up to the horizon and 0 after it; appended to the prompt
  ids (`hint_len` says how many of them are hint), so the response graded is the continuation only.

Input: the curate dataset. Output, one row per slot: id, source, level, answer, prompt_ids, step,
group_id, slot, is_hybrid, is_demo, hint_len, prefix_ids, prefix_len, prefix_ratio (realised share of
y* shown), prefix_ratio_drawn (l, 1.0, or p_t).

    python -m pipeline.stage prefixes --output-dir runs/qs --step 3 --force
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from datasets import Dataset

from pipeline import cache, methods
from pipeline import schema as S
from pipeline.config import PrefixConfig
from pipeline.graph import StageSpec, always

STAGE_VERSION = 2  # 2: layouts partial / full / hint, is_demo and hint_len columns
REQUIRES = (S.ID, S.SOURCE, S.LEVEL, S.ANSWER, S.PROMPT_IDS, S.DEMO_IDS)
PRODUCES = (S.ID, S.SOURCE, S.LEVEL, S.ANSWER, S.PROMPT_IDS, S.STEP, S.GROUP_ID, S.SLOT, S.IS_HYBRID,
            S.IS_DEMO, S.HINT_LEN, S.PREFIX_IDS, S.PREFIX_LEN, S.PREFIX_RATIO, S.PREFIX_RATIO_DRAWN)


def low_bound(step: int, cfg: PrefixConfig, horizon: int) -> float:
    """Lower bound low_t of the prefix ratio at `step` (docs/method.md §3).

    cosine: low_end + 1/2 (low_start - low_end)(1 + cos(pi t'/T')); linear: low_start + (low_end -
    low_start) t'/T'; fixed: low_start; uniform: low_end (Q9: l ~ U(low_end, high) every step).
    t' = clamp(step - warmup, 0, T') with T' = horizon - warmup."""
    if cfg.schedule == "uniform":
        return cfg.low_end
    if cfg.schedule == "fixed":
        return cfg.low_start
    span = max(1, horizon - cfg.warmup_steps)
    frac = min(max(step - cfg.warmup_steps, 0), span) / span
    if cfg.schedule == "cosine":
        return cfg.low_end + 0.5 * (cfg.low_start - cfg.low_end) * (1.0 + math.cos(math.pi * frac))
    if cfg.schedule == "linear":
        return cfg.low_start + (cfg.low_end - cfg.low_start) * frac
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def prefix_length(ratio: float, demo_len: int, min_prefix_tokens: int, max_response_tokens: int) -> int:
    """L = floor(l |y*|), raised to min_prefix_tokens, capped at |y*| - 1 (at least one generated
    token, docs/method.md §3) and at L_max - 1 (room for a continuation)."""
    length = math.floor(ratio * demo_len)
    length = max(length, min_prefix_tokens)
    return max(0, min(length, demo_len - 1, max_response_tokens - 1))


def sample_prompt_indices(num_rows: int, step: int, per_step: int, seed: int) -> list[int]:
    """Rows for `step` (1-based): positions (step-1)B .. stepB-1 of an endless stream of epochs, each a
    permutation seeded by (seed, epoch). The sampler position is therefore a function of the step."""
    out = []
    for pos in range((step - 1) * per_step, step * per_step):
        epoch, offset = divmod(pos, num_rows)
        perm = _epoch_permutation(num_rows, seed, epoch)
        out.append(int(perm[offset]))
    return out


_PERM_CACHE: dict[tuple[int, int, int], np.ndarray] = {}


def _epoch_permutation(num_rows: int, seed: int, epoch: int) -> np.ndarray:
    key = (num_rows, seed, epoch)
    if key not in _PERM_CACHE:
        if len(_PERM_CACHE) > 8:
            _PERM_CACHE.clear()
        _PERM_CACHE[key] = np.random.default_rng([seed, epoch, 0x5EED]).permutation(num_rows)
    return _PERM_CACHE[key]


def hint_length(demo_len: int, kept_chunks: int, chunks: int) -> int:
    """Tokens of y* in a hint of `kept_chunks` of min(chunks, |y*|) chunks: the chunk boundaries are
    round(j / n * |y*|) (Python rounding, as UFT's rl_dataset.py), the last one |y*|."""
    n = min(chunks, demo_len)
    if n == 0 or kept_chunks <= 0:
        return 0
    return demo_len if kept_chunks >= n else round(kept_chunks / n * demo_len)


def hint_probability(step: int, cfg: PrefixConfig, horizon: int) -> float:
    """p_t of the `hint` layout: the lower bound low_t up to the horizon, 0 after it (UFT gives no hint
    past T_hint; docs/method.md §10)."""
    return low_bound(step, cfg, horizon) if step <= horizon else 0.0


def run(ds: Dataset, cfg: PrefixConfig, *, step: int, horizon: int, seed: int, max_response_tokens: int,
        end_ids: list[int] | tuple[int, ...] = ()) -> Dataset:
    """`end_ids`: the chat template's end-of-turn tokens, appended to whole demonstrations (`full`)."""
    S.require_columns(ds, REQUIRES, "prefixes")
    if len(ds) == 0:
        raise ValueError("prefixes: the curated dataset is empty")
    picks = sample_prompt_indices(len(ds), step, cfg.prompts_per_step, seed)
    rows = ds.select(picks).to_dict()
    low = low_bound(step, cfg, horizon)
    p_hint = hint_probability(step, cfg, horizon)
    rng = np.random.default_rng([seed, step, 0x9F1])
    n, k = cfg.samples_per_prompt, cfg.hybrids_per_prompt
    out: dict[str, list] = {c: [] for c in PRODUCES}
    for g in range(len(picks)):
        demo = rows[S.DEMO_IDS][g]
        hint: list[int] = []
        if cfg.layout == "hint":  # one draw per group: the hint is shared by the group's slots
            hint = list(demo[:hint_length(len(demo), int(rng.binomial(min(cfg.hint_chunks, len(demo)), p_hint)),
                                          cfg.hint_chunks)])
        for slot in range(n):
            hybrid = slot >= n - k and len(demo) > 0  # a prompt without demonstration (data.demo_fraction): RFT
            prompt, prefix, drawn = list(rows[S.PROMPT_IDS][g]), [], 0.0
            if hybrid and cfg.layout == "partial":
                drawn = float(low + (cfg.high - low) * rng.random())
                prefix = list(demo[:prefix_length(drawn, len(demo), cfg.min_prefix_tokens, max_response_tokens)])
            elif hybrid and cfg.layout == "full":
                drawn, prefix = 1.0, (list(demo) + list(end_ids))[:max_response_tokens]
            elif hybrid:
                drawn, prompt = p_hint, prompt + hint
            shown = min(len(prefix), len(demo)) + (len(hint) if hybrid and cfg.layout == "hint" else 0)
            for col in (S.ID, S.SOURCE, S.LEVEL, S.ANSWER):
                out[col].append(rows[col][g])
            out[S.PROMPT_IDS].append(prompt)
            out[S.STEP].append(step)
            out[S.GROUP_ID].append(g)
            out[S.SLOT].append(slot)
            out[S.IS_HYBRID].append(hybrid)
            out[S.IS_DEMO].append(hybrid and cfg.layout == "full")
            out[S.HINT_LEN].append(len(hint) if hybrid else 0)
            out[S.PREFIX_IDS].append(prefix)
            out[S.PREFIX_LEN].append(len(prefix))
            out[S.PREFIX_RATIO].append(shown / len(demo) if demo else 0.0)
            out[S.PREFIX_RATIO_DRAWN].append(drawn)
    return S.make_dataset(out)


def config_slice(cfg: Any, step: int) -> tuple:
    """The step's prefixes section (an SFT step's differs, `methods.prefix_config`), the schedule horizon,
    L_max, the run seed and the step."""
    return (dataclasses.asdict(methods.prefix_config(cfg, step)), cfg.schedule_horizon,
            cfg.generate.max_response_tokens, cfg.train.seed, step)


def compute(job: Any, step: int, inputs: dict[str, cache.StageRecord]) -> tuple[Dataset, dict[str, Any]]:
    cfg, pcfg = job.cfg, methods.prefix_config(job.cfg, step)
    ds = run(inputs["curate"].load(), pcfg, step=step, horizon=cfg.schedule_horizon, seed=cfg.train.seed,
             max_response_tokens=cfg.generate.max_response_tokens, end_ids=job.end_ids())
    return ds, {"low_bound": low_bound(step, pcfg, cfg.schedule_horizon), "layout": pcfg.layout}


def _inputs(cfg: Any, step: int) -> tuple[str, ...]:
    return ("curate",)


SPEC = StageSpec("prefixes", STAGE_VERSION, config_slice, _inputs, compute, runs=always, produces=PRODUCES)
