"""The second embedded task: Countdown. Reach a target from given numbers with + - * /, each number used
exactly once; a task with genuine forks.

Level k gives k+1 numbers in 1..9, e.g. level 2: "Make 15 from 3, 4, 9 using + - * /, each number once.".
Every step of a solution is a real choice (which two numbers, which operation), several routes usually
reach the target, and only some choices keep it reachable: the premise of the entropy gate (most
demonstration tokens predictable, a few carrying decisions) holds here, unlike in the chain task. The
demonstration is a solver's route, one line per combination, ending in the whole expression, boxed:

    9 - 4 = 5. 5 * 3 = 15. The answer is \\boxed{(9 - 4) * 3}.

Rules (the classic game's): every intermediate value is a positive integer (no negative results, only
exact division). Targets are 1..99. A problem exists only when the solver finds a route; the route is
the first one found in an order shuffled by the problem's own hash, so demonstrations spread over the
routes instead of always taking the same first choice.

The reference answer is the self-describing string `countdown:<target>:<n1>,<n2>,...`; the reward
(`pipeline.rewards.math_verify_reward`, which routes such references here) grades the last boxed
expression against it with `check_expression` with a small recursive-descent parser over
integers and + - * / ( ) (no `eval`, input length capped, exact rational arithmetic).

Train and held-out problems are disjoint as in the chain task: a problem text belongs to the test
partition when the first bytes of its sha256 fall below TEST_FRACTION; validation problems are test-
partition problems that the fixed held-out split does not contain.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from dataclasses import dataclass
from fractions import Fraction

from pipeline.embedded.task import draw_distinct

TEST_FRACTION = 0.2
TEST_SEED = 20251202
MAX_TARGET = 99
MAX_EXPRESSION_CHARS = 200
_MAX_ATTEMPT_FACTOR = 60
OPS = ("+", "-", "*", "/")
PREFIX = "countdown:"


@dataclass(frozen=True)
class Problem:
    level: int
    numbers: tuple[int, ...]  # in the order shown
    target: int

    @property
    def text(self) -> str:
        return (f"Make {self.target} from {', '.join(map(str, self.numbers))} using + - * /, "
                "each number once.")

    @property
    def answer(self) -> str:
        return f"{PREFIX}{self.target}:{','.join(map(str, self.numbers))}"

    @property
    def route(self) -> list[tuple[int, str, int, int]] | None:
        return _route(self)

    @property
    def demonstration(self) -> str:
        route = self.route
        if route is None:  # not generated: problems are drawn only when the solver finds a route
            raise ValueError(f"no route for {self.text}")
        return demonstration(self.numbers, route)


@functools.lru_cache(maxsize=65536)
def _route(p: Problem) -> list[tuple[int, str, int, int]] | None:
    return solve(p.numbers, p.target, random.Random(hashlib.sha256(p.text.encode()).hexdigest()))


def apply(a: int, op: str, b: int) -> int | None:
    """One combination under the game's rules: a positive integer, or None."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b if a > b else None
    if op == "*":
        return a * b
    return a // b if b and a % b == 0 else None


def solve(numbers: tuple[int, ...], target: int, rng: random.Random | None = None,
          max_nodes: int = 200_000) -> list[tuple[int, str, int, int]] | None:
    """A route [(a, op, b, result), ...] that combines all numbers into `target`, or None. Depth-first over
    (pair, operation) choices, in an order shuffled by `rng` (fixed order without); `max_nodes` bounds the
    search (None past it)."""
    budget = [max_nodes]

    def go(pool: list[int]) -> list[tuple[int, str, int, int]] | None:
        if len(pool) == 1:
            return [] if pool[0] == target else None
        budget[0] -= 1
        if budget[0] < 0:
            return None
        moves = [(i, j, op) for i in range(len(pool)) for j in range(len(pool)) if i != j for op in OPS
                 if not (op in "+*" and i > j)]  # commutative: one order
        if rng is not None:
            rng.shuffle(moves)
        for i, j, op in moves:
            a, b = pool[i], pool[j]
            if op in "+*":
                a, b = max(a, b), min(a, b)  # written larger first
            r = apply(a, op, b)
            if r is None or r > 10_000:
                continue
            rest = [x for k, x in enumerate(pool) if k not in (i, j)] + [r]
            tail = go(rest)
            if tail is not None:
                return [(a, op, b, r)] + tail
        return None

    return go(list(numbers))


