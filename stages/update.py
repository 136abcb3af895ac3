"""update: one optimisation step on the step's scored trajectories (SPEC §2-§6, §9-§10).

RL phase, each part timed: `advantages` (Dr. GRPO per group), `collate` (sequences -> micro-batches;
a UFT hint is moved from the prompt into the demonstration tokens), `logprobs` (pre-update log-probs
and entropies, no grad), then per PPO mini-batch the loss (current log-probs; on demonstration tokens
the term `objective.prefix_loss` names: the gated, clipped PPO term, LUFFY's shaped term, or a
token-mean NLL; the clipped PPO term on generated tokens; constant normaliser; backward per
micro-batch) and the step (grad clip, AdamW). SFT phase (SFT steps, ReLIFT's interleaved steps): one
optimizer step on whole demonstrations, NLL summed over tokens and divided by the tokens of the whole
batch, at `sft.lr`. Returns a per-sequence metrics Dataset and the step's statistics; the caller saves
the checkpoint.

Input: the reward dataset (RL) and/or demonstration rows (SFT). Output rows (one per trajectory):
step, group_id, slot, is_hybrid, reward, advantage, advantage_prefix, prefix_len, completion_len,
kept_prefix_tokens, entropy_mean, demo_nll (mean NLL of its demonstration tokens before the update),
phase (rl / sft).

    python -m pipeline.stage update --output-dir runs/qs --step 3 --force
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from datasets import Dataset, Value, concatenate_datasets

from pipeline import schema as S
from pipeline.batching import micro_groups
from pipeline.config import ObjectiveConfig, UpdateConfig
from pipeline.distributed import clip_grad_norm, gradient_sync
from pipeline.logprobs import sequence_logprobs
from pipeline.mismatch import continuation_deltas, summarise
from pipeline.objectives import (aggregate, entropy_gate, group_advantages, nll_loss, ppo_clip_loss,
                                 shaped_pg_loss)
from pipeline.seeding import derive_seed

STAGE_VERSION = 2  # 2: prefix_loss pg/shaped/nll, unclipped continuation option, SFT phase, hint tokens
REQUIRES = (S.STEP, S.GROUP_ID, S.SLOT, S.IS_HYBRID, S.HINT_LEN, S.PROMPT_IDS, S.PREFIX_IDS, S.COMPLETION_IDS,
            S.REWARD)
SFT_REQUIRES = (S.STEP, S.GROUP_ID, S.SLOT, S.IS_HYBRID, S.HINT_LEN, S.PROMPT_IDS, S.PREFIX_IDS)
METRIC_FEATURES = {"advantage_prefix": Value("float32"), "completion_len": Value("int32"),
                   "kept_prefix_tokens": Value("int32"), "entropy_mean": Value("float32"),
                   "demo_nll": Value("float32"), "phase": Value("string")}


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


def _autocast(cfg: UpdateConfig, model: Any):
    if cfg.precision == "bf16":
        return torch.autocast(device_type=next(model.parameters()).device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to(mb: MicroBatch, device: torch.device) -> MicroBatch:
    for name in ("input_ids", "attention_mask", "score_mask", "prefix_mask", "adv"):
        setattr(mb, name, getattr(mb, name).to(device))
    return mb


def separate_old_pass(cfg: UpdateConfig, step_gate: bool) -> bool:
    """Whether the PPO reference log-probs need their own forward pass before the update. With one
    mini-batch the whole step is one optimizer step, so every micro-batch's forward runs on the
    pre-update policy and `old_logp = logp.detach()` is that reference exactly (ratio 1, as TRL does with
    num_iterations = 1): the separate pass is skipped. It is needed with several mini-batches (the policy
    moves between them) and for the step-scope gate (it ranks every prefix token before the first
    backward). `update.old_logprob_pass=always` forces it."""
    return cfg.old_logprob_pass == "always" or cfg.mini_batches > 1 or step_gate


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
               sizes: MiniSizes, max_response_tokens: int, world: int,
               generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one micro-batch, scaled so that the sum over micro-batches and ranks is the mini-batch
    loss (DDP/FSDP average gradients over ranks, hence the factor `world`)."""
    with _autocast(cfg, model):
        logp, entropy = sequence_logprobs(model, mb.input_ids, mb.attention_mask, mb.score_mask, temperature,
                                          cfg.logprob_chunk_tokens)  # [b, T] each
    prefix, cont = mb.prefix_mask, mb.score_mask & ~mb.prefix_mask  # [b, T] each
    gated = objective.prefix_loss != "nll"  # the entropy gate acts on advantages; NLL tokens have none
    keep = mb.keep if mb.keep is not None else (
        entropy_gate(entropy, prefix, objective.gate, objective.keep_ratio, generator) if gated
        else torch.ones_like(prefix))  # [b, T]
    adv = torch.where(keep, mb.adv, torch.zeros_like(mb.adv))  # gated advantage (SPEC §5)
    pg_mask = cont | (prefix & (gated and objective.gate != "none"))  # [b, T]
    zero = logp.new_zeros(())
    pg, clipped = zero, torch.zeros_like(prefix)
    if mb.old_logp is None:  # on-policy (one mini-batch, or SFT rows): this pass is the pre-update policy
        mb.old_logp, mb.old_entropy = logp.detach(), entropy.detach()
    if sizes.sequences:
        clip_mask = mb.score_mask & torch.where(prefix, objective.clip_prefix, objective.clip_continuation)
        token_loss, clipped = ppo_clip_loss(logp, mb.old_logp, adv, objective.clip_low, objective.clip_high,
                                            objective.dual_clip, clip_mask)  # [b, T]
        if objective.prefix_loss == "shaped":  # LUFFY: demonstration tokens take -A f(pi), never clipped
            token_loss = torch.where(prefix, shaped_pg_loss(logp, adv, objective.shaping_gamma), token_loss)
            clipped = clipped & ~prefix
        pg = aggregate(token_loss, pg_mask.float(), objective.loss_agg, sizes.sequences, max_response_tokens,
                       sizes.tokens)
    nll = objective.nll_coef * nll_loss(logp, prefix.float(), sizes.demo_tokens) if sizes.demo_tokens else zero
    if objective.entropy_norm == "reference":  # verl: token mean per micro-batch (config docstring)
        ent = (entropy * cont).sum() / cont.sum().clamp(min=1) / sizes.sequences if sizes.sequences else zero
    else:
        ent = aggregate(entropy, cont.float(), objective.loss_agg, sizes.sequences, max_response_tokens,
                        sizes.cont_tokens) if sizes.sequences and sizes.cont_tokens else zero
    loss = pg + nll - objective.entropy_coef * ent
    kept_prefix = keep & prefix
    with torch.no_grad():
        log_ratio = (logp - mb.old_logp)[pg_mask]
        stats = {
            "pg_loss": float(pg), "nll_loss": float(nll), "entropy_loss": float(ent), "loss": float(loss),
            "clipped_tokens": float(clipped[pg_mask].sum()), "loss_tokens": float(pg_mask.sum()),
            "ratio_max": float(log_ratio.exp().max()) if log_ratio.numel() else 1.0,
            "approx_kl_sum": float((-log_ratio).sum()),
            "kept_prefix_tokens": float(kept_prefix.sum()), "prefix_tokens": float(prefix.sum()),
            "kept_prefix_entropy_sum": float(entropy.detach()[kept_prefix].sum()),
            "prefix_entropy_sum": float(entropy.detach()[prefix].sum()),
            "demo_nll_sum": float(-logp.detach()[prefix].sum()),
            "cont_entropy_sum": float(entropy.detach()[cont].sum()), "cont_tokens": float(cont.sum()),
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
             temperature: float, max_response_tokens: int, seed: int, step: int,
             lr: float | None = None) -> dict[str, float]:
    """The PPO mini-batch loop: backward per micro-batch (no gradient sync until the last), then clip
    and step once per mini-batch. `lr` (SFT steps) overrides the learning rate for these optimizer
    steps and leaves the LR schedule of the RL steps where it was."""
    model, opt, sched = policy.model, policy.optimizer, policy.scheduler
    model.train()
    totals: dict[str, float] = {}
    grad_norms = []
    ratio_max = 1.0
    for m, micro in enumerate(plan.minis):
        for j, mb in enumerate(micro):
            gen = torch.Generator().manual_seed(derive_seed(seed, step, "gate", m, j, accelerator.process_index))
            sync = j == len(micro) - 1
            with gradient_sync(model, accelerator, sync):
                loss, stats = micro_loss(model, mb, objective, cfg, temperature=temperature, sizes=plan.sizes[m],
                                         max_response_tokens=max_response_tokens, world=accelerator.num_processes,
                                         generator=gen)
                accelerator.backward(loss)
            ratio_max = max(ratio_max, stats.pop("ratio_max"))
            _add(totals, stats)
        grad_norms.append(clip_grad_norm(model, accelerator, cfg.max_grad_norm or float("inf")))
        # an SFT step sets its own LR; an RL step restores the schedule's (an SFT step may have run before)
        for group, scheduled in zip(opt.param_groups, sched.get_last_lr()):
            group["lr"] = lr if lr is not None else scheduled
        if math.isfinite(grad_norms[-1]):
            opt.step()
        if lr is None:
            sched.step()
        opt.zero_grad(set_to_none=True)
    totals = _reduce(totals, accelerator)
    totals["ratio_max"] = float(accelerator.reduce(torch.tensor(ratio_max, device=accelerator.device), "max")) \
        if accelerator.num_processes > 1 else ratio_max
    totals["grad_norm"] = float(np.mean(grad_norms))
    totals["grad_norm_max"] = float(np.max(grad_norms))
    totals["lr"] = float(lr if lr is not None else sched.get_last_lr()[0])
    totals["skipped_steps"] = float(sum(not math.isfinite(g) for g in grad_norms))
    return totals


def reset_optimizer(policy: Any) -> None:
    """Start the optimizer afresh, as a new run would (SFT -> RFT: the RL phase does not inherit the SFT
    phase's Adam moments). The RL LR schedule has not advanced during SFT steps (`optimise(lr=...)`)."""
    opt = getattr(policy.optimizer, "optimizer", policy.optimizer)  # accelerate wraps the torch optimizer
    opt.state.clear()


def run(ds: Dataset | None, cfg: UpdateConfig, objective: ObjectiveConfig, *, policy: Any, accelerator: Any,
        pad_id: int, temperature: float, max_response_tokens: int, seed: int, step: int,
        sft_ds: Dataset | None = None, sft_lr: float = 0.0,
        fresh_optimizer: bool = False) -> tuple[Dataset, dict[str, float]]:
    """One training step: the RL phase on `ds` (the reward dataset; None on SFT steps), then the SFT phase
    on `sft_ds` (rows whose prefix is a whole demonstration) when it has rows. Mutates `policy` (model,
    optimizer, scheduler) in place."""
    if fresh_optimizer:
        reset_optimizer(policy)
    parts, stats = [], {}
    common = dict(policy=policy, accelerator=accelerator, pad_id=pad_id, temperature=temperature,
                  max_response_tokens=max_response_tokens, seed=seed, step=step)
    if ds is not None:
        S.require_columns(ds, REQUIRES, "update")
        table, stats = rl_phase(ds, cfg, objective, **common)
        parts.append(table)
    if sft_ds is not None and len(sft_ds):
        S.require_columns(sft_ds, SFT_REQUIRES, "update", "SFT")
        table, sft_stats = sft_phase(sft_ds, cfg, objective, lr=sft_lr, **common)
        parts.append(table)
        stats.update(sft_stats if ds is None else {f"sft_{k}": v for k, v in sft_stats.items()})
    if not parts:
        raise ValueError("update: neither RL rows nor SFT rows to train on")
    return (parts[0] if len(parts) == 1 else concatenate_datasets(parts)), stats


