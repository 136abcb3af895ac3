"""The embedded task: correct demonstrations, levels, and a held-out split disjoint by construction."""

import random

from pipeline.embedded import task


def test_demonstration_reaches_the_answer():
    p = task.Problem(3, (7, 5, 3, 8), ("+", "-", "+"))
    assert p.text == "What is 7 + 5 - 3 + 8?"
    assert p.answer == 17
    assert p.demonstration == "7 + 5 = 12. 12 - 3 = 9. 9 + 8 = 17. The answer is \\boxed{17}."


def test_levels_and_non_negative_running_totals():
    rng = random.Random(0)
    for level in range(1, 9):
        for _ in range(200):
            p = task.sample_problem(rng, level)
            assert len(p.operands) == level + 1 and all(1 <= x <= 9 for x in p.operands)
            total = p.operands[0]
            for op, x in zip(p.ops, p.operands[1:]):
                total = total + x if op == "+" else total - x
                assert total >= 0
            assert total == p.answer


def test_train_and_test_splits_are_disjoint():
    train = task.train_split([1, 2, 3, 4, 5, 6], 2000, seed=0)
    test = task.test_split([1, 2, 3, 4, 5, 6], 100)
    assert not {p.text for p in train} & {p.text for p in test}
    assert all(not task.in_test_partition(p.text) for p in train)
    assert all(task.in_test_partition(p.text) for p in test)
    assert len({p.text for p in train}) == len(train)  # distinct


def test_splits_are_deterministic():
    assert task.train_split([2, 3], 50, seed=4) == task.train_split([2, 3], 50, seed=4)
    assert task.train_split([2, 3], 50, seed=4) != task.train_split([2, 3], 50, seed=5)
    assert task.test_split([3], 20) == task.test_split([3], 20)
