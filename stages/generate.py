"""generate: continue every slot's prompt + prefix with the current policy.

Input: the prefixes dataset. Output adds completion_ids (continuation only, the stop token included
when one was produced), completion_logprobs (engine log-prob of each token) and finish_reason. The
continuation budget is L_max - L, so prefix + continuation never exceeds L_max (docs/method.md §3 "Ours").
Each row samples from its own seed, derived from (run seed, step, row index in the step's dataset),
whichever rank generates it. Under N processes the rows are split by `shard_rows`: whole groups per
shard, so a group's members are sampled by one engine. Rows that already hold a
whole demonstration (`is_demo`, LUFFY's off-policy member) are not sent to the engine: their
completion is empty with finish_reason "demo".

    python -m pipeline.stage generate --output-dir runs/qs --step 3 --force
"""

from __future__ import annotations

import time
from typing import Any

from datasets import Dataset

from pipeline import accounting, cache, methods
from pipeline import schema as S
from pipeline.backends import Completion, GenerationRequest, RolloutBackend, SamplingParams
from pipeline.backends.placement import generation_shard
from pipeline.config import GenerateConfig, fingerprint_view
from pipeline.distributed import engine_weights, release_cached_memory
from pipeline.graph import StageSpec
from pipeline.seeding import derive_seed

STAGE_VERSION = 3  # 2: whole-demonstration rows (is_demo) pass through ungenerated; 3: prefixes prefilled, the
# shared prompt read once per group, stop ids from generation_config and the template, group-whole shards
REQUIRES = (S.PROMPT_IDS, S.PREFIX_IDS, S.IS_DEMO)
PRODUCES = (S.COMPLETION_IDS, S.COMPLETION_LOGPROBS, S.FINISH_REASON)


def shard_rows(ds: Dataset, index: int | None, count: int) -> list[int]:
    """Row indices of shard `index` of `count` (None: no rows): contiguous runs of whole groups
    (`group_id`), the groups dealt out in blocks whose sizes differ by at most one group."""
    if index is None:
        return []
    if not 0 <= index < count:
        raise ValueError(f"shard {index} of {count}")
    groups = S.column_lists(ds, S.GROUP_ID)[S.GROUP_ID]
    order = list(dict.fromkeys(groups))  # group ids in order of first appearance
    q, r = divmod(len(order), count)
    start = index * q + min(index, r)
    mine = set(order[start:start + q + (index < r)])
    return [i for i, g in enumerate(groups) if g in mine]


def build_requests(ds: Dataset, cfg: GenerateConfig, *, seed: int, step: int,
                   row_ids: list[int] | None = None) -> list[GenerationRequest]:
    """`row_ids`: each row's index in the whole step's dataset when `ds` is a shard of it (its seed)."""
    cols = S.column_lists(ds, S.PROMPT_IDS, S.PREFIX_IDS)
    prompts, prefixes = cols[S.PROMPT_IDS], cols[S.PREFIX_IDS]
    rows = row_ids if row_ids is not None else range(len(prompts))
    return [GenerationRequest(prompt_ids=p, prefix_ids=f, max_new_tokens=cfg.max_response_tokens - len(f),
                              seed=derive_seed(seed, step, "generate", i))
            for i, p, f in zip(rows, prompts, prefixes)]


def run(ds: Dataset, cfg: GenerateConfig, *, backend: RolloutBackend, stop_token_ids: list[int],
        seed: int, step: int, row_ids: list[int] | None = None) -> Dataset:
    S.require_columns(ds, REQUIRES, "generate")
    requests = build_requests(ds, cfg, seed=seed, step=step, row_ids=row_ids)
    todo = [i for i, demo in enumerate(S.column_lists(ds, S.IS_DEMO)[S.IS_DEMO]) if not demo]
    sampling = SamplingParams(cfg.temperature, cfg.top_p, cfg.top_k, stop_token_ids, cfg.min_new_tokens)
    completions: list = [Completion([], [], "demo") for _ in requests]
    for i, c in zip(todo, backend.generate([requests[i] for i in todo], sampling) if todo else []):
        completions[i] = c
    cols = ds.to_dict()
    cols[S.COMPLETION_IDS] = [c.token_ids for c in completions]
    cols[S.COMPLETION_LOGPROBS] = [c.logprobs for c in completions]
    cols[S.FINISH_REASON] = [c.finish_reason for c in completions]
    return S.make_dataset(cols)


