"""The verifier reward: answer extraction, math-verify grading, statuses, hard time limits."""

import time

import pytest

from pipeline.rewards import graded_region, last_boxed, math_verify_reward
from pipeline.scoring import ScoringPool


@pytest.mark.parametrize("text, expected", [
    ("so \\boxed{12}.", "12"),
    ("\\boxed{1} then \\boxed{2}", "2"),                          # the last box
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),                    # nested braces
    ("\\boxed {7}", "7"),                                        # space before the brace
    ("\\fbox{3}", "3"),
    ("\\boxed{5} and an unclosed \\boxed{6", "5"),               # unclosed box is skipped
    ("no box here", None),
    ("\\boxed{" + "1" * 1000 + "}", None),                       # oversized content is not an answer
    ("\\boxed{\\}}", "\\}"),                                     # escaped brace
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_graded_region_after_think():
    assert graded_region("<think>\\boxed{1}</think> final \\boxed{2}") == " final \\boxed{2}"
    assert graded_region("<think>\\boxed{1}</think> x", after_think=False).startswith("<think>")
    assert len(graded_region("x" * 100_000)) == 20_000


def test_math_verify_reward_statuses():
    res = math_verify_reward(
        ["The answer is \\boxed{17}.", "\\boxed{16}", "no answer", "\\boxed{\\frac{1}{2}}", "\\boxed{0.5}",
         "<think>\\boxed{3}</think>\\boxed{4}"],
        ["17", "17", "17", "0.5", "\\frac12", "4"])
    assert [r[0] for r in res] == [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert [r[1] for r in res] == ["ok", "ok", "no_answer", "ok", "ok", "ok"]
    assert res[0][2] == "17"


def test_math_verify_reward_is_cached():
    texts, refs = [f"\\boxed{{{i}}}" for i in range(30)], [str(i) for i in range(30)]
    math_verify_reward(texts, refs)
    t0 = time.perf_counter()
    again = math_verify_reward(texts, refs)
    assert time.perf_counter() - t0 < 0.05 and all(r[0] == 1.0 for r in again)


def _slow_grader(text: str, reference: str, flag: bool):
    if text == "hang":
        time.sleep(60)
    return (1.0, "ok", text)


def test_pool_kills_and_replaces_a_hung_worker():
    pool = ScoringPool(_slow_grader, num_workers=2, timeout_s=0.5)
    try:
        t0 = time.perf_counter()
        out = pool.map([("a", "", True), ("hang", "", True), ("b", "", True), ("hang", "", True), ("c", "", True)])
        elapsed = time.perf_counter() - t0
        assert [o[1] for o in out] == ["ok", "timeout", "ok", "timeout", "ok"]
        assert out[1][0] == 0.0 and elapsed < 5
        assert pool.timeouts == 2 and pool.replaced == 2
        assert pool.map([("d", "", True)]) == [(1.0, "ok", "d")]  # replacement workers serve
    finally:
        pool.close()


def _crashing_grader(text, reference, flag):
    if text == "crash":
        import os

        os._exit(3)
    raise ValueError("bad") if text == "raise" else None


def test_pool_survives_crashes_and_exceptions():
    pool = ScoringPool(_crashing_grader, num_workers=1, timeout_s=5)
    try:
        out = pool.map([("crash", "", True), ("raise", "", True)])
        assert out[0] == (0.0, "error", "worker died") and out[1][1] == "error"
    finally:
        pool.close()


def test_scoring_works_from_a_script_without_a_main_guard(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "user_script.py"
    script.write_text("from pipeline.rewards import math_verify_reward\n"
                      "print(math_verify_reward(['\\\\boxed{3}'], ['3'])[0])\n")
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "(1.0, 'ok', '3')" in res.stdout, res.stderr[-2000:]


# (completion's boxed answer, reference): symbolic equivalences, and a few non-equivalences
EQUIVALENCES = [
    ("(x+1)^2", "x^2+2x+1"), ("x^2+2x+1", "(x+1)^2"), ("(x-1)(x+1)", "x^2-1"), ("\\frac{x^2-1}{x-1}", "x+1"),
    ("\\sin^2 x + \\cos^2 x", "1"), ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"), ("2\\sqrt{2}", "\\sqrt{8}"),
    ("\\sqrt[3]{27}", "3"), ("e^{\\ln 2}", "2"), ("\\log_2 8", "3"), ("\\binom{5}{2}", "10"), ("5!", "120"),
    ("\\frac{100!}{2^{50}}", "\\frac{100!}{2^{50}}"), ("\\frac{d!}{2k(d-k)!}", "\\frac{d !}{2 k(d-k) !}"),
    ("11111111100", "11,\\! 111,\\! 111,\\! 100"), ("\\tan\\frac{\\pi}{4}", "1"), ("\\cos\\frac{\\pi}{3}", "\\frac12"),
    ("\\frac{6}{8}", "\\frac34"), ("10^{3}", "1000"), ("\\frac{2}{4}", "0.5"), ("2(a+b)", "2a+2b"),
    ("\\frac{1}{x}+\\frac{1}{y}", "\\frac{x+y}{xy}"), ("(x+1)^3", "x^3+3x^2+3x+1"), ("\\{3, 1, 2\\}", "\\{1, 2, 3\\}"),
    ("[0, 1)", "[0,1)"),
    ("(x+1)^2", "x^2+1"), ("\\sqrt{2}", "1.41"), ("x^2-1", "(x-1)^2"), ("\\frac{100!}{2^{49}}", "\\frac{100!}{2^{50}}"),
]


def test_equivalences_match_plain_math_verify():
    """The hardened workers accept what math-verify alone (LaTeX extraction, in this unhardened test
    process) accepts, and refuse what it refuses."""
    from math_verify import LatexExtractionConfig, parse, verify

    def plain(pred: str, gold: str) -> float:
        cfg = [LatexExtractionConfig()]
        g, p = parse(f"\\boxed{{{gold}}}", extraction_config=cfg), parse(f"\\boxed{{{pred}}}", extraction_config=cfg)
        return 1.0 if verify(g, p) else 0.0

    expected = [plain(p, g) for p, g in EQUIVALENCES]
    assert expected[:25] == [1.0] * 25 and expected[25:] == [0.0] * 4  # the list says what it tests
    got = [r[0] for r in math_verify_reward([f"So \\boxed{{{p}}}." for p, _ in EQUIVALENCES],
                                            [g for _, g in EQUIVALENCES])]
    assert got == expected
