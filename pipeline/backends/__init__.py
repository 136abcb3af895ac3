"""The rollout protocol: token ids in, continuation ids, per-token log-probs and finish reasons out.

The generate stage and evaluation depend only on `RolloutBackend`. Implementations live next to this
file and are picked from `BACKENDS` by name; heavy engines (SGLang) are imported only when chosen.

Lifecycle around a training step (the orchestrator, `pipeline.run`): `release()` before the update
(a colocated engine frees its KV cache and weights), then before the next generation
`sync_weights(model, checkpoint)` (re-acquires what was released, pushes the new weights, flushes the
prefix cache), and `shutdown()` at the end of the run. Engines that share the trainer's module
(transformers) make all of these no-ops.

A request is a rendered prompt plus an optional forced prefix (a cut of the demonstration, docs/method.md §3
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

    def sync_weights(self, model: Any, checkpoint: str | None = None) -> None:
        """Make the engine serve `model`'s current weights. `checkpoint`, when given, is a transformers
        checkpoint directory (or hub id) holding the same weights, for engines that load from disk.
        Called on every process (gathering sharded weights is collective)."""

    def release(self) -> None:
        """Free engine memory before the optimiser runs (no-op where nothing is held)."""

    def resume(self) -> None:
        """Re-acquire what `release` freed."""

    def flush_cache(self) -> None:
        """Drop cached prefixes (KV of earlier requests): they were computed with older weights."""

    def shutdown(self) -> None:
        """Stop the engine."""


BACKENDS = {
    "transformers": "pipeline.backends.hf:TransformersBackend",
    "sglang": "pipeline.backends.sglang:SGLangBackend",
    "sglang_server": "pipeline.backends.sglang_server:SGLangServerBackend",
}


def load_backend_class(name: str) -> type:
    if name not in BACKENDS:
        raise ValueError(f"unknown generation backend {name!r}; choose one of {sorted(BACKENDS)}")
    module, attr = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def make_backend(cfg: Any, *, model: Any, pad_token_id: int, model_path: str, seed: int,
                 model_cfg: Any = None) -> RolloutBackend:
    """The backend `cfg.backend` (a `GenerateConfig`) names, serving `model`. Engines that run outside the
    trainer's module are built from `model_path` (the starting checkpoint) and get their weights by
    `sync_weights`; `seed` is the run seed; `model_cfg` (a `ModelConfig`) carries the config patch the
    policy is loaded with (RoPE base, position limit), which such engines must apply too."""
    cls = load_backend_class(cfg.backend)
    if cfg.backend == "transformers":
        return cls(model, pad_token_id=pad_token_id, batch_size=cfg.batch_size, precision=cfg.precision)
    return cls.from_config(cfg, model_path=model_path, seed=seed, model_cfg=model_cfg)
