"""Per-token log-probabilities and entropies without a full [tokens x vocab] logits tensor.

The policy's own forward runs as usual (through any DDP/FSDP wrapper, so their hooks fire), but for
its duration the output head's `forward` is swapped for one that, given the final hidden states,
computes only the scored positions, in chunks of `chunk_tokens`: each chunk's logits are formed,
reduced to (log-prob of the target, entropy) in fp32, and dropped. The backward pass recomputes one
chunk of logits at a time and applies the closed-form gradient of (log-prob, entropy) with respect to
the logits, so no autograd graph over [chunk x vocab] intermediates exists. Gradients are exact.

`chunk_tokens=0` is the naive path (whole logits kept for backward); benchmarks compare the two.
Models that post-process logits after the head (e.g. soft-capping) are refused.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def _chunk_stats(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """hidden [n, H], weight [V, H], targets [n] -> [n, 2] (log-prob of target, entropy), fp32."""
    logits = torch.nn.functional.linear(hidden, weight, bias).float() / temperature  # [n, V]
    logz = torch.logsumexp(logits, dim=-1)  # [n]
    target_logit = logits.gather(-1, targets[:, None]).squeeze(-1)  # [n]
    probs = torch.softmax(logits, dim=-1)  # [n, V]
    entropy = logz - (probs * logits).sum(-1)  # [n]
    return torch.stack([target_logit - logz, entropy], dim=-1)


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run the head matmul in (the tensor's own dtype outside autocast)."""
    dev = t.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else t.dtype


class _ChunkedHead(torch.autograd.Function):
    """(log-prob of target, entropy) per row, chunk by chunk, saving nothing of size [n, V].

    Backward recomputes each chunk's logits once and applies the closed-form gradient
    d/dz_j = g_lp * (1[j = target] - p_j) - g_ent * p_j * (log p_j + H), so no autograd graph over
    the [chunk x vocab] intermediates is built (cheaper than checkpointing `_chunk_stats`)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, chunk, dtype):
        # hidden [N, H], weight [V, H], targets [N] -> [N, 2] fp32
        out = torch.empty((hidden.shape[0], 2), dtype=torch.float32, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):
            w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
            for i in range(0, hidden.shape[0], chunk):
                logp = _chunk_logp(hidden[i:i + chunk], w, b, temperature, dtype)  # [n, V]
                out[i:i + chunk, 0] = logp.gather(-1, targets[i:i + chunk, None]).squeeze(-1)
                out[i:i + chunk, 1] = -(logp.exp() * logp).sum(-1)
        ctx.save_for_backward(hidden, weight, bias, targets, out)
        ctx.cfg = (temperature, chunk, dtype)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, bias, targets, out = ctx.saved_tensors
        temperature, chunk, dtype = ctx.cfg
        grad_h = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if bias is not None and ctx.needs_input_grad[2] else None
        with torch.autocast(hidden.device.type, enabled=False):
            w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
            for i in range(0, hidden.shape[0], chunk):
                h = hidden[i:i + chunk]
                logp = _chunk_logp(h, w, b, temperature, dtype)  # [n, V]
                g_lp, g_ent = grad_out[i:i + chunk, 0:1], grad_out[i:i + chunk, 1:2]  # [n, 1]
                p = logp.exp()  # [n, V]
                gz = logp.add_(out[i:i + chunk, 1:2]).mul_(p).mul_(-g_ent)  # -g_ent * p * (log p + H), in place
                gz.sub_(p.mul_(g_lp))  # - g_lp * p
                gz.scatter_add_(-1, targets[i:i + chunk, None], g_lp)  # + g_lp at the target
                gz = (gz / temperature).to(dtype)  # [n, V] gradient wrt the raw logits
                if grad_h is not None:
                    grad_h[i:i + chunk] = (gz @ w).to(hidden.dtype)
                if grad_w is not None:
                    grad_w += (gz.t() @ h.to(dtype)).float()
                if grad_b is not None:
                    grad_b += gz.float().sum(0)
        return (grad_h, None if grad_w is None else grad_w.to(weight.dtype),
                None if grad_b is None else grad_b.to(bias.dtype), None, None, None, None)


def _chunk_logp(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, temperature: float,
                dtype: torch.dtype) -> torch.Tensor:
    """h [n, H] -> log softmax(logits / T) [n, V] in fp32."""
    logits = torch.nn.functional.linear(h.to(dtype), w, b).float().div_(temperature)  # [n, V]
    return logits.sub_(torch.logsumexp(logits, dim=-1, keepdim=True))


def token_logprobs_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                           targets: torch.Tensor, temperature: float = 1.0,
                           chunk_tokens: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden [N, H], targets [N] -> log-probs [N], entropies [N] (fp32), chunked over N.

    chunk_tokens <= 0 is the naive path: autograd through whole [N, V] logits (benchmarks, tests)."""
    if chunk_tokens <= 0:
        out = _chunk_stats(hidden, weight, bias, targets, temperature)  # [N, 2]
    elif hidden.shape[0] == 0:
        out = hidden.new_zeros((0, 2), dtype=torch.float32)
    else:
        out = _ChunkedHead.apply(hidden, weight, bias, targets, temperature, chunk_tokens, _compute_dtype(hidden))
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
    Returns logp [B, T], entropy [B, T] (zeros where not scored).

    A right-padded batch is forwarded without its padding mask: under causal attention no real position
    attends to a pad (pads come after every real token of their row), and positions count from 0 either
    way, so every scored value is the same; the attention kernel then skips the masked upper triangle
    instead of reading a [B, 1, T, T] mask (a fifth of a 576-token update on CPU, docs/performance.md)."""
    targets = torch.roll(input_ids, shifts=-1, dims=1)  # [B, T]: token j+1 at j
    head = _output_head(model)
    right_padded = attention_mask is None or bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())
    with _scoring_head(head, score_mask, targets, temperature, chunk_tokens):
        out = model(input_ids=input_ids, attention_mask=None if right_padded else attention_mask,
                    use_cache=False).logits  # [B, T, 2]
    return out[..., 0], out[..., 1]
