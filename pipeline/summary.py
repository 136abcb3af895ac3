"""What a training run reports: the line logged after every step, the step metrics of a validation
evaluation, and the summary (summary.json and the table printed at the end).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline import accounting
from pipeline.run_outputs import outputs_lines

log = logging.getLogger(__name__)


def log_step(step: int, total: int, stats: dict[str, Any], seconds: float) -> None:
    """One log line per training step (main process)."""
    val = "".join(f"  {k} {v:.3f}" for k, v in stats.items() if k.startswith("val_"))
    if stats.get("phase") == "sft":
        log.info("step %d/%d  SFT  nll %.4f  grad %.3f  lr %.2e  %.1fs%s", step, total,
                 stats["demo_nll"], stats["grad_norm"], stats["lr"], seconds, val)
    else:
        log.info("step %d/%d  reward %.3f (hybrid %s)  prefix %s  loss %.4f  grad %.3f  clip %.3f%s  %.1fs%s",
                 step, total, stats["reward_mean"], _fmt(stats.get("reward_hybrid")),
                 _fmt(stats.get("prefix_ratio_mean")), stats["loss"], stats["grad_norm"], stats["clip_frac"],
                 f"  + SFT on {stats['sft_rows']:.0f} replayed (nll {stats['sft_demo_nll']:.4f})"
                 if "sft_rows" in stats else "", seconds, val)


def validation_metrics(summaries: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Step-metric fields of a validation evaluation: val_<suite>_accuracy."""
    return {f"val_{name}_accuracy": s["accuracy"] for name, s in summaries.items()}


