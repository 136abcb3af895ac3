"""Shared-prompt (cascade) attention for the transformers rollout backend.

A group's N samples share one prompt. Instead of copying the prompt's keys and values to every row and
reading them once per row at every decode step, the prompt's KV is kept once per distinct prompt
([G, Hkv, P, D]) and each row's cache holds only what follows the prompt (its prefix and sampled
tokens). At a decode step (one query per row) the queries of all rows of a group, and all query heads
of a KV head, are stacked along the query axis, so the prompt's scores are one product per group that
reads the prompt's KV once for the whole group. The scores of the parts (prompt, own positions, and a
hybrid row's prefix) are then put side by side under one softmax, which is exactly softmax attention over
their concatenation, and each part's probabilities weight its own values. Multi-token forwards (the
prefix prefill) read the prompt per row: they run once per rollout.

A hybrid row's demonstration prefix, prefilled once, is a third part ([Hb, Hkv, W, D], hybrid rows
only), rather than positions of the row's own cache: the own caches are one
rectangle, so every row would otherwise carry the longest prefix's width W as masked positions, and
attention over them cost a third of a Prefix-RFT rollout (docs/performance.md).

The attention function is registered with transformers' `AttentionInterface` under NAME for the
duration of a rollout. Without a `shared_prompt` keyword it computes what transformers' SDPA attention
computes: a CPU decode step (one query per row) as plain matrix products (`decode_attention`), everything
else through SDPA itself.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import torch

NAME = "prefix_rft_cascade"
DECODE_QUERIES = 64  # up to this many queries per attention call: plain matrix products (decode), else flash


@dataclass
class SharedPrompt:
    """The prompt KV of every distinct prompt and where each batch row's group is.

    keys/values: per layer [G, Hkv, P, D]; valid: [G, P] bool (False at left padding); group: [A] the
    distinct prompt of each batch row; slot: [A] the row's place g * width + j in its group's stack of
    queries (width = the largest group); own: [A, S] bool, which of the row's own positions are real
    (set per forward by `with_own`; transformers' mask is not used: built from the row's own positions
    with no padding it takes them for packed sequences)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    valid: torch.Tensor
    group: torch.Tensor
    slot: torch.Tensor
    width: int
    own: torch.Tensor | None = None
    # demonstration prefixes, kept apart from the rows' own caches so that rows without one do not attend
    # over the longest prefix's width as masked positions at every decode step
    pre_keys: list[torch.Tensor] | None = None  # per layer [Hb, Hkv, W, D], one per row with a prefix
    pre_values: list[torch.Tensor] | None = None
    pre_valid: torch.Tensor | None = None  # [Hb, W] bool (False at left padding)
    pre_row: torch.Tensor | None = None  # [A] the row's prefix (in batch order), -1 for rows without one
    # what every layer of one decode forward shares, made at its first layer (`decode_masks`)
    decode: tuple[torch.Tensor, torch.Tensor | None, bool] | None = None

    @classmethod
    def build(cls, keys, values, valid, group: torch.Tensor) -> "SharedPrompt":
        g = int(valid.shape[0])
        counts = torch.bincount(group, minlength=g)  # [G]
        order = torch.argsort(group, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        within = torch.empty_like(group)
        within[order] = torch.arange(len(group), device=group.device) - starts[group[order]]
        width = int(counts.max())
        return cls(keys, values, valid, group, group * width + within, width)

    def select(self, index: torch.Tensor) -> "SharedPrompt":
        """The same prompts for a subset of the batch rows (finished rows dropped, a sub-batch); `index`
        ascending. Prefixes of rows that leave are dropped (copied only when one does)."""
        out = SharedPrompt(self.keys, self.values, self.valid, self.group[index], self.slot[index], self.width)
        if self.pre_row is None:
            return out
        row = self.pre_row[index]
        has = row >= 0
        if not bool(has.any()):
            return out
        kept = row[has]
        same = len(kept) == len(self.pre_valid)  # every prefixed row stays: nothing to copy
        pick = (lambda t: t) if same else (lambda t: t[kept])
        new_row = torch.full_like(row, -1)
        new_row[has] = torch.arange(len(kept), device=row.device)
        return replace(out, pre_keys=[pick(k) for k in self.pre_keys], pre_values=[pick(v) for v in self.pre_values],
                       pre_valid=pick(self.pre_valid), pre_row=new_row)

    def with_own(self, mask: torch.Tensor) -> "SharedPrompt":
        """This batch with `mask` [A, S] (1 = real position) over the rows' own positions."""
        return replace(self, own=mask.bool(), decode=None)

    def decode_masks(self) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
        """For a decode forward (one query per row): which positions of [prompt ; own ; prefix] each row
        attends to ([A, 1, 1, P + S (+ W)] bool), the rows with a prefix ([Hb], prefix order; None without
        prefixes) and whether every group is full (the rows are their groups' stacks in order, so stacking
        the queries by group is a reshape). The same for every layer: made once per forward."""
        if self.decode is None:
            a = len(self.group)
            parts = [self.valid[self.group], self.own]  # [A, P], [A, S]
            rows = None
            if self.pre_row is not None:
                rows = (self.pre_row >= 0).nonzero().squeeze(-1)  # [Hb]: ascending rows are prefix order
                pre = torch.zeros((a, self.pre_valid.shape[1]), dtype=torch.bool, device=self.group.device)
                pre[rows] = self.pre_valid
                parts.append(pre)
            dense = a == len(self.valid) * self.width and bool(
                (self.slot == torch.arange(a, device=self.slot.device)).all())
            self.decode = (torch.cat(parts, dim=-1)[:, None, None, :], rows, dense)
        return self.decode

    def with_prefixes(self, keys: list[torch.Tensor], values: list[torch.Tensor], valid: torch.Tensor,
                      rows: torch.Tensor, n: int) -> "SharedPrompt":
        """Add the prefixes of batch rows `rows` (ascending; [Hb]): per layer KV [Hb, Hkv, W, D], valid
        [Hb, W]; `n` rows in the batch."""
        assert bool((rows[1:] > rows[:-1]).all()), "rows must be ascending"
        pre_row = torch.full((n,), -1, dtype=torch.long, device=rows.device)
        pre_row[rows] = torch.arange(len(rows), device=rows.device)
        return replace(self, pre_keys=keys, pre_values=values, pre_valid=valid.bool(), pre_row=pre_row)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
           scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention and its log-sum-exp. q [B, H, L, D], k/v [B, H, S, D], bias additive and
    broadcastable to [B, H, L, S] (-inf masks). Returns out [B, H, L, D] and lse [B, H, L]; a query that
    attends to nothing gets out 0 and lse -inf. The prefix prefill's attention (up to DECODE_QUERIES queries
    as matrix products, more through the CPU flash kernel)."""
    if q.device.type == "cpu" and q.shape[-2] > DECODE_QUERIES:  # the CPU flash kernel SDPA runs (prefill)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, attn_mask=None if bias is None else bias.to(q.dtype), scale=scale)
        return out, lse.to(torch.float32)
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale  # [B, H, L, S]
    if bias is not None:
        scores = scores + bias
    lse = torch.logsumexp(scores, dim=-1)  # [B, H, L]
    probs = torch.exp(scores - lse.masked_fill(torch.isinf(lse), 0.0)[..., None])  # all-masked query: 0
    return torch.matmul(probs.to(v.dtype), v), lse


def decode_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                     scale: float) -> torch.Tensor:
    """One query per row over the row's whole cache, as plain matrix products. query [A, Hq, 1, D],
    key/value [A, Hkv, S, D], mask broadcastable to [A, 1, 1, S] (bool: True = attend; or additive).
    The query heads of a KV head are stacked (no copy of the cache per query head, as `repeat_kv` makes).
    Returns [A, 1, Hq, D]. On CPU this is faster than the flash kernel SDPA dispatches to for a single
    query (docs/performance.md)."""
    a, hq, _, d = query.shape
    hkv = key.shape[1]
    q = query.reshape(a, hkv, hq // hkv, d)  # [A, Hkv, rep, D]
    scores = torch.matmul(q, key.transpose(-1, -2)).float() * scale  # [A, Hkv, rep, S]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    out = torch.matmul(torch.softmax(scores, dim=-1).to(value.dtype), value)  # [A, Hkv, rep, D]
    return out.reshape(a, 1, hq, d)


def _bias(valid: torch.Tensor) -> torch.Tensor:
    """bool -> additive float mask (0 where attended, -inf where not)."""
    return torch.zeros(valid.shape, dtype=torch.float32, device=valid.device).masked_fill(~valid, float("-inf"))


def _own_valid(own: torch.Tensor, q_len: int) -> torch.Tensor:
    """[A, S] real positions -> [A, 1, L, S] bool: real and causal (the queries are the last L positions)."""
    s_len = own.shape[1]
    causal = (torch.arange(q_len, device=own.device)[:, None] + (s_len - q_len)
              >= torch.arange(s_len, device=own.device)[None, :])  # [L, S]
    return own[:, None, None, :] & causal[None, None]


def cascade_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                      is_causal=None, shared_prompt: SharedPrompt | None = None, **kwargs):
    """transformers attention function (see the module docstring). query [A, Hq, L, D]; key/value
    [A, Hkv, S, D] are the row's own positions after the prompt. Returns ([A, L, Hq, D], None)."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    if shared_prompt is None:
        if query.shape[2] == 1 and query.device.type == "cpu" and not dropout:  # a decode step, per-row prompts
            scale = scaling if scaling is not None else query.shape[-1] ** -0.5
            return decode_attention(query, key, value, attention_mask, scale), None
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    sp, layer = shared_prompt, module.layer_idx
    a, hq, q_len, d = query.shape
    hkv = key.shape[1]
    rep = hq // hkv
    scale = scaling if scaling is not None else d ** -0.5
    kp, vp = sp.keys[layer], sp.values[layer]  # [G, Hkv, P, D]
    if q_len > 1:  # prefill of prefixes: the row's prompt gathered once, one attention over [prompt ; own]
        k_all = repeat_kv(torch.cat([kp[sp.group], key], dim=2), rep)  # [A, Hq, P + S, D]
        v_all = repeat_kv(torch.cat([vp[sp.group], value], dim=2), rep)
        valid = torch.cat([sp.valid[sp.group][:, None, None, :].expand(-1, 1, q_len, -1),
                           _own_valid(sp.own, q_len)], dim=-1)  # [A, 1, L, P + S]
        out, _ = attend(query, k_all, v_all, _bias(valid), scale)  # [A, Hq, L, D]
        return out.transpose(1, 2).contiguous(), None
    q = query.reshape(a, hkv, rep, d)  # one query per row: the query heads of a KV head stacked
    g, p_len, s_len = kp.shape[0], kp.shape[2], key.shape[2]
    valid, rows, dense = sp.decode_masks()  # [A, 1, 1, P + S (+ W)], [Hb] | None, every group full

    def to_groups(x: torch.Tensor) -> torch.Tensor:  # [A, Hkv, rep, n] -> [G, Hkv, width·rep, n]
        n = x.shape[-1]
        if not dense:  # finished rows have left: the others take their places in their groups' stacks
            out = x.new_zeros((g * sp.width, hkv, rep, n))
            out[sp.slot] = x
            x = out
        return x.view(g, sp.width, hkv, rep, n).permute(0, 2, 1, 3, 4).reshape(g, hkv, sp.width * rep, n)

    def to_rows(x: torch.Tensor) -> torch.Tensor:  # the inverse of to_groups
        n = x.shape[-1]
        x = x.view(g, hkv, sp.width, rep, n).permute(0, 2, 1, 3, 4).reshape(g * sp.width, hkv, rep, n)
        return x if dense else x[sp.slot]

    # the scores of every part side by side, one softmax over them (the exact softmax over [prompt ; prefix ;
    # own]); the prompt part is one product per group, reading the group's prompt KV once. The positions a
    # row does not attend to are masked once over the concatenation (masked_fill, so that no stale value in
    # a masked key can reach the softmax).
    parts = [to_rows(torch.matmul(to_groups(q), kp.transpose(-1, -2)).float()),  # [A, Hkv, rep, P] fp32
             torch.matmul(q, key.transpose(-1, -2)).float()]  # [A, Hkv, rep, S]
    if rows is not None:  # rows with a demonstration prefix also attend over it (a third part)
        pre = torch.zeros((a, hkv, rep, sp.pre_valid.shape[1]), device=q.device)  # [A, Hkv, rep, W] fp32
        pre[rows] = torch.matmul(q[rows], sp.pre_keys[layer].transpose(-1, -2)).float()
        parts.append(pre)
    scores = torch.cat(parts, dim=-1).masked_fill(~valid, float("-inf"))
    probs = torch.softmax(scores * scale, dim=-1).to(value.dtype)  # [A, Hkv, rep, P+S(+W)]
    out = to_rows(torch.matmul(to_groups(probs[..., :p_len]), vp))  # [A, Hkv, rep, D]
    out = out + torch.matmul(probs[..., p_len:p_len + s_len], value)
    if rows is not None:
        out[rows] += torch.matmul(probs[rows, ..., p_len + s_len:], sp.pre_values[layer]).to(out.dtype)
    return out.to(query.dtype).reshape(a, 1, hq, d), None


@functools.cache
def register() -> str:
    """Register the attention function (and SDPA's mask builder for it) with transformers; returns NAME."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, cascade_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME
