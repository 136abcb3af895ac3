"""What a stage is to the orchestrator: a `StageSpec` (its inputs, the config slice it hashes, whether it
reads the policy, how it runs). Each stage module declares its own `SPEC` next to its code; the table of
all of them, in pipeline order, is `stages.STAGES`. Fingerprints, input checks, the `pipeline.stage`
choices, resume and the training loop are all derived from that table (pipeline/run.py).

A stage's fingerprint is `sha256(name, STAGE_VERSION, *config slice, *input fingerprints[, policy])`:
changing a field of the slice, an input, or the weights the stage ran with invalidates exactly that
stage and what follows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

from pipeline import cache


@dataclass(frozen=True)
class StageSpec:
    name: str
    version: int  # the module's STAGE_VERSION
    config: Callable[[Any, int], tuple]  # (Config, step) -> the values of the config the output depends on
    inputs: Callable[[Any, int], tuple[str, ...]]  # (Config, step) -> stages whose outputs it reads
    # (Run, step, {input name: its record}) -> (rows, stats)
    compute: Callable[[Any, int, dict[str, cache.StageRecord]], tuple[Any, dict]]
    policy: Literal["base", "previous"] | None = None  # base model (tokenizer), or the policy after step-1
    runs: Callable[[Any, int], bool] | None = None  # (Config, step) -> whether the step runs it; None: curate, once
    produces: tuple[str, ...] = ()  # columns its output must hold (checked before it is written)
    collective: bool = False  # compute runs on every process (only the main process's rows are written)
    valid: Callable[[Any, int], bool] | None = None  # (Run, step): more than the folder needed to reuse it in training
    after: Callable[[Any, int], None] | None = None  # (Run, step): after a computed output was written (main)

    @property
    def per_step(self) -> bool:
        return self.runs is not None

    def input_step(self, name: str, step: int) -> int:
        """Inputs are read at the same step, except the run-wide curate output (step 0)."""
        return 0 if name == "curate" else step

    def fingerprint(self, cfg: Any, step: int, input_fps: list[str], policy_fp: str | None) -> str:
        parts = [*self.config(cfg, step), *input_fps]
        if self.policy is not None:
            parts.append(policy_fp)
        return cache.fingerprint(self.name, self.version, *parts)


def no_inputs(cfg: Any, step: int) -> tuple[str, ...]:
    return ()


def always(cfg: Any, step: int) -> bool:
    return True
