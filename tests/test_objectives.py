"""Hand-computed checks of the objective (docs/method.md §2, §4, §5, §6); the arithmetic is in the comments."""

import math

import pytest
import torch

from pipeline.objectives import aggregate, entropy_gate, gate_count, group_advantages, ppo_clip_loss


def t(x, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype)


def test_group_advantages_dr_grpo_includes_hybrid():
    # one group of 4, last member hybrid: mean = (1+0+0+1)/4 = 0.5 -> A = r - 0.5, no std division
    adv, cont = group_advantages(t([1, 0, 0, 1]), t([7, 7, 7, 7], torch.long), t([0, 0, 0, 1], torch.bool))
    assert adv.tolist() == [0.5, -0.5, -0.5, 0.5]
    assert cont.tolist() == adv.tolist()


def test_group_advantages_groups_are_independent():
    # group 0: mean 1/2 -> [0.5, -0.5]; group 1: mean 0 -> [0, 0]
    adv, _ = group_advantages(t([1, 0, 0, 0]), t([0, 0, 1, 1], torch.long), t([0, 0, 0, 0], torch.bool))
    assert adv.tolist() == [0.5, -0.5, 0.0, 0.0]


def test_group_advantages_singleton_group_has_zero_baseline():
    # verl: a group of one keeps its reward (baseline 0)
    adv, _ = group_advantages(t([1.0]), t([0], torch.long), t([False], torch.bool))
    assert adv.tolist() == [1.0]


def test_group_advantages_exclude_hybrid_reference_variant():
    # on-policy mean = (1+0+0)/3 = 1/3; on-policy A = [2/3, -1/3, -1/3];
    # hybrid prefix A = 1 - 1/3 = 2/3; hybrid continuation is uncentred: 1 - 0 = 1 (docs/method.md §4 dr_grpo_prefix)
    adv, cont = group_advantages(t([1, 0, 0, 1]), t([0, 0, 0, 0], torch.long), t([0, 0, 0, 1], torch.bool),
                                 mode="exclude_hybrid")
    assert adv.tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, 2 / 3])
    assert cont.tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, 1.0])


def test_group_advantages_std_scale():
    # mean 0.25; unbiased std = sqrt((0.75^2 + 3*0.25^2)/3) = sqrt(0.25) = 0.5 -> A = (r - 0.25)/0.5
    adv, _ = group_advantages(t([1, 0, 0, 0]), t([0, 0, 0, 0], torch.long), t([0, 0, 0, 0], torch.bool),
                              std_scale=True)
    assert adv.tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5], abs=1e-5)


def test_group_advantages_rejects_unknown_mode():
    with pytest.raises(ValueError, match="exclude_hybrid"):
        group_advantages(t([1.0]), t([0], torch.long), t([False], torch.bool), mode="bogus")


@pytest.mark.parametrize("n, ratio, expected", [
    (10, 0.2, 2),   # 10 - floor(0.8*10 = 8) = 2 (0.8*10 is exactly 8 after rounding, not 7.99...)
    (7, 0.2, 2),    # 7 - floor(5.6) = 2
    (3, 0.2, 1),    # 3 - floor(2.4) = 1
    (1, 0.2, 1),    # 1 - floor(0.8) = 1
    (0, 0.2, 0),
    (5, 0.5, 3),    # 5 - floor(2.5) = 3
    (10, 1.0, 10),
    (10, 0.0, 0),
])
def test_gate_count(n, ratio, expected):
    assert gate_count(n, ratio) == expected


def _gate_case():
    # two sequences, 4 positions; prefix tokens: seq0 pos 0-2, seq1 pos 0-3 (7 prefix tokens)
    entropy = t([[0.1, 0.9, 0.3, 5.0],
                 [0.7, 0.2, 0.8, 0.4]])
    prefix = t([[1, 1, 1, 0],
                [1, 1, 1, 1]], torch.bool)
    return entropy, prefix


def test_entropy_gate_top_pools_across_the_micro_batch():
    # 7 prefix tokens -> keep 2 (see gate_count): the two highest among prefix tokens are 0.9 (0,1) and
    # 0.8 (1,2); the 5.0 at (0,3) is a continuation token: always kept, never ranked
    entropy, prefix = _gate_case()
    keep = entropy_gate(entropy, prefix, "top", 0.2)
    assert keep.tolist() == [[False, True, False, True], [False, False, True, False]]


