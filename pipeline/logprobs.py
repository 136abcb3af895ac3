"""Per-token log-probabilities and entropies without a full [tokens x vocab] logits tensor.

The policy's own forward runs as usual (through any DDP/FSDP wrapper, so their hooks fire), but for
its duration the output head's `forward` is swapped for one that, given the final hidden states,
computes only the scored positions, in chunks of `chunk_tokens`: each chunk's logits are formed,
reduced to (log-prob of the target, entropy) in fp32, and dropped; under autograd each chunk is
checkpointed, so the backward pass recomputes one chunk of logits at a time. Gradients are exact.

`chunk_tokens=0` is the naive path (whole logits kept for backward); benchmarks compare the two.
Models that post-process logits after the head (e.g. soft-capping) are refused.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint


def _chunk_stats(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """hidden [n, H], weight [V, H], targets [n] -> [n, 2] (log-prob of target, entropy), fp32."""
    logits = torch.nn.functional.linear(hidden, weight, bias).float() / temperature  # [n, V]
    logz = torch.logsumexp(logits, dim=-1)  # [n]
    target_logit = logits.gather(-1, targets[:, None]).squeeze(-1)  # [n]
    probs = torch.softmax(logits, dim=-1)  # [n, V]
    entropy = logz - (probs * logits).sum(-1)  # [n]
    return torch.stack([target_logit - logz, entropy], dim=-1)


def token_logprobs_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                           targets: torch.Tensor, temperature: float = 1.0,
                           chunk_tokens: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden [N, H], targets [N] -> log-probs [N], entropies [N] (fp32), chunked over N."""
    if chunk_tokens <= 0 or hidden.shape[0] <= chunk_tokens or not torch.is_grad_enabled():
        step = hidden.shape[0] if chunk_tokens <= 0 else chunk_tokens
        parts = [_chunk_stats(hidden[i:i + step], weight, bias, targets[i:i + step], temperature)
                 for i in range(0, hidden.shape[0], max(1, step))]
    else:
        parts = [checkpoint(_chunk_stats, hidden[i:i + chunk_tokens], weight, bias, targets[i:i + chunk_tokens],
                            temperature, use_reentrant=False)
                 for i in range(0, hidden.shape[0], chunk_tokens)]
    out = torch.cat(parts, dim=0) if parts else hidden.new_zeros((0, 2), dtype=torch.float32)  # [N, 2]
    return out[:, 0], out[:, 1]


def _output_head(model: Any) -> torch.nn.Module:
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    head = inner.get_output_embeddings()  # peft models delegate this to the base model
    if head is None or not hasattr(head, "weight"):
        raise ValueError(f"{type(inner).__name__} has no linear output head; log-probs need a causal LM")
    if getattr(getattr(inner, "config", None), "final_logit_softcapping", None):
        raise ValueError(f"{type(inner).__name__} soft-caps its logits after the head; chunked log-probs "
                         "would skip that step")
    return head


@contextlib.contextmanager
def _scoring_head(head: torch.nn.Module, score_mask: torch.Tensor, targets: torch.Tensor,
                  temperature: float, chunk_tokens: int):
    """While active, head(hidden [B, T, H]) returns [B, T, 2] holding (log-prob, entropy) at the
    positions of `score_mask` [B, T] and zeros elsewhere."""

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        flat = hidden[score_mask]  # [N, H]
        lp, ent = token_logprobs_entropy(flat, head.weight, getattr(head, "bias", None), targets[score_mask],
                                         temperature, chunk_tokens)
        out = hidden.new_zeros((*hidden.shape[:2], 2), dtype=torch.float32)  # [B, T, 2]
        out[score_mask] = torch.stack([lp, ent], dim=-1)
        return out

    head.forward = forward  # instance attribute shadows the class method; module hooks still run
    try:
        yield
    finally:
        del head.forward


def sequence_logprobs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      score_mask: torch.Tensor, temperature: float = 1.0,
                      chunk_tokens: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob and entropy of the next token at every position of `score_mask`.

    input_ids, attention_mask, score_mask [B, T] (right-padded). Position j scores token j+1.
    Returns logp [B, T], entropy [B, T] (zeros where not scored)."""
    targets = torch.roll(input_ids, shifts=-1, dims=1)  # [B, T]: token j+1 at j
    head = _output_head(model)
    with _scoring_head(head, score_mask, targets, temperature, chunk_tokens):
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits  # [B, T, 2]
    return out[..., 0], out[..., 1]
