"""The rollout protocol: token ids in, continuation ids, per-token log-probs and finish reasons out.

The generate stage and evaluation depend only on `RolloutBackend`. Implementations live next to this
file and are picked from `BACKENDS` by name; heavy engines (SGLang) are imported only when chosen.

A request is a rendered prompt plus an optional forced prefix (a cut of the demonstration, SPEC §3
"Ours": concatenated in token space). The engine continues after the prefix for at most
`max_new_tokens` tokens; the returned ids and log-probs cover the continuation only.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_token_ids: list[int] = field(default_factory=list)
    min_new_tokens: int = 0  # stop tokens cannot be sampled before this many continuation tokens (benchmarks)


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    prefix_ids: list[int]
    max_new_tokens: int
    seed: int  # per-request sampling seed, so a row's sample does not depend on its batch


@dataclass
class Completion:
    token_ids: list[int]
    logprobs: list[float]  # log softmax(logits / temperature) of each sampled token
    finish_reason: str  # "stop" (a stop token was produced, and is included) or "length"


class RolloutBackend(Protocol):
    name: str

    def version(self) -> str:
        """Engine name and version, recorded in every generate stage's metadata."""

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        """Continue every request; results in request order."""

    def sync_weights(self, model: Any) -> None:
        """Make the engine serve `model`'s current weights."""

    def release(self) -> None:
        """Free engine memory before the optimiser runs (no-op where nothing is held)."""

    def resume(self) -> None:
        """Re-acquire what `release` freed."""

    def shutdown(self) -> None:
        """Stop the engine."""


BACKENDS = {
    "transformers": "pipeline.backends.hf:TransformersBackend",
}


def load_backend_class(name: str) -> type:
    if name not in BACKENDS:
        raise ValueError(f"unknown generation backend {name!r}; choose one of {sorted(BACKENDS)}")
    module, attr = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), attr)
