"""Evaluation statistics: accuracy (avg@k) with its standard error, unbiased pass@k, macro averages.

- avg@k: the mean over problems of the fraction of a problem's k samples that are correct (docs/method.md §8;
  LUFFY's ×32 replication computes the same number).
- standard error: the sample standard deviation (ddof 1) of the per-problem means over sqrt(problems),
  i.e. the uncertainty from the choice of problems, with the samples of a problem averaged first.
- pass@k: the unbiased estimator of Chen et al. (2021), 1 - C(n-c, k) / C(n, k) for a problem with c of
  n samples correct, averaged over problems, for k = 1, 2, 4, ... up to n (and n itself). It is computed
  as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the huge binomials (n up to 2048 and beyond).
- macro average: the unweighted mean of per-benchmark accuracies (the paper's headline over the six
  math benchmarks); its standard error treats the benchmarks as independent: sqrt(sum se_i^2) / m.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) is correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def k_values(n: int) -> list[int]:
    """1, 2, 4, ... up to n, plus n itself when it is not a power of two."""
    ks = [1 << i for i in range(max(1, n).bit_length()) if (1 << i) <= n]
    return ks + ([n] if n not in ks else [])


def pass_at_k_curve(n_correct: list[int], n: int) -> dict[str, float]:
    """Mean pass@k over problems for every k in `k_values(n)`; keys are str(k)."""
    if not n_correct:
        return {}
    return {str(k): float(np.mean([pass_at_k(n, c, k) for c in n_correct])) for k in k_values(n)}


def summarise(correct: np.ndarray, levels: list[int]) -> dict[str, Any]:
    """correct [problems, samples] -> accuracy (avg@k), standard error over problems, per-level accuracy,
    pass@k for k = 1, 2, 4, ... up to the samples per problem."""
    per_problem = correct.mean(axis=1) if correct.size else np.zeros(0)
    n = len(per_problem)
    k = int(correct.shape[1]) if n else 0
    out: dict[str, Any] = {
        "accuracy": float(per_problem.mean()) if n else 0.0,
        "stderr": float(per_problem.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
        "problems": n, "samples_per_problem": k,
        "pass_at_k": pass_at_k_curve([int(c) for c in correct.sum(axis=1)], k) if n else {},
    }
    by_level = {}
    for lv in sorted(set(levels)):
        if lv >= 0:
            mask = np.array(levels) == lv
            by_level[str(lv)] = float(per_problem[mask].mean())
    if by_level:
        out["accuracy_by_level"] = by_level
    return out


def macro_average(summaries: dict[str, dict[str, Any]], names: list[str]) -> dict[str, Any] | None:
    """Unweighted mean accuracy over the named suites present in `summaries` (None if none is)."""
    present = [s for s in names if s in summaries]
    if not present:
        return None
    accs = [summaries[s]["accuracy"] for s in present]
    ses = [summaries[s]["stderr"] for s in present]
    return {"accuracy": float(np.mean(accs)), "stderr": float(math.sqrt(sum(x * x for x in ses)) / len(ses)),
            "suites": present, "complete": len(present) == len(names)}
