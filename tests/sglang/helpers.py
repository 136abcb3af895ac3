"""Shared pieces of the SGLang tier: reference models, perturbation, trainer log-probs, the report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

REPORT = Path(os.environ.get("SGLANG_TIER_REPORT", "runs/sglang-tier-report.json"))


def record(key: str, value) -> None:
    """Add a measured figure to the tier's JSON report (read by the README numbers)."""
    data = json.loads(REPORT.read_text()) if REPORT.is_file() else {}
    data[key] = value
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(data, indent=1, sort_keys=True))


def load_fp32(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def perturbed(model, scale: float = 0.05, seed: int = 7):
    """A copy of `model` with seeded Gaussian noise added to every parameter."""
    import copy

    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return other


def trainer_logprobs(model, requests, completions, temperature: float) -> list[list[float]]:
    """The trainer's log-probs of every completion token (pipeline.logprobs, as the update stage does)."""
    from pipeline.logprobs import sequence_logprobs

    out = []
    for r, c in zip(requests, completions):
        ids = r.prompt_ids + r.prefix_ids + c.token_ids
        x = torch.tensor([ids])
        score = torch.zeros_like(x, dtype=torch.bool)
        start = len(r.prompt_ids) + len(r.prefix_ids)
        score[0, start - 1:len(ids) - 1] = True
        with torch.no_grad():
            logp, _ = sequence_logprobs(model, x, torch.ones_like(x), score, temperature)
        out.append(logp[0][score[0]].tolist())
    return out


def deltas(a: list[list[float]], b: list[list[float]]) -> torch.Tensor:
    return torch.cat([(torch.tensor(x) - torch.tensor(y)).abs() for x, y in zip(a, b) if x] or [torch.zeros(0)])


def ids(completions) -> list[list[int]]:
    return [c.token_ids for c in completions]