def rl_phase(ds: Dataset, cfg: UpdateConfig, objective: ObjectiveConfig, *, policy: Any, accelerator: Any,
             pad_id: int, temperature: float, max_response_tokens: int, seed: int,
             step: int) -> tuple[Dataset, dict[str, float]]:
    """Advantages, pre-update log-probs, PPO mini-batches (SPEC §2-§6)."""
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
    plan.minis = [[_to(mb, accelerator.device) for mb in micro] for micro in plan.minis]
    timings["collate"] = time.perf_counter() - t

    t = time.perf_counter()
    step_gate = (objective.gate_scope == "step" and objective.gate not in ("all", "none")
                 and objective.prefix_loss != "nll")
    separate = separate_old_pass(cfg, step_gate)
    if separate:
        old_logprobs(policy.model, plan, cfg, temperature)
    if step_gate:
        step_scope_gate(plan, objective, accelerator,
                        torch.Generator().manual_seed(derive_seed(seed, step, "gate-step")))
    timings["logprobs"] = time.perf_counter() - t

    t = time.perf_counter()
    totals = optimise(policy, plan, objective, cfg, accelerator=accelerator, temperature=temperature,
                      max_response_tokens=max_response_tokens, seed=seed, step=step)
    timings["loss_and_step"] = time.perf_counter() - t
    mismatch = engine_mismatch(ds, plan, accelerator)  # old_logp is the pre-update policy's either way
    out, stats = _metrics(ds, plan, adv_prefix, adv_cont, totals, timings, accelerator, "rl")
    return out, {**stats, **mismatch, "separate_old_logprob_pass": float(separate)}


