"""Column names shared by the stages, and the check each stage runs on entry and exit.

curate    ID, SOURCE, LEVEL, PROBLEM, PROMPT, DEMONSTRATION, ANSWER, DEMO_VERIFIED, PROMPT_IDS, DEMO_IDS
prefixes  ID, SOURCE, LEVEL, ANSWER, PROMPT_IDS, STEP, GROUP_ID, SLOT, IS_HYBRID, IS_DEMO, HINT_LEN,
          PREFIX_IDS, PREFIX_LEN, PREFIX_RATIO, PREFIX_RATIO_DRAWN
generate  + COMPLETION_IDS, COMPLETION_LOGPROBS, FINISH_REASON
reward    + RESPONSE_TEXT, EXTRACTED_ANSWER, REWARD, REWARD_STATUS
update    STEP, GROUP_ID, SLOT, IS_HYBRID, REWARD, ADVANTAGE, + per-sequence statistics
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import pyarrow as pa
from datasets import Dataset, DatasetInfo, Features, List, Value
from datasets.table import InMemoryTable

from pipeline.errors import UserError

# curate
ID = "id"
SOURCE = "source"
LEVEL = "level"
PROBLEM = "problem"
PROMPT = "prompt"  # chat messages [{role, content}]
DEMONSTRATION = "demonstration"  # expert solution text y*
ANSWER = "answer"  # reference answer (string)
DEMO_VERIFIED = "demo_verified"
PROMPT_IDS = "prompt_ids"  # rendered chat prompt, policy-tokenizer ids
DEMO_IDS = "demo_ids"  # y* in policy-tokenizer ids, no end-of-turn token

# prefixes
STEP = "step"
GROUP_ID = "group_id"  # index of the prompt within the step
SLOT = "slot"  # index within the group
IS_HYBRID = "is_hybrid"
PREFIX_IDS = "prefix_ids"  # y*[:L]
PREFIX_LEN = "prefix_len"  # L
PREFIX_RATIO = "prefix_ratio"  # realised L / |y*|
PREFIX_RATIO_DRAWN = "prefix_ratio_drawn"  # l ~ U(low_t, high)
IS_DEMO = "is_demo"  # the slot is the whole demonstration + end of turn: nothing is generated for it
HINT_LEN = "hint_len"  # the last HINT_LEN tokens of PROMPT_IDS are a demonstration hint (UFT)

# generate
COMPLETION_IDS = "completion_ids"  # policy continuation after the prefix
COMPLETION_LOGPROBS = "completion_logprobs"  # engine log-prob of each continuation token
FINISH_REASON = "finish_reason"  # "stop" | "length"

# reward
RESPONSE_TEXT = "response_text"  # decode(prefix + continuation)
EXTRACTED_ANSWER = "extracted_answer"
REWARD = "reward"
REWARD_STATUS = "reward_status"  # ok | no_answer | timeout | error

# update (per-sequence statistics)
ADVANTAGE = "advantage"

_INT = Value("int32")
_IDS = List(Value("int32"))
FEATURES = {
    ID: Value("string"), SOURCE: Value("string"), LEVEL: _INT, PROBLEM: Value("string"),
    PROMPT: List({"role": Value("string"), "content": Value("string")}), DEMONSTRATION: Value("string"),
    ANSWER: Value("string"), DEMO_VERIFIED: Value("bool"), PROMPT_IDS: _IDS, DEMO_IDS: _IDS,
    STEP: _INT, GROUP_ID: _INT, SLOT: _INT, IS_HYBRID: Value("bool"), PREFIX_IDS: _IDS, PREFIX_LEN: _INT,
    PREFIX_RATIO: Value("float64"), PREFIX_RATIO_DRAWN: Value("float64"), IS_DEMO: Value("bool"), HINT_LEN: _INT,
    COMPLETION_IDS: _IDS, COMPLETION_LOGPROBS: List(Value("float32")), FINISH_REASON: Value("string"),
    RESPONSE_TEXT: Value("string"), EXTRACTED_ANSWER: Value("string"), REWARD: Value("float32"),
    REWARD_STATUS: Value("string"), ADVANTAGE: Value("float32"),
}


def features(columns: Iterable[str], extra: dict | None = None) -> Features:
    """The typed schema of `columns` (plus `extra` name -> feature)."""
    return Features({**{c: FEATURES[c] for c in columns}, **(extra or {})})


def make_dataset(columns: dict[str, list], extra: dict | None = None) -> Dataset:
    """A Dataset with the project's fixed column types (so empty lists keep their type). Built from an Arrow
    table with a content hash as its fingerprint: `Dataset.from_dict` would encode every value and dill-hash
    the whole dataset for a fingerprint, 10-30 ms per stage output (~5% of an SFT step on the embedded model,
    docs/performance.md). Columns pyarrow cannot convert alone go through from_dict."""
    feats = features([c for c in columns if c in FEATURES], extra)
    if set(feats) == set(columns):
        try:
            table = pa.Table.from_pydict(columns, schema=feats.arrow_schema)
        except (pa.ArrowException, TypeError, ValueError):
            table = None
        if table is not None:
            return Dataset(InMemoryTable(table), info=DatasetInfo(features=feats), fingerprint=_content_hash(table))
    return Dataset.from_dict(columns, features=feats)


def _content_hash(table: pa.Table) -> str:
    """A deterministic fingerprint of a table's schema and values (its Arrow IPC stream's sha256)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue()).hexdigest()[:16]


CURATE_COLUMNS = (ID, SOURCE, LEVEL, PROBLEM, PROMPT, DEMONSTRATION, ANSWER, DEMO_VERIFIED, PROMPT_IDS, DEMO_IDS)


def column_lists(ds: Dataset, *names: str) -> dict[str, list]:
    """Whole columns as Python lists, read in one pass (`ds[name]` is a lazy per-row view in datasets 4+)."""
    return ds.select_columns(list(names)).to_dict()


def require_columns(ds: Dataset, columns: Iterable[str], stage: str, where: str = "input") -> None:
    """Raise a UserError naming the stage and the missing columns."""
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise UserError(f"{stage}: {where} dataset lacks column(s) {missing}; it has {ds.column_names}. "
                        f"Re-run the stage that produces them (or check the column mapping).")
