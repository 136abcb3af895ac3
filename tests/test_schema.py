"""pipeline.schema.make_dataset: the fast path (an Arrow table with a content hash for fingerprint) gives the
dataset `Dataset.from_dict` gives, the same bytes on disk for the same rows, and falls back where pyarrow cannot
convert a column alone."""

import numpy as np
import torch
from datasets import Dataset

from pipeline import schema as S

ROWS = {S.ID: ["a", "b", "c"], S.PROMPT: [[{"role": "user", "content": "1+1"}]] * 3, S.PROMPT_IDS: [[1, 2], [], [3]],
        S.REWARD: [0.5, 1.0, 0.0], S.IS_HYBRID: [True, False, True], S.FINISH_REASON: ["stop", None, "length"]}


def _files(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_fast_path_equals_from_dict_and_is_deterministic(tmp_path):
    ds = S.make_dataset(ROWS)
    ref = Dataset.from_dict(ROWS, features=S.features(ROWS))
    assert ds.features == ref.features and ds.to_dict() == ref.to_dict()
    assert ds.features[S.PROMPT_IDS] == S.FEATURES[S.PROMPT_IDS]  # int32 ids, not inferred int64
    again = S.make_dataset({k: list(v) for k, v in ROWS.items()})
    other = S.make_dataset({**ROWS, S.REWARD: [0.5, 1.0, 0.25]})
    assert ds._fingerprint == again._fingerprint != other._fingerprint
    ds.save_to_disk(str(tmp_path / "a"))
    again.save_to_disk(str(tmp_path / "b"))
    assert _files(tmp_path / "a") == _files(tmp_path / "b")  # byte-identical stage outputs on re-runs


def test_empty_columns_keep_their_types_and_odd_values_fall_back():
    empty = S.make_dataset({S.PROMPT_IDS: [], S.REWARD: []})
    assert len(empty) == 0 and empty.features == S.features([S.PROMPT_IDS, S.REWARD])
    arrays = S.make_dataset({S.PROMPT_IDS: [np.array([1, 2]), np.array([], dtype=np.int64)]})
    assert arrays[S.PROMPT_IDS] == [[1, 2], []]
    # pyarrow alone refuses torch tensors and numbers as strings: from_dict encodes them, as before
    odd = S.make_dataset({S.PROMPT_IDS: [torch.tensor([4, 5])], S.REWARD: ["0.5"]})
    assert odd.to_dict() == {S.PROMPT_IDS: [[4, 5]], S.REWARD: [0.5]}
    extra = S.make_dataset({S.ID: ["x"], "score": [1.5]}, {"score": S.Value("float32")})
    assert extra.features["score"] == S.Value("float32") and extra["score"] == [1.5]