def engine_mismatch(ds: Dataset, plan: Plan, accelerator: Any) -> dict[str, float]:
    """|engine - trainer| log-prob of the continuation tokens under the pre-update policy (pipeline.mismatch)."""
    if S.COMPLETION_LOGPROBS not in ds.column_names:
        return {}
    engine = S.column_lists(ds, S.COMPLETION_LOGPROBS)[S.COMPLETION_LOGPROBS]
    return summarise((continuation_deltas(mb.old_logp, mb.score_mask & ~mb.prefix_mask, mb.rows, engine)
                      for micro in plan.minis for mb in micro), accelerator)


def sft_phase(ds: Dataset, cfg: UpdateConfig, objective: ObjectiveConfig, *, lr: float, policy: Any,
              accelerator: Any, pad_id: int, temperature: float, max_response_tokens: int, seed: int,
              step: int) -> tuple[Dataset, dict[str, float]]:
    """One optimizer step on whole demonstrations: NLL summed over every demonstration token of the
    batch and divided by their count across all micro-batches and ranks, so gradient accumulation over
    m micro-batches equals one big batch (SPEC §9 caveat)."""
    t = time.perf_counter()
    sft_objective = dataclasses.replace(objective, prefix_loss="nll", nll_coef=1.0, entropy_coef=0.0)
    zeros = torch.zeros(len(ds))
    plan = plan_batches(ds, zeros, zeros, dataclasses.replace(cfg, mini_batches=1), sft_objective, pad_id=pad_id,
                        seed=seed, step=step, rank=accelerator.process_index, world=accelerator.num_processes)
    plan.minis = [[_to(mb, accelerator.device) for mb in micro] for micro in plan.minis]
    totals = optimise(policy, plan, sft_objective, cfg, accelerator=accelerator, temperature=temperature,
                      max_response_tokens=max_response_tokens, seed=seed, step=step, lr=lr)
    return _metrics(ds, plan, zeros, zeros, totals, {"sft": time.perf_counter() - t}, accelerator, "sft")


