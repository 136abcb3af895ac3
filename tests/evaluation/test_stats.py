"""pass@k, avg@k, standard errors and macro averages against hand-computed values."""

import math

import numpy as np
import pytest

from evaluation.stats import k_values, macro_average, pass_at_k, pass_at_k_curve, summarise


@pytest.mark.parametrize("n, c, k, expected", [
    (4, 0, 1, 0.0),  # no correct sample: never passes
    (4, 0, 4, 0.0),
    (4, 4, 1, 1.0),  # c = n: always passes
    (4, 4, 3, 1.0),
    (4, 1, 4, 1.0),  # k = n with c >= 1: the draw contains every sample
    (4, 1, 1, 0.25),  # pass@1 = c / n
    (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (10, 3, 4, 1 - 35 / 210),  # 1 - C(7,4)/C(10,4)
    (2048, 1, 1, 1 / 2048),
    (2048, 1, 1024, 0.5),  # 1 - C(2047,1024)/C(2048,1024) = 1 - 1024/2048
    (2048, 2, 1024, 1 - (1024 * 1023) / (2048 * 2047)),  # 1 - C(2046,1024)/C(2048,1024)
    (2048, 5, 2048, 1.0),
])
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_pass_at_k_matches_binomials_everywhere_small():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_pass_at_k_rejects_impossible_arguments():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_k_values():
    assert k_values(1) == [1]
    assert k_values(32) == [1, 2, 4, 8, 16, 32]
    assert k_values(5) == [1, 2, 4, 5]
    assert k_values(2048)[-1] == 2048 and len(k_values(2048)) == 12


def test_curve_is_mean_over_problems():
    # problems with 1 and 3 of 4 correct: pass@2 = mean(1 - C(3,2)/C(4,2), 1 - C(1,2)/C(4,2)) = mean(0.5, 1)
    assert pass_at_k_curve([1, 3], 4) == pytest.approx({"1": 0.5, "2": 0.75, "4": 1.0})


def test_summary_statistics_hand_values():
    # 3 problems x 2 samples: per-problem means [1, 0.5, 0] -> avg@2 0.5; std (ddof 1) 0.5 -> s.e. 0.5/sqrt(3)
    # pass@2: problems with c = 2, 1, 0 of n = 2 -> 1, 1, 0 -> 2/3
    s = summarise(np.array([[1, 1], [1, 0], [0, 0]], dtype=float), [1, 2, 2])
    assert s["accuracy"] == pytest.approx(0.5) and s["stderr"] == pytest.approx(0.5 / np.sqrt(3))
    assert s["pass_at_k"] == pytest.approx({"1": 0.5, "2": 2 / 3})
    assert s["accuracy_by_level"] == {"1": 1.0, "2": 0.25}


def test_macro_average_hand_values():
    summaries = {"a": {"accuracy": 0.2, "stderr": 0.03}, "b": {"accuracy": 0.6, "stderr": 0.04}}
    # mean (0.2 + 0.6)/2 = 0.4; s.e. sqrt(0.03^2 + 0.04^2)/2 = 0.05/2
    avg = macro_average(summaries, ["a", "b", "c"])
    assert avg["accuracy"] == pytest.approx(0.4) and avg["stderr"] == pytest.approx(0.025)
    assert avg["suites"] == ["a", "b"] and avg["complete"] is False
    assert macro_average(summaries, ["z"]) is None
