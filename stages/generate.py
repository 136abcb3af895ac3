"""generate: continue every slot's prompt + prefix with the current policy.

Input: the prefixes dataset. Output adds completion_ids (continuation only, the stop token included
when one was produced), completion_logprobs (engine log-prob of each token) and finish_reason. The
continuation budget is L_max - L, so prefix + continuation never exceeds L_max (SPEC §3 "Ours").
Each row samples from its own seed, derived from (run seed, step, row index in the step's dataset),
whichever rank generates it. Under N processes the rows are split by `shard_rows`: whole groups per
shard, so a group's members are sampled by one engine. Rows that already hold a
whole demonstration (`is_demo`, LUFFY's off-policy member) are not sent to the engine: their
completion is empty with finish_reason "demo".

    python -m pipeline.stage generate --output-dir runs/qs --step 3 --force
"""

from __future__ import annotations

from datasets import Dataset

from pipeline import schema as S
from pipeline.backends import Completion, GenerationRequest, RolloutBackend, SamplingParams
from pipeline.backends.placement import generation_shard  # noqa: F401  (the orchestrator's shard of a step)
from pipeline.config import GenerateConfig
from pipeline.seeding import derive_seed

STAGE_VERSION = 2  # 2: whole-demonstration rows (is_demo) pass through ungenerated
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
