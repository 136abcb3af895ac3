"""replay: ReLIFT's buffer of prompts the policy failed on, released as SFT rows (docs/method.md §10).

After every RL step, each prompt whose on-policy samples all scored 0 (0 of N) joins a first-in
first-out buffer together with its demonstration; when, after a step, the buffer holds at least
`sft.buffer_size` prompts, the oldest `sft.buffer_size` leave it as one SFT batch, trained on right
after that step's RL update (at most one SFT step per training step, as R: relift/trainer.py:338-533). The buffer is a pure function of the reward datasets of
steps 1..t, so a resumed or re-run step rebuilds exactly the same batch.

Input: the reward datasets of steps 1..t and the curate dataset. Output: the SFT rows released at
step t (often none): id, source, level, answer, prompt_ids, step, group_id, slot, is_hybrid, is_demo,
hint_len, prefix_ids (the whole demonstration + end of turn), prefix_len, prefix_ratio,
prefix_ratio_drawn.

    python -m pipeline.stage replay --output-dir runs/relift --step 3 --force
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset

from pipeline import cache, methods
from pipeline import schema as S
from pipeline.graph import StageSpec
from stages.prefixes import PRODUCES

STAGE_VERSION = 1  # 1: FIFO buffer of 0-of-N prompts, released in batches of sft.buffer_size
REQUIRES = (S.ID, S.GROUP_ID, S.IS_HYBRID, S.REWARD)
CURATE_REQUIRES = (S.ID, S.SOURCE, S.LEVEL, S.ANSWER, S.PROMPT_IDS, S.DEMO_IDS)


def failed_prompts(ds: Dataset) -> list[str]:
    """Ids of the step's prompts whose on-policy samples all scored 0, in group order (groups with no
    on-policy sample are skipped)."""
    S.require_columns(ds, REQUIRES, "replay")
    c = S.column_lists(ds, S.ID, S.GROUP_ID, S.IS_HYBRID, S.REWARD)
    groups: dict[int, tuple[str, list[float]]] = {}
    for pid, g, hybrid, r in zip(c[S.ID], c[S.GROUP_ID], c[S.IS_HYBRID], c[S.REWARD]):
        entry = groups.setdefault(g, (pid, []))
        if not hybrid:
            entry[1].append(r)
    return [pid for _, (pid, rs) in sorted(groups.items()) if rs and all(r == 0 for r in rs)]


def release(failed_per_step: list[list[str]], buffer_size: int) -> tuple[list[str], int]:
    """Walk steps 1..t: append each step's failures, then release the oldest `buffer_size` if that many
    wait. Returns (ids released at the last step, how many are left waiting after it)."""
    buffer: list[str] = []
    released: list[str] = []
    for failed in failed_per_step:
        buffer += failed
        released = buffer[:buffer_size] if len(buffer) >= buffer_size else []
        buffer = buffer[len(released):]
    return released, len(buffer)


def run(curated: Dataset, failed_per_step: list[list[str]], *, buffer_size: int, step: int,
        max_response_tokens: int, end_ids: list[int] | tuple[int, ...] = ()) -> tuple[Dataset, dict[str, int]]:
    """The SFT rows released at step t = len(failed_per_step), and the buffer statistics."""
    S.require_columns(curated, CURATE_REQUIRES, "replay", "curate")
    ids, waiting = release(failed_per_step, buffer_size)
    index = {pid: i for i, pid in reversed(list(enumerate(S.column_lists(curated, S.ID)[S.ID])))}
    missing = [pid for pid in ids if pid not in index]
    if missing:
        raise ValueError(f"replay: {len(missing)} buffered prompt id(s) are not in the curated dataset "
                         f"(e.g. {missing[0]!r}); re-run the whole training command")
    rows = curated.select([index[pid] for pid in ids]).to_dict() if ids else {c: [] for c in CURATE_REQUIRES}
    out: dict[str, list] = {c: [] for c in PRODUCES}
    for g in range(len(ids)):
        demo = rows[S.DEMO_IDS][g]
        prefix = (list(demo) + list(end_ids))[:max_response_tokens]
        for col in (S.ID, S.SOURCE, S.LEVEL, S.ANSWER, S.PROMPT_IDS):
            out[col].append(rows[col][g])
        for col, value in ((S.STEP, step), (S.GROUP_ID, g), (S.SLOT, 0), (S.IS_HYBRID, True), (S.IS_DEMO, True),
                           (S.HINT_LEN, 0), (S.PREFIX_IDS, prefix), (S.PREFIX_LEN, len(prefix)),
                           (S.PREFIX_RATIO, 1.0), (S.PREFIX_RATIO_DRAWN, 1.0)):
            out[col].append(value)
    stats = {"failed_this_step": len(failed_per_step[-1]) if failed_per_step else 0, "released": len(ids),
             "waiting": waiting}
    return S.make_dataset(out), stats


def config_slice(cfg: Any, step: int) -> tuple:
    return (cfg.sft.buffer_size, cfg.generate.max_response_tokens)


def compute(job: Any, step: int, inputs: dict[str, cache.StageRecord]) -> tuple[Dataset, dict[str, int]]:
    """The buffer is rebuilt from the reward datasets of steps 1..step (this step's is the declared input;
    the earlier ones are in its fingerprint chain through the policy). Failures are memoised per reward
    fingerprint on the run."""
    failed = []
    for s in range(1, step + 1):
        fp = job.fp("reward", s)
        if fp not in job.failed:
            record = inputs["reward"] if s == step else job.require_input("reward", s)
            job.failed[fp] = failed_prompts(record.load())
        failed.append(job.failed[fp])
    return run(inputs["curate"].load(), failed, buffer_size=job.cfg.sft.buffer_size, step=step,
               max_response_tokens=job.cfg.generate.max_response_tokens, end_ids=job.end_ids())


def _inputs(cfg: Any, step: int) -> tuple[str, ...]:
    return ("reward", "curate")


def _runs(cfg: Any, step: int) -> bool:
    return cfg.sft.mode == "replay" and not methods.is_sft_step(cfg, step)


SPEC = StageSpec("replay", STAGE_VERSION, config_slice, _inputs, compute, runs=_runs, produces=PRODUCES)
