"""The embedded task: chained single-digit addition and subtraction, solved step by step.

Level k has k operations on k+1 operands in 1..9, e.g. level 3: "What is 7 + 5 - 3 + 8?". The worked
demonstration keeps a running total, one line per operation, and ends in `\\boxed{answer}`:

    7 + 5 = 12. 12 - 3 = 9. 9 + 8 = 17. The answer is \\boxed{17}.

Subtraction is only used when the running total stays non-negative. Harder levels need longer chains
and running totals (two-digit facts) that the warm-start never shows, so the demonstrations teach
something the base policy lacks there.

Train and held-out problems are disjoint by construction: every problem text is assigned to the test
partition when the first bytes of its sha256 fall below `TEST_FRACTION`; the train split only draws
from the other partition.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

TEST_FRACTION = 0.2
TEST_SEED = 20250701  # held-out split is fixed, independent of any run seed
_MAX_ATTEMPT_FACTOR = 40


@dataclass(frozen=True)
class Problem:
    level: int
    operands: tuple[int, ...]
    ops: tuple[str, ...]  # "+" or "-", len(operands) - 1

    @property
    def text(self) -> str:
        expr = str(self.operands[0]) + "".join(f" {op} {x}" for op, x in zip(self.ops, self.operands[1:]))
        return f"What is {expr}?"

    @property
    def answer(self) -> int:
        total = self.operands[0]
        for op, x in zip(self.ops, self.operands[1:]):
            total = total + x if op == "+" else total - x
        return total

    @property
    def demonstration(self) -> str:
        total, lines = self.operands[0], []
        for op, x in zip(self.ops, self.operands[1:]):
            new = total + x if op == "+" else total - x
            lines.append(f"{total} {op} {x} = {new}.")
            total = new
        return " ".join(lines) + f" The answer is \\boxed{{{total}}}."


def sloppy_demonstration(p: Problem) -> str:
    """The warm-start's bad habit: the same worked format, but every "-" read as "+"."""
    return Problem(p.level, p.operands, ("+",) * len(p.ops)).demonstration


def in_test_partition(text: str) -> bool:
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:4], "big") < TEST_FRACTION * 2**32


def sample_problem(rng: random.Random, level: int) -> Problem:
    operands = [rng.randint(1, 9)]
    ops = []
    total = operands[0]
    for _ in range(level):
        x = rng.randint(1, 9)
        op = "-" if (x <= total and rng.random() < 0.35) else "+"
        total = total + x if op == "+" else total - x
        operands.append(x)
        ops.append(op)
    return Problem(level, tuple(operands), tuple(ops))


def draw_distinct(rng: random.Random, level: int, count: int, want_test: bool, *, sample: Any = None,
                  in_test: Any = None, attempts: int = _MAX_ATTEMPT_FACTOR,
                  exclude: Collection[str] = frozenset()) -> list:
    """Up to `count` distinct problems of `level` from one partition (`in_test(text) == want_test`), drawn
    with `sample(rng, level)` in at most count * attempts tries, skipping texts in `exclude`. This task's
    sampler and partition by default; Countdown passes its own (its sampler may return None for a dead end).
    Shared by both embedded tasks, so their splits are built one way."""
    sample, in_test = sample or sample_problem, in_test or in_test_partition
    seen: set[str] = set()
    out = []
    for _ in range(count * attempts):
        if len(out) == count:
            break
        p = sample(rng, level)
        if p is None or p.text in seen or p.text in exclude or in_test(p.text) != want_test:
            continue
        seen.add(p.text)
        out.append(p)
    return out


def train_split(levels: list[int], per_level: int, seed: int) -> list[Problem]:
    """Distinct training problems from the train partition, `per_level` per level when that many exist."""
    out = []
    for level in levels:
        out += draw_distinct(random.Random(f"train-{seed}-{level}"), level, per_level, want_test=False)
    return out


def test_split(levels: list[int], per_level: int = 100) -> list[Problem]:
    """The fixed held-out split: distinct problems from the test partition."""
    out = []
    for level in levels:
        out += draw_distinct(random.Random(f"test-{TEST_SEED}-{level}"), level, per_level, want_test=True)
    return out


def validation_split(levels: list[int], per_level: int = 40) -> list[Problem]:
    """Test-partition problems outside the held-out split (`test_split(levels)`): never trained on, never among
    the held-out numbers; what learning rates and checkpoints are chosen on. Level 1 has none left."""
    held = {p.text for p in test_split(levels)}
    out = []
    for level in levels:
        rng = random.Random(f"val-{TEST_SEED}-{level}")
        seen: set[str] = set()
        for _ in range(per_level * _MAX_ATTEMPT_FACTOR):
            if len(seen) == per_level:
                break
            p = sample_problem(rng, level)
            if p.text in seen or p.text in held or not in_test_partition(p.text):
                continue
            seen.add(p.text)
            out.append(p)
    return out


def problem_id(p: Problem) -> str:
    return f"toy-L{p.level}-" + hashlib.sha256(p.text.encode()).hexdigest()[:10]