def _row_stats(plan: Plan) -> dict[int, tuple[int, float, float]]:
    """Per trajectory: prefix tokens that kept their advantage, mean pre-update continuation entropy,
    mean pre-update NLL of its demonstration tokens (NaN where there are none)."""
    out = {}
    for micro in plan.minis:
        for mb in micro:
            cont = mb.score_mask & ~mb.prefix_mask
            for k, row in enumerate(mb.rows):
                n, d = int(cont[k].sum()), int(mb.prefix_mask[k].sum())
                out[row] = (int((mb.keep[k] & mb.prefix_mask[k]).sum()),
                            float(mb.old_entropy[k][cont[k]].sum()) / n if n else float("nan"),
                            float(-mb.old_logp[k][mb.prefix_mask[k]].sum()) / d if d else float("nan"))
    return out


def _metrics(ds: Dataset, plan: Plan, adv_prefix: torch.Tensor, adv_cont: torch.Tensor, totals: dict[str, float],
             timings: dict[str, float], accelerator: Any, phase: str) -> tuple[Dataset, dict[str, float]]:
    per_row = _row_stats(plan)
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        per_row = dict(gather_object(list(per_row.items())))
    rows = sorted(per_row)
    prompts, prefixes, completions = token_lists(ds)
    source = S.column_lists(ds, S.STEP, S.GROUP_ID, S.SLOT, S.IS_HYBRID, *([S.REWARD] if S.REWARD in ds.column_names
                                                                            else []))
    cols = {c: [source[c][r] for r in rows] for c in (S.STEP, S.GROUP_ID, S.SLOT, S.IS_HYBRID)}
    cols[S.PREFIX_LEN] = [len(prefixes[r]) for r in rows]
    cols[S.REWARD] = [source[S.REWARD][r] if S.REWARD in source else float("nan") for r in rows]
    cols[S.ADVANTAGE] = [float(adv_cont[r]) for r in rows]
    cols["advantage_prefix"] = [float(adv_prefix[r]) for r in rows]
    cols["completion_len"] = [len(completions[r]) for r in rows]
    for i, name in enumerate(("kept_prefix_tokens", "entropy_mean", "demo_nll")):
        cols[name] = [per_row[r][i] for r in rows]
    cols["phase"] = [phase] * len(rows)
    n_mini = len(plan.minis)

    def ratio(num: str, den: str) -> float:
        return totals.get(num, 0.0) / max(1.0, totals.get(den, 0.0))

    stats = {
        "loss": totals.get("loss", 0.0) / n_mini, "pg_loss": totals.get("pg_loss", 0.0) / n_mini,
        "nll_loss": totals.get("nll_loss", 0.0) / n_mini, "entropy_loss": totals.get("entropy_loss", 0.0) / n_mini,
        "clip_frac": ratio("clipped_tokens", "loss_tokens"), "approx_kl": ratio("approx_kl_sum", "loss_tokens"),
        "ratio_max": totals["ratio_max"], "entropy": ratio("cont_entropy_sum", "cont_tokens"),
        "prefix_entropy": ratio("prefix_entropy_sum", "prefix_tokens"),
        "kept_prefix_entropy": ratio("kept_prefix_entropy_sum", "kept_prefix_tokens"),
        "demo_nll": ratio("demo_nll_sum", "prefix_tokens"),
        "kept_prefix_tokens": totals.get("kept_prefix_tokens", 0.0), "prefix_tokens": totals.get("prefix_tokens", 0.0),
        "loss_tokens": totals.get("loss_tokens", 0.0), "grad_norm": totals["grad_norm"],
        "grad_norm_max": totals["grad_norm_max"], "lr": totals["lr"], "skipped_steps": totals["skipped_steps"],
        "rows": float(len(rows)), **{f"seconds_{k}": v for k, v in timings.items()},
    }
    return S.make_dataset(cols, METRIC_FEATURES), stats
