"""pass@k: the unbiased estimator 1 - C(n-c, k) / C(n, k) (Chen et al., 2021), averaged over problems.

    import evaluate
    metric = evaluate.load("evaluation/metrics/pass_at_k")      # a local path: no network
    metric.compute(predictions=[[True, False, False, True], [False] * 4])
    # {'pass@1': 0.25, 'pass@2': 0.4166..., 'pass@4': 0.5, 'avg@4': 0.25}

`predictions` holds, per problem, the correctness of each of its n samples (the same n for every
problem). `k` (optional) lists the k values; the default is 1, 2, 4, ... up to n, and n. The formula
lives in `evaluation.stats`, shared with `python -m evaluation.run`.
"""

import datasets
import evaluate

from evaluation.stats import k_values, pass_at_k

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of lists of bools (or 0/1), one list of per-sample correctness per problem.
    k: optional list of ints, each between 1 and n.
Returns:
    pass@k for every k (mean over problems) and avg@n, the mean fraction of correct samples.
"""


class PassAtK(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="Chen et al. 2021, Evaluating Large Language Models Trained on Code",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("bool"))}))

    def _compute(self, predictions, k=None):
        counts = {len(p) for p in predictions}
        if len(counts) != 1:
            raise ValueError(f"every problem needs the same number of samples, got {sorted(counts)}")
        n = counts.pop()
        correct = [sum(bool(x) for x in p) for p in predictions]
        ks = list(k) if k is not None else k_values(n)
        out = {f"pass@{kk}": sum(pass_at_k(n, c, kk) for c in correct) / len(correct) for kk in ks}
        out[f"avg@{n}"] = sum(correct) / (n * len(correct))
        return out
