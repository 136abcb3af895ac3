"""The loss and the optimizer steps of the update stage (stages/update.py): pre-update log-probs, the
step-scope entropy gate, the loss of one micro-batch (docs/method.md §2, §5, §6) and the PPO mini-batch
loop (backward per micro-batch, clip and AdamW once per mini-batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.precision import autocast as precision_autocast
from pipeline.batching import MicroBatch, MiniSizes, Plan
from pipeline.config import ObjectiveConfig, UpdateConfig
from pipeline.distributed import clip_grad_norm, gradient_sync
from pipeline.logprobs import sequence_logprobs
from pipeline.objectives import aggregate, entropy_gate, nll_loss, ppo_clip_loss, shaped_pg_loss
from pipeline.seeding import derive_seed


@dataclass
class UpdateContext:
    """What one update step runs with besides its config sections and rows."""
    policy: Any  # TrainState: model, optimizer, scheduler (mutated in place)
    accelerator: Any
    pad_id: int
    temperature: float  # rollout temperature: log-probs and entropies are of logits / temperature
    max_response_tokens: int  # L_max, the constant loss normaliser
    seed: int  # the run seed
    step: int


def _autocast(cfg: UpdateConfig, model: Any):
    return precision_autocast(cfg.precision, next(model.parameters()).device)


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
    """Pre-update log-probs and entropies of every micro-batch (the PPO reference, docs/method.md §2)."""
    was_training = model.training
    model.eval()
    for micro in plan.minis:
        for mb in micro:
            with _autocast(cfg, model):
                mb.old_logp, mb.old_entropy = sequence_logprobs(model, mb.input_ids, mb.attention_mask, mb.score_mask,
                                                                temperature, cfg.logprob_chunk_tokens)
    model.train(was_training)


def step_scope_gate(plan: Plan, objective: ObjectiveConfig, accelerator: Any, generator: torch.Generator) -> None:
    """Gate over every prefix token of the step, ranked by pre-update entropy (docs/method.md Q2 option)."""
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
    adv = torch.where(keep, mb.adv, torch.zeros_like(mb.adv))  # gated advantage (docs/method.md §5)
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


def optimise(plan: Plan, objective: ObjectiveConfig, cfg: UpdateConfig, ctx: UpdateContext,
             lr: float | None = None) -> dict[str, float]:
    """The PPO mini-batch loop: backward per micro-batch (no gradient sync until the last), then clip
    and step once per mini-batch. `lr` (SFT steps) overrides the learning rate for these optimizer
    steps and leaves the LR schedule of the RL steps where it was."""
    model, opt, sched = ctx.policy.model, ctx.policy.optimizer, ctx.policy.scheduler
    accelerator, temperature, seed, step = ctx.accelerator, ctx.temperature, ctx.seed, ctx.step
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
                                         max_response_tokens=ctx.max_response_tokens, world=accelerator.num_processes,
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
