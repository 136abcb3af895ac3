"""Multiple-choice accuracy: the option a completion chooses (boxed letter, `ANSWER: X`, `The answer is
(X)`, the option's text in a box; ARC's digit labels mapped by position), compared with the reference
label (`evaluation.choice`).

    import evaluate
    metric = evaluate.load("evaluation/metrics/choice_accuracy")
    metric.compute(predictions=["... ANSWER: C"], references=["C"])
    # {'accuracy': 1.0, 'stderr': 0.0, 'no_answer_rate': 0.0}

`labels` (optional) gives the option labels as shown, one list for all rows or one per row (default A-J);
`options` (optional) the option texts, so that a boxed option text counts as its letter.
"""

import math

import datasets
import evaluate

from evaluation.choice import LETTERS, canonical, grade_choices

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of model completions (str).
    references: list of reference labels as shown (e.g. "C", or "2" for a digit-labelled ARC question).
    labels: optional list of labels, or list of per-row label lists (default A-J).
    options: optional list of per-row option-text lists.
Returns:
    accuracy, stderr (standard error of the mean over completions), no_answer_rate.
"""


class ChoiceAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}))

    def _compute(self, predictions, references, labels=None, options=None):
        n = len(predictions)
        if labels is None or (labels and isinstance(labels[0], str)):
            labels = [list(labels or LETTERS)] * n
        options = options or [[] for _ in range(n)]
        refs = [canonical(str(r), list(lab)) or "" for r, lab in zip(references, labels)]
        results = grade_choices(list(predictions), refs, [list(x) for x in labels], [list(x) for x in options])
        scores = [r[0] for r in results]
        mean = sum(scores) / n if n else 0.0
        var = sum((s - mean) ** 2 for s in scores) / (n - 1) if n > 1 else 0.0
        return {"accuracy": mean, "stderr": math.sqrt(var / n) if n > 1 else 0.0,
                "no_answer_rate": sum(r[1] == "no_answer" for r in results) / n if n else 0.0}
