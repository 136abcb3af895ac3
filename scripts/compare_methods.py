"""Reproduce the paper's comparison at toy scale: every method, the same rollout budget, several seeds.

    python scripts/compare_methods.py --output-dir runs/compare [--seeds 0,1,2] [--methods a,b,...]
        [--recipe-base compare_toy] [--quick] [--dry-run] [section.field=value ...]

Each method is a shipped recipe plus overrides (the table METHODS below). The recipe's own settings — what
makes it that method — are laid over `--recipe-base`, which fixes the budget every method shares: prompts
per step, samples per prompt, RL steps, max response tokens, evaluation (docs/method.md §9: the paper compares at
equal rollout budget). SFT->RFT runs its SFT phase on top of the same number of RL steps, as in the paper.
Every (method, seed) run is a normal run directory under OUTPUT/runs/<method>/seed<k>; an interrupted
comparison resumes where it stopped (finished runs are kept, a half-done run resumes itself).

Writes OUTPUT/results.json (every number), OUTPUT/results.md (methods x held-out accuracy mean ± std
over seeds, per level, final train reward, wall time) and PNG plots: held-out accuracy over steps (mean
and min-max band over seeds), train reward, and prefix ratio / kept-prefix-token entropy of the
Prefix-RFT runs.

`--quick` (one seed, 20 steps, one evaluation sample per problem) is a smoke run of the whole
comparison; its numbers are too noisy to rank methods.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.config import ConfigError, apply_overrides, config_from_dict, read_recipe, resolve_recipe_path  # noqa: E402
from pipeline.errors import UserError  # noqa: E402


@dataclass(frozen=True)
class Method:
    name: str
    recipe: str
    overrides: tuple[str, ...] = ()
    label: str = ""
    prefix_rft: bool = False


BASE = "<base>"

# The paper's Table 1 baselines, Prefix-RFT, and its §6 ablations (gate and schedule).
METHODS: tuple[Method, ...] = (
    Method("sft", "sft", label="SFT"),
    Method("rft", "rft", label="RFT (Dr. GRPO)"),
    Method("sft-then-rft", "sft-then-rft", label="SFT -> RFT"),
    Method("rl-sft-loss", "rl-sft-loss", label="RL w/ SFT loss"),
    Method("luffy", "luffy", label="LUFFY"),
    # Prefix-RFT and its ablations are the base recipe itself (BASE): the base must be a Prefix-RFT recipe.
    Method("prefix-rft", BASE, label="Prefix-RFT", prefix_rft=True),
    Method("gate-all", BASE, ("objective.gate=all",), "Prefix-RFT, gate all", True),
    Method("gate-bottom", BASE, ("objective.gate=bottom",), "Prefix-RFT, bottom-20% gate", True),
    Method("gate-random", BASE, ("objective.gate=random",), "Prefix-RFT, random-20% gate", True),
    Method("uniform", BASE, ("prefixes.schedule=uniform",), "Prefix-RFT, uniform schedule", True),
)
BY_NAME = {m.name: m for m in METHODS}
QUICK = ("train.total_steps=20", "eval.samples_per_problem=1")
VALIDATION_POINTS = 5


def _own_settings(recipe: str) -> dict[str, Any]:
    """The settings a recipe file states itself (not the ones it inherits)."""
    import yaml

    raw = yaml.safe_load(resolve_recipe_path(recipe).read_text()) or {}
    raw.pop("inherit", None)
    return raw


def _lay_over(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in top.items():
        out[section] = {**(out.get(section) or {}), **(values or {})}
    return out


def method_config(method: Method, base: str, seed: int, overrides: list[str], evaluate_base: bool) -> dict[str, Any]:
    """The raw recipe of one run: the base recipe (+ user overrides: the shared budget), the method's own
    settings, the seed and the validation cadence. Raises ConfigError when the result is invalid."""
    shared, _ = read_recipe(base)
    shared = apply_overrides(shared, overrides)
    rl_steps = int(shared.get("train", {}).get("total_steps", 50))
    if method.recipe == BASE and int((shared.get("prefixes") or {}).get("hybrids_per_prompt", 1)) < 1:
        raise ConfigError(f"--recipe-base {base}: {method.name} is the base recipe itself, so the base must be a "
                          "Prefix-RFT recipe (prefixes.hybrids_per_prompt >= 1); use quickstart, compare_toy or "
                          "qwen2.5-math-7b, or leave the Prefix-RFT methods out with --methods")
    own = _own_settings(method.recipe) if method.recipe not in (BASE, base) else {}
    own.get("train", {}).pop("total_steps", None)  # the budget is the base's; SFT->RFT adds its phase below
    raw = apply_overrides(_lay_over(shared, own), list(method.overrides))
    sft = raw.get("sft") or {}
    total = rl_steps
    if sft.get("mode") == "then_rl":
        recipe_raw, _ = read_recipe(method.recipe)
        recipe_total = int(recipe_raw["train"]["total_steps"])
        recipe_sft = int(recipe_raw["sft"]["steps"])
        # keep the recipe's SFT:RL proportion at the base's number of RL steps
        sft_steps = max(1, round(recipe_sft * rl_steps / max(1, recipe_total - recipe_sft)))
        raw["sft"] = {**sft, "steps": sft_steps}
        total = rl_steps + sft_steps
    every = max(1, rl_steps // VALIDATION_POINTS)
    raw = apply_overrides(raw, [f"train.total_steps={total}", f"train.seed={seed}",
                                f"eval.validation_every={every}", f"eval.at_start={str(evaluate_base).lower()}"])
    config_from_dict(raw, f"{method.name} on {base}")  # validate now, not an hour in
    return raw


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


def mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value)."""
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, 0.0
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def read_run(run_dir: Path, method: str, seed: int, base_accuracy: float | None, wall: float) -> RunResult:
    """One finished run's numbers from its summary.json and metrics.jsonl."""
    summary = json.loads((run_dir / "summary.json").read_text())
    final = (summary["eval"].get("toy") or {}).get("final")
    if not final:
        raise UserError(f"{run_dir}/summary.json has no final toy evaluation; the run must evaluate `toy` at the end")
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    curve = [(0, base_accuracy)] if base_accuracy is not None else []
    curve += [(r["step"], r["val_toy_accuracy"]) for r in rows if r.get("val_toy_accuracy") is not None]
    return RunResult(method, seed, final["accuracy"], dict(final.get("accuracy_by_level", {})),
                     summary.get("reward_last_quarter"), wall, curve, rows)


