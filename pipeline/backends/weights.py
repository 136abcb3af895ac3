"""Streaming a policy's weights to an inference engine in bounded-size buckets.

`full_tensors(model)` walks the trainer's state dict one tensor at a time, under the names a
transformers checkpoint of the model would use. A tensor sharded by FSDP2 (a DTensor) is all-gathered
on its own (`full_tensor()`, a collective every rank must run in the same order), so no rank ever holds
more than one gathered parameter beyond the bucket being filled: the whole model is never materialised
on one rank. Plain and DDP-wrapped modules yield their parameters without a copy.

`buckets(...)` groups that stream into lists of at most `bucket_bytes` (a tensor larger than the limit
travels alone), preserving order. The engines' push loops (`pipeline.backends.sglang`,
`pipeline.backends.sglang_server`) consume them, so one bucket is alive at a time.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import torch

# wrapper prefixes inserted by DDP, FSDP1, torch.compile and activation checkpointing
WRAPPER_PARTS = ("module", "_fsdp_wrapped_module", "_orig_mod", "_checkpoint_wrapped_module")


def checkpoint_name(name: str) -> str:
    """`module._orig_mod.model.layers.0...` -> `model.layers.0...` (the name in a saved checkpoint)."""
    return ".".join(p for p in name.split(".") if p not in WRAPPER_PARTS)


def _unwrap(model: Any) -> Any:
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def skipped_names(model: Any) -> set[str]:
    """Checkpoint names an engine does not load: the output head when it is tied to the embeddings."""
    cfg = getattr(_unwrap(model), "config", None)
    return {"lm_head.weight"} if getattr(cfg, "tie_word_embeddings", False) else set()


def full_tensors(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """(checkpoint name, full tensor) for every entry of the state dict, one at a time, in order.
    Must be consumed on every rank when the model is sharded (each DTensor gather is collective)."""
    skip = skipped_names(model)
    for name, tensor in model.state_dict(keep_vars=False).items():
        name = checkpoint_name(name)
        if "lora_" in name:
            raise ValueError(f"{name}: LoRA adapter weights cannot be pushed to the engine; merge the adapter "
                             "into the base weights first (peft `merge_and_unload`)")
        if hasattr(tensor, "full_tensor"):  # DTensor (FSDP2 / tensor parallel): gather this one tensor
            tensor = tensor.full_tensor()
        if name in skip:
            continue
        yield name, tensor.detach()


def tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def buckets(named: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Consecutive groups of `named` whose total size is at most `bucket_bytes` (a larger tensor forms a
    group alone). Order is preserved and every tensor appears exactly once."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
    current: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, t in named:
        n = tensor_bytes(t)
        if current and size + n > bucket_bytes:
            yield current
            current, size = [], 0
        current.append((name, t))
        size += n
    if current:
        yield current
