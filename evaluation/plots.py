"""PNG plots of evaluation results and training runs (matplotlib, a core requirement, Agg backend; skipped
with one log line where it is missing).

- `accuracy.png`: accuracy per suite, bars with ± 1 standard error, macro averages as extra bars;
- `pass_at_k.png`: pass@k against k (log2 axis) per suite with more than one sample per problem;
- `accuracy_over_steps.png`: accuracy per suite against the training step of each checkpoint;
- `run_plots`, written by every training run to `<output-dir>/plots/`: `reward.png` (train reward: all,
  on-policy, hybrid samples), `prefix_ratio.png` (realised prefix ratio, mean and min-max band),
  `entropy.png` (entropy of the kept prefix tokens, of all prefix tokens and of the continuations) and
  `accuracy_by_level.png` (base against final accuracy per difficulty level).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
_WARNED = []


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if not _WARNED:
            log.info("plots skipped: matplotlib is not installed (pip install matplotlib)")
            _WARNED.append(True)
        return None
    return plt


def _save(fig: Any, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)


def suite_plots(output_dir: Path, summaries: dict[str, dict[str, Any]], label: str = "",
                macro: dict[str, dict[str, Any]] | None = None) -> list[Path]:
    """accuracy.png, and pass_at_k.png when a suite has several samples per problem; returns the paths.
    `macro`: group -> macro average (evaluation.report.macro_rows), drawn as extra bars."""
    plt = _pyplot()
    if plt is None or not summaries:
        return []
    written = []
    bars = {n: (s["accuracy"], s["stderr"]) for n, s in summaries.items()}
    bars.update({f"{g} avg": (a["accuracy"], a["stderr"]) for g, a in (macro or {}).items()
                 if len(a["suites"]) > 1})
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(bars) + 1.5), 3.6))
    names = list(bars)
    acc = [100 * bars[n][0] for n in names]
    ax.bar(names, acc, yerr=[100 * bars[n][1] for n in names], capsize=3,
           color=["#4c72b0" if not n.endswith(" avg") else "#dd8452" for n in names])
    for i, a in enumerate(acc):
        ax.text(i, a + 1, f"{a:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"accuracy per benchmark{' - ' + label if label else ''}", fontsize=10)
    ax.tick_params(axis="x", labelrotation=30)
    _save(fig, Path(output_dir) / "accuracy.png")
    plt.close(fig)
    written.append(Path(output_dir) / "accuracy.png")
    curves = {n: s["pass_at_k"] for n, s in summaries.items() if len(s.get("pass_at_k") or {}) > 1}
    if curves:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for name, curve in curves.items():
            ks = sorted(curve, key=int)
            ax.plot([int(k) for k in ks], [100 * curve[k] for k in ks], marker="o", markersize=3, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k")
        ax.set_ylabel("pass@k (%)")
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"pass@k (unbiased estimator){' - ' + label if label else ''}", fontsize=10)
        _save(fig, Path(output_dir) / "pass_at_k.png")
        plt.close(fig)
        written.append(Path(output_dir) / "pass_at_k.png")
    return written


def over_steps(path: Path, points: dict[str, tuple[int, dict[str, dict[str, Any]]]]) -> Path | None:
    """points: label -> (training step, suite summaries). Labels starting with `validation` form their
    own dashed series (the validation slice is a subset, not comparable point for point)."""
    plt = _pyplot()
    usable = {k: v for k, v in points.items() if v[0] >= 0}
    if plt is None or len(usable) < 2:
        return None
    series: dict[str, list[tuple[int, float, float]]] = {}
    for label, (step, summaries) in usable.items():
        kind = " (validation slice)" if label.startswith("validation") else ""
        for suite, s in summaries.items():
            series.setdefault(suite + kind, []).append((step, 100 * s["accuracy"], 100 * s["stderr"]))
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, pts in sorted(series.items()):
        pts.sort()
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", markersize=3,
                    capsize=2, linestyle="--" if "validation" in name else "-", label=name)
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("accuracy over training steps", fontsize=10)
    _save(fig, Path(path))
    plt.close(fig)
    return Path(path)


def _curves(ax: Any, rows: list[dict[str, Any]], series: dict[str, str]) -> bool:
    """Plot metrics.jsonl columns (key -> label) against the step; False when none has a value."""
    drawn = False
    for key, label in series.items():
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and r[key] == r[key]]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) < 20 else None, markersize=3,
                    label=label)
            drawn = True
    if drawn:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return drawn


def run_plots(run_dir: Path, summary: dict[str, Any]) -> list[Path]:
    """The training run's plots in `<run_dir>/plots/` (module docstring); returns the paths written.
    `summary` is the run's summary (its `eval` holds base and final accuracy by level)."""
    plt = _pyplot()
    metrics = Path(run_dir) / "metrics.jsonl"
    if plt is None:
        return []
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.is_file() else []
    out = Path(run_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    panels = {
        "reward.png": ("train reward", "mean reward", {"reward_mean": "all samples", "reward_on_policy": "on-policy",
                                                     "reward_hybrid": "hybrid (prefixed)"}),
        "prefix_ratio.png": ("realised prefix ratio of hybrid samples", "prefix length / demonstration length",
                             {"prefix_ratio_mean": "mean"}),
        "entropy.png": ("token entropy", "entropy (nats)", {"kept_prefix_entropy": "kept prefix tokens (top 20%)",
                                                          "prefix_entropy": "all prefix tokens",
                                                          "entropy": "continuation tokens"}),
    }
    for name, (title, ylabel, series) in panels.items():
        fig, ax = plt.subplots(figsize=(6, 3.8))
        if _curves(ax, rows, series):
            if name == "prefix_ratio.png":
                band = [(r["step"], r["prefix_ratio_min"], r["prefix_ratio_max"]) for r in rows
                        if r.get("prefix_ratio_min") is not None and r.get("prefix_ratio_max") is not None]
                if band:
                    ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band], alpha=0.2,
                                    label="min-max")
                    ax.legend(fontsize=8)
            ax.set_ylabel(ylabel)
            ax.set_title(title, fontsize=10)
            _save(fig, out / name)
            written.append(out / name)
        plt.close(fig)
    levels = {suite: ev for suite, ev in (summary.get("eval") or {}).items()
              if any((ev.get(k) or {}).get("accuracy_by_level") for k in ("base", "final"))}
    if levels:
        fig, axes = plt.subplots(1, len(levels), figsize=(5.5 * len(levels), 3.8), squeeze=False)
        for ax, (suite, ev) in zip(axes[0], sorted(levels.items())):
            names = sorted({lv for k in ("base", "final") for lv in ((ev.get(k) or {}).get("accuracy_by_level") or {})},
                           key=int)
            width = 0.4
            for shift, key in ((-width / 2, "base"), (width / 2, "final")):
                by_level = (ev.get(key) or {}).get("accuracy_by_level") or {}
                xs = [i + shift for i, lv in enumerate(names) if lv in by_level]
                ax.bar(xs, [100 * by_level[lv] for lv in names if lv in by_level], width, label=key)
            ax.set_xticks(range(len(names)), [f"level {lv}" for lv in names], fontsize=8)
            ax.set_ylabel("accuracy (%)")
            ax.set_ylim(0, 105)
            ax.legend(fontsize=8)
            ax.set_title(f"{suite}: accuracy by level, base vs final", fontsize=10)
        _save(fig, out / "accuracy_by_level.png")
        plt.close(fig)
        written.append(out / "accuracy_by_level.png")
    return written
