"""What one training step runs, for every method of the paper's comparison (docs/method.md §9, §10).

A method is not a code path of its own: it is a combination of three settings, each read by the stage
it concerns, so that every baseline shares the one update loop and the one implementation of each
formula in `pipeline/objectives.py`:

- `prefixes.layout` (prefixes stage): what the k demonstration slots of a group hold;
- `objective.prefix_loss` (update stage): which term demonstration tokens receive;
- `sft.mode` (this module): whether a step is RL, SFT, or RL followed by an SFT step on replayed
  failures.

| recipe       | sft.mode | layout  | prefix_loss | other settings (docs/method.md sections)               |
|--------------|----------|---------|-------------|--------------------------------------------------------|
| quickstart   | off      | partial | pg          | Prefix-RFT: k=1, top-20% entropy gate (§2-§6)          |
| rft          | off      | -       | -           | k=0: Dr. GRPO (§4)                                     |
| sft          | only     | full    | nll         | token-level loss over the global batch (§9 caveat)     |
| sft-then-rft | then_rl  | full/-  | nll/-       | SFT phase, fresh optimizer, then RFT                   |
| rl-sft-loss  | off      | full    | nll         | advantage exclude_hybrid, unclipped (LUFFY's baseline) |
| luffy        | off      | full    | shaped      | gamma 0.1, gate all, unclipped on-policy tokens        |
| uft          | off      | hint    | nll         | k=N, beta 0.001, hint horizon 0.6 T (§10)              |
| relift       | replay   | -       | -           | k=0; SFT step per buffer of 0-of-N prompts (§10)       |

The step's stages (each stage's `runs` in its SPEC; `stages.step_stages`): an RL step runs prefixes ->
generate -> reward -> update (ReLIFT adds `replay` before the update); an SFT step runs prefixes ->
update, its prefixes stage laying out `sft.batch_size` prompts with their whole demonstration as the
only slot.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from pipeline.config import Config, PrefixConfig

def is_sft_step(cfg: Config, step: int) -> bool:
    """Every step under `sft.mode=only`; the first `sft.steps` under `then_rl`."""
    return cfg.sft.mode == "only" or (cfg.sft.mode == "then_rl" and step <= cfg.sft.steps)


def prefix_config(cfg: Config, step: int) -> PrefixConfig:
    """The prefixes section step `step` runs with: an SFT step lays out `sft.batch_size` (default
    `prefixes.prompts_per_step`) prompts, each with its whole demonstration as its only slot."""
    if not is_sft_step(cfg, step):
        return cfg.prefixes
    return dataclasses.replace(cfg.prefixes, prompts_per_step=cfg.sft.batch_size or cfg.prefixes.prompts_per_step,
                               samples_per_prompt=1, hybrids_per_prompt=1, layout="full")


def sft_lr(cfg: Config, step: int) -> float:
    """Learning rate of SFT step `step` (1-based): `sft.lr`, warmed up linearly over the first
    `sft.warmup_steps` steps, then constant or (`sft.decay: cosine`) decayed on a half cosine to
    `sft.min_lr_ratio` x `sft.lr` at the phase's last step (docs/method.md §9)."""
    s, warm = cfg.sft, cfg.sft.warmup_steps
    if warm and step < warm:
        return s.lr * step / warm
    if s.decay == "constant":
        return s.lr
    last = s.steps if s.mode == "then_rl" else cfg.train.total_steps
    frac = min(1.0, max(0, step - warm) / max(1, last - warm))
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def fresh_optimizer(cfg: Config, step: int) -> bool:
    """The first RL step after an SFT phase starts with a new optimizer, as the second run of the
    reference's two-run SFT -> RL would."""
    return cfg.sft.mode == "then_rl" and step == cfg.sft.steps + 1


def update_spec(cfg: Config, step: int) -> dict[str, Any]:
    """Everything of the method the update of step `step` depends on (its fingerprint hashes this)."""
    sft = is_sft_step(cfg, step) or cfg.sft.mode == "replay"
    return {"phases": "sft" if is_sft_step(cfg, step) else ("rl+sft" if sft else "rl"),
            "objective": dataclasses.asdict(cfg.objective), "sft_lr": sft_lr(cfg, step) if sft else None,
            "fresh_optimizer": fresh_optimizer(cfg, step)}
