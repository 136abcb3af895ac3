"""The paper's comparison at embedded scale, made fair: budgets matched on compute, every method tuned the same
way on a validation split, every RL method also started from the SFT model, and every row that was still
improving when its budget ran out flagged as not converged (SFT included).

    python scripts/compare_methods.py --output-dir runs/compare [--preset quick|default|full]
        [--tasks toy,countdown] [--methods a,b,...] [--seeds 0,1,2] [--jobs 2] [--dry-run] [section.field=value ...]

Protocol (printed at the start of every run and written to OUTPUT/protocol.md):

- Tasks: `toy` (the chain task, recipe compare_toy, held-out suite `toy`, validation suite `toy_val`) and
  `countdown` (recipe compare_countdown, `countdown` / `countdown_val`). Validation problems come from the
  test partition but are not in the held-out split, and no training problem is in either.
- Compute: every run is charged the update FLOPs and the rollout tokens/FLOPs it spends (summary.json
  `compute`, pipeline/accounting.py). The budget is R RL steps of the base recipe. The matched SFT budget:
  an RL step processes prompts x samples sequences once to generate and 3 forward-equivalents to update, an
  SFT step sft.batch_size demonstrations 3 forward-equivalents, so R RL steps cost R x ratio SFT steps, ratio =
  prompts x samples x 4 / (sft.batch_size x 3) (10.7 at 32 x 8 against 32): 107 steps at the default R = 10.
  That is far from enough for SFT to converge (docs/results.md), so SFT is not held to it: "SFT (converged)"
  trains the preset's sft_cap x the matched budget with its learning rate decayed on a cosine to 0 over that
  run (sft.decay=cosine, as LUFFY's SFT run; on the chain task at lr 1e-3 a constant rate is at 0.885
  validation after 665 steps and swings between 0.75 and 0.995 up to 2,128, while a cosine ends flat at
  0.96: docs/method.md §9) and is charged the whole run. "SFT at matched compute" is the same recipe trained
  for the matched budget alone: its own runs, the cosine over those steps, swept and selected like every row.
  Every SFT run validates SFT_VALIDATIONS times. SFT -> X rows start from the converged SFT
  checkpoint of the same seed and are charged the whole SFT run plus their own. A row whose best validated
  checkpoint is one of its last two validation points is counted as "still rising" (an SFT run, whose last
  points are nearly one model since its rate decays to 0: when the best point of its last quarter beats the
  best before it by more than two standard errors, still_rising_annealed), and a run with early
  stopping (eval.validation.patience > 0, none of the presets) that its step cap ended before its plateau rule
  as "capped": both are "not converged" in the table. The measured
  compute of every run is reported beside its accuracy, with wall time as a second view.
- Tuning: each method's learning rate (update.lr for the RL phase) is chosen from the same three values (LRS;
  SFT's sft.lr from SFT_LRS, the same grid moved up two points, where SFT's optimum lies: docs/results.md) by
  the best validation accuracy on seed 0; seeds 1.. run at the chosen value. Every run validates every R/5
  steps (SFT: SFT_VALIDATIONS times over its run) on the validation suite (the preset's number of
  problems), and its checkpoint with the best validation accuracy is the one evaluated on the held-out split.
  Nothing is chosen on held-out. The Prefix-RFT ablations (gate all / bottom / random, uniform schedule)
  change one component at Prefix-RFT's chosen learning rate, as the paper's ablations change one component of
  its tuned recipe (`default`); `full` sweeps them like every other method.
- Rows: METHODS below. Prefix-RFT and its ablations are the base recipe itself.
- Runs: --jobs at once (default: the preset's), each a subprocess with cpu_count / jobs threads; SFT runs get
  a free slot first (the SFT -> X rows wait for them); with more than one job the tasks share the slots and
  run side by side (no slot idles while a task waits on its last runs). Every run is its own process with its own seed, so the
  numbers do not depend on --jobs (up to the threads' summation order); wall times do, and are comparable
  within one command. Runs whose curation is the same (same data, same starting tokenizer and weights: the
  curate stage's fingerprint) curate once: later ones get the first one's curate folder linked in. The held-out
  evaluations of a task's selected checkpoints wait until all its runs are trained and then run in one
  evaluation.run process (OUTPUT/<task>/heldout_eval.log), each into its run's eval/selected: one process start
  and suite preparation for ~47 checkpoints, not one each (each sample's seed is its own, so the numbers are
  those of separate processes).

Every run is a normal run directory, OUTPUT/<task>/runs/<method>/lr<lr>-seed<k>; an interrupted comparison
resumes where it stopped (finished runs and evaluations are kept, a half-done run resumes itself); a run
directory trained with other settings (another preset, budget or code default) is refused with the fields that
differ, never read as this comparison's, and so is a task whose starting policy changed under the same name
(OUTPUT/<task>/starting_model.json; e.g. a rebuilt embedded policy). Writes
per task OUTPUT/<task>/results.{json,md} (held-out mean ± std per level, selected step, compute, wall time)
and accuracy_vs_compute.png, and OUTPUT/results.md for all tasks.

Presets (times in docs/results.md): `quick` (seed 0, one learning rate, 6 RL steps, one evaluation sample: a
smoke run of the harness, ranks nothing), `default` (3 seeds, the sweep, 10 RL steps, SFT 4 x its matched
107 steps, 100 validation problems per task, ablations at Prefix-RFT's learning rate, "SFT at matched compute"
only when --methods names sft-matched, 2 jobs), `full` (3 seeds, the sweep for every row, 50 RL steps, SFT 4 x
533 steps, the whole validation split, 2 jobs).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.config import (ConfigError, apply_overrides, config_from_dict, merge_recipes, migrate,  # noqa: E402
                             read_recipe, resolve_recipe_path)
from pipeline.errors import UserError  # noqa: E402
from pipeline.summary import read_metrics  # noqa: E402


@dataclass(frozen=True)
class Method:
    name: str
    recipe: str
    overrides: tuple[str, ...] = ()
    label: str = ""
    prefix_rft: bool = False
    from_sft: bool = False  # starts from the selected checkpoint of the SFT run of the same seed
    lr_of: str = ""  # an ablation: trains at this method's chosen LR unless the preset sweeps ablations too
    matched: bool = False  # SFT trained for the matched budget alone (its own runs; no sft_cap)


@dataclass(frozen=True)
class Task:
    name: str
    recipe: str
    suite: str  # held-out
    val_suite: str


BASE = "<base>"
METHODS: tuple[Method, ...] = (
    Method("sft", "sft", label="SFT (converged)"),
    Method("sft-matched", "sft", label="SFT at matched compute", matched=True),
    Method("rft", "rft", label="RFT (Dr. GRPO)"),
    Method("sft-rft", "rft", label="SFT -> RFT", from_sft=True),
    Method("sft-prefix-rft", BASE, label="SFT -> Prefix-RFT", prefix_rft=True, from_sft=True),
    Method("sft-luffy", "luffy", label="SFT -> LUFFY", from_sft=True),
    Method("luffy", "luffy", label="LUFFY"),
    Method("prefix-rft", BASE, label="Prefix-RFT", prefix_rft=True),
    Method("gate-all", BASE, ("objective.gate=all",), "Prefix-RFT, gate all", True, lr_of="prefix-rft"),
    Method("gate-bottom", BASE, ("objective.gate=bottom",), "Prefix-RFT, bottom-20% gate", True, lr_of="prefix-rft"),
    Method("gate-random", BASE, ("objective.gate=random",), "Prefix-RFT, random-20% gate", True, lr_of="prefix-rft"),
    Method("uniform", BASE, ("prefixes.schedule=uniform",), "Prefix-RFT, uniform schedule", True,
           lr_of="prefix-rft"),
    Method("rl-sft-loss", "rl-sft-loss", label="RL w/ SFT loss"),  # not in the rows: opt-in
)
BY_NAME = {m.name: m for m in METHODS}
DEFAULT_METHODS = tuple(m.name for m in METHODS if m.name != "rl-sft-loss")
TASKS = {"toy": Task("toy", "compare_toy", "toy", "toy_val"),
         "countdown": Task("countdown", "compare_countdown", "countdown", "countdown_val")}
LRS = (3e-5, 1e-4, 3e-4)  # the RL phase's learning rates (update.lr)
# SFT's (sft.lr): the same three-point grid as RL's, moved up two points, where SFT's optimum lies (on the chain
# task a cosine over 428 steps ends at 0.95 validation at 3e-3 and 0.91 at 1e-3; 1e-4 reached 0.52 in 642 steps)
SFT_LRS = (3e-4, 1e-3, 3e-3)
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"rl_steps": 6, "seeds": (0,), "lrs": (1e-4,), "eval": ("eval.samples_per_problem=1",),
              "val_problems": 60, "jobs": 1, "sft_cap": 2},
    # default: 47 runs per task (the four ablations take Prefix-RFT's learning rate; 2 at once); SFT trains to
    # convergence over 4 x its matched 107 steps; the row "SFT at matched compute" (5 more runs) only on request
    # (--methods), so that the command fits in 90 minutes on the 2-core machine (docs/results.md)
    "default": {"rl_steps": 10, "seeds": (0, 1, 2), "lrs": LRS, "sft_lrs": SFT_LRS, "eval": (), "val_problems": 100,
                "sweep_ablations": False, "jobs": 2, "sft_cap": 4,
                "methods": tuple(m for m in DEFAULT_METHODS if m != "sft-matched")},
    "full": {"rl_steps": 50, "seeds": (0, 1, 2), "lrs": LRS, "sft_lrs": SFT_LRS, "eval": (), "val_problems": 100000,
             "sweep_ablations": True, "jobs": 2, "sft_cap": 4},
}
VALIDATION_POINTS = 5
SFT_VALIDATIONS = 8  # SFT validates every (its steps) // 8 steps: 8 points over its cosine
RL_FORWARDS, SFT_FORWARDS = 4.0, 3.0  # RL: generation (1) + update (3); SFT: update (3), per token


def _own_settings(recipe: str) -> dict[str, Any]:
    """The settings a recipe file states itself (not the ones it inherits), old key names renamed."""
    import yaml

    path = resolve_recipe_path(recipe)
    raw = migrate(yaml.safe_load(path.read_text()) or {}, str(path))
    raw.pop("inherit", None)
    return raw


def sft_steps_for(shared: dict[str, Any], rl_steps: int) -> int:
    """SFT steps that cost what `rl_steps` RL steps cost (module docstring): per token, an RL sequence costs
    RL_FORWARDS and an SFT sequence SFT_FORWARDS forward passes; RL steps hold prompts x samples sequences."""
    p = shared.get("prefixes") or {}
    rl_seqs = int(p.get("prompts_per_step", 32)) * int(p.get("samples_per_prompt", 8))
    sft_batch = int((_own_settings("sft").get("sft") or {}).get("batch_size") or p.get("prompts_per_step", 32))
    return max(1, round(rl_steps * rl_seqs * RL_FORWARDS / (sft_batch * SFT_FORWARDS)))


def method_config(method: Method, base: str, seed: int, overrides: list[str], *, lr: float,
                  rl_steps: int, val_suite: str, sft_checkpoint: str | None = None,
                  val_problems: int = 100000, sft_cap: int = 1) -> dict[str, Any]:
    """The raw recipe of one run: the base recipe (+ user overrides: the shared budget), the method's own
    settings, seed, learning rate, step count, validation and checkpoint cadence. SFT trains to convergence:
    `sft_cap` x the matched budget (sft_steps_for), its learning rate on a cosine to 0 over the run, validated
    SFT_VALIDATIONS times. Raises ConfigError when the result is invalid."""
    shared, _ = read_recipe(base)
    shared = apply_overrides(shared, overrides)
    if method.recipe == BASE and int((shared.get("prefixes") or {}).get("hybrids_per_prompt", 1)) < 1:
        raise ConfigError(f"task recipe {base}: {method.name} is the base recipe itself, so the base must be a "
                          "Prefix-RFT recipe (prefixes.hybrids_per_prompt >= 1); use compare_toy or "
                          "compare_countdown, or leave the Prefix-RFT methods out with --methods")
    own = _own_settings(method.recipe) if method.recipe not in (BASE, base) else {}
    own.get("train", {}).pop("total_steps", None)  # the budget is the base's
    raw = apply_overrides(merge_recipes(shared, own), list(method.overrides))
    sft = (raw.get("sft") or {}).get("mode") == "only"
    steps = sft_steps_for(shared, rl_steps) if sft else rl_steps
    total = steps * (max(1, sft_cap) if sft and not method.matched else 1)
    every = max(1, total // (SFT_VALIDATIONS if sft else VALIDATION_POINTS))
    # the training state (for resume) at the validation points only: a killed run redoes at most `every` steps
    extra = [f"train.total_steps={total}", f"train.seed={seed}", f"train.save_every={every}",
             f"train.state_every={every}",
             f"{'sft' if sft else 'update'}.lr={lr:.6e}",  # YAML reads 3e-05 as a string, 3.000000e-05 as a float
             f"eval.validation.every={every}",
             f"eval.validation.suites=[{val_suite}]", f"eval.validation.problems={val_problems}",
             "eval.at_start=false", "eval.at_end=false"]
    if sft:
        extra += [f"sft.warmup_steps={max(1, steps // 20)}", "sft.decay=cosine", "sft.min_lr_ratio=0"]
    if method.from_sft:
        if sft_checkpoint is None:
            raise ConfigError(f"{method.name} starts from the SFT run's checkpoint; none was given")
        extra.append(f"model.name_or_path={sft_checkpoint}")
    raw = apply_overrides(raw, extra)
    config_from_dict(raw, f"{method.name} on {base}")  # validate now, not an hour in
    return raw


# ---------------------------------------------------------------------------------------------------
# one run's numbers


@dataclass
class RunResult:
    method: str
    seed: int
    accuracy: float
    by_level: dict[str, float]
    reward_end: float | None
    wall_seconds: float
    curve: list[tuple[int, float]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    lr: float = 0.0
    selected_step: int = 0
    compute: dict[str, float] = field(default_factory=dict)
    capped: bool = False  # trained with early stopping, but its step cap ended it first (capped_by_steps)
    rising: bool | None = None  # still rising at the end (read_run); None (a hand-built result): still_rising


def _wall(summary: dict[str, Any]) -> float:
    """A run's wall seconds over every command that worked on it (a resumed run's summary also has the
    last command's alone); summaries written before the total existed have only the latter."""
    return summary.get("wall_seconds_total", summary["wall_seconds"])


def mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value)."""
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, 0.0
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def validation_curve(run_dir: Path, val_suite: str, rows: list[dict[str, Any]] | None = None) -> list[tuple[int, float]]:
    """(step, validation accuracy) of a run, from its metrics rows (read from run_dir unless given)."""
    rows = read_metrics(run_dir) if rows is None else rows
    key = f"val_{val_suite}_accuracy"
    return [(r["step"], r[key]) for r in rows if r.get(key) is not None]


def still_rising(curve: list[tuple[int, float]], selected: int) -> bool:
    """True when the selected (best validated) checkpoint is one of the last two validation points: the
    run was still improving when its budget ran out, so it is not converged at this budget. For runs at a
    constant learning rate; an annealed run uses `still_rising_annealed`."""
    steps = sorted(s for s, _ in curve)
    return len(steps) >= 2 and selected >= steps[-2]


def still_rising_annealed(curve: list[tuple[int, float]], stderr: dict[int, float]) -> bool:
    """For a run whose learning rate decays to 0 at its last step (SFT here): its last validation points are
    nearly the same model, so the best falling among them says nothing. Such a run is still rising when the best
    point of its last quarter (where the rate is below 15% of its peak) beats the best point before it by more
    than two standard errors of their difference (`stderr` per step; 0 where unknown): it was still learning
    when its rate ran out, and a longer schedule would likely end higher."""
    pts = sorted(curve)
    k = max(1, len(pts) // 4)
    if len(pts) <= k:
        return False
    (s_tail, a_tail), (s_head, a_head) = (max(part, key=lambda pt: pt[1]) for part in (pts[-k:], pts[:-k]))
    return a_tail - a_head > 2 * math.hypot(stderr.get(s_tail, 0.0), stderr.get(s_head, 0.0))


def validation_stderr(run_dir: Path, val_suite: str) -> dict[int, float]:
    """Standard error of each validation point (step -> stderr), from the run's validation summaries."""
    out = {}
    for f in (run_dir / "eval" / "validation").glob("step-*/summary.json"):
        suite = (json.loads(f.read_text()).get("suites") or {}).get(val_suite) or {}
        if suite.get("stderr") is not None:
            out[int(f.parent.name.removeprefix("step-"))] = float(suite["stderr"])
    return out


