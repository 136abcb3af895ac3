"""prefixes: schedule, length rule and sampler against hand-computed values; schema and determinism."""

import math

import pytest

from pipeline import schema as S
from pipeline.config import PrefixConfig
from stages import prefixes


@pytest.mark.parametrize("step, expected", [
    (0, 0.95),                                          # cos(0) = 1: 0.05 + 0.45 * 2
    (25, 0.05 + 0.45 * (1 + math.cos(math.pi / 4))),    # = 0.818198...
    (50, 0.5),                                          # cos(pi/2) = 0: 0.05 + 0.45
    (100, 0.05),                                        # cos(pi) = -1
    (150, 0.05),                                        # past the horizon: stays at low_end
])
def test_cosine_lower_bound(step, expected):
    assert prefixes.low_bound(step, PrefixConfig(), horizon=100) == pytest.approx(expected)


def test_cosine_with_warmup():
    cfg = PrefixConfig(warmup_steps=10)
    assert prefixes.low_bound(5, cfg, horizon=110) == pytest.approx(0.95)
    assert prefixes.low_bound(60, cfg, horizon=110) == pytest.approx(0.5)  # (60-10)/(110-10) = 1/2


def test_other_schedules():
    assert prefixes.low_bound(25, PrefixConfig(schedule="linear"), 100) == pytest.approx(0.95 - 0.9 * 0.25)
    assert prefixes.low_bound(25, PrefixConfig(schedule="fixed"), 100) == pytest.approx(0.95)
    assert prefixes.low_bound(25, PrefixConfig(schedule="uniform"), 100) == pytest.approx(0.05)


@pytest.mark.parametrize("ratio, demo_len, min_len, l_max, expected", [
    (0.5, 10, 1, 100, 5),      # floor(5.0)
    (0.95, 10, 1, 100, 9),     # floor(9.5) = 9
    (1.0, 10, 1, 100, 9),      # 10 capped at |y*| - 1 = 9: at least one generated token
    (0.01, 10, 1, 100, 1),     # floor(0.1) = 0 raised to min_prefix_tokens
    (0.01, 10, 3, 100, 3),
    (0.5, 1, 1, 100, 0),       # |y*| - 1 = 0
    (0.9, 100, 1, 50, 49),     # floor(90) capped at L_max - 1 = 49
])
def test_prefix_length_rule(ratio, demo_len, min_len, l_max, expected):
    assert prefixes.prefix_length(ratio, demo_len, min_len, l_max) == expected


def test_sampler_walks_epochs():
    picks = [prefixes.sample_prompt_indices(10, step, 4, seed=0) for step in range(1, 6)]
    flat = [i for p in picks for i in p]  # 20 positions = 2 epochs of 10
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert flat[:10] != flat[10:]  # each epoch reshuffled
    assert picks[2] == prefixes.sample_prompt_indices(10, 3, 4, seed=0)  # a function of the step alone
    assert prefixes.sample_prompt_indices(10, 1, 4, seed=1) != picks[0]


def _curated(n=6):
    from datasets import Dataset

    return S.make_dataset({
        S.ID: [f"p{i}" for i in range(n)], S.SOURCE: ["t"] * n, S.LEVEL: [1] * n, S.ANSWER: [str(i) for i in range(n)],
        S.PROMPT_IDS: [[1, 2, i] for i in range(n)], S.DEMO_IDS: [list(range(100, 100 + 20 + i)) for i in range(n)],
    })


def test_run_schema_slots_and_prefixes():
    cfg = PrefixConfig(prompts_per_step=3, samples_per_prompt=4, hybrids_per_prompt=1)
    out = prefixes.run(_curated(), cfg, step=1, horizon=10, seed=0, max_response_tokens=64)
    assert set(prefixes.PRODUCES) <= set(out.column_names)
    assert len(out) == 12
    assert out[S.SLOT] == [0, 1, 2, 3] * 3 and out[S.GROUP_ID] == [0] * 4 + [1] * 4 + [2] * 4
    assert out[S.IS_HYBRID] == [False, False, False, True] * 3
    low = prefixes.low_bound(1, cfg, 10)
    demos = {r[S.ID]: list(range(100, 100 + 20 + int(r[S.ID][1:]))) for r in out}
    for r in out:
        demo = demos[r[S.ID]]
        if r[S.IS_HYBRID]:
            assert low <= r[S.PREFIX_RATIO_DRAWN] <= 0.95
            assert r[S.PREFIX_LEN] == prefixes.prefix_length(r[S.PREFIX_RATIO_DRAWN], len(demo), 1, 64)
            assert r[S.PREFIX_IDS] == demo[:r[S.PREFIX_LEN]]  # token-space cut (docs/method.md Q11)
            assert r[S.PREFIX_RATIO] == pytest.approx(r[S.PREFIX_LEN] / len(demo))
        else:
            assert r[S.PREFIX_IDS] == [] and r[S.PREFIX_LEN] == 0


def test_run_is_deterministic_and_seed_dependent():
    cfg = PrefixConfig(prompts_per_step=4, samples_per_prompt=8, hybrids_per_prompt=3)
    a = prefixes.run(_curated(), cfg, step=2, horizon=10, seed=0, max_response_tokens=64)
    b = prefixes.run(_curated(), cfg, step=2, horizon=10, seed=0, max_response_tokens=64)
    c = prefixes.run(_curated(), cfg, step=2, horizon=10, seed=1, max_response_tokens=64)
    assert a.to_dict() == b.to_dict()
    assert a[S.PREFIX_RATIO_DRAWN] != c[S.PREFIX_RATIO_DRAWN]


def test_k_zero_is_pure_rft_layout():
    cfg = PrefixConfig(prompts_per_step=2, samples_per_prompt=4, hybrids_per_prompt=0)
    out = prefixes.run(_curated(), cfg, step=1, horizon=10, seed=0, max_response_tokens=64)
    assert not any(out[S.IS_HYBRID]) and all(p == [] for p in out[S.PREFIX_IDS])


def test_run_rejects_missing_columns():
    from pipeline.errors import UserError

    with pytest.raises(UserError, match="demo_ids"):
        prefixes.run(_curated().remove_columns([S.DEMO_IDS]), PrefixConfig(), step=1, horizon=1, seed=0,
                     max_response_tokens=8)
