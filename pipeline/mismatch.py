"""Engine-versus-trainer log-prob mismatch on a step's own tokens.

The rollout engine returns, per continuation token, log softmax(logits / T) under the weights it was
last synced to. The update stage scores the same tokens with the trainer before it changes anything (the
PPO reference pass, docs/method.md §2), so the two must agree up to numerics; a gap means the engine serves other
weights (a failed or partial sync), another dtype or attention path, or another temperature. After
every weight sync the mean and max |delta| over the step's continuation tokens go into the update
stage's stats (metrics.jsonl: `logprob_mismatch_mean`, `logprob_mismatch_max`) and the log, and a mean
past `generate.max_logprob_mismatch` stops the run before the update is saved.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import torch

from pipeline.errors import UserError

log = logging.getLogger(__name__)


def continuation_deltas(old_logp: torch.Tensor, cont_mask: torch.Tensor, rows: list[int],
                        engine_logprobs: list[list[float]]) -> torch.Tensor:
    """|trainer - engine| for every continuation token of a micro-batch.

    old_logp, cont_mask [b, T] (position j scores token j+1; cont_mask marks continuation tokens, in
    order); rows[k] is the trajectory of batch row k; engine_logprobs[row] its engine log-probs."""
    out = []
    for k, row in enumerate(rows):
        trainer = old_logp[k][cont_mask[k]].float().cpu()  # [c]
        engine = torch.tensor(engine_logprobs[row], dtype=torch.float32)  # [c]
        if trainer.shape != engine.shape:
            raise ValueError(f"trajectory {row}: {trainer.numel()} scored continuation tokens but "
                             f"{engine.numel()} engine log-probs")
        out.append((trainer - engine).abs())
    return torch.cat(out) if out else torch.zeros(0)


def summarise(deltas: Iterable[torch.Tensor], accelerator: Any = None) -> dict[str, float]:
    """Mean and max |delta| over every rank's tokens."""
    d = torch.cat([x.reshape(-1).double() for x in deltas] or [torch.zeros(0, dtype=torch.float64)])
    total = torch.tensor([float(d.sum()), float(d.numel())], dtype=torch.float64)
    peak = torch.tensor(float(d.max()) if d.numel() else 0.0, dtype=torch.float64)
    if accelerator is not None and accelerator.num_processes > 1:
        total = accelerator.reduce(total.to(accelerator.device), "sum").cpu()
        peak = accelerator.reduce(peak.to(accelerator.device), "max").cpu()
    n = int(total[1])
    return {"logprob_mismatch_mean": float(total[0]) / n if n else 0.0, "logprob_mismatch_max": float(peak),
            "logprob_mismatch_tokens": float(n)}


def check_logprob_mismatch(stats: dict[str, float], cfg: Any, step: int) -> None:
    """Log the step's mismatch; past `cfg.max_logprob_mismatch` (a GenerateConfig) stop the run."""
    if "logprob_mismatch_mean" not in stats:
        return
    mean, peak = stats["logprob_mismatch_mean"], stats["logprob_mismatch_max"]
    # the transformers backend is the trainer's own module (only precision differs): metrics.jsonl has it
    (log.debug if cfg.backend == "transformers" else log.info)(
        "step %d: |logprob(engine %s) - logprob(trainer)| mean %.4g, max %.4g over %d tokens", step,
        cfg.backend, mean, peak, int(stats.get("logprob_mismatch_tokens", 0)))
    limit = cfg.max_logprob_mismatch
    if limit > 0 and mean > limit:
        raise UserError(f"step {step}: the rollout engine ({cfg.backend}) and the trainer disagree on the step's "
                        f"own tokens: mean |log-prob delta| {mean:.4f} nats (max {peak:.4f}) exceeds "
                        f"generate.max_logprob_mismatch={limit}. The engine is likely serving other weights "
                        "(a failed weight sync), another dtype or another temperature; check "
                        "generate.sglang.engine_args and the weight sync, or raise the limit (0 disables the stop)")
