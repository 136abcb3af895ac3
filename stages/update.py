"""update: one optimisation step on the step's scored trajectories (docs/method.md §2-§6, §9-§10).

RL phase, each part timed: `advantages` (Dr. GRPO per group), `collate` (sequences -> micro-batches;
a UFT hint is moved from the prompt into the demonstration tokens), `logprobs` (pre-update log-probs
and entropies, no grad), then per PPO mini-batch the loss (current log-probs; on demonstration tokens
the term `objective.prefix_loss` names: the gated, clipped PPO term, LUFFY's shaped term, or a
token-mean NLL; the clipped PPO term on generated tokens; constant normaliser; backward per
micro-batch) and the step (grad clip, AdamW). SFT phase (SFT steps, ReLIFT's interleaved steps): one
optimizer step on whole demonstrations, NLL summed over tokens and divided by the tokens of the whole
batch, at `sft.lr`. `run` returns a per-sequence metrics Dataset and the step's statistics; `compute`
(how a training run calls the stage, at the end of this module) also saves the checkpoint, checks the
engine/trainer log-prob mismatch and counts the step's tokens and FLOPs. Batching is pipeline/batching.py; the loss and the
optimizer loop are stages/update_loss.py.

Input: the reward dataset (RL) and/or demonstration rows (SFT). Output rows (one per trajectory):
step, group_id, slot, is_hybrid, reward, advantage, advantage_prefix, prefix_len, completion_len,
kept_prefix_tokens, entropy_mean, demo_nll (mean NLL of its demonstration tokens before the update),
phase (rl / sft).

    python -m pipeline.stage update --output-dir runs/qs --step 3 --force
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch
from datasets import Dataset, Value, concatenate_datasets

from pipeline import accounting, cache, methods
from pipeline import schema as S
from pipeline.batching import Plan, plan_batches, to_device, token_lists
from pipeline.checkpoint import (checkpoint_dir, prune_checkpoints, save_checkpoint, training_state_dir,
                                 writes_after)
from pipeline.config import ObjectiveConfig, UpdateConfig
from pipeline.graph import StageSpec, always
from pipeline.mismatch import check_logprob_mismatch, continuation_deltas, summarise
from pipeline.objectives import group_advantages
from pipeline.seeding import derive_seed
from stages.update_loss import (UpdateContext, old_logprobs, optimise, reset_optimizer, separate_old_pass,
                                step_scope_gate)

STAGE_VERSION = 3  # 2: prefix_loss pg/shaped/nll, unclipped continuation option, SFT phase, hint tokens;
# 3: fused AdamW in one process, objective.entropy_norm
REQUIRES = (S.STEP, S.GROUP_ID, S.SLOT, S.IS_HYBRID, S.HINT_LEN, S.PROMPT_IDS, S.PREFIX_IDS, S.COMPLETION_IDS,
            S.REWARD)
SFT_REQUIRES = (S.STEP, S.GROUP_ID, S.SLOT, S.IS_HYBRID, S.HINT_LEN, S.PROMPT_IDS, S.PREFIX_IDS)
METRIC_FEATURES = {"advantage_prefix": Value("float32"), "completion_len": Value("int32"),
                   "kept_prefix_tokens": Value("int32"), "entropy_mean": Value("float32"),
                   "demo_nll": Value("float32"), "phase": Value("string")}
PRODUCES = (S.STEP, S.GROUP_ID, S.SLOT, S.IS_HYBRID, S.PREFIX_LEN, S.REWARD, S.ADVANTAGE, *METRIC_FEATURES)


def run(ds: Dataset | None, cfg: UpdateConfig, objective: ObjectiveConfig, ctx: UpdateContext, *,
        sft_ds: Dataset | None = None, sft_lr: float = 0.0,
        fresh_optimizer: bool = False) -> tuple[Dataset, dict[str, float]]:
    """One training step: the RL phase on `ds` (the reward dataset; None on SFT steps), then the SFT phase
    on `sft_ds` (rows whose prefix is a whole demonstration) when it has rows. Mutates `ctx.policy`
    (model, optimizer, scheduler) in place."""
    if fresh_optimizer:
        reset_optimizer(ctx.policy)
    parts, stats = [], {}
    if ds is not None:
        S.require_columns(ds, REQUIRES, "update")
        table, stats = rl_phase(ds, cfg, objective, ctx)
        parts.append(table)
    if sft_ds is not None and len(sft_ds):
        S.require_columns(sft_ds, SFT_REQUIRES, "update", "SFT")
        table, sft_stats = sft_phase(sft_ds, cfg, objective, ctx, lr=sft_lr)
        parts.append(table)
        stats.update(sft_stats if ds is None else {f"sft_{k}": v for k, v in sft_stats.items()})
    if not parts:
        raise ValueError("update: neither RL rows nor SFT rows to train on")
    return (parts[0] if len(parts) == 1 else concatenate_datasets(parts)), stats


def rl_phase(ds: Dataset, cfg: UpdateConfig, objective: ObjectiveConfig,
             ctx: UpdateContext) -> tuple[Dataset, dict[str, float]]:
    """Advantages, pre-update log-probs, PPO mini-batches (docs/method.md §2-§6)."""
    accelerator, seed, step = ctx.accelerator, ctx.seed, ctx.step
    timings, t0 = {}, time.perf_counter()
    torch.manual_seed(derive_seed(seed, step, "update"))
    cols = S.column_lists(ds, S.REWARD, S.GROUP_ID, S.IS_HYBRID)
    rewards = torch.tensor(cols[S.REWARD], dtype=torch.float32)  # [S]
    groups = torch.tensor(cols[S.GROUP_ID])  # [S]
    hybrid = torch.tensor(cols[S.IS_HYBRID], dtype=torch.bool)  # [S]
    adv_prefix, adv_cont = group_advantages(rewards, groups, hybrid, objective.advantage, objective.std_scale)
    timings["advantages"] = time.perf_counter() - t0

    t = time.perf_counter()
    plan = plan_batches(ds, adv_prefix, adv_cont, cfg, objective, pad_id=ctx.pad_id, seed=seed, step=step,
                        rank=accelerator.process_index, world=accelerator.num_processes)
    plan.minis = [[to_device(mb, accelerator.device) for mb in micro] for micro in plan.minis]
    timings["collate"] = time.perf_counter() - t

    t = time.perf_counter()
    step_gate = (objective.gate_scope == "step" and objective.gate not in ("all", "none")
                 and objective.prefix_loss != "nll")
    separate = separate_old_pass(cfg, step_gate)
    if separate:
        old_logprobs(ctx.policy.model, plan, cfg, ctx.temperature)
    if step_gate:
        step_scope_gate(plan, objective, accelerator,
                        torch.Generator().manual_seed(derive_seed(seed, step, "gate-step")))
    timings["logprobs"] = time.perf_counter() - t

    t = time.perf_counter()
    totals = optimise(plan, objective, cfg, ctx)
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


def sft_phase(ds: Dataset, cfg: UpdateConfig, objective: ObjectiveConfig, ctx: UpdateContext, *,
              lr: float) -> tuple[Dataset, dict[str, float]]:
    """One optimizer step on whole demonstrations: NLL summed over every demonstration token of the
    batch and divided by their count across all micro-batches and ranks, so gradient accumulation over
    m micro-batches equals one big batch (docs/method.md §9 caveat)."""
    t = time.perf_counter()
    sft_objective = dataclasses.replace(objective, prefix_loss="nll", nll_coef=1.0, entropy_coef=0.0)
    zeros = torch.zeros(len(ds))
    acc = ctx.accelerator
    plan = plan_batches(ds, zeros, zeros, dataclasses.replace(cfg, mini_batches=1), sft_objective,
                        pad_id=ctx.pad_id, seed=ctx.seed, step=ctx.step, rank=acc.process_index,
                        world=acc.num_processes)
    plan.minis = [[to_device(mb, acc.device) for mb in micro] for micro in plan.minis]
    totals = optimise(plan, sft_objective, cfg, ctx, lr=lr)
    return _metrics(ds, plan, zeros, zeros, totals, {"sft": time.perf_counter() - t}, acc, "sft")


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


# ----------------------------------------------------------------------------------------------------
# the stage in a run: inputs, fingerprint slice, checkpoint, accounting


def config_slice(cfg: Any, step: int) -> tuple:
    """The update section, what the method makes of this step (`methods.update_spec`), the rollout
    temperature and L_max the loss is computed with, the run seed and the step."""
    return (dataclasses.asdict(cfg.update), methods.update_spec(cfg, step), cfg.generate.temperature,
            cfg.generate.max_response_tokens, cfg.train.seed, step)


def _inputs(cfg: Any, step: int) -> tuple[str, ...]:
    """SFT steps train on the prefixes rows; RL steps on the reward rows, ReLIFT's also on the replay rows."""
    if methods.is_sft_step(cfg, step):
        return ("prefixes",)
    return ("reward", "replay") if cfg.sft.mode == "replay" else ("reward",)


def compute(job: Any, step: int, inputs: dict[str, cache.StageRecord]) -> tuple[Dataset, dict[str, Any]]:
    """On every process: one `run` on the policy after step-1, then the checks and accounting of the
    step, and the checkpoint of step `step` (weights + training state)."""
    cfg, sft_step = job.cfg, methods.is_sft_step(job.cfg, step)
    src = inputs["prefixes" if sft_step else "reward"].load()
    sft_src = src if sft_step else (inputs["replay"].load() if "replay" in inputs else None)
    state = job.load_policy(step - 1, with_optimizer=True)
    job.release_backend()  # a colocated engine frees its KV cache and weights for the update
    t0 = time.perf_counter()
    ctx = UpdateContext(policy=state, accelerator=job.acc, pad_id=job.tokenizer.pad_token_id,
                        temperature=cfg.generate.temperature, max_response_tokens=cfg.generate.max_response_tokens,
                        seed=cfg.train.seed, step=step)
    ds, stats = run(None if sft_step else src, cfg.update, cfg.objective, ctx, sft_ds=sft_src,
                    sft_lr=methods.sft_lr(cfg, step), fresh_optimizer=methods.fresh_optimizer(cfg, step))
    seconds = time.perf_counter() - t0
    check_logprob_mismatch(stats, cfg.generate, step)
    tokens = _tokens(src) + (_tokens(sft_src) if sft_src is not None and not sft_step else 0)
    stats.update({} if sft_step else _step_summary(src), tokens=tokens,
                 tokens_per_s=round(tokens / seconds, 1), phase="sft" if sft_step else "rl")
    stats.update(accounting.update_flops(state.model, tokens, len(src), seconds, cfg.update.precision,
                                         forwards=3.0 + stats.get("separate_old_logprob_pass", 0.0)))
    state.step, state.policy_fp = step, job.policy_fp(step)
    weights, training_state = writes_after(cfg, step)  # every step unless train.state_every > 1
    save_checkpoint(job.acc, state, job.tokenizer, job.out,
                    {"seed": cfg.train.seed, "sampler_position": step * cfg.prefixes.prompts_per_step},
                    weights=weights, training_state=training_state)
    return ds, stats