def annealed(raw: dict[str, Any]) -> bool:
    """True for the config (a run's config.yaml) of an SFT run whose learning rate decays on a cosine to 0
    (this script's SFT runs since 2026-12-03)."""
    sft = raw.get("sft") or {}
    return sft.get("mode") == "only" and sft.get("decay") == "cosine" and float(sft.get("min_lr_ratio") or 0) == 0


def capped_by_steps(raw: dict[str, Any], summary: dict[str, Any]) -> bool:
    """True when a run that trains to its validation plateau (early stopping: eval.validation.patience > 0, as
    a user may give SFT) was ended by its step cap instead: it never met the plateau rule, so it is not known to be
    converged, wherever its best validated checkpoint lies (a noisy dip at the last points hides that from
    `still_rising`). Runs without early stopping always end at their cap; for them this is False. `raw`: the
    run's config.yaml."""
    patience = int(((raw.get("eval") or {}).get("validation") or {}).get("patience") or 0)
    return patience > 0 and not summary.get("stopped_early") and summary.get("steps", 0) >= summary.get("steps_cap", 1)


def select_step(curve: list[tuple[int, float]]) -> int:
    """The validated step with the best accuracy (the earliest among ties: the cheaper checkpoint)."""
    if not curve:
        raise UserError("a run has no validation points; the comparison selects checkpoints on validation")
    best = max(a for _, a in curve)
    return min(s for s, a in curve if a == best)


def evaluate_checkpoint(checkpoint: Path | str, suite: str, out: Path, eval_overrides: list[str],
                        priority: int = 0) -> dict[str, Any]:
    """Held-out evaluation of one checkpoint (evaluation.run in a subprocess; cached in `out`)."""
    return evaluate_checkpoints([(checkpoint, out)], suite, eval_overrides, out / "eval.log", priority)[0]


