"""Streaming a policy's weights to an inference engine in bounded-size buckets.

`full_tensors(model)` walks the trainer's state dict one tensor at a time, under the names a
transformers checkpoint of the model would use. A tensor sharded by FSDP2 (a DTensor) is all-gathered
on its own (`full_tensor()`, a collective every rank must run in the same order), so no rank ever holds
more than one gathered parameter beyond the bucket being filled: the whole model is never materialised
on one rank. Plain and DDP-wrapped modules yield their parameters without a copy.

`buckets(...)` groups that stream into lists of at most `bucket_bytes` (a tensor larger than the limit
travels alone), preserving order. The engines' push loops (`pipeline.backends.sglang`,
`pipeline.backends.sglang_server`) consume them, so one bucket is alive at a time: for the stream of
`full_tensors` the groups are planned from shapes and each is gathered only when it is requested, into
the list that held the previous one (consume a bucket before asking for the next; copy it to keep it).
Tensors are cast to the engine's dtype before they are gathered.
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


ENGINE_DTYPE_ATTR = "engine_dtype"  # set on the trainer's module by `pipeline.distributed.engine_weights`


class TensorStream:
    """The model's tensors under checkpoint names, each gathered (a DTensor: `full_tensor()`, collective)
    only when it is reached, cast to `dtype` (before the gather: the all-gather moves engine-dtype bytes).
    Iterating yields one (name, tensor) at a time; `buckets(stream, n)` plans the groups from the tensors'
    shapes first and materialises one group at a time, emptying it when the next is requested, so a
    sync holds at most one bucket of gathered weights."""

    def __init__(self, model: Any, dtype: torch.dtype | None = None):
        self.model = model
        self.dtype = dtype if dtype is not None else getattr(model, ENGINE_DTYPE_ATTR, None)

    def _entries(self) -> list[tuple[str, torch.Tensor]]:
        skip = skipped_names(self.model)
        out = []
        for name, tensor in self.model.state_dict(keep_vars=False).items():
            name = checkpoint_name(name)
            if "lora_" in name:
                raise ValueError(f"{name}: LoRA adapter weights cannot be pushed to the engine; merge the adapter "
                                 "into the base weights first (peft `merge_and_unload`)")
            if name not in skip:
                out.append((name, tensor))
        return out

    def _size(self, t: torch.Tensor) -> int:
        dtype = self.dtype if self.dtype is not None and t.is_floating_point() else t.dtype
        return t.numel() * dtype.itemsize

    def _full(self, t: torch.Tensor) -> torch.Tensor:
        dtype = self.dtype if self.dtype is not None and t.is_floating_point() else t.dtype
        if hasattr(t, "full_tensor"):  # DTensor (FSDP2 / tensor parallel): gather this one tensor
            return gather_dim0(t.detach(), dtype)
        return t.detach().to(dtype)

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name, t in self._entries():
            yield name, self._full(t)

    def buckets(self, bucket_bytes: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
        groups: list[list[tuple[str, torch.Tensor]]] = [[]]
        size = 0
        for name, t in self._entries():
            n = self._size(t)
            if groups[-1] and size + n > bucket_bytes:
                groups.append([])
                size = 0
            groups[-1].append((name, t))
            size += n
        current: list[tuple[str, torch.Tensor]] = []
        for group in groups if groups[0] else []:
            current.clear()  # the previous bucket's tensors are freed before this one is gathered
            current.extend((name, self._full(t)) for name, t in group)
            yield current
        current.clear()


GATHER_CHUNK_BYTES = 2 * 2 ** 20


def gather_dim0(t: Any, dtype: torch.dtype | None = None, chunk_bytes: int = GATHER_CHUNK_BYTES) -> torch.Tensor:
    """The full tensor of a DTensor, in `dtype`. FSDP2's layout (one Shard(0) over a 1-D mesh) is cast and
    all-gathered in row chunks of about `chunk_bytes` per rank straight into the output, so the transient
    beyond the output is one chunk per rank (`full_tensor()` holds a padded copy of the whole tensor, and
    gloo another); any other layout uses `full_tensor()`. Collective."""
    dtype = dtype or t.dtype
    import torch.distributed as dist
    from torch.distributed.tensor import Shard

    mesh = t.device_mesh
    if mesh.ndim != 1 or len(t.placements) != 1 or t.placements[0] != Shard(0) or t.dim() == 0:
        return t.to(dtype).full_tensor()
    group, n = mesh.get_group(), mesh.size()
    rows = t.shape[0]
    per = -(-rows // n)  # torch.chunk: ceil(rows / n) rows on every rank but the last ones
    local = t.to_local()
    row_bytes = max(1, (t.numel() // max(rows, 1)) * dtype.itemsize)
    step = max(1, chunk_bytes // row_bytes)
    out = torch.empty(tuple(t.shape), dtype=dtype, device=local.device)
    for start in range(0, per, step):
        c = min(step, per - start)
        piece = torch.zeros((c, *t.shape[1:]), dtype=dtype, device=local.device)
        have = max(0, min(c, local.shape[0] - start))
        if have:
            piece[:have].copy_(local[start:start + have])
        gathered = torch.empty((n * c, *t.shape[1:]), dtype=dtype, device=local.device)
        dist.all_gather_into_tensor(gathered, piece, group=group)
        for r in range(n):  # rank r's rows [start, start + c) are global rows r * per + start ...
            lo = r * per + start
            hi = min(lo + c, (r + 1) * per, rows)
            if hi > lo:
                out[lo:hi].copy_(gathered[r * c:r * c + hi - lo])
        del piece, gathered
    return out


def full_tensors(model: Any, dtype: torch.dtype | None = None) -> TensorStream:
    """(checkpoint name, full tensor) for every entry of the state dict (a tied output head left out),
    one at a time, in order, floating tensors cast to `dtype` (default: the dtype recorded on the module
    by `pipeline.distributed.engine_weights`, else unchanged). Must be consumed on every rank when the
    model is sharded (each DTensor gather is collective)."""
    return TensorStream(model, dtype)


def tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def buckets(named: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Consecutive groups of `named` whose total size is at most `bucket_bytes` (a larger tensor forms a
    group alone). Order is preserved and every tensor appears exactly once."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
    if isinstance(named, TensorStream):
        yield from named.buckets(bucket_bytes)
        return
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
