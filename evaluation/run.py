"""Evaluate checkpoints on the evaluation suites with the paper's protocol (SPEC §8).

`paper` protocol (default): math problems as the user turn problem + "Please reason step by step, and
put your final answer within \\boxed{}", no system turn; the choice suites in LUFFY's layout with its
system prompt (what Prefix-RFT evaluates, see evaluation/suites.py); temperature 0.6, top_p 0.95, 8192
new tokens; avg@32 on AIME24, AIME25 and AMC, one sample elsewhere (`eval.samples_per_problem` > 0
overrides every suite). `luffy` protocol: LUFFY's valid.all parquet as it is. Samples are generated,
graded and written `eval.chunk_size` sequences at a time, so n up to 2048 per problem fits in memory and
an interrupted suite resumes after its last complete chunk.

DIR gets one folder per suite (per-sample Arrow dataset: problem id, sample, completion, extracted answer,
reference, correct, status, tokens; meta.json with the summary), `summary.json`, `results.md` and PNG
plots. With several checkpoints (comma-separated, or a run directory) each gets DIR/<name>/ and DIR
gets the table over checkpoints and `accuracy_over_steps.png`.

    python -m evaluation.run --model runs/qs/checkpoints/step-000050 --suites toy --output-dir runs/qs/eval/manual
    python -m evaluation.run --model oracle --suites math,general,toy --data-dir ../shared/data --output-dir /tmp/oracle
    python -m evaluation.run --model Qwen/Qwen2.5-Math-7B --suites math --output-dir eval/q7 eval.protocol=luffy
    python -m evaluation.run --model runs/qs --suites toy --output-dir runs/qs/eval/all   # every checkpoint
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Features, Value, concatenate_datasets

from evaluation.choice import LETTERS, grade_choices
from evaluation.report import write_comparison, write_report
from evaluation.stats import summarise
from evaluation.suites import EvalItem, Suite, resolve_suites
from pipeline import cache
from pipeline.backends import GenerationRequest, RolloutBackend, SamplingParams
from pipeline.config import EvalConfig, build_section
from pipeline.errors import UserError
from pipeline.prompts import build_messages, render_prompt_ids
from pipeline.rewards import math_verify_reward
from pipeline.scoring import Result
from pipeline.seeding import derive_seed

log = logging.getLogger(__name__)

EVAL_VERSION = 2  # 2: real suites, choice grader, protocols, pass@k, chunked generation
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
SAMPLE_FEATURES = {"problem_id": Value("string"), "level": Value("int32"), "sample": Value("int32"),
                   "completion": Value("string"), "extracted_answer": Value("string"), "reference": Value("string"),
                   "correct": Value("bool"), "status": Value("string"), "completion_tokens": Value("int32"),
                   "finish_reason": Value("string")}


def subset(items: list[EvalItem], max_problems: int) -> list[EvalItem]:
    """Evenly spaced problems (keeps a suite's mix of levels/sources), or all when max_problems is 0."""
    if not max_problems or max_problems >= len(items):
        return items
    return [items[i * len(items) // max_problems] for i in range(max_problems)]


def samples_for(suite: Suite, item: EvalItem, cfg: EvalConfig) -> int:
    """eval.samples_per_problem when set; else the source's replication (LUFFY x32) or the paper's count."""
    return cfg.samples_per_problem or item.samples or suite.paper_samples


def item_messages(item: EvalItem) -> list[dict[str, str]]:
    return build_messages(item.problem, INSTRUCTION if item.instruct else None, item.system_prompt)


def oracle_completion(suite: Suite, item: EvalItem) -> str:
    """The reference, boxed: a choice item answers with the label as displayed (ARC's digits included)."""
    answer = item.labels[LETTERS.index(item.answer)] if suite.grader == "choice" else item.answer
    if answer.startswith("countdown:"):  # the embedded Countdown task: the solver's worked route
        from pipeline.embedded import countdown

        target, numbers = countdown.parse_reference(answer)
        return countdown.demonstration(tuple(numbers), countdown.solve(tuple(numbers), target) or [])
    return f"The answer is \\boxed{{{answer}}}."


def grade(suite: Suite, items: list[EvalItem], completions: list[str]) -> list[Result]:
    if suite.grader == "math":
        return math_verify_reward(completions, [it.answer for it in items])
    if suite.grader == "choice":
        return grade_choices(completions, [it.answer for it in items], [list(it.labels) for it in items],
                             [list(it.options) for it in items])
    raise UserError(f"suite {suite.name}: unknown grader {suite.grader!r}")


def _run_chunk(backend: RolloutBackend | None, tokenizer: Any, suite: Suite, cfg: EvalConfig,
               pairs: list[tuple[EvalItem, int]], stop_ids: list[int]) -> Dataset:
    """Generate and grade one chunk of (item, sample index) pairs. backend None is the oracle."""
    items = [it for it, _ in pairs]
    if backend is None:
        texts = [oracle_completion(suite, it) for it in items]
        token_counts, finish = [0] * len(texts), ["stop"] * len(texts)
    else:
        prompt_ids: dict[str, list[int]] = {}
        reqs = []
        for it, s in pairs:
            if it.id not in prompt_ids:
                prompt_ids[it.id] = render_prompt_ids(tokenizer, item_messages(it))
            reqs.append(GenerationRequest(prompt_ids[it.id], [], cfg.max_new_tokens,
                                          derive_seed(cfg.seed, suite.name, it.id, s)))
        outs = backend.generate(reqs, SamplingParams(cfg.temperature, cfg.top_p, 0, stop_ids))
        texts = tokenizer.batch_decode([o.token_ids for o in outs], skip_special_tokens=True)
        token_counts, finish = [len(o.token_ids) for o in outs], [o.finish_reason for o in outs]
    results = grade(suite, items, texts)
    cols = {"problem_id": [it.id for it in items], "level": [it.level for it in items],
            "sample": [s for _, s in pairs], "completion": texts, "extracted_answer": [r[2] for r in results],
            "reference": [it.answer for it in items], "correct": [r[0] == 1.0 for r in results],
            "status": [r[1] for r in results], "completion_tokens": token_counts, "finish_reason": finish}
    return Dataset.from_dict(cols, features=Features(SAMPLE_FEATURES))


def evaluate_suite(backend: RolloutBackend | None, tokenizer: Any, suite: Suite, cfg: EvalConfig, *,
                   stop_ids: list[int], data_dir: str | None = None,
                   chunk_dir: Path | None = None, fp: str = "") -> tuple[Dataset, dict[str, Any]]:
    """Generate and grade one suite in chunks of `cfg.chunk_size` sequences; complete chunks are kept
    under `chunk_dir` (when given) and reused by a re-run with the same fingerprint."""
    items = subset(suite.load(data_dir, cfg.protocol), cfg.max_problems)
    pairs = [(it, s) for it in items for s in range(samples_for(suite, it, cfg))]
    t0, gen_seconds = time.perf_counter(), 0.0
    shards = []
    for c, start in enumerate(range(0, len(pairs), cfg.chunk_size)):
        part = pairs[start:start + cfg.chunk_size]
        folder, cfp = (chunk_dir / f"chunk-{c:06d}") if chunk_dir else None, cache.fingerprint(fp, c, start, len(part))
        if folder is not None and cache.folder_status(folder, cfp) == "complete":
            shards.append(cache.read_stage(folder).load())
            continue
        t = time.perf_counter()
        shard = _run_chunk(backend, tokenizer, suite, cfg, part, stop_ids)
        gen_seconds += time.perf_counter() - t
        if folder is not None and len(pairs) > cfg.chunk_size:
            cache.write_stage(folder, cfp, shard, {"chunk": c, "start": start})
        shards.append(shard)
        log.info("eval %s: %d/%d samples", suite.name, min(start + cfg.chunk_size, len(pairs)), len(pairs))
    ds = concatenate_datasets(shards) if len(shards) > 1 else (shards[0] if shards else
                                                                 Dataset.from_dict({}, features=Features(SAMPLE_FEATURES)))
    return ds, _suite_summary(suite, cfg, items, ds, time.perf_counter() - t0)


def _suite_summary(suite: Suite, cfg: EvalConfig, items: list[EvalItem], ds: Dataset, seconds: float) -> dict:
    cols = ds.select_columns(["correct", "status", "completion_tokens", "finish_reason"]).to_dict()
    counts = [samples_for(suite, it, cfg) for it in items]
    if len(set(counts)) > 1:
        raise UserError(f"suite {suite.name}: problems have different sample counts {sorted(set(counts))}; "
                        "set eval.samples_per_problem")
    k = counts[0] if counts else 0
    correct = np.array(cols["correct"], dtype=float).reshape(len(items), k) if items else np.zeros((0, 0))
    summary = summarise(correct, [it.level for it in items])
    tokens = int(sum(cols["completion_tokens"]))
    n = max(1, len(cols["status"]))
    summary.update({"suite": suite.name, "protocol": cfg.protocol, "metric": f"avg@{k}",
                    "no_answer_rate": cols["status"].count("no_answer") / n,
                    "truncated_rate": cols["finish_reason"].count("length") / n,
                    "seconds": round(seconds, 2), "generated_tokens": tokens,
                    "tokens_per_s": round(tokens / max(seconds, 1e-9), 1)})
    return summary


def evaluate(backend: RolloutBackend | None, tokenizer: Any, suites: list[Suite], cfg: EvalConfig, output_dir: Path,
             *, stop_ids: list[int], policy_fp: str, data_dir: str | None = None,
             label: str = "") -> dict[str, dict[str, Any]]:
    """Evaluate every suite into `output_dir/<suite>/` (cached by policy and eval config), then write
    summary.json, results.md and the plots."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    summaries = {}
    for suite in suites:
        folder = output_dir / suite.name
        fp = cache.fingerprint("eval", EVAL_VERSION, policy_fp, cache.fingerprint(vars(cfg)), suite.name, data_dir)
        if cache.is_complete(folder, fp, f"evaluation {suite.name}"):
            summaries[suite.name] = cache.read_stage(folder).meta["summary"]
            continue
        chunks = output_dir / f".{suite.name}.chunks"
        ds, summary = evaluate_suite(backend, tokenizer, suite, cfg, stop_ids=stop_ids, data_dir=data_dir,
                                     chunk_dir=chunks, fp=fp)
        cache.write_stage(folder, fp, ds, {"stage": "eval", "label": label, "summary": summary, "config": vars(cfg)})
        shutil.rmtree(chunks, ignore_errors=True)
        summaries[suite.name] = summary
        log.info("eval %s %s: %s %.4f ± %.4f (%d problems x %d)", label, suite.name, summary["metric"],
                 summary["accuracy"], summary["stderr"], summary["problems"], summary["samples_per_problem"])
    write_report(output_dir, summaries, label, cfg)
    return summaries


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="prefix-rft eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint dir, hub id, `embedded[:preset]`, `oracle`, several "
                                                   "comma-separated, or a run directory (all its checkpoints)")
    ap.add_argument("--suites", default="toy", help="comma-separated suite or group names (math, general)")
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--data-dir", default=None, help="local copies of the suites (e.g. ../shared/data)")
    ap.add_argument("--trust-remote-code", action="store_true")
    ap.add_argument("overrides", nargs="*", help="eval.field=value")
    args = ap.parse_args(argv)
    from pipeline.logs import setup_logging

    setup_logging()
    try:
        cfg = _eval_config(args.overrides)
        suites = resolve_suites([s.strip() for s in args.suites.split(",") if s.strip()])
        out = Path(args.output_dir)
        models = expand_models(args.model)
        data_dir = args.data_dir or cfg.data_dir
        results = {}
        for name, model in models:
            target = out / name if len(models) > 1 else out
            results[name] = _evaluate_one(model, args, cfg, suites, target, data_dir)
        if len(models) > 1:
            write_comparison(out, results, cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((out / "results.md").read_text(), end="")
    return 0


def _eval_config(overrides: list[str]) -> EvalConfig:
    import yaml

    raw = {}
    for item in overrides:
        key, _, value = item.partition("=")
        if not key.startswith("eval.") or not _:
            raise UserError(f"override {item!r} must look like eval.field=value")
        raw[key[5:]] = yaml.safe_load(value)
    return build_section(EvalConfig, raw, "eval", "command line")


def expand_models(spec: str) -> list[tuple[str, str]]:
    """`a,b` -> [(name, path)]; a run directory -> its checkpoints/step-* in step order."""
    out = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        ckpts = Path(part) / "checkpoints"
        if ckpts.is_dir() and not (Path(part) / "config.json").is_file():
            steps = sorted(ckpts.glob("step-*"), key=lambda p: _step_of(p.name))
            if not steps:
                raise UserError(f"{part}: a run directory without checkpoints/step-*")
            out += [(p.name, str(p)) for p in steps]
        else:
            out.append((Path(part).name or part, part))
    return out


def _step_of(name: str) -> int:
    m = re.search(r"step-0*(\d+)", name)
    return int(m.group(1)) if m else (0 if name == "base" else -1)


def _evaluate_one(model: str, args: argparse.Namespace, cfg: EvalConfig, suites: list[Suite], out: Path,
                  data_dir: str | None) -> dict[str, dict[str, Any]]:
    if model == "oracle":
        return evaluate(None, None, suites, cfg, out, stop_ids=[], policy_fp="oracle", data_dir=data_dir,
                        label="oracle")
    from pipeline.backends.hf import TransformersBackend
    from pipeline.config import ModelConfig
    from pipeline.policy import load_model, load_tokenizer, model_fingerprint, resolve_model_path
    from pipeline.prompts import stop_token_ids

    mcfg = ModelConfig(name_or_path=model, trust_remote_code=args.trust_remote_code)
    path = resolve_model_path(mcfg)
    tokenizer = load_tokenizer(path, mcfg)
    net = load_model(path, mcfg)
    backend = TransformersBackend(net, pad_token_id=tokenizer.pad_token_id, batch_size=cfg.batch_size,
                                  precision=cfg.precision)
    return evaluate(backend, tokenizer, suites, cfg, out, stop_ids=stop_token_ids(tokenizer, net.config),
                    policy_fp=model_fingerprint(path, mcfg), data_dir=data_dir, label=model)


def validation_config(cfg: EvalConfig) -> EvalConfig:
    """The small slice evaluated every `eval.validation_every` training steps: `validation_problems`
    evenly spaced problems per suite, `samples_per_problem` samples (1 when it is the protocol default)."""
    return replace(cfg, max_problems=cfg.validation_problems, samples_per_problem=cfg.samples_per_problem or 1)


if __name__ == "__main__":
    sys.exit(main())
