"""update: one Prefix-RFT optimisation step on the step's scored trajectories (SPEC §2-§6).

Phases, each timed: `collate` (sequences -> micro-batches), `advantages` (Dr. GRPO per group),
`logprobs` (pre-update log-probs and entropies, no grad), then per PPO mini-batch `loss` (current
log-probs, entropy gate on prefix tokens, clipped loss with constant normaliser, backward per
micro-batch) and `step` (grad clip, AdamW). Returns a per-sequence metrics Dataset and the step's
aggregate statistics; the caller saves the checkpoint.

Input: the reward dataset. Output rows (one per trajectory): step, group_id, slot, is_hybrid, reward,
advantage, advantage_prefix, prefix_len, completion_len, kept_prefix_tokens, entropy_mean.

    python -m pipeline.stage update --output-dir runs/qs --step 3 --force
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from datasets import Dataset, Value

from pipeline import schema as S
from pipeline.batching import micro_groups
from pipeline.config import ObjectiveConfig, UpdateConfig
from pipeline.logprobs import sequence_logprobs
from pipeline.objectives import aggregate, entropy_gate, group_advantages, ppo_clip_loss
from pipeline.seeding import derive_seed

STAGE_VERSION = 1  # 1: PPO-clip + Dr. GRPO + entropy gate, constant normaliser
REQUIRES = (S.STEP, S.GROUP_ID, S.SLOT, S.IS_HYBRID, S.PROMPT_IDS, S.PREFIX_IDS, S.COMPLETION_IDS, S.REWARD)
METRIC_FEATURES = {"advantage_prefix": Value("float32"), "completion_len": Value("int32"),
                   "kept_prefix_tokens": Value("int32"), "entropy_mean": Value("float32")}


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
class Plan:
    minis: list[list[MicroBatch]]  # this rank's micro-batches of every PPO mini-batch
    mini_sizes: list[int]  # global sequences per mini-batch (normaliser)
    mini_tokens: list[int]  # global loss-bearing tokens per mini-batch (token_mean normaliser)
    mini_cont_tokens: list[int]  # global continuation tokens per mini-batch (entropy bonus, token_mean)


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
    cut that share into micro-batches (a fixed count, or a token budget: pipeline.batching)."""
    cols = S.column_lists(ds, S.PROMPT_IDS, S.PREFIX_IDS, S.COMPLETION_IDS)
    prompts, prefixes, completions = cols[S.PROMPT_IDS], cols[S.PREFIX_IDS], cols[S.COMPLETION_IDS]
    order = np.random.default_rng([seed, step, 0xB47C]).permutation(len(ds)).tolist()
    lengths = [len(p) + len(f) + len(c) for p, f, c in zip(prompts, prefixes, completions)]
    per_mini = len(order) // cfg.mini_batches
    plan = Plan([], [], [], [])
    for m in range(cfg.mini_batches):
        mini = order[m * per_mini:(m + 1) * per_mini]
        cont = sum(len(completions[i]) for i in mini)
        tokens = cont + (0 if objective.gate == "none" else sum(len(prefixes[i]) for i in mini))
        groups = micro_groups(mini, lengths, size=cfg.micro_batch_size, token_budget=cfg.micro_batch_tokens,
                              rank=rank, world=world)
        micro = [collate(g, prompts, prefixes, completions, adv_prefix, adv_cont, pad_id) for g in groups]
        plan.minis.append(micro)
        plan.mini_sizes.append(len(mini))
        plan.mini_tokens.append(tokens)
        plan.mini_cont_tokens.append(cont)
    return plan


