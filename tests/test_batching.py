"""Token-budget micro-batches: the binning by hand, rank equalisation, and the loss/gradients of an
update step equal to the one-big-batch (naive) path."""

import pytest
import torch

from pipeline.batching import budget_groups, micro_groups, plan_batches, split_to
from pipeline.config import ObjectiveConfig
from tests.stages.test_update import _reward_ds, _step


def test_budget_groups_sort_longest_first_and_respect_the_budget():
    # lengths 5, 9, 3, 9, 4; longest first: 11(9), 13(9), 10(5), 14(4), 12(3)
    # [11, 13]: 2 x 9 = 18 <= 18; adding 10 would be 3 x 9 = 27 -> new group of width 5:
    # [10, 14, 12]: 3 x 5 = 15 <= 18
    assert budget_groups([10, 11, 12, 13, 14], [5, 9, 3, 9, 4], 18) == [[11, 13], [10, 14, 12]]
    # padded tokens 18 + 15 = 33, against 2 x 9 + 2 x 9 + 4 = 40 for unsorted pairs
    # (cost with budget // 8 = 2 per micro-batch: 18 + 2 + 15 + 2 = 37; [10], [14, 12] apart also cost 37, and a
    # tie keeps the fewer micro-batches)
    # a sequence longer than the budget goes alone
    assert budget_groups([0, 1, 2], [30, 2, 2], 10) == [[0], [1, 2]]


def test_budget_groups_give_a_few_long_rows_their_own_micro_batch():
    # two rows of 20 tokens (say hybrid rows with the demonstration prefix) and eight of 10, budget 100.
    # Filling greedily: [20, 20, 10, 10, 10] (5 x 20 = 100) + [10] x 5 (50): 150 padded tokens.
    # Cut by cost (padded + 100 // 8 = 12 per micro-batch): [20, 20] (40) + [10] x 8 (80) = 120 + 24 = 144,
    # against 150 + 24 = 174 greedily; three micro-batches ([20, 20], 4 + 4 short) would be 120 + 36 = 156.
    lengths = [10, 20, 10, 10, 10, 20, 10, 10, 10, 10]
    groups = budget_groups(list(range(10)), lengths, 100)
    assert groups == [[1, 5], [0, 2, 3, 4, 6, 7, 8, 9]]
    assert sum(len(g) * max(lengths[i] for i in g) for g in groups) == 120
    # deterministic
    assert budget_groups(list(range(10)), lengths, 100) == groups


def test_split_to_halves_the_largest_group():
    assert split_to([[1, 2, 3, 4], [5]], 3) == [[1, 2], [3, 4], [5]]
    assert split_to([[1], [2]], 5) == [[1], [2]]  # nothing left to split


def test_ranks_get_the_same_number_of_micro_batches():
    mini = list(range(8))
    lengths = [10, 2, 10, 2, 10, 2, 10, 2]  # rank 0 holds every long row, rank 1 every short one
    r0 = micro_groups(mini, lengths, size=8, token_budget=20, rank=0, world=2)
    r1 = micro_groups(mini, lengths, size=8, token_budget=20, rank=1, world=2)
    # rank 0: rows 0, 2, 4, 6 of length 10 -> 2 per group -> 2 groups; rank 1: one group of 4, split to 2
    assert r0 == [[0, 2], [4, 6]] and r1 == [[1, 3], [5, 7]]
    assert micro_groups(mini, lengths, size=3, token_budget=0, rank=0, world=1) == [[0, 1, 2], [3, 4, 5], [6, 7]]


@pytest.mark.parametrize("objective", [ObjectiveConfig(gate="all"), ObjectiveConfig(gate="top", gate_scope="step"),
                                       ObjectiveConfig(gate="none", loss_agg="token_mean")])
def test_token_budget_step_equals_the_one_batch_step(objective):
    # the same 12 trajectories: one padded batch of 12 vs sorted budget bins of <= 40 tokens
    ds = _reward_ds(groups=3)
    g_big, g_budget = [], []
    _, _, m_big, s_big = _step(ds, objective, g_big, micro_batch_size=64)
    _, _, m_budget, s_budget = _step(ds, objective, g_budget, micro_batch_tokens=40)
    gb, gt = g_big[0], g_budget[0]
    assert set(gb) == set(gt) and max(gb[k].abs().max().item() for k in gb) > 1e-4
    assert max((gb[k] - gt[k]).abs().max().item() for k in gb) < 1e-7
    assert s_big["loss"] == pytest.approx(s_budget["loss"], rel=1e-5, abs=1e-7)
    assert m_big["entropy_mean"] == pytest.approx(m_budget["entropy_mean"], rel=1e-5)
    assert m_big["kept_prefix_tokens"] == m_budget["kept_prefix_tokens"]


def test_token_budget_plan_has_less_padding():
    ds = _reward_ds(groups=3)
    from pipeline.config import UpdateConfig

    adv = torch.zeros(len(ds))
    kw = dict(pad_id=0, seed=0, step=1, rank=0, world=1)
    fixed = plan_batches(ds, adv, adv, UpdateConfig(micro_batch_size=4), ObjectiveConfig(), **kw)
    budget = plan_batches(ds, adv, adv, UpdateConfig(micro_batch_tokens=64), ObjectiveConfig(), **kw)

    def padded(plan):
        return sum(mb.input_ids.numel() for mb in plan.minis[0])

    real = sum(int(mb.attention_mask.sum()) for mb in fixed.minis[0])
    assert sum(int(mb.attention_mask.sum()) for mb in budget.minis[0]) == real
    assert all(mb.input_ids.numel() <= 64 for mb in budget.minis[0])
    assert padded(budget) < padded(fixed)
    assert sorted(r for mb in budget.minis[0] for r in mb.rows) == list(range(len(ds)))