def aggregate(results: list[RunResult], base: dict[str, Any] | None) -> dict[str, Any]:
    """Per method: accuracy mean ± std over seeds, per level, final train reward, wall time."""
    out: dict[str, Any] = {"base": base, "methods": {}}
    for m in METHODS:
        rs = [r for r in results if r.method == m.name]
        if not rs:
            continue
        acc, acc_sd = mean_std([r.accuracy for r in rs])
        levels = sorted({lv for r in rs for lv in r.by_level}, key=int)
        rewards = [r.reward_end for r in rs if r.reward_end is not None]
        out["methods"][m.name] = {
            "label": m.label, "recipe": m.recipe, "overrides": list(m.overrides), "seeds": [r.seed for r in rs],
            "accuracy": acc, "accuracy_std": acc_sd, "accuracy_per_seed": [r.accuracy for r in rs],
            "by_level": {lv: mean_std([r.by_level[lv] for r in rs if lv in r.by_level])[0] for lv in levels},
            "reward_end": mean_std(rewards)[0] if rewards else None,
            "wall_seconds": mean_std([r.wall_seconds for r in rs])[0],
            "curves": {str(r.seed): r.curve for r in rs},
        }
    return out


def results_markdown(agg: dict[str, Any], header: str) -> str:
    methods = agg["methods"]
    levels = sorted({lv for v in methods.values() for lv in v["by_level"]}, key=int)
    head = ["method", "held-out acc. (mean ± std)", *[f"L{lv}" for lv in levels], "train reward (last ¼)", "wall s"]
    lines = [header, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    if agg.get("base"):
        b = agg["base"]
        lines.append("| base policy | " + f"{100 * b['accuracy']:.1f}" + " | "
                     + " | ".join(f"{100 * b.get('accuracy_by_level', {}).get(lv, float('nan')):.1f}" for lv in levels)
                     + " | - | - |")
    for v in methods.values():
        cells = [v["label"], f"{100 * v['accuracy']:.1f} ± {100 * v['accuracy_std']:.1f}",
                 *[f"{100 * v['by_level'][lv]:.1f}" if lv in v["by_level"] else "-" for lv in levels],
                 f"{v['reward_end']:.3f}" if v["reward_end"] is not None else "-", f"{v['wall_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(agg: dict[str, Any], results: list[RunResult], out: Path) -> list[str]:
    """accuracy_over_steps.png, reward.png, prefix_rft.png; returns the files written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e .[dev]); skipping plots", file=sys.stderr)
        return []
    written = []
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, v in agg["methods"].items():
        steps = sorted({s for c in v["curves"].values() for s, _ in c})
        per = [[a for c in v["curves"].values() for s2, a in c if s2 == s] for s in steps]
        if not steps:
            continue
        mean = [sum(p) / len(p) for p in per]
        ax.plot(steps, [100 * x for x in mean], marker="o", ms=3, label=v["label"])
        ax.fill_between(steps, [100 * min(p) for p in per], [100 * max(p) for p in per], alpha=0.15)
    ax.set(xlabel="step", ylabel="held-out accuracy (%) (validation slice)", title="accuracy over steps (band: min-max over seeds)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "accuracy_over_steps.png", dpi=120)
    written.append("accuracy_over_steps.png")
    written += _metric_plots(plt, results, out)
    plt.close("all")
    return written


def _series(results: list[RunResult], method: str, key: str) -> tuple[list[int], list[float]]:
    rows: dict[int, list[float]] = {}
    for r in results:
        if r.method == method:
            for row in r.metrics:
                if row.get(key) is not None and row[key] == row[key]:
                    rows.setdefault(row["step"], []).append(row[key])
    steps = sorted(rows)
    return steps, [sum(rows[s]) / len(rows[s]) for s in steps]


def _metric_plots(plt: Any, results: list[RunResult], out: Path) -> list[str]:
    fig, ax = plt.subplots(figsize=(8, 5))
    for m in METHODS:
        steps, ys = _series(results, m.name, "reward_mean")
        if steps:
            ax.plot(steps, ys, label=m.label)
    ax.set(xlabel="step", ylabel="train reward (mean over seeds)", title="train reward")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "reward.png", dpi=120)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for m in METHODS:
        if not m.prefix_rft:
            continue
        for ax, key, title in zip(axes, ("prefix_ratio_mean", "kept_prefix_entropy"),
                                  ("realised prefix ratio", "entropy of kept prefix tokens")):
            steps, ys = _series(results, m.name, key)
            if steps:
                ax.plot(steps, ys, label=m.label)
            ax.set(xlabel="step", title=title)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "prefix_rft.png", dpi=120)
    return ["reward.png", "prefix_rft.png"]


def run_one(cfg_path: Path, run_dir: Path) -> float:
    """Train one (method, seed) in a subprocess (its log in run_dir/train.log); seconds it took."""
    run_dir.mkdir(parents=True, exist_ok=True)
    t = time.time()
    with open(run_dir / "train.log", "a") as log:
        res = subprocess.run([sys.executable, "-m", "pipeline.train", "--config", str(cfg_path),
                              "--output-dir", str(run_dir)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    if res.returncode != 0:
        tail = (run_dir / "train.log").read_text().splitlines()[-5:]
        raise UserError(f"run {run_dir} failed (exit {res.returncode}); see {run_dir}/train.log:\n  "
                        + "\n  ".join(tail))
    return time.time() - t


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--seeds", default=None, help="comma-separated (default 0,1,2; 0 with --quick)")
    ap.add_argument("--methods", default=",".join(m.name for m in METHODS),
                    help="comma-separated, from: " + ", ".join(m.name for m in METHODS))
    ap.add_argument("--recipe-base", default="compare_toy",
                    help="recipe fixing the shared budget, the task and the model; it is also the Prefix-RFT method "
                         "(default compare_toy: the quickstart trained on levels 2-6)")
    ap.add_argument("--quick", action="store_true", help="one seed, 20 steps: a smoke run of the whole comparison")
    ap.add_argument("--dry-run", action="store_true", help="write and validate every run's config, train nothing")
    ap.add_argument("overrides", nargs="*", help="section.field=value applied to every run (the shared budget)")
    args = ap.parse_args(argv)
    try:
        return _main(args)
    except (UserError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    unknown = [m for m in args.methods.split(",") if m and m not in BY_NAME]
    if unknown:
        raise UserError(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    methods = [BY_NAME[m] for m in args.methods.split(",") if m]
    try:
        seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    overrides = [*(QUICK if args.quick else ()), *args.overrides]
    out = Path(args.output_dir)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    plan = []
    for i, (seed, m) in enumerate((s, m) for s in seeds for m in methods):
        import yaml

        raw = method_config(m, args.recipe_base, seed, overrides, evaluate_base=(i == 0))
        path = out / "configs" / f"{m.name}-seed{seed}.yaml"
        _write(path, f"# {m.label} (seed {seed}) for scripts/compare_methods.py\n" + yaml.safe_dump(raw, sort_keys=False))
        plan.append((m, seed, path, out / "runs" / m.name / f"seed{seed}"))
    print(f"compare_methods: {len(plan)} runs ({len(methods)} methods x {len(seeds)} seeds) on {args.recipe_base}",
          file=sys.stderr)
    if args.dry_run:
        return 0
    t0 = time.time()
    walls: dict[Path, float] = {}
    for k, (m, seed, path, run_dir) in enumerate(plan, 1):
        done = (run_dir / "summary.json").is_file()
        print(f"[{k}/{len(plan)}] {m.name} seed {seed}: {'done' if done else 'training'} ({time.time() - t0:.0f}s)",
              file=sys.stderr)
        walls[run_dir] = (json.loads((run_dir / "summary.json").read_text())["wall_seconds"] if done
                          else run_one(path, run_dir))
    first = plan[0][3]
    base = (json.loads((first / "summary.json").read_text())["eval"].get("toy") or {}).get("base")
    base_val = _base_validation(first)
    results = [read_run(d, m.name, s, base_val, walls[d]) for m, s, _, d in plan]
    agg = aggregate(results, base)
    header = (f"# Method comparison on the embedded task ({args.recipe_base}; seeds {','.join(map(str, seeds))})\n\n"
              f"{time.strftime('%Y-%m-%d')}, {platform.machine()} {os.cpu_count()} cores, torch "
              f"{_torch_version()}; command: `python scripts/compare_methods.py {' '.join(sys.argv[1:])}`")
    agg["command"] = "python scripts/compare_methods.py " + " ".join(sys.argv[1:])
    agg["machine"] = f"{platform.machine()} {os.cpu_count()} cores"
    agg["date"] = time.strftime("%Y-%m-%d")
    agg["plots"] = plot(agg, results, out)
    _write(out / "results.json", json.dumps(agg, indent=1))
    _write(out / "results.md", results_markdown(agg, header))
    print((out / "results.md").read_text())
    return 0


def _base_validation(run_dir: Path) -> float | None:
    """Accuracy of the base policy on the validation slice, evaluated once (first run), as step 0."""
    p = run_dir / "eval" / "validation" / "base" / "summary.json"
    if p.is_file():
        return (json.loads(p.read_text())["suites"].get("toy") or {}).get("accuracy")
    return None


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    sys.exit(main())
