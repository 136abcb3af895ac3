"""Evaluation suites: each loads a list of problems with reference answers.

`toy` is the held-out split of the embedded task (levels 1-6, disjoint from training by construction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pipeline.errors import UserError


@dataclass
class EvalItem:
    id: str
    problem: str  # the user-turn text before the instruction
    answer: str  # reference answer
    level: int = -1  # difficulty level where the suite has one


@dataclass
class Suite:
    name: str
    load: Callable[[str | None], list[EvalItem]]  # data_dir -> items
    grader: str = "math"  # key of evaluation.run.GRADERS
    description: str = ""


def _load_toy(data_dir: str | None) -> list[EvalItem]:
    from pipeline.embedded import task

    return [EvalItem(task.problem_id(p), p.text, str(p.answer), p.level)
            for p in task.test_split(list(range(1, 7)), 100)]


SUITES: dict[str, Suite] = {
    "toy": Suite("toy", _load_toy, "math", "held-out split of the embedded task, 100 problems per level 1-6"),
}
GROUPS: dict[str, list[str]] = {}


def resolve_suites(names: list[str]) -> list[Suite]:
    """Suite names or group names -> suites, in order, without duplicates."""
    out: list[Suite] = []
    for name in names:
        for n in GROUPS.get(name, [name]):
            if n not in SUITES:
                raise UserError(f"eval.suites: unknown suite {n!r}; known suites: {', '.join(SUITES)}"
                                + (f"; groups: {', '.join(GROUPS)}" if GROUPS else ""))
            if SUITES[n] not in out:
                out.append(SUITES[n])
    return out
