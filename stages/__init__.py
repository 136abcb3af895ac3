"""The stages of the pipeline and the table the orchestrator derives everything from.

Each stage module holds the pure function (`run`) and, next to it, its `SPEC` (pipeline/graph.py): the
stages it reads, the config slice its fingerprint hashes, whether it reads the policy, and how it runs in
a training run. `STAGES` lists them in pipeline order; `step_stages` is what one training step runs.
"""

from __future__ import annotations

from typing import Any

from pipeline.graph import StageSpec
from stages import curate, generate, prefixes, replay, reward, update

STAGES: dict[str, StageSpec] = {m.SPEC.name: m.SPEC for m in (curate, prefixes, generate, reward, replay, update)}


def step_stages(cfg: Any, step: int) -> tuple[str, ...]:
    """The stages step `step` runs, in order; the last is always `update`. An RL step runs prefixes ->
    generate -> reward -> update (ReLIFT adds replay before the update); an SFT step prefixes -> update."""
    return tuple(name for name, spec in STAGES.items() if spec.per_step and spec.runs(cfg, step))
