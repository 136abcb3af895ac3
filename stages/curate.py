"""curate: demonstrations -> one verified, tokenized schema.

Input (from `load_source`): id, source, level, problem, demonstration, answer.
Output adds: prompt (chat messages), demo_verified, prompt_ids, demo_ids. Rows whose demonstration's
final answer math-verify does not match the reference are dropped (or kept flagged), as are rows with
an empty demonstration or over the token limits of the policy tokenizer.

    python -m pipeline.stage curate --output-dir runs/qs --step 0 --force
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from datasets import Dataset

from pipeline import cache
from pipeline import schema as S
from pipeline.config import DataConfig, fingerprint_view, load_config
from pipeline.errors import UserError
from pipeline.graph import StageSpec, no_inputs
from pipeline.logs import setup_logging
from pipeline.policy import load_tokenizer, model_fingerprint, resolve_model_path
from pipeline.prompts import build_messages, render_prompt_ids
from pipeline.rewards import math_verify_reward

log = logging.getLogger(__name__)

STAGE_VERSION = 2  # 1: toy source, math-verify check, token filters; 2: dedup, decontamination, files
REQUIRES = (S.ID, S.SOURCE, S.LEVEL, S.PROBLEM, S.DEMONSTRATION, S.ANSWER)
PRODUCES = S.CURATE_COLUMNS


def load_source(cfg: DataConfig, report: dict[str, Any] | None = None) -> Dataset:
    """The raw rows of the configured source, normalised to the input schema; `report` (if given)
    receives the per-source read/malformed counts under `sources`."""
    if cfg.source == "files":
        from pipeline.sources import load_sources

        ds, counts = load_sources(cfg.sources, cfg.seed)
        if report is not None:
            report["sources"] = counts
        return ds
    from pipeline.embedded import countdown, task

    mod = countdown if cfg.source == "countdown" else task
    problems = mod.train_split(cfg.toy.levels, cfg.toy.problems_per_level, cfg.toy.seed)
    return S.make_dataset({
        S.ID: [mod.problem_id(p) for p in problems],
        S.SOURCE: [cfg.source] * len(problems),
        S.LEVEL: [p.level for p in problems],
        S.PROBLEM: [p.text for p in problems],
        S.DEMONSTRATION: [p.demonstration for p in problems],
        S.ANSWER: [str(p.answer) for p in problems],
    })


def input_fingerprint(cfg: DataConfig) -> list[Any]:
    """(path, size, mtime) of every local source file and of the local evaluation copies, so that the
    curate cache notices an edited file at the same path; [] for the toy source. Hub sources are keyed by id."""
    from pathlib import Path

    if cfg.source in ("toy", "countdown"):
        return []
    paths = [Path(s["path"]) for s in cfg.sources if s.get("path") and not s["path"].startswith("hub:")]
    if cfg.decontam.suites and cfg.decontam.data_dir:
        root = Path(cfg.decontam.data_dir)
        paths += sorted(p for d in (root, root / "eval") if d.is_dir() for p in d.iterdir() if p.is_file())
    files = [f for p in paths for f in (sorted(p.rglob("*")) if p.is_dir() else [p]) if f.is_file()]
    return [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def dedup_rows(problems: list[str]) -> list[int]:
    """Indices of the first occurrence of each normalised problem text (exact and near-exact duplicates)."""
    from pipeline.decontam import dedup_key

    seen: set[str] = set()
    keep = []
    for i, text in enumerate(problems):
        key = dedup_key(text)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return keep


def eval_index(cfg: DataConfig):
    """The n-gram index over the problems of `data.decontam.suites` (loaded from `data.decontam.data_dir` or
    the hub)."""
    from evaluation.suites import resolve_suites
    from pipeline.decontam import EvalIndex

    index = EvalIndex(n=cfg.decontam.ngram, threshold=cfg.decontam.threshold)
    for suite in resolve_suites(cfg.decontam.suites):
        if suite.name == "toy":
            continue
        for item in suite.load(cfg.decontam.data_dir):
            index.add(suite.name, item.id, item.question or item.problem)
    return index.finalise()


def decontaminate(rows: dict[str, list], keep: list[int], cfg: DataConfig) -> tuple[list[int], list[dict]]:
    """`keep` without the rows whose problem matches an evaluation problem, and one record per dropped
    row: training id, suite, evaluation problem id, n-gram overlap."""
    if cfg.source in ("toy", "countdown") or not cfg.decontam.suites:
        return keep, []
    index = eval_index(cfg)
    clean, dropped = [], []
    for i in keep:
        m = index.match(rows[S.PROBLEM][i])
        if m is None:
            clean.append(i)
        else:
            dropped.append({"id": rows[S.ID][i], "suite": m.suite, "eval_id": m.eval_id, "overlap": m.overlap})
    return clean, dropped


def percentiles(lengths: list[int]) -> dict[str, int]:
    if not lengths:
        return {}
    arr = np.asarray(lengths)
    return {f"p{q}": int(np.percentile(arr, q)) for q in (50, 90, 99)} | {"max": int(arr.max())}


def run(ds: Dataset, cfg: DataConfig, *, tokenizer: Any, report: dict[str, Any] | None = None) -> Dataset:
    """Deduplicate, decontaminate, verify, render and tokenize; drop rows that fail; keep
    `prompt_fraction` of the rest, `demo_fraction` of those with their demonstration. `report` (if
    given) receives the counts."""
    S.require_columns(ds, REQUIRES, "curate")
    counts: dict[str, Any] = {"rows_in": len(ds), "dropped_duplicate": 0, "dropped_contaminated": 0,
                              "dropped_empty_demo": 0, "dropped_demo_mismatch": 0, "flagged_demo_mismatch": 0,
                              "dropped_unparsable_answer": 0, "dropped_verifier_failed": 0,
                              "dropped_prompt_too_long": 0, "dropped_demo_too_long": 0}
    rows = ds.to_dict()
    keep = dedup_rows(rows[S.PROBLEM]) if cfg.dedup else list(range(len(ds)))
    counts["dropped_duplicate"] = len(ds) - len(keep)
    keep, contaminated = decontaminate(rows, keep, cfg)
    counts["dropped_contaminated"] = len(contaminated)
    if cfg.filters == "reference":  # count what the filters would remove, keep every row
        counts["reference_would_drop_duplicate"] = counts.pop("dropped_duplicate")
        counts["reference_would_drop_contaminated"] = counts.pop("dropped_contaminated")
        keep = list(range(len(ds)))
    out = _verify_and_tokenize(rows, keep, cfg, tokenizer, counts)
    n = len(out[S.ID])
    if cfg.prompt_fraction < 1.0 and n:
        chosen = sorted(random.Random(f"prompts-{cfg.seed}").sample(range(n), round(cfg.prompt_fraction * n)))
        counts["dropped_prompt_fraction"] = n - len(chosen)
        out = {c: [v[j] for j in chosen] for c, v in out.items()}
    _drop_demonstrations(out, cfg, counts)
    counts["rows_out"] = len(out[S.ID])
    counts["prompt_tokens"] = percentiles([len(x) for x in out[S.PROMPT_IDS]])
    counts["demo_tokens"] = percentiles([len(x) for x in out[S.DEMO_IDS]])
    counts["contaminated"] = contaminated
    if report is not None:
        report.update(counts)
    log.info("curate: %s", {k: v for k, v in counts.items() if k != "contaminated"})
    return S.make_dataset(out)


def _drop_demonstrations(out: dict[str, list], cfg: DataConfig, counts: dict[str, Any]) -> None:
    """Keep the demonstration of a seeded `demo_fraction` of the rows; empty it on the others."""
    n = len(out[S.ID])
    if cfg.demo_fraction >= 1.0 or not n:
        return
    keep = set(random.Random(f"demos-{cfg.seed}").sample(range(n), round(cfg.demo_fraction * n)))
    for j in set(range(n)) - keep:
        out[S.DEMONSTRATION][j], out[S.DEMO_IDS][j], out[S.DEMO_VERIFIED][j] = "", [], False
    counts["prompts_without_demo"] = n - len(keep)


def _verify_and_tokenize(rows: dict[str, list], keep: list[int], cfg: DataConfig, tokenizer: Any,
                         counts: dict[str, Any]) -> dict[str, list]:
    demos = [rows[S.DEMONSTRATION][i] for i in keep]
    verdicts = math_verify_reward([d if isinstance(d, str) else "" for d in demos],
                                  [str(rows[S.ANSWER][i]) for i in keep])
    failed = sum(v[1] == "timeout" for v in verdicts)
    if verdicts and failed > len(verdicts) // 2:
        raise RuntimeError(f"curate: the verifier timed out on {failed} of {len(verdicts)} demonstrations; "
                           f"the scoring workers are broken or starved, not the data")
    out: dict[str, list] = {c: [] for c in PRODUCES}
    for i, demo, verdict in zip(keep, demos, verdicts):
        if not isinstance(demo, str) or not demo.strip():
            counts["dropped_empty_demo"] += 1
            continue
        # error: the reference does not parse (grade_math); timeout: the verifier gave up on this row
        failed = {"error": "unparsable_answer", "timeout": "verifier_failed"}.get(verdict[1])
        verified = verdict[0] == 1.0
        if cfg.filters == "reference":  # keep the row; count what the check would have removed
            reason = failed or (None if verified else "demo_mismatch")
            if reason:
                counts[f"reference_would_drop_{reason}"] = counts.get(f"reference_would_drop_{reason}", 0) + 1
        elif failed:
            counts[f"dropped_{failed}"] += 1
            continue
        elif not verified:
            if cfg.on_demo_mismatch == "drop":
                counts["dropped_demo_mismatch"] += 1
                continue
            counts["flagged_demo_mismatch"] += 1
        messages = build_messages(rows[S.PROBLEM][i], cfg.instruction, cfg.system_prompt)
        prompt_ids = render_prompt_ids(tokenizer, messages)
        if len(prompt_ids) > cfg.max_prompt_tokens:
            counts["dropped_prompt_too_long"] += 1
            continue
        demo_ids = tokenizer(demo, add_special_tokens=False)["input_ids"]
        if len(demo_ids) > cfg.max_demo_tokens:
            counts["dropped_demo_too_long"] += 1
            continue
        for col in REQUIRES:
            out[col].append(rows[col][i])
        out[S.PROMPT].append(messages)
        out[S.DEMO_VERIFIED].append(verified)
        out[S.PROMPT_IDS].append(prompt_ids)
        out[S.DEMO_IDS].append(demo_ids)
    return out


# ---------------------------------------------------------------------------------------------------
# standalone curation with a printed report


def report_table(report: dict[str, Any]) -> str:
    """The curation report as a markdown table: rows per source, drops per reason, rows out, lengths."""
    lines = ["| step | rows |", "|---|---|"]
    for name, c in report.get("sources", {}).items():
        lines.append(f"| source `{name}`: read | {c['rows_read']} |")
        lines += [f"| source `{name}`: {k} | {v} |" for k, v in c.items() if k.startswith("dropped_") and v]
        lines.append(f"| source `{name}`: kept | {c['rows_kept']} |")
    lines.append(f"| **rows in** | **{report['rows_in']}** |")
    lines += [f"| {k} | {v} |" for k, v in report.items() if k.startswith(("dropped_", "flagged_", "prompts_"))]
    lines.append(f"| **rows out** | **{report['rows_out']}** |")
    by_suite: dict[str, int] = {}
    for m in report.get("contaminated", []):
        by_suite[m["suite"]] = by_suite.get(m["suite"], 0) + 1
    lines += [f"| contaminated by `{s}` | {n} |" for s, n in sorted(by_suite.items())]
    for key in ("prompt_tokens", "demo_tokens"):
        if report.get(key):
            lines.append(f"| {key} " + " ".join(f"{q}={v}" for q, v in report[key].items()) + " | |")
    return "\n".join(lines) + "\n"


def config_slice(cfg: Any, step: int) -> tuple:
    """What of the config the curated rows depend on: the data section (as hashed before `data.toy` and
    `data.decontam` were grouped, so earlier caches stay valid) and the source files' identity."""
    return (fingerprint_view("data", cfg.data), input_fingerprint(cfg.data))