def evaluate_checkpoints(jobs: list[tuple[Path | str, Path]], suite: str, eval_overrides: list[str], log: Path,
                         priority: int = 0) -> list[dict[str, Any]]:
    """Held-out evaluation of each (checkpoint, output folder), cached in its folder: the ones not yet evaluated
    in one evaluation.run subprocess (its log in `log`), which pays the imports and the suite's preparation once
    rather than once per checkpoint."""
    todo = [(str(c), o) for c, o in jobs if not (o / "summary.json").is_file()]
    if todo:
        for _, o in todo:
            o.mkdir(parents=True, exist_ok=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        rc = SLOTS.run([sys.executable, "-m", "evaluation.run", "--model", ",".join(c for c, _ in todo),
                        "--suites", suite, "--output-dir", ",".join(str(o) for _, o in todo), *eval_overrides],
                       log, priority)
        if rc != 0:
            raise UserError(f"evaluation of {len(todo)} checkpoint(s) failed (exit {rc}); see {log}")
    return [json.loads((o / "summary.json").read_text())["suites"][suite] for _, o in jobs]


def read_run(run_dir: Path, method: str, seed: int, lr: float, task: Task, held: dict[str, Any],
             step: int, extra_compute: dict[str, float] | None = None) -> RunResult:
    """One finished run's numbers: held-out accuracy of its selected checkpoint, compute, validation curve, and
    whether it is converged (an SFT run on a cosine to 0: still_rising_annealed; any other: still_rising)."""
    import yaml

    summary = json.loads((run_dir / "summary.json").read_text())
    raw = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    rows = read_metrics(run_dir)
    compute = dict(summary.get("compute") or {})
    wall, curve = _wall(summary), validation_curve(run_dir, task.val_suite, rows)
    rising = (still_rising_annealed(curve, validation_stderr(run_dir, task.val_suite)) if annealed(raw)
              else still_rising(curve, step))
    for k, v in (extra_compute or {}).items():
        compute[k] = compute.get(k, 0.0) + v
    return RunResult(method, seed, held["accuracy"], dict(held.get("accuracy_by_level", {})),
                     summary.get("reward_last_quarter"), wall + (extra_compute or {}).get("wall_seconds", 0.0),
                     curve, rows, lr, step, compute, capped_by_steps(raw, summary), rising)


def _rising(r: RunResult) -> bool:
    return still_rising(r.curve, r.selected_step) if r.rising is None else r.rising


def lr_edge(lr: float, sweep: dict[float, float] | None) -> str | None:
    """'low' or 'high' when `lr` was chosen at an end of a swept grid of two or more values (the best value may lie
    outside it), else None."""
    if not sweep or len(sweep) < 2:
        return None
    return "low" if lr == min(sweep) else "high" if lr == max(sweep) else None


def aggregate(results: list[RunResult], base: dict[str, Any] | None,
              sweeps: dict[str, dict[float, float]] | None = None) -> dict[str, Any]:
    """Per method: accuracy mean ± std over seeds, per level, chosen LR (with seed 0's validation accuracy at every
    LR of its sweep, and whether the choice sits at an end of the grid), selected steps, compute, wall time."""
    out: dict[str, Any] = {"base": base, "methods": {}}
    for m in METHODS:
        rs = sorted((r for r in results if r.method == m.name), key=lambda r: r.seed)
        if not rs:
            continue
        acc, acc_sd = mean_std([r.accuracy for r in rs])
        levels = sorted({lv for r in rs for lv in r.by_level}, key=int)
        rewards = [r.reward_end for r in rs if r.reward_end is not None]
        flops = [r.compute.get("total_flops", 0.0) for r in rs]
        out["methods"][m.name] = {
            "label": m.label, "recipe": m.recipe, "overrides": list(m.overrides), "from_sft": m.from_sft,
            "seeds": [r.seed for r in rs], "lr": rs[0].lr, "selected_steps": [r.selected_step for r in rs],
            "lr_sweep": {f"{x:g}": a for x, a in sorted((sweeps or {}).get(m.name, {}).items())} or None,
            "lr_at_edge": lr_edge(rs[0].lr, (sweeps or {}).get(m.name)),
            "accuracy": acc, "accuracy_std": acc_sd, "accuracy_per_seed": [r.accuracy for r in rs],
            "by_level": {lv: mean_std([r.by_level[lv] for r in rs if lv in r.by_level]) for lv in levels},
            "reward_end": mean_std(rewards)[0] if rewards else None,
            "total_flops": mean_std(flops)[0],
            "rollout_tokens": mean_std([r.compute.get("rollout_tokens", 0.0) for r in rs])[0],
            "wall_seconds": mean_std([r.wall_seconds for r in rs])[0],
            "curves": {str(r.seed): r.curve for r in rs},
            "still_rising": sum(_rising(r) for r in rs),
            "capped": sum(r.capped for r in rs),
            # seeds not known to be converged: still rising, or ended by the step cap before the plateau rule
            "not_converged": sum(_rising(r) or r.capped for r in rs),
        }
    return out


def results_markdown(agg: dict[str, Any], header: str) -> str:
    methods = agg["methods"]
    levels = sorted({lv for v in methods.values() for lv in v["by_level"]}, key=int)
    head = ["method", "lr", "held-out acc. (mean ± std)", *[f"L{lv}" for lv in levels], "selected step(s)",
            "not converged", "compute (TFLOP)", "rollout tokens", "wall s"]
    lines = [header, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    if agg.get("base"):
        b = agg["base"]
        lines.append("| base policy | - | " + f"{100 * b['accuracy']:.1f}" + " | "
                     + " | ".join(f"{100 * b.get('accuracy_by_level', {}).get(lv, float('nan')):.1f}" for lv in levels)
                     + " | - | - | - | - | - |")
    for v in methods.values():
        edge = v.get("lr_at_edge")
        cells = [v["label"], f"{v['lr']:g}" + (f" ({edge} end)" if edge else ""),
                 f"{100 * v['accuracy']:.1f} ± {100 * v['accuracy_std']:.1f}",
                 *[f"{100 * v['by_level'][lv][0]:.1f} ± {100 * v['by_level'][lv][1]:.1f}" if lv in v["by_level"]
                   else "-" for lv in levels],
                 ",".join(map(str, v["selected_steps"])), _not_converged_cell(v),
                 f"{v['total_flops'] / 1e12:.2f}", f"{v['rollout_tokens']:.0f}", f"{v['wall_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    rising = [v["label"] for v in methods.values() if v["not_converged"]]
    if rising:
        lines += ["", f"**Not converged at this budget: {'; '.join(rising)}.** \"not converged\" counts the seeds whose "
                  "best validated checkpoint was one of their last two validation points (accuracy was still "
                  "going up when the budget ran out; for SFT, whose learning rate decays to 0, whose best point in "
                  "the last quarter of the run beats the best before it by more than two standard errors) and, "
                  "for runs with early stopping, "
                  "the seeds their step cap ended before the plateau rule did (\"capped\"). Compare these rows at "
                  "a larger budget (`--preset full`, or raise the RL steps) before drawing conclusions from them."]
    edges = [f"{v['label']} ({v['lr_at_edge']} end; seed 0's best validation "
             + " / ".join(f"{a:.3f} at {x}" for x, a in v["lr_sweep"].items()) + ")"
             for v in methods.values() if v.get("lr_at_edge")]
    if edges:
        lines += ["", f"**Learning rate chosen at an end of its grid: {'; '.join(edges)}.** The best value may lie "
                  "outside the grid; a wider sweep (`--lrs`, `--sft-lrs`) would say."]
    return "\n".join(lines) + "\n"


def _not_converged_cell(v: dict[str, Any]) -> str:
    cell = f"{v['not_converged']}/{len(v['seeds'])}"
    return cell + (f" ({v['capped']} capped)" if v["capped"] else "")


_PLOT_LOCK = threading.Lock()  # pyplot's state is global: two tasks finishing together plot one at a time


def plot(agg: dict[str, Any], out: Path, title: str) -> list[str]:
    """accuracy_vs_compute.png: held-out accuracy (± std over seeds) against compute and against wall time."""
    with _PLOT_LOCK:
        return _plot(agg, out, title)


def _plot(agg: dict[str, Any], out: Path, title: str) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e .[dev]); skipping plots", file=sys.stderr)
        return []
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for i, v in enumerate(agg["methods"].values()):  # 11 rows: the default 10-colour cycle would repeat one
        style = {"color": plt.cm.tab20(i % 20), "marker": "os^Dv"[i % 5], "linestyle": "none"}
        for ax, x in zip(axes, (v["total_flops"] / 1e12, v["wall_seconds"])):
            ax.errorbar([x], [100 * v["accuracy"]], yerr=[100 * v["accuracy_std"]], capsize=3, label=v["label"],
                        **style)
    if agg.get("base"):
        for ax in axes:
            ax.axhline(100 * agg["base"]["accuracy"], color="grey", ls="--", lw=1, label="base policy")
    axes[0].set(xlabel="compute charged (TFLOP: update + rollout)", ylabel="held-out accuracy (%)", title=title)
    axes[1].set(xlabel="wall time (s, this machine)", title="the same, against wall time")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_compute.png", dpi=120)
    plt.close("all")
    return ["accuracy_vs_compute.png"]


# ---------------------------------------------------------------------------------------------------
# running


class Slots:
    """At most `jobs` training or evaluation subprocesses at once, each with cpu_count / jobs threads (unless
    OMP_NUM_THREADS is set), so that runs never oversubscribe the machine. A free slot goes to the waiting
    subprocess with the lowest priority number, first come first served among equals (SFT runs first: the
    SFT -> X rows wait for them)."""

    def __init__(self, jobs: int = 1):
        self.jobs = max(1, jobs)
        self.free = self.jobs
        self.cond = threading.Condition()
        self.queue: list[tuple[int, int]] = []  # (priority, ticket) of waiting subprocesses
        self.tickets = 0
        threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // self.jobs))
        self.env = {**os.environ, "OMP_NUM_THREADS": threads}

    def run(self, cmd: list[str], log_path: Path, priority: int = 0, before: Any = None) -> int:
        """Run `cmd` when a slot is free (`before()` first, once the slot is held); returns its exit code."""
        with self.cond:
            me = (priority, self.tickets)
            self.tickets += 1
            heapq.heappush(self.queue, me)
            self.cond.wait_for(lambda: self.free > 0 and self.queue[0] == me)
            heapq.heappop(self.queue)
            self.free -= 1
            self.cond.notify_all()
        try:
            if before is not None:
                before()
            with open(log_path, "a") as log:
                return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=self.env).returncode
        finally:
            with self.cond:
                self.free += 1
                self.cond.notify_all()


SLOTS = Slots(1)


class CurateShare:
    """One curation per distinct curate fingerprint, not one per run. Most runs of a task curate the same data
    with the same tokenizer (~15 s of math-verify over 9,530 demonstrations each on the 2-core machine); before
    a run starts, a complete curate folder of an earlier run with the run's own fingerprint is linked into its
    directory, and the run's orchestrator reuses it exactly as it reuses its own after a restart (same
    fingerprint, same file manifest). A run whose fingerprint no earlier run had curates for itself."""

    def __init__(self):
        self.done: dict[str, Path] = {}  # curate fingerprint -> a complete curate folder
        self.fps: dict[Path, str | None] = {}  # run config -> its curate fingerprint (seed and record share it)
        self.lock = threading.Lock()

    def fingerprint(self, cfg_path: Path) -> str | None:
        """The fingerprint the orchestrator gives this config's curate stage (None when it cannot be computed
        here: the run then curates, and reports any problem itself)."""
        if cfg_path not in self.fps:
            self.fps[cfg_path] = self._fingerprint(cfg_path)
        return self.fps[cfg_path]

    @staticmethod
    def _fingerprint(cfg_path: Path) -> str | None:
        from pipeline.config import load_config
        from pipeline.policy import model_fingerprint, resolve_model_path
        from stages import STAGES

        try:
            cfg = load_config(str(cfg_path))
            base_fp = model_fingerprint(resolve_model_path(cfg.model), cfg.model)
        except (UserError, ConfigError, OSError):
            return None
        return STAGES["curate"].fingerprint(cfg, 0, [], base_fp)

    def seed(self, cfg_path: Path, run_dir: Path) -> bool:
        """Link an earlier run's curate folder into `run_dir` when one has this config's fingerprint."""
        from pipeline import cache

        dst = run_dir / "curate"
        if dst.exists():
            return False
        fp = self.fingerprint(cfg_path)
        with self.lock:
            src = self.done.get(fp) if fp else None
        if src is None or not cache.is_complete(src, fp, "shared curate"):
            return False
        tmp = run_dir / f".curate.tmp-{uuid.uuid4().hex[:8]}"  # the orchestrator cleans such leftovers
        for copy in (os.link, shutil.copy2):  # hard links (no copy of the Arrow data), else a copy
            try:
                shutil.copytree(src, tmp, copy_function=copy)
                os.replace(tmp, dst)
                return True
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
        return False  # the run curates for itself

    def record(self, cfg_path: Path, run_dir: Path) -> None:
        """Remember `run_dir`'s curate folder for later runs, when it is complete for this config."""
        from pipeline import cache

        fp = self.fingerprint(cfg_path)
        with self.lock:
            if not fp or fp in self.done:  # one folder per fingerprint is enough: no need to hash this one
                return
        if cache.is_complete(run_dir / "curate", fp, "curate"):
            with self.lock:
                self.done.setdefault(fp, run_dir / "curate")


CURATED = CurateShare()


def stored_config_changes(cfg_path: Path, run_dir: Path) -> str:
    """How the config a run directory holds differs from `cfg_path`'s ("" when it is the same, or when the
    directory holds no run yet); fields an older config.yaml lacks count as their defaults."""
    import yaml

    from pipeline.config import config_changes, to_dict, with_defaults

    stored = run_dir / "config.yaml"
    if not stored.is_file():
        return ""
    new = to_dict(config_from_dict(yaml.safe_load(cfg_path.read_text()), str(cfg_path)))
    old = with_defaults(migrate(yaml.safe_load(stored.read_text()) or {}, str(stored)))
    return "" if old == new else config_changes(old, new)


def run_one(cfg_path: Path, run_dir: Path, priority: int = 0) -> None:
    """Train one run in a subprocess (its log in run_dir/train.log); a finished run is kept as it is, when it
    was trained with this config (UserError otherwise: an earlier comparison with other settings is never
    read as this one). Its curate stage comes from an earlier run with the same curation when there is one
    (CurateShare)."""
    changed = stored_config_changes(cfg_path, run_dir)
    if changed:
        raise UserError(f"{run_dir} holds a run with another config ({changed}): that output directory is an "
                        "earlier comparison with other settings; pass a new --output-dir, or delete that run")
    if (run_dir / "summary.json").is_file():
        CURATED.record(cfg_path, run_dir)
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    rc = SLOTS.run([sys.executable, "-m", "pipeline.train", "--config", str(cfg_path), "--output-dir", str(run_dir)],
                   run_dir / "train.log", priority, before=lambda: CURATED.seed(cfg_path, run_dir))
    CURATED.record(cfg_path, run_dir)
    if rc != 0:
        tail = (run_dir / "train.log").read_text().splitlines()[-5:]
        raise UserError(f"run {run_dir} failed (exit {rc}); see {run_dir}/train.log:\n  "
                        + "\n  ".join(tail))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class WallLedger:
    """OUTPUT/wall_time.json: the wall time of every invocation on this output directory, so that a comparison
    resumed over several commands (the `full` preset outlasts a working session) still reports what it cost in
    all. This invocation's entry is rewritten every `every` seconds while it runs (a killed command loses at most
    that much) and once more when it ends; `complete` marks the invocation that finished every task."""

    def __init__(self, out: Path, argv: list[str], every: float = 30.0):
        self.path, self.every, self.t0 = out / "wall_time.json", every, time.time()
        try:
            self.earlier = list(json.loads(self.path.read_text())["invocations"]) if self.path.is_file() else []
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{self.path}: not a wall-time ledger this script wrote; move it away") from None
        self.entry = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": argv, "seconds": 0.0, "complete": False}
        self._stop, self._lock = threading.Event(), threading.Lock()  # the heartbeat and the main thread both save
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> WallLedger:
        self.save()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.save()

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            self.save()

    def seconds(self) -> float:
        return time.time() - self.t0

    def total(self) -> float:
        return sum(float(e["seconds"]) for e in self.earlier) + self.seconds()

    def save(self, complete: bool | None = None) -> None:
        with self._lock:
            if complete is not None:
                self.entry["complete"] = complete
            self.entry["seconds"] = round(self.seconds(), 1)
            _write(self.path, json.dumps({"invocations": [*self.earlier, self.entry]}, indent=1))

    def line(self) -> str:
        """The results' wall-time line: this command, and the whole comparison when it was resumed."""
        text = f"wall time of the whole command: {self.seconds():.0f} s"
        if self.earlier:
            text += (f"; of the whole comparison, over {len(self.earlier) + 1} invocations (it was resumed): "
                     f"{self.total():.0f} s")
        return text


def protocol_text(preset: str, p: dict[str, Any], tasks: list[Task], methods: list[Method], seeds: list[int],
                  overrides: list[str]) -> str:
    shared, _ = read_recipe(tasks[0].recipe)
    shared = apply_overrides(shared, overrides)
    sft_steps = sft_steps_for(shared, p["rl_steps"])
    matched = any(m.matched for m in methods)  # the row "SFT at matched compute" trains its own runs
    return "\n".join([
        f"compare_methods protocol (preset {preset}):",
        f"- tasks: {', '.join(f'{t.name} (recipe {t.recipe}, held-out {t.suite}, validation {t.val_suite})' for t in tasks)}",
        f"- methods: {', '.join(m.name for m in methods)}; seeds {','.join(map(str, seeds))}",
        f"- budget: {p['rl_steps']} RL steps; SFT {sft_steps} steps at matched compute (RL step = prompts x samples "
        f"x {RL_FORWARDS:g} forward-equivalents per token, SFT step = batch x {SFT_FORWARDS:g}); SFT trains to "
        f"convergence: {sft_steps * p.get('sft_cap', 1)} steps, its learning rate decayed on a cosine to 0"
        + (f"; the row 'SFT at matched compute' trains {sft_steps} steps on its own cosine"
           if matched else "")
        + "; SFT -> X rows start from the converged SFT model and are charged its whole run plus their RL steps",
        f"- learning rate: chosen per method from {', '.join(f'{x:g}' for x in p['lrs'])} (update.lr of the RL phase; "
        f"SFT's sft.lr from {', '.join(f'{x:g}' for x in p.get('sft_lrs', p['lrs']))}) by best validation accuracy "
        "on seed 0; other seeds use the chosen value"
        + ("" if p.get("sweep_ablations", True) else "; the Prefix-RFT ablations train at Prefix-RFT's chosen value"),
        f"- checkpoints: validation every {max(1, p['rl_steps'] // VALIDATION_POINTS)} RL steps / "
        f"{max(1, sft_steps * p.get('sft_cap', 1) // SFT_VALIDATIONS)} SFT steps"
        + (f" (matched: {max(1, sft_steps // SFT_VALIDATIONS)})" if matched else "")
        + f" on the validation suite (up to "
        f"{p['val_problems']} problems); the best validated "
        "checkpoint of every run is evaluated on the held-out suite (never used for a choice)",
        f"- runs: {SLOTS.jobs} at once, each with {SLOTS.env['OMP_NUM_THREADS']} thread(s)",
        f"- shared overrides: {' '.join(overrides) or '(none)'}",
    ])


def starting_model_identity(cfg: Any) -> dict[str, str]:
    """What names a task's starting policy: its name, the folder it resolves to (an embedded build's folder carries
    its recipe's fingerprint) and the starting-weights fingerprint the stage caches use (pipeline.policy)."""
    from pipeline.policy import model_fingerprint, resolve_model_path

    path = resolve_model_path(cfg)
    return {"name_or_path": cfg.name_or_path, "resolved": Path(path).name if Path(path).is_dir() else path,
            "fingerprint": model_fingerprint(path, cfg)}


class Comparison:
    """The plan of one task. SFT runs first (its chosen LR and checkpoints feed SFT -> X); with `jobs` > 1 every
    method's runs are submitted at once and Slots runs them `jobs` at a time, SFT's first, each SFT -> X row
    starting when the SFT run of its seed is selected. Results do not depend on `jobs`: every run is its own
    process with its own seed."""

    def __init__(self, task: Task, out: Path, preset: dict[str, Any], methods: list[Method], seeds: list[int],
                 overrides: list[str], dry_run: bool):
        self.task, self.out, self.p, self.methods, self.seeds = task, out / task.name, preset, methods, seeds
        self.overrides, self.dry_run = overrides, dry_run
        self.eval_overrides = ["eval.samples_per_problem=2", "eval.max_new_tokens=96", "eval.precision=bf16",
                               *[o for o in preset["eval"]], *[o for o in overrides if o.startswith("eval.")]]
        self.results: list[RunResult] = []
        self.pending: list[tuple[Method, float, int, Path, int, Path]] = []  # (.., run, step, checkpoint)
        self.sft_selected: dict[int, tuple[Path, tuple[Path, dict[str, float]]]] = {}
        self.chosen_lr: dict[str, float] = {}
        self.sweeps: dict[str, dict[float, float]] = {}  # method -> {lr: seed 0's best validation accuracy}
        self.count = 0
        self.lock = threading.Lock()

    def run_dir(self, m: Method, lr: float, seed: int) -> Path:
        return self.out / "runs" / m.name / f"lr{lr:g}-seed{seed}"

    def inherits_lr(self, m: Method) -> bool:
        """An ablation that trains at another method's chosen LR (that method is in the plan; the preset does not
        sweep ablations)."""
        return bool(m.lr_of) and not self.p.get("sweep_ablations", True) and any(x.name == m.lr_of
                                                                                  for x in self.methods)

    def lrs(self, m: Method) -> tuple[float, ...]:
        """The learning rates a method's sweep tries: its inherited one when it has one, else the preset's (SFT's
        own grid for SFT)."""
        if self.inherits_lr(m):
            return (self.p["lrs"][0],) if self.dry_run else (self.chosen_lr[m.lr_of],)
        return tuple(self.p.get("sft_lrs", self.p["lrs"]) if m.recipe == "sft" else self.p["lrs"])

    def train(self, m: Method, lr: float, seed: int) -> Path | None:
        sft_ckpt = None
        if m.from_sft and self.dry_run:
            sft_ckpt = str(self.run_dir(BY_NAME["sft"], self.lrs(BY_NAME["sft"])[0], seed) / "checkpoints" / "selected")
        elif m.from_sft:
            if seed not in self.sft_selected:
                raise UserError(f"{m.name} starts from the SFT model: include `sft` in --methods")
            sft_ckpt = str(self.sft_selected[seed][0])
        raw = method_config(m, self.task.recipe, seed, self.overrides, lr=lr, rl_steps=self.p["rl_steps"],
                            val_suite=self.task.val_suite, sft_checkpoint=sft_ckpt,
                            val_problems=self.p["val_problems"], sft_cap=self.p.get("sft_cap", 1))
        import yaml

        path = self.out / "configs" / f"{m.name}-lr{lr:g}-seed{seed}.yaml"
        _write(path, f"# {m.label} (lr {lr:g}, seed {seed}) for scripts/compare_methods.py\n"
               + yaml.safe_dump(raw, sort_keys=False))
        with self.lock:
            self.count += 1
        d = self.run_dir(m, lr, seed)
        if self.dry_run:
            return None
        print(f"[{self.task.name}] {m.name} lr {lr:g} seed {seed}: "
              f"{'done' if (d / 'summary.json').is_file() else 'training'}", file=sys.stderr, flush=True)
        run_one(path, d, self.priority(m))
        return d

    @staticmethod
    def priority(m: Method) -> int:
        return 0 if m.name == "sft" else 1 if m.from_sft else 2  # the critical path first

    def best_of(self, d: Path) -> tuple[int, float]:
        """The best validated step of run `d` and its validation accuracy."""
        curve = validation_curve(d, self.task.val_suite)
        s = select_step(curve)
        return s, dict(curve)[s]

    def finish(self, m: Method, lr: float, seed: int, d: Path) -> None:
        """Select run `d`'s checkpoint on validation; its held-out evaluation waits for evaluate_selected."""
        step, _ = self.best_of(d)
        ckpt = d / "checkpoints" / f"step-{step:06d}"
        with self.lock:
            self.pending.append((m, lr, seed, d, step, ckpt))
            if m.name == "sft":
                self.sft_selected[seed] = (ckpt, (d, json.loads((d / "summary.json").read_text())["compute"]))

    def evaluate_selected(self) -> None:
        """The held-out evaluation of every run's selected checkpoint, once all of the task's runs are trained:
        one evaluation subprocess for all of them (evaluate_checkpoints), then each run's numbers."""
        jobs = [(ckpt, d / "eval" / "selected") for *_, d, _, ckpt in self.pending]
        helds = evaluate_checkpoints(jobs, self.task.suite, self.eval_overrides, self.out / "heldout_eval.log")
        for (m, lr, seed, d, step, _), held in zip(self.pending, helds):
            extra = None
            if m.from_sft:
                sft_dir, sft_compute = self.sft_selected[seed][1]
                extra = {**sft_compute, "wall_seconds": _wall(json.loads((sft_dir / "summary.json").read_text()))}
            self.results.append(read_run(d, m.name, seed, lr, self.task, held, step, extra))

    def _each(self, fn, items: list[Any]) -> list[Any]:
        """fn over items, concurrently when jobs > 1 (the subprocesses still queue for Slots)."""
        if SLOTS.jobs == 1 or len(items) < 2:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(len(items)) as pool:
            return list(pool.map(fn, items))

    def run_method(self, m: Method) -> None:
        lrs = self.lrs(m)
        seed0 = self.seeds[0]
        runs = self._each(lambda lr: self.train(m, lr, seed0), list(lrs))
        if self.dry_run:
            self._each(lambda seed: self.train(m, lrs[0], seed), self.seeds[1:])
            return
        sweep = dict(zip(lrs, runs))
        val = {x: self.best_of(sweep[x])[1] for x in lrs}  # seed 0's best validation accuracy per LR
        lr = max(lrs, key=lambda x: (val[x], -lrs.index(x)))  # first LR among ties
        self.chosen_lr[m.name] = lr
        if len(lrs) > 1:
            self.sweeps[m.name] = val
        self.finish(m, lr, seed0, sweep[lr])
        self._each(lambda seed: self.finish(m, lr, seed, self.train(m, lr, seed)), self.seeds[1:])

    def check_starting_model(self) -> str:
        """The task's starting policy (its name_or_path, returned) must be the one this output directory was trained
        from (OUTPUT/<task>/starting_model.json, written on first use). An embedded policy's folder is named by its
        build recipe's fingerprint, so a rebuilt policy under the same name (another warm start, other library
        versions) is refused here instead of being mixed with the earlier one's runs and base evaluation."""
        from pipeline.config import load_config

        cfg = load_config(self.task.recipe, self.overrides).model
        ident = starting_model_identity(cfg)
        record = self.out / "starting_model.json"
        if record.is_file():
            old = json.loads(record.read_text())
            if old != ident:
                raise UserError(f"{self.out} was trained from another {cfg.name_or_path} ({old.get('resolved')}; now "
                                f"{ident['resolved']}): its runs are not this policy's; pass a new --output-dir, or "
                                f"delete {self.out}")
            return cfg.name_or_path
        if (self.out / "base_eval").is_dir() or (self.out / "runs").is_dir():
            print(f"note: {self.out} has runs from before starting_model.json existed; they are taken to start from "
                  f"{ident['resolved']} (delete the folder if {cfg.name_or_path} was rebuilt since)",
                  file=sys.stderr, flush=True)
        _write(record, json.dumps(ident, indent=1))
        return cfg.name_or_path

    def run(self) -> dict[str, Any] | None:
        if any(m.from_sft for m in self.methods) and not any(m.name == "sft" for m in self.methods):
            raise UserError("the SFT -> X methods start from the SFT model: include `sft` in --methods")
        # the base policy on the held-out suite, once per task
        base = None
        if not self.dry_run:
            model = self.check_starting_model()
            base = evaluate_checkpoint(model, self.task.suite, self.out / "base_eval", self.eval_overrides)
        # dependencies: SFT -> X rows wait for SFT; rows that take another method's LR wait for that method
        waits = {m.name: ({"sft"} if m.from_sft else set()) | ({m.lr_of} if self.inherits_lr(m) else set())
                 for m in self.methods}
        order = sorted(self.methods, key=lambda m: (len(waits[m.name]) > 0, m.from_sft))  # SFT first
        if SLOTS.jobs == 1:
            for m in order:
                self.run_method(m)
        else:
            futures: dict[str, Any] = {}
            with ThreadPoolExecutor(len(order)) as pool:
                for m in order:
                    deps = [futures[d] for d in waits[m.name]]
                    futures[m.name] = pool.submit(lambda m=m, deps=deps: ([f.result() for f in deps],
                                                                         self.run_method(m)))
                for f in futures.values():
                    f.result()
        if self.dry_run:
            return None
        self.evaluate_selected()
        agg = aggregate(self.results, base, self.sweeps)
        agg.update(task=self.task.name, lrs=list(self.p["lrs"]), sft_lrs=list(self.p.get("sft_lrs", self.p["lrs"])),
                   rl_steps=self.p["rl_steps"])
        return agg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS))
    ap.add_argument("--tasks", default="toy,countdown", help=f"comma-separated, from: {', '.join(TASKS)}")
    ap.add_argument("--seeds", default=None, help="comma-separated (default: the preset's)")
    ap.add_argument("--methods", default=None,
                    help="comma-separated (default: the preset's; every method but rl-sft-loss, and `default` "
                         "leaves out sft-matched), from: " + ", ".join(m.name for m in METHODS))
    ap.add_argument("--dry-run", action="store_true", help="write and validate every run's config, train nothing")
    ap.add_argument("--lrs", default=None,
                    help="comma-separated learning rates every RL method sweeps (default: the preset's, "
                         + ",".join(f"{x:g}" for x in LRS) + ")")
    ap.add_argument("--sft-lrs", default=None,
                    help="comma-separated learning rates SFT sweeps (default: the preset's, "
                         + ",".join(f"{x:g}" for x in SFT_LRS) + ")")
    ap.add_argument("--jobs", type=int, default=None,
                    help="runs at once, each with cpu_count/jobs threads (default: the preset's)")
    ap.add_argument("overrides", nargs="*", help="section.field=value applied to every run (the shared budget)")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line the results quote
    global SLOTS
    try:
        return _main(args)
    except (UserError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        SLOTS = Slots(1)


def _grid(text: str, flag: str) -> tuple[float, ...]:
    try:
        grid = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        grid = ()
    if not grid or any(not (x > 0) for x in grid) or len(set(grid)) != len(grid):
        raise UserError(f"{flag} must be distinct positive numbers separated by commas, got {text!r}")
    return grid


def _main(args: argparse.Namespace) -> int:
    preset = dict(PRESETS[args.preset])
    if args.lrs is not None:
        preset["lrs"] = _grid(args.lrs, "--lrs")
    if args.sft_lrs is not None:
        preset["sft_lrs"] = _grid(args.sft_lrs, "--sft-lrs")
    args.methods = args.methods or ",".join(preset.get("methods", DEFAULT_METHODS))
    unknown = [m for m in args.methods.split(",") if m and m not in BY_NAME]
    if unknown:
        raise UserError(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    bad = [t for t in args.tasks.split(",") if t and t not in TASKS]
    if bad:
        raise UserError(f"--tasks: unknown {', '.join(bad)}; choose from {', '.join(TASKS)}")
    methods = [BY_NAME[m] for m in args.methods.split(",") if m]
    tasks = [TASKS[t] for t in args.tasks.split(",") if t]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds else list(preset["seeds"])
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    jobs = args.jobs if args.jobs is not None else preset.get("jobs", 1)
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    global SLOTS, CURATED
    SLOTS, CURATED = Slots(jobs), CurateShare()
    out = Path(args.output_dir).resolve()  # the runs are subprocesses started in the repository root
    protocol = protocol_text(args.preset, preset, tasks, methods, seeds, args.overrides)
    print(protocol, file=sys.stderr, flush=True)
    _write(out / "protocol.md", protocol + "\n")
    if args.dry_run:
        return _run_tasks(args, out, preset, tasks, methods, seeds, protocol, None)
    with WallLedger(out, args.argv) as ledger:
        return _run_tasks(args, out, preset, tasks, methods, seeds, protocol, ledger)


def _run_tasks(args: argparse.Namespace, out: Path, preset: dict[str, Any], tasks: list[Task],
               methods: list[Method], seeds: list[int], protocol: str, ledger: WallLedger | None) -> int:
    t0 = time.time()

    def one_task(task: Task) -> str | None:
        comp = Comparison(task, out, preset, methods, seeds, list(args.overrides), args.dry_run)
        agg = comp.run()
        print(f"compare_methods: {comp.count} runs on {task.name} ({time.time() - t0:.0f}s so far)", file=sys.stderr)
        if agg is None:
            return None
        header = (f"## {task.name}: held-out `{task.suite}`, checkpoints and learning rates chosen on "
                  f"`{task.val_suite}`\n\n{time.strftime('%Y-%m-%d')}, {platform.machine()} {os.cpu_count()} cores, "
                  f"torch {_torch_version()}; command: `python scripts/compare_methods.py {' '.join(args.argv)}`; "
                  f"{time.time() - t0:.0f} s so far"
                  + (f" ({ledger.total():.0f} s over {len(ledger.earlier) + 1} invocations)" if ledger and ledger.earlier else ""))
        agg.update(command="python scripts/compare_methods.py " + " ".join(args.argv),
                   machine=f"{platform.machine()} {os.cpu_count()} cores", date=time.strftime("%Y-%m-%d"),
                   protocol=protocol)
        agg["plots"] = plot(agg, comp.out, f"{task.name}: held-out accuracy against compute")
        _write(comp.out / "results.json", json.dumps(agg, indent=1))
        md = results_markdown(agg, header)
        _write(comp.out / "results.md", md)
        return md

    # the tasks share the slots: with several jobs they run side by side, so no slot idles while one task waits
    # on its last runs (the base policy's evaluation, and the embedded model's build on a fresh machine, of each
    # task start together); a dry run prints its plans one task after the other
    if SLOTS.jobs > 1 and len(tasks) > 1 and not args.dry_run:
        with ThreadPoolExecutor(len(tasks)) as pool:
            sections = [md for md in pool.map(one_task, tasks) if md]
    else:
        sections = [md for md in map(one_task, tasks) if md]
    if args.dry_run:
        return 0
    assert ledger is not None
    ledger.save(complete=True)
    text = "# Method comparison\n\n" + protocol + f"\n\n{ledger.line()}\n\n" + "\n".join(sections)
    _write(out / "results.md", text)
    print(text)
    return 0


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    sys.exit(main())