def test_entropy_gate_bottom_keeps_lowest():
    # lowest two prefix entropies: 0.1 (0,0) and 0.2 (1,1)
    entropy, prefix = _gate_case()
    keep = entropy_gate(entropy, prefix, "bottom", 0.2)
    assert keep.tolist() == [[True, False, False, True], [False, True, False, False]]


def test_entropy_gate_random_keeps_the_same_count_and_is_seeded():
    entropy, prefix = _gate_case()
    a = entropy_gate(entropy, prefix, "random", 0.2, torch.Generator().manual_seed(3))
    b = entropy_gate(entropy, prefix, "random", 0.2, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert int((a & prefix).sum()) == 2 and bool(a[0, 3])


def test_entropy_gate_all_and_none():
    entropy, prefix = _gate_case()
    assert entropy_gate(entropy, prefix, "all").all()
    none = entropy_gate(entropy, prefix, "none")
    assert none.tolist() == (~prefix).tolist()


def test_entropy_gate_ties_break_by_position():
    # 5 equal entropies, keep ratio 0.4 -> keep 5 - floor(3) = 2: the first two positions
    keep = entropy_gate(torch.ones(5), torch.ones(5, dtype=torch.bool), "top", 0.4)
    assert keep.tolist() == [True, True, False, False, False]


def test_ppo_clip_loss_hand_values():
    ratios = t([1.5, 0.5, 0.5, 4.0, 1.0])
    adv = t([1.0, 1.0, -1.0, -1.0, 2.0])
    # r=1.5, A=1:  -min(1.5, 1.2)      = -1.2  (clipped)
    # r=0.5, A=1:  -min(0.5, 0.8)      = -0.5
    # r=0.5, A=-1: -min(-0.5, -0.8)    =  0.8  (clipped); dual cap 3 does not bind
    # r=4,   A=-1: -min(-4, -1.2) = 4 -> dual clip min(4, 3*1) = 3
    # r=1,   A=2:  -2
    loss, clipped = ppo_clip_loss(torch.log(ratios), torch.zeros(5), adv, 0.2, 0.2, 3.0)
    assert loss.tolist() == pytest.approx([-1.2, -0.5, 0.8, 3.0, -2.0])
    assert clipped.tolist() == [True, False, True, True, False]


def test_ppo_clip_loss_without_dual_clip_and_asymmetric_eps():
    # r=4, A=-1 without dual clip: 4; r=1.5, A=1 with eps_high 0.28: -min(1.5, 1.28) = -1.28
    loss, _ = ppo_clip_loss(torch.log(t([4.0, 1.5])), torch.zeros(2), t([-1.0, 1.0]), 0.2, 0.28, 0.0)
    assert loss.tolist() == pytest.approx([4.0, -1.28])


def test_ppo_clip_loss_clip_mask_leaves_tokens_unclipped():
    # enable_clip=False on prefix tokens: l = -r A = -1.5
    loss, clipped = ppo_clip_loss(torch.log(t([1.5])), torch.zeros(1), t([1.0]), clip_mask=t([False], torch.bool))
    assert loss.tolist() == pytest.approx([-1.5]) and not bool(clipped[0])


def test_ppo_gradient_at_ratio_one_is_advantage_weighted_nll():
    # at r = 1 (first mini-batch) d l / d logp = -A: the prefix gradient is A * grad log pi (docs/method.md §2)
    logp = torch.zeros(3, requires_grad=True)
    loss, _ = ppo_clip_loss(logp, torch.zeros(3), t([0.5, -2.0, 0.0]))
    loss.sum().backward()
    assert logp.grad.tolist() == [-0.5, 2.0, -0.0]


def test_aggregate_constant_and_token_mean():
    values = t([[1, 2, 3], [4, 5, 6]])
    mask = t([[1, 1, 0], [1, 0, 0]])
    # masked sum = 1 + 2 + 4 = 7; constant: 7 / (2 sequences * L_max 4) = 0.875; token mean: 7 / 3
    assert float(aggregate(values, mask, "constant", 2, 4, 3)) == pytest.approx(0.875)
    assert float(aggregate(values, mask, "token_mean", 2, 4, 3)) == pytest.approx(7 / 3)


def test_aggregate_micro_batches_add_up_to_the_mini_batch():
    values, mask = torch.rand(6, 5), (torch.rand(6, 5) > 0.3).float()
    whole = aggregate(values, mask, "constant", 6, 5, int(mask.sum()))
    parts = sum(aggregate(values[i:i + 2], mask[i:i + 2], "constant", 6, 5, int(mask.sum())) for i in (0, 2, 4))
    assert float(parts) == pytest.approx(float(whole))
    assert math.isfinite(float(whole))
