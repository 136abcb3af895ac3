"""Evaluate a checkpoint on evaluation suites with the paper's protocol (SPEC §8).

The user turn is the problem plus the training instruction, no system turn; sampling at temperature
0.6, top_p 0.95; `eval.samples_per_problem` samples per problem. Each suite gets a folder with the
per-sample Arrow dataset and its summary; DIR gets `summary.json` and `results.md`.

    python -m evaluation.run --model runs/qs/checkpoints/step-000060 --suites toy --output-dir runs/qs/eval/final
    python -m evaluation.run --model oracle --suites toy --output-dir /tmp/oracle
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Features, Value

from evaluation.suites import EvalItem, Suite, resolve_suites
from pipeline import cache
from pipeline.backends import GenerationRequest, RolloutBackend, SamplingParams
from pipeline.config import EvalConfig, build_section
from pipeline.errors import UserError
from pipeline.prompts import build_messages, render_prompt_ids
from pipeline.rewards import math_verify_reward
from pipeline.seeding import derive_seed

log = logging.getLogger(__name__)

EVAL_VERSION = 1  # 1: paper protocol, math grader
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
SAMPLE_FEATURES = {"problem_id": Value("string"), "level": Value("int32"), "sample": Value("int32"),
                   "completion": Value("string"), "extracted_answer": Value("string"), "correct": Value("bool"),
                   "status": Value("string"), "completion_tokens": Value("int32"), "finish_reason": Value("string")}


def subset(items: list[EvalItem], max_problems: int) -> list[EvalItem]:
    """Evenly spaced problems (keeps a suite's mix of levels/sources), or all when max_problems is 0."""
    if not max_problems or max_problems >= len(items):
        return items
    return [items[i * len(items) // max_problems] for i in range(max_problems)]


def grade(suite: Suite, completions: list[str], answers: list[str]) -> list[tuple[float, str, str]]:
    if suite.grader == "math":
        return math_verify_reward(completions, answers)
    raise UserError(f"suite {suite.name}: unknown grader {suite.grader!r}")


def summarise(correct: np.ndarray, levels: list[int]) -> dict[str, Any]:
    """correct [problems, samples] -> accuracy (avg@k), standard error over problems, per-level accuracy."""
    per_problem = correct.mean(axis=1)
    n = len(per_problem)
    out = {"accuracy": float(per_problem.mean()) if n else 0.0,
           "stderr": float(per_problem.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
           "problems": n, "samples_per_problem": int(correct.shape[1]) if n else 0}
    by_level = {}
    for lv in sorted(set(levels)):
        if lv >= 0:
            mask = np.array(levels) == lv
            by_level[str(lv)] = float(per_problem[mask].mean())
    if by_level:
        out["accuracy_by_level"] = by_level
    return out


def evaluate_suite(backend: RolloutBackend | None, tokenizer: Any, suite: Suite, cfg: EvalConfig, *,
                   stop_ids: list[int], data_dir: str | None = None) -> tuple[Dataset, dict[str, Any]]:
    """Generate and grade one suite. backend None is the oracle (answers with the reference)."""
    items = subset(suite.load(data_dir), cfg.max_problems)
    k = cfg.samples_per_problem
    t0 = time.perf_counter()
    if backend is None:
        texts = [f"The answer is \\boxed{{{it.answer}}}." for it in items for _ in range(k)]
        token_counts, finish = [0] * len(texts), ["stop"] * len(texts)
    else:
        reqs = []
        for it in items:
            ids = render_prompt_ids(tokenizer, build_messages(it.problem, INSTRUCTION))
            reqs += [GenerationRequest(ids, [], cfg.max_new_tokens, derive_seed(cfg.seed, suite.name, it.id, s))
                     for s in range(k)]
        outs = backend.generate(reqs, SamplingParams(cfg.temperature, cfg.top_p, 0, stop_ids))
        texts = tokenizer.batch_decode([o.token_ids for o in outs], skip_special_tokens=True)
        token_counts, finish = [len(o.token_ids) for o in outs], [o.finish_reason for o in outs]
    seconds = time.perf_counter() - t0
    results = grade(suite, texts, [it.answer for it in items for _ in range(k)])
    correct = np.array([r[0] == 1.0 for r in results], dtype=float).reshape(len(items), k)
    summary = summarise(correct, [it.level for it in items])
    summary.update({"suite": suite.name, "seconds": round(seconds, 2),
                    "generated_tokens": int(sum(token_counts)),
                    "tokens_per_s": round(sum(token_counts) / max(seconds, 1e-9), 1)})
    cols = {"problem_id": [it.id for it in items for _ in range(k)],
            "level": [it.level for it in items for _ in range(k)],
            "sample": [s for _ in items for s in range(k)], "completion": texts,
            "extracted_answer": [r[2] for r in results], "correct": [r[0] == 1.0 for r in results],
            "status": [r[1] for r in results], "completion_tokens": token_counts, "finish_reason": finish}
    return Dataset.from_dict(cols, features=Features(SAMPLE_FEATURES)), summary


def evaluate(backend: RolloutBackend | None, tokenizer: Any, suites: list[Suite], cfg: EvalConfig, output_dir: Path,
             *, stop_ids: list[int], policy_fp: str, data_dir: str | None = None,
             label: str = "") -> dict[str, dict[str, Any]]:
    """Evaluate every suite into `output_dir/<suite>/` (cached by policy and eval config)."""
    output_dir = Path(output_dir)
    summaries = {}
    for suite in suites:
        folder = output_dir / suite.name
        fp = cache.fingerprint("eval", EVAL_VERSION, policy_fp, cache.fingerprint(vars(cfg)), suite.name, data_dir)
        if cache.is_complete(folder, fp, f"evaluation {suite.name}"):
            summaries[suite.name] = cache.read_stage(folder).meta["summary"]
            continue
        ds, summary = evaluate_suite(backend, tokenizer, suite, cfg, stop_ids=stop_ids, data_dir=data_dir)
        cache.write_stage(folder, fp, ds, {"stage": "eval", "label": label, "summary": summary, "config": vars(cfg)})
        summaries[suite.name] = summary
        log.info("eval %s %s: accuracy %.4f ± %.4f (%d problems x %d)", label, suite.name, summary["accuracy"],
                 summary["stderr"], summary["problems"], summary["samples_per_problem"])
    _write_report(output_dir, summaries, label)
    return summaries


def _write_report(output_dir: Path, summaries: dict[str, dict[str, Any]], label: str) -> None:
    tmp = output_dir / "summary.json.tmp"
    tmp.write_text(json.dumps({"label": label, "suites": summaries}, indent=1))
    tmp.replace(output_dir / "summary.json")
    lines = ["| suite | accuracy | ± s.e. | problems | samples |", "|---|---|---|---|---|"]
    for name, s in summaries.items():
        lines.append(f"| {name} | {100 * s['accuracy']:.1f} | {100 * s['stderr']:.1f} | {s['problems']} | "
                     f"{s['samples_per_problem']} |")
    (output_dir / "results.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="prefix-rft eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint dir, hub id, `embedded[:preset]`, or `oracle`")
    ap.add_argument("--suites", default="toy", help="comma-separated suite or group names")
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--data-dir", default=None, help="local copies of the suites (e.g. ../shared/data)")
    ap.add_argument("--trust-remote-code", action="store_true")
    ap.add_argument("overrides", nargs="*", help="eval.field=value")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = _eval_config(args.overrides)
        suites = resolve_suites([s.strip() for s in args.suites.split(",") if s.strip()])
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        if args.model == "oracle":
            summaries = evaluate(None, None, suites, cfg, out, stop_ids=[], policy_fp="oracle", data_dir=args.data_dir,
                                 label="oracle")
        else:
            summaries = _evaluate_model(args, cfg, suites, out)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((out / "results.md").read_text(), end="")
    return 0 if summaries else 1


def _eval_config(overrides: list[str]) -> EvalConfig:
    raw = {}
    for item in overrides:
        key, _, value = item.partition("=")
        if not key.startswith("eval.") or not _:
            raise UserError(f"override {item!r} must look like eval.field=value")
        import yaml

        raw[key[5:]] = yaml.safe_load(value)
    return build_section(EvalConfig, raw, "eval", "command line")


def _evaluate_model(args: argparse.Namespace, cfg: EvalConfig, suites: list[Suite], out: Path):
    from pipeline.backends.hf import TransformersBackend
    from pipeline.config import ModelConfig
    from pipeline.policy import load_model, load_tokenizer, model_fingerprint, resolve_model_path
    from pipeline.prompts import stop_token_ids

    mcfg = ModelConfig(name_or_path=args.model, trust_remote_code=args.trust_remote_code)
    path = resolve_model_path(mcfg)
    tokenizer = load_tokenizer(path, mcfg)
    model = load_model(path, mcfg)
    backend = TransformersBackend(model, pad_token_id=tokenizer.pad_token_id, batch_size=cfg.batch_size,
                                  precision=cfg.precision)
    return evaluate(backend, tokenizer, suites, cfg, out, stop_ids=stop_token_ids(tokenizer, model.config),
                    policy_fp=model_fingerprint(path, mcfg), data_dir=args.data_dir, label=args.model)


if __name__ == "__main__":
    sys.exit(main())
