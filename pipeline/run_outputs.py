"""What a training run leaves to look at, listed at the end of its summary: the plots it wrote
(`evaluation.plots.run_plots`: reward, prefix ratio, kept-token entropy, accuracy by level, plus the
evaluation's accuracy over steps) and the command that opens its tensorboard logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluation.plots import run_plots


def run_outputs(out: Path, summary: dict[str, Any], trackers: list[str]) -> dict[str, Any]:
    """Write the run's plots; returns the summary fields `plots` (paths) and `tensorboard` (a command or None)."""
    plots = [str(p) for p in run_plots(out, summary)]
    over_steps = Path(out) / "eval" / "accuracy_over_steps.png"
    if over_steps.is_file():
        plots.append(str(over_steps))
    logs = Path(out) / "tensorboard"
    board = f"tensorboard --logdir {logs}" if "tensorboard" in trackers and logs.is_dir() else None
    return {"plots": plots, "tensorboard": board}


def outputs_lines(summary: dict[str, Any]) -> list[str]:
    """The end of the printed summary: one line per plot, then the tensorboard command."""
    lines = []
    if summary.get("plots"):
        lines += ["", "plots"] + [f"  {p}" for p in summary["plots"]]
    if summary.get("tensorboard"):
        lines += ["", f"curves in tensorboard:  {summary['tensorboard']}"]
    return lines