def demonstration(numbers: tuple[int, ...], route: list[tuple[int, str, int, int]]) -> str:
    """The worked lines of a route and its whole expression, boxed."""
    exprs: list[tuple[int, str]] = [(n, str(n)) for n in numbers]  # value -> expression, one per pool entry

    def take(v: int) -> str:
        for k, (val, e) in enumerate(exprs):
            if val == v:
                del exprs[k]
                return e if " " not in e else f"({e})"
        raise ValueError(v)

    lines = []
    for a, op, b, r in route:
        ea, eb = take(a), take(b)
        exprs.append((r, f"{ea} {op} {eb}"))
        lines.append(f"{a} {op} {b} = {r}.")
    return " ".join(lines) + f" The answer is \\boxed{{{exprs[0][1]}}}."


# a worked line `a op b = c` (groups: a, op, b, c), as demonstrations write them (both embedded tasks)
WORKED_LINE = re.compile(r"\b(\d{1,4}) ([-+*/]) (\d{1,4}) = (\d{1,4})\b")


def line_errors(text: str) -> tuple[int, int]:
    """(worked lines, wrong ones) in a completion: `a op b = c` lines whose c is not what the game's rules give
    (a wrong sum, or a negative or inexact step). The task's premise needs a policy whose arithmetic is mostly
    right, so that the choices, not the sums, carry the uncertainty; the embedded build reports this rate."""
    lines = WORKED_LINE.findall(text)
    return len(lines), sum(apply(int(a), op, int(b)) != int(c) for a, op, b, c in lines)


def wrong_line_rate(texts: list[str]) -> float | None:
    """The share of all worked lines in `texts` that are wrong (line_errors); None when there are none."""
    counts = [line_errors(t) for t in texts]
    lines = sum(n for n, _ in counts)
    return sum(w for _, w in counts) / lines if lines else None


# ---------------------------------------------------------------------------------------------------
# verification (untrusted text: no eval)


class _Parser:
    """expr := term (('+'|'-') term)*; term := factor (('*'|'/') factor)*; factor := INT | '(' expr ')'."""

    def __init__(self, text: str):
        self.toks = _tokenize(text)
        self.i = 0
        self.leaves: list[int] = []

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def expr(self, depth: int = 0) -> Fraction:
        if depth > 20:
            raise ValueError("nested too deep")
        v = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.toks[self.i]
            self.i += 1
            w = self.term(depth)
            v = v + w if op == "+" else v - w
        return v

    def term(self, depth: int) -> Fraction:
        v = self.factor(depth)
        while self.peek() in ("*", "/"):
            op = self.toks[self.i]
            self.i += 1
            w = self.factor(depth)
            if op == "/" and w == 0:
                raise ValueError("division by zero")
            v = v * w if op == "*" else v / w
        return v

    def factor(self, depth: int) -> Fraction:
        t = self.peek()
        if t == "(":
            self.i += 1
            v = self.expr(depth + 1)
            if self.peek() != ")":
                raise ValueError("unbalanced")
            self.i += 1
            return v
        if t is not None and t.isdigit():
            self.i += 1
            self.leaves.append(int(t))
            return Fraction(int(t))
        raise ValueError(f"unexpected {t!r}")


_ALIASES = {"×": "*", "\\times": "*", "\\cdot": "*", "÷": "/", "\\div": "/", "−": "-", "\\left(": "(",
            "\\right)": ")", "{": "(", "}": ")"}


