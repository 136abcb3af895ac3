"""Cutting a rank's share of a PPO mini-batch into micro-batches: a fixed count, or a token budget.

With a token budget the sequences are sorted by length (longest first, so an out-of-memory shows on
the first micro-batch) and packed greedily while `sequences x longest length` (the padded size of the
right-padded micro-batch) stays within the budget; a sequence longer than the budget goes alone.
Sorting bins short with short and long with long, so little padding is computed.

The loss is a sum over micro-batches with normalisers fixed per mini-batch, so the grouping does not
change it, except where the grouping is itself part of the objective: the reference's per-micro-batch
entropy gate (SPEC Q2) ranks prefix tokens within each micro-batch, as verl's dynamic batch size does.

Under data parallelism every rank must run the same number of forward passes (FSDP gathers weights in
each), so every rank computes every rank's grouping and splits its own groups up to the largest count.
"""

from __future__ import annotations


def budget_groups(rows: list[int], lengths: list[int], budget: int) -> list[list[int]]:
    """rows (trajectory indices) with their padded-free lengths -> groups of rows, longest first."""
    order = sorted(range(len(rows)), key=lambda k: (-lengths[k], k))
    groups: list[list[int]] = []
    width = 0
    for k in order:
        if groups and (len(groups[-1]) + 1) * width <= budget:
            groups[-1].append(rows[k])
        else:
            groups.append([rows[k]])
            width = lengths[k]  # the first (longest) sequence sets the micro-batch width
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