def _autocast(cfg: UpdateConfig, model: Any):
    if cfg.precision == "bf16":
        return torch.autocast(device_type=next(model.parameters()).device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to(mb: MicroBatch, device: torch.device) -> MicroBatch:
    for name in ("input_ids", "attention_mask", "score_mask", "prefix_mask", "adv"):
        setattr(mb, name, getattr(mb, name).to(device))
    return mb


@torch.no_grad()
def old_logprobs(model: Any, plan: Plan, cfg: UpdateConfig, temperature: float) -> None:
    """Pre-update log-probs and entropies of every micro-batch (the PPO reference, SPEC §2)."""
    was_training = model.training
    model.eval()
    for micro in plan.minis:
        for mb in micro:
            with _autocast(cfg, model):
                mb.old_logp, mb.old_entropy = sequence_logprobs(model, mb.input_ids, mb.attention_mask, mb.score_mask,
                                                                temperature, cfg.logprob_chunk_tokens)
    model.train(was_training)


def step_scope_gate(plan: Plan, objective: ObjectiveConfig, accelerator: Any, generator: torch.Generator) -> None:
    """Gate over every prefix token of the step, ranked by pre-update entropy (SPEC Q2 option)."""
    from accelerate.utils import gather_object

    local = []
    for micro in plan.minis:
        for mb in micro:
            for k, row in enumerate(mb.rows):
                pos = mb.prefix_mask[k].nonzero().squeeze(-1).tolist()
                local += [(row, p, float(mb.old_entropy[k, p])) for p in pos]
    everything = sorted(gather_object(local) if accelerator.num_processes > 1 else local)
    ent = torch.tensor([e for _, _, e in everything])
    keep = entropy_gate(ent, torch.ones_like(ent, dtype=torch.bool), objective.gate, objective.keep_ratio, generator)
    kept = {(r, p) for (r, p, _), k in zip(everything, keep.tolist()) if k}
    for micro in plan.minis:
        for mb in micro:
            mb.keep = ~mb.prefix_mask.clone()
            for k, row in enumerate(mb.rows):
                for p in mb.prefix_mask[k].nonzero().squeeze(-1).tolist():
                    mb.keep[k, p] = (row, p) in kept


def micro_loss(model: Any, mb: MicroBatch, objective: ObjectiveConfig, cfg: UpdateConfig, *, temperature: float,
               num_sequences: int, num_tokens: int, cont_tokens: int, max_response_tokens: int, world: int,
               generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one micro-batch, scaled so that the sum over micro-batches and ranks is the mini-batch
    loss (DDP/FSDP average gradients over ranks, hence the factor `world`)."""
    with _autocast(cfg, model):
        logp, entropy = sequence_logprobs(model, mb.input_ids, mb.attention_mask, mb.score_mask, temperature,
                                          cfg.logprob_chunk_tokens)  # [b, T] each
    keep = mb.keep if mb.keep is not None else entropy_gate(entropy, mb.prefix_mask, objective.gate,
                                                            objective.keep_ratio, generator)  # [b, T]
    adv = torch.where(keep, mb.adv, torch.zeros_like(mb.adv))  # gated advantage (SPEC §5)
    clip_mask = mb.score_mask & (~mb.prefix_mask | objective.clip_prefix)
    token_loss, clipped = ppo_clip_loss(logp, mb.old_logp, adv, objective.clip_low, objective.clip_high,
                                        objective.dual_clip, clip_mask)  # [b, T]
    loss_mask = mb.score_mask & ~(mb.prefix_mask & (objective.gate == "none"))
    cont_mask = mb.score_mask & ~mb.prefix_mask
    pg = aggregate(token_loss, loss_mask.float(), objective.loss_agg, num_sequences, max_response_tokens, num_tokens)
    ent = aggregate(entropy, cont_mask.float(), objective.loss_agg, num_sequences, max_response_tokens, cont_tokens)
    loss = pg - objective.entropy_coef * ent
    kept_prefix = keep & mb.prefix_mask
    with torch.no_grad():
        log_ratio = (logp - mb.old_logp)[loss_mask]
        stats = {
            "pg_loss": float(pg), "entropy_loss": float(ent), "loss": float(loss),
            "clipped_tokens": float(clipped[loss_mask].sum()), "loss_tokens": float(loss_mask.sum()),
            "ratio_max": float(log_ratio.exp().max()) if log_ratio.numel() else 1.0,
            "approx_kl_sum": float((-log_ratio).sum()),
            "kept_prefix_tokens": float(kept_prefix.sum()), "prefix_tokens": float(mb.prefix_mask.sum()),
            "kept_prefix_entropy_sum": float(entropy.detach()[kept_prefix].sum()),
            "prefix_entropy_sum": float(entropy.detach()[mb.prefix_mask].sum()),
            "cont_entropy_sum": float(entropy.detach()[cont_mask].sum()), "cont_tokens": float(cont_mask.sum()),
        }
    mb.keep = keep
    return loss * world, stats


def _add(total: dict[str, float], part: dict[str, float]) -> None:
    for k, v in part.items():
        total[k] = total.get(k, 0.0) + v


def _reduce(totals: dict[str, float], accelerator: Any) -> dict[str, float]:
    """Sum per-rank totals over ranks."""
    if accelerator.num_processes == 1 or not totals:
        return totals
    keys = sorted(totals)
    summed = accelerator.reduce(torch.tensor([totals[k] for k in keys], dtype=torch.float64,
                                             device=accelerator.device), "sum")
    return dict(zip(keys, summed.tolist()))


def optimise(policy: Any, plan: Plan, objective: ObjectiveConfig, cfg: UpdateConfig, *, accelerator: Any,
             temperature: float, max_response_tokens: int, seed: int, step: int) -> dict[str, float]:
    """The PPO mini-batch loop: backward per micro-batch (no gradient sync until the last), then clip
    and step once per mini-batch."""
    model, opt, sched = policy.model, policy.optimizer, policy.scheduler
    model.train()
    totals: dict[str, float] = {}
    grad_norms = []
    ratio_max = 1.0
    for m, micro in enumerate(plan.minis):
        for j, mb in enumerate(micro):
            gen = torch.Generator().manual_seed(derive_seed(seed, step, "gate", m, j, accelerator.process_index))
            sync = j == len(micro) - 1
            ctx = contextlib.nullcontext() if sync or accelerator.num_processes == 1 else accelerator.no_sync(model)
            with ctx:
                loss, stats = micro_loss(model, mb, objective, cfg, temperature=temperature,
                                         num_sequences=plan.mini_sizes[m], num_tokens=plan.mini_tokens[m],
                                         cont_tokens=plan.mini_cont_tokens[m],
                                         max_response_tokens=max_response_tokens, world=accelerator.num_processes,
                                         generator=gen)
                accelerator.backward(loss)
            ratio_max = max(ratio_max, stats.pop("ratio_max"))
            _add(totals, stats)
        norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm or float("inf"))
        grad_norms.append(float(norm))
        if math.isfinite(grad_norms[-1]):
            opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    totals = _reduce(totals, accelerator)
    totals["ratio_max"] = float(accelerator.reduce(torch.tensor(ratio_max, device=accelerator.device), "max")) \
        if accelerator.num_processes > 1 else ratio_max
    totals["grad_norm"] = float(np.mean(grad_norms))
    totals["grad_norm_max"] = float(np.max(grad_norms))
    totals["lr"] = float(sched.get_last_lr()[0])
    totals["skipped_steps"] = float(sum(not math.isfinite(g) for g in grad_norms))
    return totals


def run(ds: Dataset, cfg: UpdateConfig, objective: ObjectiveConfig, *, policy: Any, accelerator: Any,
        pad_id: int, temperature: float, max_response_tokens: int, seed: int,
        step: int) -> tuple[Dataset, dict[str, float]]:
    """One optimisation step. Mutates `policy` (model, optimizer, scheduler) in place."""
    S.require_columns(ds, REQUIRES, "update")
    timings, t0 = {}, time.perf_counter()
    torch.manual_seed(derive_seed(seed, step, "update"))
    cols = S.column_lists(ds, S.REWARD, S.GROUP_ID, S.IS_HYBRID)
    rewards = torch.tensor(cols[S.REWARD], dtype=torch.float32)  # [S]
    groups = torch.tensor(cols[S.GROUP_ID])  # [S]
    hybrid = torch.tensor(cols[S.IS_HYBRID], dtype=torch.bool)  # [S]
    adv_prefix, adv_cont = group_advantages(rewards, groups, hybrid, objective.advantage, objective.std_scale)
    timings["advantages"] = time.perf_counter() - t0

    t = time.perf_counter()
    plan = plan_batches(ds, adv_prefix, adv_cont, cfg, objective, pad_id=pad_id, seed=seed, step=step,
                        rank=accelerator.process_index, world=accelerator.num_processes)
    device = accelerator.device
    plan.minis = [[_to(mb, device) for mb in micro] for micro in plan.minis]
    timings["collate"] = time.perf_counter() - t

    t = time.perf_counter()
    old_logprobs(policy.model, plan, cfg, temperature)
    if objective.gate_scope == "step" and objective.gate not in ("all", "none"):
        step_scope_gate(plan, objective, accelerator,
                        torch.Generator().manual_seed(derive_seed(seed, step, "gate-step")))
    timings["logprobs"] = time.perf_counter() - t

    t = time.perf_counter()
    totals = optimise(policy, plan, objective, cfg, accelerator=accelerator, temperature=temperature,
                      max_response_tokens=max_response_tokens, seed=seed, step=step)
    timings["loss_and_step"] = time.perf_counter() - t
    return _metrics(ds, plan, adv_prefix, adv_cont, totals, timings, accelerator)


def _row_stats(plan: Plan) -> dict[int, tuple[int, float]]:
    """Per trajectory: prefix tokens that kept their advantage, mean pre-update continuation entropy."""
    out = {}
    for micro in plan.minis:
        for mb in micro:
            cont = mb.score_mask & ~mb.prefix_mask
            for k, row in enumerate(mb.rows):
                n = int(cont[k].sum())
                out[row] = (int((mb.keep[k] & mb.prefix_mask[k]).sum()),
                            float(mb.old_entropy[k][cont[k]].sum()) / max(1, n))
    return out


def _metrics(ds: Dataset, plan: Plan, adv_prefix: torch.Tensor, adv_cont: torch.Tensor, totals: dict[str, float],
             timings: dict[str, float], accelerator: Any) -> tuple[Dataset, dict[str, float]]:
    per_row = _row_stats(plan)
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        per_row = dict(gather_object(list(per_row.items())))
    rows = sorted(per_row)
    source = S.column_lists(ds, S.STEP, S.GROUP_ID, S.SLOT, S.IS_HYBRID, S.PREFIX_LEN, S.REWARD, S.COMPLETION_IDS)
    cols = {c: [source[c][r] for r in rows] for c in (S.STEP, S.GROUP_ID, S.SLOT, S.IS_HYBRID, S.PREFIX_LEN, S.REWARD)}
    cols[S.ADVANTAGE] = [float(adv_cont[r]) for r in rows]
    cols["advantage_prefix"] = [float(adv_prefix[r]) for r in rows]
    cols["completion_len"] = [len(source[S.COMPLETION_IDS][r]) for r in rows]
    cols["kept_prefix_tokens"] = [per_row[r][0] for r in rows]
    cols["entropy_mean"] = [per_row[r][1] for r in rows]
    n_mini = len(plan.minis)

    def ratio(num: str, den: str) -> float:
        return totals.get(num, 0.0) / max(1.0, totals.get(den, 0.0))

    stats = {
        "loss": totals.get("loss", 0.0) / n_mini, "pg_loss": totals.get("pg_loss", 0.0) / n_mini,
        "entropy_loss": totals.get("entropy_loss", 0.0) / n_mini,
        "clip_frac": ratio("clipped_tokens", "loss_tokens"), "approx_kl": ratio("approx_kl_sum", "loss_tokens"),
        "ratio_max": totals["ratio_max"], "entropy": ratio("cont_entropy_sum", "cont_tokens"),
        "prefix_entropy": ratio("prefix_entropy_sum", "prefix_tokens"),
        "kept_prefix_entropy": ratio("kept_prefix_entropy_sum", "kept_prefix_tokens"),
        "kept_prefix_tokens": totals.get("kept_prefix_tokens", 0.0), "prefix_tokens": totals.get("prefix_tokens", 0.0),
        "loss_tokens": totals.get("loss_tokens", 0.0), "grad_norm": totals["grad_norm"],
        "grad_norm_max": totals["grad_norm_max"], "lr": totals["lr"], "skipped_steps": totals["skipped_steps"],
        **{f"seconds_{k}": v for k, v in timings.items()},
    }
    return S.make_dataset(cols, METRIC_FEATURES), stats