def _tokenize(text: str) -> list[str]:
    for a, b in _ALIASES.items():
        text = text.replace(a, b)
    toks, i = [], 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "+-*/()":
            toks.append(c)
            i += 1
        elif c.isdigit():
            j = i
            while j < len(text) and text[j].isdigit() and j - i < 6:
                j += 1
            toks.append(text[i:j])
            i = j
        else:
            raise ValueError(f"unexpected character {c!r}")
    return toks


def parse_reference(reference: str) -> tuple[int, list[int]]:
    _, target, nums = reference.split(":")
    return int(target), [int(x) for x in nums.split(",")]


def check_expression(expression: str, reference: str) -> tuple[float, str]:
    """(1.0, "ok") when `expression` uses exactly the reference's numbers (each once) and equals its target;
    (0.0, "ok") when it parses but does not; (0.0, "no_answer") when it does not parse."""
    target, numbers = parse_reference(reference)
    if len(expression) > MAX_EXPRESSION_CHARS:
        return 0.0, "no_answer"
    try:
        p = _Parser(expression)
        value = p.expr()
        if p.i != len(p.toks):
            raise ValueError("trailing tokens")
    except (ValueError, ZeroDivisionError, RecursionError):
        return 0.0, "no_answer"
    ok = sorted(p.leaves) == sorted(numbers) and value == target
    return (1.0 if ok else 0.0), "ok"


# ---------------------------------------------------------------------------------------------------
# splits


def in_test_partition(text: str) -> bool:
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:4], "big") < TEST_FRACTION * 2**32


def sample_problem(rng: random.Random, level: int) -> Problem | None:
    """k+1 numbers and a target reached by a random route (None when the route leaves the rules)."""
    numbers = [rng.randint(1, 9) for _ in range(level + 1)]
    pool = list(numbers)
    while len(pool) > 1:
        i, j = rng.sample(range(len(pool)), 2)
        r = apply(max(pool[i], pool[j]), rng.choice(OPS), min(pool[i], pool[j]))
        if r is None:
            return None
        pool = [x for k, x in enumerate(pool) if k not in (i, j)] + [r]
    if not 1 <= pool[0] <= MAX_TARGET:
        return None
    return Problem(level, tuple(numbers), pool[0])


_SPLIT = {"sample": sample_problem, "in_test": in_test_partition, "attempts": _MAX_ATTEMPT_FACTOR}


def train_split(levels: list[int], per_level: int, seed: int) -> list[Problem]:
    """Distinct training problems from the train partition, `per_level` per level when that many exist."""
    out = []
    for level in levels:
        out += draw_distinct(random.Random(f"countdown-train-{seed}-{level}"), level, per_level, want_test=False,
                            **_SPLIT)
    return out


def test_split(levels: list[int], per_level: int = 100) -> list[Problem]:
    """The fixed held-out split: distinct problems from the test partition."""
    out = []
    for level in levels:
        out += draw_distinct(random.Random(f"countdown-test-{TEST_SEED}-{level}"), level, per_level, want_test=True,
                            **_SPLIT)
    return out


def validation_split(levels: list[int], per_level: int = 40) -> list[Problem]:
    """Test-partition problems outside the held-out split: never trained on, never in the held-out numbers."""
    held = {p.text for p in test_split(levels)}
    out = []
    for level in levels:
        out += draw_distinct(random.Random(f"countdown-val-{TEST_SEED}-{level}"), level, per_level, want_test=True,
                            **_SPLIT, exclude=held)
    return out


def problem_id(p: Problem) -> str:
    return f"countdown-L{p.level}-" + hashlib.sha256(p.text.encode()).hexdigest()[:10]


def sloppy_demonstration(p: Problem) -> str:
    """Interface parity with the chain task (its warm-start mixes in a bad habit); Countdown has none."""
    return p.demonstration
