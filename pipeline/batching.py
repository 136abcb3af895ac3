"""Cutting a rank's share of a PPO mini-batch into micro-batches: a fixed count, or a token budget.

With a token budget the sequences are sorted by length (longest first) and cut into runs whose
`sequences x longest length` (the padded size of the right-padded micro-batch) stays within the budget, so
the budget bounds every micro-batch's activations; a sequence longer than the budget goes alone. The cuts
minimise the padded tokens computed plus `budget / 8` per micro-batch (an exact dynamic programme over the
sorted order): a few long sequences (Prefix-RFT's hybrid rows, which carry the demonstration prefix) get
a micro-batch of their own instead of setting the width for a hundred shorter ones. Filling each
micro-batch greedily, as before, computed 24.5% more positions than real tokens over five Prefix-RFT steps
of `compare_toy` and 14.6% for RFT; these cuts 9.9% and 7.6% (docs/performance.md).

The loss is a sum over micro-batches with normalisers fixed per mini-batch, so the grouping does not
change it, except where the grouping is itself part of the objective: the reference's per-micro-batch
entropy gate (docs/method.md Q2) ranks prefix tokens within each micro-batch, as verl's dynamic batch size does.

Under data parallelism every rank must run the same number of forward passes (FSDP gathers weights in
each), so every rank computes every rank's grouping and splits its own groups up to the largest count.

`plan_batches` turns a step's trajectories into that plan: seeded shuffle, PPO mini-batches, this
rank's micro-batches, each collated into right-padded tensors with its prefix and score masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset

from pipeline import schema as S
from pipeline.config import ObjectiveConfig, UpdateConfig


def budget_groups(rows: list[int], lengths: list[int], budget: int) -> list[list[int]]:
    """rows (trajectory indices) with their padded-free lengths -> groups of rows, longest first.

    The rows sorted by length (longest first, ties by position) are cut into runs; a run's cost is its
    padded size (rows x its first row's length), which must stay within `budget` unless the run is one
    row, plus a fixed `budget // 8` per micro-batch (its own forward and backward). The cuts minimise the
    total cost exactly (dynamic programme from the shortest end; O(rows x rows-per-budget))."""
    order = sorted(range(len(rows)), key=lambda k: (-lengths[k], k))
    n = len(order)
    sorted_len = np.array([lengths[k] for k in order], dtype=np.int64)  # [n] descending
    per_batch = max(1, budget // 8)
    best = np.zeros(n + 1, dtype=np.int64)  # best[i]: least cost of rows i.. (sorted order)
    cut = np.zeros(n, dtype=np.int64)  # cut[i]: where the run that starts at i ends
    for i in range(n - 1, -1, -1):
        width = max(int(sorted_len[i]), 1)
        most = max(1, min(n - i, budget // width))  # rows that fit at this width (at least the row itself)
        sizes = np.arange(1, most + 1)
        costs = sizes * width + per_batch + best[i + 1:i + most + 1]
        k = len(costs) - 1 - int(np.argmin(costs[::-1]))  # the last minimum: the longest run among equal costs
        best[i], cut[i] = costs[k], i + k + 1
    groups, i = [], 0
    while i < n:
        groups.append([rows[k] for k in order[i:cut[i]]])
        i = int(cut[i])
    return groups


def split_to(groups: list[list[int]], count: int) -> list[list[int]]:
    """Halve the largest groups until there are `count` of them (or every group holds one row)."""
    groups = [list(g) for g in groups]
    while len(groups) < count:
        k = max(range(len(groups)), key=lambda i: len(groups[i]))
        if len(groups[k]) < 2:
            break
        g = groups.pop(k)
        groups[k:k] = [g[:len(g) // 2], g[len(g) // 2:]]
    return groups


def micro_groups(mini: list[int], lengths: dict[int, int] | list[int], *, size: int, token_budget: int,
                 rank: int, world: int) -> list[list[int]]:
    """This rank's micro-batches of one mini-batch (rows `mini[rank::world]`).

    token_budget 0: consecutive runs of `size` rows (the fixed-count path). Otherwise budget groups,
    equalised in number across the `world` ranks."""
    local = mini[rank::world]
    if token_budget <= 0:
        return [local[j:j + size] for j in range(0, len(local), size)]
    mine = budget_groups(local, [lengths[i] for i in local], token_budget)
    if world > 1:
        most = max(len(budget_groups(mini[r::world], [lengths[i] for i in mini[r::world]], token_budget))
                   for r in range(world))
        mine = split_to(mine, most)
    return mine


@dataclass
class MicroBatch:
    rows: list[int]  # indices of the step's trajectories
    input_ids: torch.Tensor  # [b, T] right-padded prompt + prefix + continuation
    attention_mask: torch.Tensor  # [b, T]
    score_mask: torch.Tensor  # [b, T] bool: position j scores response token j+1
    prefix_mask: torch.Tensor  # [b, T] bool: the scored token is a demonstration prefix token
    adv: torch.Tensor  # [b, T] advantage of the scored token (0 off the response)
    old_logp: torch.Tensor | None = None  # [b, T]
    old_entropy: torch.Tensor | None = None  # [b, T]
    keep: torch.Tensor | None = None  # [b, T] gate from the step-scope pass


@dataclass
class MiniSizes:
    """Global counts of one mini-batch (all micro-batches and ranks): the normalisers of its loss."""
    sequences: int  # sequences with policy-gradient tokens (constant normaliser B)
    tokens: int  # policy-gradient tokens (token_mean normaliser)
    cont_tokens: int  # generated tokens (entropy bonus under token_mean)
    demo_tokens: int  # demonstration tokens under prefix_loss nll (NLL normaliser)


@dataclass
class Plan:
    minis: list[list[MicroBatch]]  # this rank's micro-batches of every PPO mini-batch
    sizes: list[MiniSizes]  # per mini-batch


def token_lists(ds: Dataset) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    """(prompt, demonstration tokens, completion) per row. A UFT hint sits at the end of the prompt ids
    (`hint_len` of them): it is moved to the demonstration tokens, where the loss sees it. Rows without
    a completion column (SFT rows) have empty completions."""
    names = [S.PROMPT_IDS, S.PREFIX_IDS, S.HINT_LEN] + ([S.COMPLETION_IDS] if S.COMPLETION_IDS in ds.column_names
                                                         else [])
    c = S.column_lists(ds, *names)
    prompts = [p[:len(p) - h] for p, h in zip(c[S.PROMPT_IDS], c[S.HINT_LEN])]
    prefixes = [p[len(p) - h:] + f if h else f for p, h, f in zip(c[S.PROMPT_IDS], c[S.HINT_LEN], c[S.PREFIX_IDS])]
    return prompts, prefixes, c.get(S.COMPLETION_IDS) or [[] for _ in prompts]


def collate(rows: list[int], prompts, prefixes, completions, adv_prefix: torch.Tensor, adv_cont: torch.Tensor,
            pad_id: int) -> MicroBatch:
    """Right-padded batch in the position layout (position j scores token j+1)."""
    seqs = [prompts[i] + prefixes[i] + completions[i] for i in rows]
    width = max(len(s) for s in seqs)
    b = len(rows)
    input_ids = torch.full((b, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((b, width), dtype=torch.long)
    score = torch.zeros((b, width), dtype=torch.bool)
    prefix = torch.zeros((b, width), dtype=torch.bool)
    adv = torch.zeros((b, width), dtype=torch.float32)
    for k, i in enumerate(rows):
        p, f, c = len(prompts[i]), len(prefixes[i]), len(completions[i])
        input_ids[k, :p + f + c] = torch.tensor(seqs[k], dtype=torch.long)
        attention_mask[k, :p + f + c] = 1
        score[k, p - 1:p + f + c - 1] = True
        prefix[k, p - 1:p + f - 1] = True
        adv[k, p - 1:p + f - 1] = adv_prefix[i]
        adv[k, p + f - 1:p + f + c - 1] = adv_cont[i]
    return MicroBatch(rows, input_ids, attention_mask, score, prefix, adv)


def plan_batches(ds: Dataset, adv_prefix: torch.Tensor, adv_cont: torch.Tensor, cfg: UpdateConfig,
                 objective: ObjectiveConfig, *, pad_id: int, seed: int, step: int, rank: int, world: int) -> Plan:
    """Shuffle the trajectories (seeded), split into PPO mini-batches, give each rank its share, and
    cut that share into micro-batches (a fixed count, or a token budget: pipeline.batching). A sequence
    enters the constant normaliser when it carries policy-gradient tokens (NLL-only demonstration rows do
    not)."""
    prompts, prefixes, completions = token_lists(ds)
    order = np.random.default_rng([seed, step, 0xB47C]).permutation(len(ds)).tolist()
    lengths = [len(p) + len(f) + len(c) for p, f, c in zip(prompts, prefixes, completions)]
    per_mini = len(order) // cfg.mini_batches
    prefix_pg = objective.prefix_loss != "nll" and objective.gate != "none"
    plan = Plan([], [])
    for m in range(cfg.mini_batches):
        mini = order[m * per_mini:(m + 1) * per_mini]
        cont = sum(len(completions[i]) for i in mini)
        demo = sum(len(prefixes[i]) for i in mini)
        plan.sizes.append(MiniSizes(sequences=sum(1 for i in mini if completions[i] or (prefix_pg and prefixes[i])),
                                    tokens=cont + (demo if prefix_pg else 0), cont_tokens=cont,
                                    demo_tokens=demo if objective.prefix_loss == "nll" else 0))
        groups = micro_groups(mini, lengths, size=cfg.micro_batch_size, token_budget=cfg.micro_batch_tokens,
                              rank=rank, world=world)
        plan.minis.append([collate(g, prompts, prefixes, completions, adv_prefix, adv_cont, pad_id) for g in groups])
    return plan


def to_device(mb: MicroBatch, device: torch.device) -> MicroBatch:
    for name in ("input_ids", "attention_mask", "score_mask", "prefix_mask", "adv"):
        setattr(mb, name, getattr(mb, name).to(device))
    return mb
