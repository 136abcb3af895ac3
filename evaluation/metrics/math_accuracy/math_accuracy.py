"""Math accuracy: the last `\\boxed{}` of each completion (after the last `</think>`) checked against the
reference answer with math-verify, in worker processes with a hard time limit (`pipeline.rewards`).

    import evaluate
    metric = evaluate.load("evaluation/metrics/math_accuracy")
    metric.compute(predictions=["... so the answer is \\\\boxed{\\\\frac{1}{2}}"], references=["0.5"])
    # {'accuracy': 1.0, 'stderr': 0.0, 'no_answer_rate': 0.0}

`stderr` is the standard error of the mean over completions (ddof 1). This is the grader of the math
suites of `python -m evaluation.run` and of the training reward (docs/method.md §4, §8).
"""

import math

import datasets
import evaluate

from pipeline.rewards import math_verify_reward

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of model completions (str).
    references: list of reference answers (str), e.g. "204", "\\\\frac{1}{2}", "(1,2)".
    timeout_s: optional per-completion grading time limit in seconds (default 5).
Returns:
    accuracy, stderr (standard error of the mean over completions), no_answer_rate.
"""


class MathAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}))

    def _compute(self, predictions, references, timeout_s=5.0):
        results = math_verify_reward(list(predictions), list(references), timeout_s=timeout_s)
        scores = [r[0] for r in results]
        n = len(scores)
        mean = sum(scores) / n if n else 0.0
        var = sum((s - mean) ** 2 for s in scores) / (n - 1) if n > 1 else 0.0
        return {"accuracy": mean, "stderr": math.sqrt(var / n) if n > 1 else 0.0,
                "no_answer_rate": sum(r[1] == "no_answer" for r in results) / n if n else 0.0}
