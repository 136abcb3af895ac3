"""The rollout's KV cache for the transformers backend (pipeline/backends/hf.py): transformers' cache with
its full-attention layers writing into buffers sized for the whole rollout, and the row and position
bookkeeping the sampling loop does on it (rows leaving in batches, prefixes spliced in).
"""

from __future__ import annotations

import functools
from typing import Any

import torch


@functools.cache
def _preallocated_layer_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        """A DynamicLayer that writes into [B, H, capacity, D] buffers; `keys`/`values` are views of the
        filled part, so attention computes exactly what it does on a concatenated cache."""

        def __init__(self, capacity: int):
            super().__init__()
            self.capacity = capacity

        def _alloc(self, b: int, h: int, d: int, like: torch.Tensor) -> None:
            self._k = like.new_empty((b, h, self.capacity, d))  # [B, H, capacity, D]
            self._v = like.new_empty((b, h, self.capacity, d))
            self.length = 0

        def _view(self) -> None:
            self.keys, self.values = self._k[:, :, :self.length], self._v[:, :, :self.length]

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                b, h, _, d = key_states.shape
                self._alloc(b, h, d, key_states)
            end = self.length + key_states.shape[-2]
            if end > self.capacity:
                raise RuntimeError(f"rollout cache overflow: {end} > {self.capacity} positions")
            self._k[:, :, self.length:end] = key_states
            self._v[:, :, self.length:end] = value_states
            self.length = end
            self._view()
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length if self.is_initialized else 0

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            """Rows `indices` (may repeat: a prompt's cache for each of its samples) into fresh buffers, copying
            the filled positions only: indexing the whole [B, H, capacity, D] buffer touched every unused
            position too and was 60% of a held-out evaluation's time (docs/performance.md)."""
            if self.is_initialized:
                self._k, self._v = self._filled_rows(indices, self.capacity)
                self._view()

        def _filled_rows(self, rows: torch.Tensor, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
            """New [len(rows), H, capacity, D] key and value buffers holding `rows`' filled positions."""
            shape = (len(rows), self._k.shape[1], capacity, self._k.shape[3])
            k, v = self._k.new_empty(shape), self._v.new_empty(shape)
            k[:, :, :self.length] = self._k[rows, :, :self.length]
            v[:, :, :self.length] = self._v[rows, :, :self.length]
            return k, v

        def compact(self, rows: torch.Tensor, drop: int) -> None:
            """Keep `rows` (moved to the front of the buffers) and drop the first `drop` filled positions,
            which the caller knows are masked for every kept row. Copies the filled part only, in place:
            re-indexing the whole [B, H, capacity, D] buffer each time a row finished was a third of a
            Prefix-RFT rollout's time (docs/performance.md)."""
            if self.is_initialized:
                m, end = len(rows), self.length
                for buf in (self._k, self._v):
                    buf[:m, :, :end - drop] = buf[rows, :, drop:end]  # the right side is a copy: no overlap
                self._k, self._v = self._k[:m], self._v[:m]
                self.length = end - drop
                self._view()

        def take_rows(self, rows: torch.Tensor, capacity: int) -> "PreallocatedLayer":
            """A new layer holding a copy of `rows`' filled positions, with room for `capacity`."""
            out = PreallocatedLayer(capacity)
            out.lazy_initialization(self.keys, self.values)
            out._k, out._v = self._filled_rows(rows, capacity)
            out.length = self.length
            out._view()
            return out

        def empty_like_rows(self, rows: int, capacity: int) -> "PreallocatedLayer":
            """A new, empty layer for `rows` rows shaped like this one (the per-row cache of a rollout whose
            prompts are kept once per group: pipeline/backends/cascade.py)."""
            out = PreallocatedLayer(capacity)
            out.lazy_initialization(self.keys, self.values)
            out._alloc(rows, self._k.shape[1], self._k.shape[3], self._k)
            out._view()
            return out

        def splice_rows(self, rows: torch.Tensor, other: "PreallocatedLayer") -> None:
            """Every row's filled positions move right by the extra length `other` holds (the gap is
            zeroed: masked keys must not carry NaN garbage into the weighted sum), then `rows` take
            `other`'s contents. Rows not in `rows` read the gap as masked padding."""
            old, new = self.length, other.length
            for buf, src in ((self._k, other._k), (self._v, other._v)):
                buf[:, :, new - old:new] = buf[:, :, :old].clone()
                buf[:, :, :new - old] = 0
                buf[rows, :, :new] = src[:, :, :new]
            self.length = new
            self._view()

    return PreallocatedLayer


def preallocated_cache(config: Any, capacity: int) -> Any:
    """A transformers DynamicCache whose full-attention layers write into buffers sized for the whole
    rollout (prompt + emitted tokens) instead of concatenating a new tensor per token: `torch.cat` of
    the growing cache was a third of CPU decode time (docs/performance.md). Attention still sees only the
    filled part (a view), so the arithmetic is unchanged. Sliding-window layers stay as they are."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=config)
    layer = _preallocated_layer_class()
    cache.layers = [layer(capacity) if type(layer_) is DynamicLayer else layer_ for layer_ in cache.layers]
    return cache


def leading_masked(mask: torch.Tensor) -> int:
    """Leading positions of `mask` [R, T] that are masked in every row (at least one column is kept; 0 for an empty mask)."""
    seen = mask.bool().any(0).long().cumsum(0)  # [T]
    return max(0, min(int((seen == 0).sum()), mask.shape[1] - 1))


@functools.cache
def cache_keyword(model_class: type) -> str:
    """The forward's name for the KV cache: `cache` in recent transformers (which deprecate `past_key_values`,
    to be removed in 5.40), `past_key_values` in older ones."""
    import inspect

    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def spliceable(cache: Any) -> bool:
    return all(hasattr(layer, "splice_rows") for layer in cache.layers)