def config_slice(cfg: Any, step: int) -> tuple:
    """The generate section (as hashed before `generate.sglang` was grouped, so earlier caches stay valid),
    the run seed and the step."""
    return (fingerprint_view("generate", cfg.generate), cfg.train.seed, step)


def compute(job: Any, step: int, inputs: dict[str, cache.StageRecord]) -> tuple[Dataset | None, dict[str, Any]]:
    """On every process: point the rollout backend at the policy after step-1, generate this rank's
    share of the rows (whole groups per engine, or per process), gather the shares to the main process."""
    src, acc = inputs["prefixes"].load(), job.acc
    job.load_policy(step - 1, with_optimizer=False)
    backend = job.backend()
    release_cached_memory()  # before a colocated engine re-takes its memory
    backend.sync_weights(engine_weights(job.cfg.generate, job.state.model, acc),  # streamed from shards
                         checkpoint=job.policy_checkpoint(step - 1))
    rows = shard_rows(src, *generation_shard(backend, acc.process_index, acc.num_processes))
    t0 = time.perf_counter()
    part = run(src.select(rows), job.cfg.generate, backend=backend, stop_token_ids=job.stop_ids(),
               seed=job.cfg.train.seed, step=step, row_ids=rows)
    seconds = time.perf_counter() - t0
    ds = merge_shards(acc, src, rows, part)
    tokens = sum(len(c) for c in S.column_lists(ds, S.COMPLETION_IDS)[S.COMPLETION_IDS]) if ds is not None else 0
    prefill = prefill_tokens(ds) if ds is not None else 0
    return ds, {"completion_tokens": tokens, "tokens": tokens, "engine": backend.version(),
                "tokens_per_s": round(tokens / max(seconds, 1e-9), 1), "rollout_tokens": tokens,
                "rollout_flops": accounting.rollout_flops(job.state.model, prefill, tokens, len(ds or []))}


def prefill_tokens(ds: Dataset) -> int:
    """Prompt + demonstration-prefix tokens of the rows the engine generated for (not whole demonstrations)."""
    c = S.column_lists(ds, S.PROMPT_IDS, S.PREFIX_IDS, S.IS_DEMO)
    return sum(len(p) + len(f) for p, f, d in zip(c[S.PROMPT_IDS], c[S.PREFIX_IDS], c[S.IS_DEMO]) if not d)


def merge_shards(acc: Any, src: Dataset, rows: list[int], part: Dataset) -> Dataset | None:
    """Gather every rank's rows to the main process, in the source order."""
    if acc.num_processes == 1:
        return part
    from accelerate.utils import gather_object

    pieces = gather_object([(rows, part.to_dict())])
    if not acc.is_main_process:
        return None
    by_row = {}
    for idx, cols in pieces:
        for k, r in enumerate(idx):
            by_row[r] = {c: v[k] for c, v in cols.items()}
    merged = {c: [by_row[r][c] for r in range(len(src))] for c in pieces[0][1]}
    return S.make_dataset(merged)


def _inputs(cfg: Any, step: int) -> tuple[str, ...]:
    return ("prefixes",)


def _runs(cfg: Any, step: int) -> bool:
    return not methods.is_sft_step(cfg, step)


SPEC = StageSpec("generate", STAGE_VERSION, config_slice, _inputs, compute, policy="previous", runs=_runs,
                 produces=PRODUCES, collective=True)