def compute(job: Any, step: int, inputs: dict[str, cache.StageRecord]) -> tuple[Dataset, dict[str, Any]]:
    """The orchestrator's curate: the recipe's source through `run` with the policy tokenizer."""
    report: dict[str, Any] = {}
    ds = run(load_source(job.cfg.data, report), job.cfg.data, tokenizer=job.tokenizer, report=report)
    if len(ds) == 0:
        raise UserError(f"curate kept no rows ({report}); check data.* limits and the source")
    return ds, report


SPEC = StageSpec("curate", STAGE_VERSION, config_slice, no_inputs, compute, policy="base", produces=PRODUCES)


def main(argv: list[str] | None = None) -> int:
    """python -m stages.curate --config RECIPE --output-dir DIR [section.field=value ...]: curate the
    recipe's data alone; writes DIR/curate (Arrow dataset, meta.json, stats.json; the fingerprint a
    training run with the same recipe and DIR reuses) and prints the report."""
    ap = argparse.ArgumentParser(prog="python -m stages.curate", description=main.__doc__)
    ap.add_argument("--config", required=True)
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("overrides", nargs="*", help="section.field=value")
    args = ap.parse_args(argv)
    setup_logging()
    try:
        cfg = load_config(args.config, args.overrides)
        base_path = resolve_model_path(cfg.model)
        base_fp = model_fingerprint(base_path, cfg.model)
        ds, report = compute(SimpleNamespace(cfg=cfg, tokenizer=load_tokenizer(base_path, cfg.model)), 0, {})
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    fp = SPEC.fingerprint(cfg, 0, [], base_fp)
    stats = json.dumps(report, indent=1, sort_keys=True)
    meta = {"stage": "curate", "step": 0, "stage_version": STAGE_VERSION, "inputs": {"model": base_fp},
            "stats": {"rows": len(ds), **report}}
    cache.write_stage(Path(args.output_dir) / "curate", fp, ds, meta,
                      extra=lambda tmp: (tmp / "stats.json").write_text(stats))
    print(report_table(report), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
