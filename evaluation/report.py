"""Evaluation outputs a reader looks at: summary.json, the results.md table and the PNG plots.

- `summary.json`: label, protocol, per-suite summaries, macro averages (`math`: the six benchmarks of
  the paper's headline; `general`: ARC-C, GPQA-Diamond, MMLU-Pro), the eval config.
- `results.md`: one row per suite (metric, accuracy ± s.e., problems, samples, pass@max-k, no-answer and
  truncation rates) and the macro averages; over checkpoints, one column per checkpoint.
- plots (matplotlib): `accuracy.png` (bars with ± s.e.),
  `pass_at_k.png` (suites with more than one sample per problem), `accuracy_over_steps.png` (several
  checkpoints, or a training run's base / validation / final evaluations).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from evaluation import plots as plot_module
from evaluation.stats import macro_average
from evaluation.suites import GROUPS

log = logging.getLogger(__name__)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def step_of(name: str) -> int:
    """Training step of a checkpoint name (`step-000010` -> 10; `base` -> 0; anything else -1)."""
    m = re.search(r"step-0*(\d+)", name)
    return int(m.group(1)) if m else (0 if name == "base" else -1)


def macro_rows(summaries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Macro averages of the groups with at least one suite present."""
    out = {}
    for group, names in GROUPS.items():
        avg = macro_average(summaries, names)
        if avg is not None:
            out[group] = avg
    return out


def format_table(summaries: dict[str, dict[str, Any]]) -> str:
    lines = ["| suite | metric | accuracy | ± s.e. | problems | samples | pass@k (max k) | no answer | truncated |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        curve = s.get("pass_at_k") or {}
        top = max(curve, key=int) if curve else None
        pk = f"{100 * curve[top]:.1f} (k={top})" if top and int(top) > 1 else "-"
        lines.append(f"| {name} | {s.get('metric', 'avg@' + str(s['samples_per_problem']))} | "
                     f"{100 * s['accuracy']:.1f} | {100 * s['stderr']:.1f} | {s['problems']} | "
                     f"{s['samples_per_problem']} | {pk} | {100 * s.get('no_answer_rate', 0):.1f}% | "
                     f"{100 * s.get('truncated_rate', 0):.1f}% |")
    for group, avg in macro_rows(summaries).items():
        n = len(avg["suites"])
        note = "" if avg["complete"] else f" (only {n} of {len(GROUPS[group])})"
        lines.append(f"| **{group} macro average{note}** | mean of {n} | **{100 * avg['accuracy']:.1f}** | "
                     f"{100 * avg['stderr']:.1f} | | | | | |")
    return "\n".join(lines) + "\n"


def write_report(output_dir: Path, summaries: dict[str, dict[str, Any]], label: str, cfg: Any,
                 plots: bool = True) -> None:
    """summary.json and results.md; with `plots` also the accuracy and pass@k plots (matplotlib: half a
    second a call, which a validation point every few training steps skips)."""
    output_dir = Path(output_dir)
    body = {"label": label, "protocol": cfg.protocol, "suites": summaries, "macro": macro_rows(summaries),
            "config": asdict(cfg)}
    _atomic_write(output_dir / "summary.json", json.dumps(body, indent=1))
    _atomic_write(output_dir / "results.md", f"{label}\n\n" + format_table(summaries) if label else
                  format_table(summaries))
    if plots:
        plot_module.suite_plots(output_dir, summaries, label, macro_rows(summaries))


def write_comparison(output_dir: Path, results: dict[str, dict[str, dict[str, Any]]], cfg: Any) -> None:
    """Several checkpoints: results.md with one accuracy column per checkpoint, accuracy_over_steps.png."""
    names = list(results)
    suites = list(dict.fromkeys(s for r in results.values() for s in r))
    lines = ["| suite | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for s in suites:
        cells = [f"{100 * results[n][s]['accuracy']:.1f}" if s in results[n] else "-" for n in names]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    for group in GROUPS:
        avgs = [macro_rows(results[n]).get(group) for n in names]
        if any(avgs):
            lines.append(f"| **{group} macro** | " + " | ".join(f"{100 * a['accuracy']:.1f}" if a else "-"
                                                              for a in avgs) + " |")
    _atomic_write(Path(output_dir) / "results.md", "\n".join(lines) + "\n")
    body = {"protocol": cfg.protocol, "checkpoints": {n: {"step": step_of(n), "suites": results[n],
                                                          "macro": macro_rows(results[n])} for n in names}}
    _atomic_write(Path(output_dir) / "summary.json", json.dumps(body, indent=1))
    points = {n: (step_of(n), results[n]) for n in names}
    plot_module.over_steps(Path(output_dir) / "accuracy_over_steps.png", points)


def run_points(run_dir: Path) -> dict[str, tuple[int, dict[str, dict[str, Any]]]]:
    """A training run's evaluations: base (step 0), validation slices, final; label -> (step, summaries)."""
    points: dict[str, tuple[int, dict[str, dict[str, Any]]]] = {}
    ev = Path(run_dir) / "eval"
    for path in sorted(ev.glob("*/summary.json")) + sorted(ev.glob("validation/*/summary.json")):
        name = path.parent.name
        step = 0 if name == "base" else int(name.rsplit("-", 1)[-1]) if name.startswith("step-") else None
        if step is None:
            continue
        prefix = "validation " if path.parent.parent.name == "validation" else ""
        points[f"{prefix}{name}"] = (step, json.loads(path.read_text())["suites"])
    return points
