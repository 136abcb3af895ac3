"""The hostile-completion corpus (tests/hostile_corpus.py) through the real scorer: every item gets a
status, none is scored correct against a reference it does not equal, none holds a worker past the
hard limit, none raises; and no completion string ever reaches sympy's parser as code."""

import pytest

from pipeline.answer_guard import screen_answer
from pipeline.rewards import grade_math, graded_region
from pipeline.scoring import ScoringPool
from tests.hostile_corpus import corpus

LIMIT_S = 2.0
SLACK_S = 2.0  # select wake-up + SIGKILL + reap on a loaded 2-core machine


def test_hostile_corpus_scored_within_limit():
    items = corpus()
    assert len(items) >= 200
    pool = ScoringPool(grade_math, num_workers=0, timeout_s=LIMIT_S)
    try:
        pool.map([("\\boxed{1}", "1", True)])
        results = pool.map([(graded_region(h.completion), h.reference, True) for h in items])
    finally:
        pool.close()
    wrong = [h.name for h, r in zip(items, results) if r[0] != h.expected]
    assert wrong == []
    assert all(r[1] in ("ok", "no_answer", "timeout", "error") for r in results)
    slow = [(h.name, s) for h, s in zip(items, pool.item_seconds) if s > LIMIT_S + SLACK_S]
    assert slow == []
    assert sum(r[1] == "timeout" for r in results) == pool.timeouts == pool.replaced


@pytest.mark.parametrize("content, refused", [
    ("10^{10^{10}}", True), ("(10^{10})!", True), ("((100!)!)!", True), ("(x+1)^{1000}", True),
    ("{" * 9 + "1" + "}" * 9, True), ("\uff11\uff18", True), ("1\x008", True),
    ("2^{3^{2}}", False), ("5!", False), ("\\frac{1}{2}", False), ("2^{100}", False), ("x^{10}", False),
    # factorials are judged by their argument, not refused on sight; `\\!` is LaTeX spacing, not a factorial
    ("100000!", True), ("(2^{20})!", True), ("(5!)!", True), ("\\Gamma(10^{5})", True), ("\\binom{10^{10}}{3}", True),
    ("\\sum_{n=1}^{10^{10}} n", True), ("\\int_0^1 e^{-x^{100}} dx", True),
    ("11,\\! 111,\\! 111,\\! 100", False), ("\\frac{100!}{2^{50}}", False), ("\\frac{d !}{2 k(d-k) !}", False),
    ("9999!", False), ("n!!", False), ("\\binom{100}{50}", False), ("\\sum_{k=1}^{n} k^2", False), ("x^{1000}", False),
    ("2^{100} x", False),
])
def test_screen_answer(content, refused):
    assert (screen_answer(content) is not None) == refused


HARDENED = """
import sympy
from pipeline.answer_guard import UnsafeParse, harden_sympy
harden_sympy()
assert sympy.sympify("17") == 17 and sympy.sympify("0.5") == sympy.Float("0.5")
try:
    sympy.sympify("__import__('os').getpid()")
except (sympy.SympifyError, UnsafeParse):
    print("refused")
"""


def test_hardened_sympy_never_evals_strings():
    # in a subprocess, as in the scoring workers: hardening patches sympy for the whole process
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", HARDENED], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "refused", out.stderr[-2000:]


@pytest.mark.parametrize("boxed, ref, expected", [
    ("18 = 17", "17", 0.0),   # a false equation is not the answer 17 (math-verify alone grades its last side)
    ("x = 17", "17", 1.0), ("17 = 17", "17", 1.0), ("2+2=4", "4", 1.0), ("17 = 0 = 18", "17", 0.0),
])
def test_equations_grade_every_constant_side(boxed, ref, expected):
    assert grade_math(f"\\boxed{{{boxed}}}", ref, True)[0] == expected
