"""The Prefix-RFT objective, and the terms of its baselines, as pure tensor functions (docs/method.md §2, §4, §5,
§6, §10).

Token tensors use the position layout of the update batch: [B, T] where position j scores token j+1;
masks say which positions carry a response token (`loss_mask`) and which of those are demonstration
prefix tokens (`prefix_mask`).
"""

from __future__ import annotations

import math

import torch


def group_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, is_hybrid: torch.Tensor,
                     mode: str = "group", std_scale: bool = False,
                     eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Dr. GRPO advantages per sequence: (advantage of prefix tokens, advantage of continuation tokens).

    rewards [S] float, group_ids [S] long, is_hybrid [S] bool.

    `group` (docs/method.md §4 default, Q1): A_i = r_i - mean_{j in g} r_j over all N members, hybrid included;
    a singleton group has baseline 0 (verl). Prefix and continuation share A_i.
    `exclude_hybrid` (docs/method.md §4 `dr_grpo_prefix`, one rollout per prefix): the baseline is the mean of the
    on-policy members; on-policy rows and the hybrid's prefix get r_i - mean_on, the hybrid's
    continuation keeps its uncentred r_i (its singleton (uid, prefix) group has baseline 0).
    `std_scale` divides by the std (unbiased) of the rewards the baseline was taken over (1 for fewer
    than two members); off in Dr. GRPO.
    """
    if mode not in ("group", "exclude_hybrid"):
        raise ValueError(f"unknown advantage mode {mode!r}; choose 'group' or 'exclude_hybrid'")
    rewards = rewards.float()
    adv = torch.empty_like(rewards)  # [S]
    cont = torch.empty_like(rewards)  # [S]
    for g in torch.unique(group_ids):
        idx = (group_ids == g).nonzero().squeeze(-1)  # [n_g]
        r = rewards[idx]  # [n_g]
        members = r if mode == "group" else r[~is_hybrid[idx]]
        base = members.mean() if members.numel() > 1 else r.new_zeros(())
        scale = members.std() + eps if std_scale and members.numel() > 1 else r.new_ones(())
        a = (r - base) / scale  # [n_g]
        adv[idx] = a
        cont[idx] = torch.where(is_hybrid[idx], r / scale, a) if mode == "exclude_hybrid" else a
    return adv, cont


def gate_count(num_prefix_tokens: int, keep_ratio: float) -> int:
    """Prefix tokens that keep their advantage: n - floor((1 - keep_ratio) * n) (docs/method.md §5: the lowest
    floor(0.8 n) are zeroed). Rounded to 9 decimals first so 0.8 * 10 is 8, not 7.999..."""
    return num_prefix_tokens - math.floor(round((1.0 - keep_ratio) * num_prefix_tokens, 9))


def entropy_gate(entropy: torch.Tensor, prefix_mask: torch.Tensor, mode: str = "top", keep_ratio: float = 0.2,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Which prefix tokens keep their advantage (docs/method.md §5). Non-prefix positions are always True.

    entropy, prefix_mask [...] (any shape; the pool is every prefix token, flattened across sequences).
    `top`/`bottom`: the gate_count highest/lowest entropies (ties: earlier position first);
    `random`: a uniformly random subset of that size; `all`: every prefix token; `none`: no prefix token.
    Returns keep [...] bool."""
    keep = ~prefix_mask.bool()
    flat_idx = prefix_mask.reshape(-1).nonzero().squeeze(-1)  # [n]
    n = flat_idx.numel()
    if mode == "all":
        return torch.ones_like(keep)
    if mode == "none" or n == 0:
        return keep
    k = gate_count(n, keep_ratio)
    h = entropy.detach().reshape(-1)[flat_idx].float()  # [n]
    if mode == "top":
        chosen = torch.sort(-h, stable=True).indices[:k]
    elif mode == "bottom":
        chosen = torch.sort(h, stable=True).indices[:k]
    elif mode == "random":
        chosen = torch.randperm(n, generator=generator)[:k]
    else:
        raise ValueError(f"unknown gate mode {mode!r}")
    flat = keep.reshape(-1).clone()
    flat[flat_idx[chosen]] = True
    return flat.reshape(keep.shape)


def ppo_clip_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip_low: float = 0.2,
                  clip_high: float = 0.2, dual_clip: float = 3.0,
                  clip_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO-clip loss with dual clip (docs/method.md §2; verl core_algos.py:604-618).

    l = -min(r A, clip(r, 1-eps_lo, 1+eps_hi) A); for A < 0: l = min(l, -c A).
    logp, old_logp, adv [B, T]; clip_mask [B, T] bool marks tokens that are clipped (False: l = -r A).
    Returns loss [B, T], clipped [B, T] bool (the clipped branch or the dual clip is active)."""
    ratio = torch.exp(logp - old_logp)  # [B, T]
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    is_clipped = clipped > unclipped
    if dual_clip > 0:
        cap = -adv * dual_clip
        dual = (adv < 0) & (loss > cap)
        loss = torch.where(dual, cap, loss)
        is_clipped = is_clipped | dual
    if clip_mask is not None:
        loss = torch.where(clip_mask, loss, unclipped)
        is_clipped = is_clipped & clip_mask
    return loss, is_clipped


def shaped_pg_loss(logp: torch.Tensor, adv: torch.Tensor, gamma: float = 0.1) -> torch.Tensor:
    """LUFFY's policy shaping on off-policy (demonstration) tokens (docs/method.md §10; L:mix_core_alg.py:164-215).

    l = -A f(p), f(p) = p / (p + gamma), p = pi_theta(token): the demonstrator's probability is taken as
    1, so there is no old-policy ratio and no clip. dl/dlogp = -A gamma p / (p + gamma)^2, which is
    largest for unlikely tokens (p near gamma) instead of vanishing like A p does.
    logp, adv [B, T] -> loss [B, T]."""
    p = logp.exp()  # [B, T]
    return -adv * p / (p + gamma)


def nll_loss(logp: torch.Tensor, mask: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Token-level negative log-likelihood of demonstration tokens, summed here and divided by
    `num_tokens`, the count over the whole (global) batch (docs/method.md §2 SFT row; §9 caveat: a per-micro-batch
    mean under gradient accumulation weights short and long micro-batches unequally).
    logp, mask [B, T] -> scalar; micro-batch values add up to the batch value."""
    return -(logp * mask).sum() / max(1, num_tokens)


def aggregate(token_values: torch.Tensor, mask: torch.Tensor, mode: str, num_sequences: int,
              max_response_tokens: int, num_tokens: int) -> torch.Tensor:
    """Reduce per-token values to the mini-batch loss (docs/method.md §6).

    `constant` (Dr. GRPO): sum over tokens / (num_sequences * L_max); `token_mean`: sum / num_tokens.
    `num_sequences` and `num_tokens` count the whole mini-batch (all micro-batches and ranks), so
    micro-batch losses add up to the mini-batch loss."""
    total = (token_values * mask).sum()
    if mode == "constant":
        return total / (num_sequences * max_response_tokens)
    if mode == "token_mean":
        return total / max(1, num_tokens)
    raise ValueError(f"unknown loss aggregation {mode!r}")