def validation_points(rows: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(step, score) of every validated step in metrics rows; the score is the mean of its val_*_accuracy."""
    pts = []
    for r in rows:
        vals = [v for k, v in r.items() if k.startswith("val_") and k.endswith("_accuracy") and v is not None]
        if vals:
            pts.append((int(r["step"]), sum(vals) / len(vals)))
    return pts


def plateaued(points: list[tuple[int, float]], patience: int) -> bool:
    """Early stopping (`eval.validation.patience`): True when none of the last `patience` validation points
    beats the best point before them (a tie is no improvement)."""
    if patience < 1 or len(points) <= patience:
        return False
    best = max(a for _, a in points[:-patience])
    return all(a <= best for _, a in points[-patience:])


def read_metrics(out: Path) -> list[dict[str, Any]]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


ELAPSED = "elapsed.json"  # seconds spent on the run by every command so far (a resumed run adds to it)


def elapsed_before(out: Path) -> float:
    """Seconds earlier commands spent on this run up to their last completed step (0 for a new run)."""
    path = out / ELAPSED
    return float(json.loads(path.read_text())["seconds"]) if path.is_file() else 0.0


def record_elapsed(out: Path, seconds: float) -> None:
    """Persist the run's cumulative seconds (atomic; main process). Written after each completed step, so
    an interrupted step's unfinished work is not counted: the command that resumes it redoes that work."""
    tmp = out / f"{ELAPSED}.tmp"
    tmp.write_text(json.dumps({"seconds": round(seconds, 1)}))
    tmp.replace(out / ELAPSED)


def run_summary(out: Path, total_steps: int, final_checkpoint: Path, base: dict, final: dict,
                seconds: float, earlier: float = 0.0, cap: int | None = None) -> dict[str, Any]:
    """The run's summary.json: evaluations before and after, the reward curve by quarters, where things are.
    `seconds` is this command's wall time, `earlier` what earlier commands spent on the run (resumed runs);
    `cap` is `train.total_steps` when early stopping ended the run at `total_steps` before it."""
    rows = read_metrics(out)
    q = max(1, len(rows) // 4)

    def quarters(key: str) -> tuple[float | None, float | None]:
        vals = [r[key] for r in rows if r.get(key) is not None and r[key] == r[key]]
        return (sum(vals[:q]) / len(vals[:q]), sum(vals[-q:]) / len(vals[-q:])) if vals else (None, None)

    T = total_steps
    first, last = quarters("reward_mean")
    on_first, on_last = quarters("reward_on_policy")
    return {
        "output_dir": str(out), "steps": T,
        "stopped_early": cap is not None and T < cap, "steps_cap": cap if cap is not None else T,
        "wall_seconds": round(seconds, 1),
        "wall_seconds_total": round(earlier + seconds, 1),  # every command on this run, resumed ones included
        "eval": {name: {"base": base.get(name), "final": final.get(name)} for name in set(base) | set(final)},
        "reward_first_quarter": first, "reward_last_quarter": last,
        "reward_on_policy_first_quarter": on_first, "reward_on_policy_last_quarter": on_last,
        "rewards": [r["reward_mean"] for r in rows if "reward_mean" in r],
        "final_checkpoint": str(final_checkpoint), "metrics": str(out / "metrics.jsonl"),
        "eval_dir": str(out / "eval"),
        "compute": accounting.run_compute(rows),  # update FLOPs + rollout tokens/FLOPs charged (SFT included)
    }


def format_summary(s: dict[str, Any]) -> str:
    """The short table printed at the end of a run."""
    total = s.get("wall_seconds_total", s["wall_seconds"])
    ran = f"this command ran {s['wall_seconds']:.0f}s" + (f" ({total:.0f}s with the earlier commands that resumed "
                                                          "into it)" if total - s["wall_seconds"] >= 1 else "")
    early = (f" (stopped early: no new best validation accuracy in its last validations; cap {s['steps_cap']})"
             if s.get("stopped_early") else "")
    lines = [f"\nprefix-rft: {s['steps']} steps{early}; {ran}", "",
             f"{'suite':<12}{'base':>10}{'final':>10}{'change':>10}"]
    for name, ev in sorted(s["eval"].items()):
        b, f = ev.get("base"), ev.get("final")
        acc = [x["accuracy"] * 100 if x else None for x in (b, f)]
        delta = f"{acc[1] - acc[0]:+.1f}" if None not in acc else ""
        lines.append(f"{name:<12}" + "".join(f"{a:>9.1f}%" if a is not None else f"{'-':>10}" for a in acc)
                     + f"{delta:>10}")
        levels = sorted(set((b or {}).get("accuracy_by_level", {})) | set((f or {}).get("accuracy_by_level", {})),
                        key=int)
        for lv in levels:
            vals = [(x or {}).get("accuracy_by_level", {}).get(lv) for x in (b, f)]
            lines.append(f"{'  level ' + lv:<12}" + "".join(f"{v * 100:>9.1f}%" if v is not None else f"{'-':>10}"
                                                             for v in vals))
    if s["rewards"]:
        curve = s["rewards"]
        marks = " ".join(f"{curve[i]:.2f}" for i in sorted({round(j * (len(curve) - 1) / 7) for j in range(8)}))
        lines += ["", f"train reward, all samples:     first quarter {s['reward_first_quarter']:.3f} -> last quarter "
                      f"{s['reward_last_quarter']:.3f}   (curve: {marks})"]
        if s.get("reward_on_policy_first_quarter") is not None:
            lines.append(f"train reward, on-policy only:  first quarter {s['reward_on_policy_first_quarter']:.3f} -> "
                         f"last quarter {s['reward_on_policy_last_quarter']:.3f}")
    if s.get("compute"):
        c = s["compute"]
        lines += ["", f"compute charged: {c['total_flops']:.3g} FLOPs (update {c['update_flops']:.3g}, rollout "
                      f"{c['rollout_flops']:.3g} for {c['rollout_tokens']:.0f} generated tokens; "
                      f"{c['sft_steps']:.0f} SFT + {c['rl_steps']:.0f} RL steps)"]
    lines += ["", f"final checkpoint  {s['final_checkpoint']}", f"step metrics      {s['metrics']}",
              f"evaluations       {s['eval_dir']}", f"summary           {s['output_dir']}/summary.json"]
    return "\n".join(lines + outputs_lines(s))