def checkpoint_complete(job: Any, step: int) -> bool:
    """Training continues from a reused update only when its weights and training state are on disk."""
    return all(cache.folder_status(d, job.policy_fp(step)) == "complete"
               for d in (checkpoint_dir(job.out, step), training_state_dir(job.out, step)))


def prune(job: Any, step: int) -> None:
    """After a new checkpoint is complete (its update stage written): drop those `train.keep_last` /
    `train.save_every` no longer keep."""
    c = job.cfg.train
    prune_checkpoints(job.out, step, c.keep_last, c.save_every, c.total_steps)


def _tokens(ds: Dataset) -> int:
    """Prompt + demonstration + completion tokens of a stage's rows."""
    cols = [c for c in (S.PROMPT_IDS, S.PREFIX_IDS, S.COMPLETION_IDS) if c in ds.column_names]
    return sum(len(x) for col in S.column_lists(ds, *cols).values() for x in col)


def _step_summary(ds: Dataset) -> dict[str, float]:
    """Reward and prefix statistics of a step's trajectories."""
    c = S.column_lists(ds, S.REWARD, S.IS_HYBRID, S.PREFIX_RATIO, S.PREFIX_IDS, S.COMPLETION_IDS)
    r = np.array(c[S.REWARD], dtype=float)
    hyb = np.array(c[S.IS_HYBRID], dtype=bool)
    ratios = np.array(c[S.PREFIX_RATIO], dtype=float)[hyb]
    lengths = np.array([len(f) + len(x) for f, x in zip(c[S.PREFIX_IDS], c[S.COMPLETION_IDS])], dtype=float)
    out = {"reward_mean": float(r.mean()), "reward_on_policy": float(r[~hyb].mean()) if (~hyb).any() else float("nan"),
           "response_length": float(lengths.mean()),
           "completion_length": float(np.mean([len(x) for x in c[S.COMPLETION_IDS]]))}
    if hyb.any():
        out.update(reward_hybrid=float(r[hyb].mean()), prefix_ratio_mean=float(ratios.mean()),
                   prefix_ratio_min=float(ratios.min()), prefix_ratio_max=float(ratios.max()))
    return out


SPEC = StageSpec("update", STAGE_VERSION, config_slice, _inputs, compute, policy="previous", runs=always,
                 produces=PRODUCES, collective=True, valid=checkpoint_complete, after=prune)
