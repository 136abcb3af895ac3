"""Config section `eval`: evaluation before, during (`eval.validation`) and after training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipeline.config.checks import _check, _in_range


@dataclass
class ValidationConfig:
    every: int = 0
    """During training, evaluate `eval.suites` on a validation slice every M steps and log
    `val_<suite>_accuracy` with the step metrics; 0 disables."""
    problems: int = 60
    """Problems per suite in the validation slice (evenly spaced; `eval.samples_per_problem`, 1 if 0)."""
    suites: list[str] = field(default_factory=list)
    """Suites of the validation evaluation; [] evaluates a slice of `eval.suites`. Set it to a split
    disjoint from the held-out one (`toy_val`, `countdown_val`) when choices are made on validation."""
    patience: int = 0
    """Early stopping: end training once `patience` validation points in a row bring no new best validation
    accuracy (mean over the validation suites); `train.total_steps` is then a cap. The run ends at that
    step (its checkpoint is the final one, evaluated at the end as usual). 0 never stops early."""

    def __post_init__(self) -> None:
        _in_range(self.every, "eval.validation.every", 0)
        _in_range(self.problems, "eval.validation.problems", 1)
        _in_range(self.patience, "eval.validation.patience", 0)


@dataclass
class EvalConfig:
    suites: list[str] = field(default_factory=lambda: ["toy"])
    """Suites evaluated before and after training (`toy` is the embedded held-out split)."""
    at_start: bool = True
    """Evaluate the base model before the first step."""
    at_end: bool = True
    """Evaluate the final checkpoint."""
    protocol: Literal["ours", "paper", "luffy"] = "ours"
    """`ours`: each suite's own copy, problem + instruction, math-verify on the last box after `</think>`;
    `paper`: Prefix-RFT's evaluation data (LUFFY's valid.* user turns + its instruction, OAT grader);
    `luffy`: LUFFY's eval script (system prompt dropped, top_p 1.0, OAT grader, its `<think>` rule). The
    table is in evaluation/protocols.py (docs/method.md §8)."""
    grader: Literal["protocol", "math_verify", "oat"] = "protocol"
    """Math grader: the protocol's, math-verify on the last `\\boxed{}`, or the OAT boxed grader."""
    samples_per_problem: int = 0
    """Samples per problem (avg@k, pass@k up to k); 0 means the protocol's count: 32 on AIME24, AIME25
    and AMC, 1 elsewhere (docs/method.md §8)."""
    temperature: float = 0.6
    """Evaluation sampling temperature (docs/method.md §8)."""
    top_p: float = 0.0
    """Evaluation nucleus threshold; 0 means the protocol's (0.95 `ours`/`paper`, 1.0 `luffy`; docs/method.md §8, Q5)."""
    max_new_tokens: int = 8192
    """Generation budget per problem (docs/method.md §8)."""
    max_problems: int = 0
    """Problems per suite; 0 means all."""
    seed: int = 1234
    """Evaluation sampling seed."""
    data_dir: str | None = None
    """Local copies of the evaluation suites (e.g. data); default: hub ids."""
    batch_size: int = 256
    """Sequences decoded together by the transformers backend during evaluation."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Compute dtype of evaluation generation (bf16 = autocast)."""
    chunk_size: int = 4096
    """Sequences generated, graded and written per chunk (bounds memory for n up to 2048 per problem; an
    interrupted suite resumes after its last complete chunk)."""
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    """Evaluation of a validation slice during training (`eval.validation.*`)."""

    def validates_at(self, step: int) -> bool:
        """Whether training evaluates the validation slice after `step` (every `validation.every` steps, when
        there are suites)."""
        return bool(self.validation.every and self.suites and step % self.validation.every == 0)

    def __post_init__(self) -> None:
        _check(all(isinstance(s, str) and s for s in self.suites), "eval.suites", "must be suite names")
        _in_range(self.samples_per_problem, "eval.samples_per_problem", 0)
        _in_range(self.temperature, "eval.temperature", 0.0)
        _check(0.0 <= self.top_p <= 1.0, "eval.top_p", f"must be in [0, 1] (0: the protocol's), got {self.top_p}")
        _in_range(self.max_new_tokens, "eval.max_new_tokens", 1)
        _in_range(self.max_problems, "eval.max_problems", 0)
        _in_range(self.batch_size, "eval.batch_size", 1)
        _in_range(self.chunk_size, "eval.chunk_size", 1)
