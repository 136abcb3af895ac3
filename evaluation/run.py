"""Evaluate checkpoints on the evaluation suites with the paper's protocol (docs/method.md §8).

`ours` protocol (default): math problems as the user turn problem + "Please reason step by step, and
put your final answer within \\boxed{}.", no system turn of ours (the model's chat template may add its
own); the choice suites in LUFFY's layout with its system prompt; temperature 0.6, top_p 0.95, 8192 new
tokens; avg@32 on AIME24, AIME25 and AMC, one sample elsewhere (`eval.samples_per_problem` > 0
overrides every suite). `paper` (Prefix-RFT's evaluation data) and `luffy` (LUFFY's eval script): see
evaluation/protocols.py; `eval.grader` picks math-verify or the OAT grader under any. Samples are generated,
graded and written `eval.chunk_size` sequences at a time, so n up to 2048 per problem fits in memory and
an interrupted suite resumes after its last complete chunk.

DIR gets one folder per suite (per-sample Arrow dataset: problem id, sample, completion, extracted answer,
reference, correct, status, tokens; meta.json with the summary), `summary.json`, `results.md` and PNG
plots. With several checkpoints (comma-separated, or a run directory) each gets DIR/<name>/ and DIR
gets the table over checkpoints and `accuracy_over_steps.png`.

    python -m evaluation.run --model runs/qs/checkpoints/step-000050 --suites toy --output-dir runs/qs/eval/manual
    python -m evaluation.run --model oracle --suites math,general,toy --data-dir data --output-dir runs/oracle
    python -m evaluation.run --model negative --suites math,general --data-dir data --output-dir runs/negative
    python -m evaluation.run --model Qwen/Qwen2.5-Math-7B --suites math --output-dir eval/q7 eval.protocol=luffy
    python -m evaluation.run --model runs/qs --suites toy --output-dir runs/qs/eval/all   # every checkpoint
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Features, Value, concatenate_datasets

from evaluation.choice import LETTERS, grade_choices
from evaluation.protocols import PROTOCOLS, Protocol, grade_region
from evaluation.report import step_of, write_comparison, write_report
from evaluation.stats import summarise
from evaluation.suites import EvalItem, Suite, resolve_suites
from pipeline import cache
from pipeline.backends import GenerationRequest, RolloutBackend, SamplingParams
from pipeline.backends.hf import TransformersBackend
from pipeline.config import EvalConfig, ModelConfig, apply_overrides, build_section, fingerprint_view
from pipeline.embedded import countdown
from pipeline.errors import UserError
from pipeline.logs import setup_logging
from pipeline.oat_grader import oat_reward
from pipeline.policy import load_model, load_tokenizer, model_fingerprint, resolve_model_path
from pipeline.prompts import build_messages, render_prompt_ids, stop_token_ids
from pipeline.rewards import math_verify_reward
from pipeline.scoring import Result
from pipeline.seeding import derive_seed

log = logging.getLogger(__name__)

EVAL_VERSION = 3  # 2: real suites, choice grader, protocols, pass@k, chunked generation; 3: protocol table
CONTROLS = ("oracle", "oracle-unboxed", "negative")  # models that answer from the reference (no generation)
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


def item_messages(item: EvalItem, protocol: Protocol = PROTOCOLS["ours"]) -> list[dict[str, str]]:
    return build_messages(item.problem, protocol.instruction if item.instruct else None, item.system_prompt)


def _label(suite: Suite, item: EvalItem) -> str:
    """The reference as displayed: a choice item's label (ARC's digits included), else the answer."""
    return item.labels[LETTERS.index(item.answer)] if suite.grader == "choice" else item.answer


def wrong_answers(suite: Suite, items: list[EvalItem]) -> dict[str, str]:
    """The negative control's answer per item: the next option of a choice item; for a math item the
    reference of the next problem of the suite whose reference differs (a well-formed wrong answer)."""
    if suite.grader == "choice":
        return {it.id: it.labels[(LETTERS.index(it.answer) + 1) % len(it.labels)] for it in items}
    distinct = list({it.id: it for it in items}.values())
    out = {}
    for k, it in enumerate(distinct):
        others = distinct[k + 1:] + distinct[:k]
        out[it.id] = next((o.answer for o in others if o.answer.strip("$ ") != it.answer.strip("$ ")), "")
    return out


def oracle_completion(suite: Suite, item: EvalItem, control: str = "oracle", wrong: dict[str, str] | None = None) -> str:
    """A control's answer: `oracle` boxes the reference; `oracle-unboxed` states it without a box
    (`ANSWER: C` for a choice item); `negative` boxes a wrong answer (`wrong_answers`)."""
    label = _label(suite, item)
    if control == "oracle" and label.startswith(countdown.PREFIX):  # the embedded Countdown task: a solver route
        target, numbers = countdown.parse_reference(label)
        return countdown.demonstration(tuple(numbers), countdown.solve(tuple(numbers), target) or [])
    if control == "oracle-unboxed":
        return f"ANSWER: {label}" if suite.grader == "choice" else f"The final answer is {label}"
    if control == "negative":
        label = (wrong or wrong_answers(suite, [item]))[item.id]
    return f"The answer is \\boxed{{{label}}}."


def grader_of(cfg: EvalConfig) -> str:
    return PROTOCOLS[cfg.protocol].grader if cfg.grader == "protocol" else cfg.grader


def grade(suite: Suite, items: list[EvalItem], completions: list[str], cfg: EvalConfig | None = None,
          think_prompt: list[bool] | None = None) -> list[Result]:
    """Grade under the protocol: the graded region (evaluation/protocols.py), then math-verify or the OAT
    grader; choice items under `ours` by the lenient letter extractor, else as boxed literal labels."""
    cfg = cfg or EvalConfig()
    proto, grader = PROTOCOLS[cfg.protocol], grader_of(cfg)
    if suite.grader == "choice" and not proto.boxed_choice:
        return grade_choices(completions, [it.answer for it in items], [list(it.labels) for it in items],
                             [list(it.options) for it in items])
    if suite.grader not in ("math", "choice"):
        raise UserError(f"suite {suite.name}: unknown grader {suite.grader!r}")
    think_prompt = think_prompt or [False] * len(items)
    regions = [grade_region(c, proto, grader, t) for c, t in zip(completions, think_prompt, strict=True)]
    refs = [_label(suite, it) for it in items]
    texts = [r for r, _ in regions]
    if grader == "oat":
        results = oat_reward(texts, refs)
    else:
        results = math_verify_reward(texts, refs, after_think=False)
    return [(0.0, "no_answer", "") if zero else res for res, (_, zero) in zip(results, regions)]


def _run_chunk(backend: RolloutBackend | None, tokenizer: Any, suite: Suite, cfg: EvalConfig,
               pairs: list[tuple[EvalItem, int]], stop_ids: list[int], control: str = "oracle",
               data_dir: str | None = None) -> Dataset:
    """Generate and grade one chunk of (item, sample index) pairs. backend None: `control` answers."""
    items = [it for it, _ in pairs]
    proto = PROTOCOLS[cfg.protocol]
    think = [False] * len(items)
    if backend is None:
        wrong = wrong_answers(suite, list(suite.load(data_dir, cfg.protocol))) if control == "negative" else None
        texts = [oracle_completion(suite, it, control, wrong) for it in items]
        token_counts, finish = [0] * len(texts), ["stop"] * len(texts)
    else:
        prompt_ids: dict[str, list[int]] = {}
        reqs = []
        for it, s in pairs:
            if it.id not in prompt_ids:
                prompt_ids[it.id] = render_prompt_ids(tokenizer, item_messages(it, proto))
            reqs.append(GenerationRequest(prompt_ids[it.id], [], cfg.max_new_tokens,
                                          derive_seed(cfg.seed, suite.name, it.id, s)))
        outs = backend.generate(reqs, SamplingParams(cfg.temperature, cfg.top_p or proto.top_p, 0, stop_ids))
        texts = tokenizer.batch_decode([o.token_ids for o in outs], skip_special_tokens=True)
        token_counts, finish = [len(o.token_ids) for o in outs], [o.finish_reason for o in outs]
        ends = {k: tokenizer.decode(v[-8:]).endswith("<think>\n") for k, v in prompt_ids.items()}
        think = [ends[it.id] for it in items]
    results = grade(suite, items, texts, cfg, think)
    cols = {"problem_id": [it.id for it in items], "level": [it.level for it in items],
            "sample": [s for _, s in pairs], "completion": texts, "extracted_answer": [r[2] for r in results],
            "reference": [it.answer for it in items], "correct": [r[0] == 1.0 for r in results],
            "status": [r[1] for r in results], "completion_tokens": token_counts, "finish_reason": finish}
    return Dataset.from_dict(cols, features=Features(SAMPLE_FEATURES))


def evaluate_suite(backend: RolloutBackend | None, tokenizer: Any, suite: Suite, cfg: EvalConfig, *,
                   stop_ids: list[int], data_dir: str | None = None,
                   chunk_dir: Path | None = None, fp: str = "", control: str = "oracle") -> tuple[Dataset, dict[str, Any]]:
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
        shard = _run_chunk(backend, tokenizer, suite, cfg, part, stop_ids, control, data_dir)
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
             label: str = "", control: str = "oracle", plots: bool = True) -> dict[str, dict[str, Any]]:
    """Evaluate every suite into `output_dir/<suite>/` (cached by policy and eval config), then write
    summary.json, results.md and (with `plots`) the plots."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    summaries = {}
    for suite in suites:
        folder = output_dir / suite.name
        fp = cache.fingerprint("eval", EVAL_VERSION, policy_fp, cache.fingerprint(fingerprint_view("eval", cfg)),
                               suite.name, data_dir)
        if cache.is_complete(folder, fp, f"evaluation {suite.name}"):
            summaries[suite.name] = cache.read_stage(folder).meta["summary"]
            continue
        chunks = output_dir / f".{suite.name}.chunks"
        ds, summary = evaluate_suite(backend, tokenizer, suite, cfg, stop_ids=stop_ids, data_dir=data_dir,
                                     chunk_dir=chunks, fp=fp, control=control)
        cache.write_stage(folder, fp, ds, {"stage": "eval", "label": label, "summary": summary, "config": asdict(cfg)})
        shutil.rmtree(chunks, ignore_errors=True)
        summaries[suite.name] = summary
        log.info("eval %s %s: %s %.4f ± %.4f (%d problems x %d)", label, suite.name, summary["metric"],
                 summary["accuracy"], summary["stderr"], summary["problems"], summary["samples_per_problem"])
    write_report(output_dir, summaries, label, cfg, plots=plots)
    return summaries


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="prefix-rft eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint dir, hub id, `embedded[:preset]`, a control "
                                                   "(`oracle`, `oracle-unboxed`, `negative`), several comma-"
                                                   "separated, or a run directory (all its checkpoints)")
    ap.add_argument("--suites", default="toy", help="comma-separated suite or group names (math, general)")
    ap.add_argument("--output-dir", required=True, help="one directory (several models: a folder per model "
                                                        "in it, and a comparison), or one per model, comma-"
                                                        "separated in --model's order")
    ap.add_argument("--data-dir", default=None, help="local copies of the suites (e.g. data)")
    ap.add_argument("--trust-remote-code", action="store_true")
    ap.add_argument("overrides", nargs="*", help="eval.field=value")
    args = ap.parse_args(argv)
    setup_logging()
    try:
        cfg = _eval_config(args.overrides)
        suites = resolve_suites([s.strip() for s in args.suites.split(",") if s.strip()])
        cfg = replace(cfg, suites=[s.name for s in suites])  # summary.json's config: the suites evaluated
        models = expand_models(args.model)
        targets, comparison = output_dirs(args.output_dir, models)
        data_dir = args.data_dir or cfg.data_dir
        results = {}
        for (name, model), target in zip(models, targets):
            results[name] = _evaluate_one(model, args, cfg, suites, target, data_dir)
        if comparison is not None:
            write_comparison(comparison, results, cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for d in [comparison] if comparison is not None else targets:
        print((d / "results.md").read_text(), end="")
    return 0


def output_dirs(spec: str, models: list[tuple[str, str]]) -> tuple[list[Path], Path | None]:
    """Where each model's evaluation goes, and where their comparison goes (None: no comparison). One model:
    `spec` itself. Several: `spec/<name>` each and the comparison in `spec`, or, when `spec` lists one
    directory per model (comma-separated), those, without a comparison: one process evaluating checkpoints of
    unrelated runs pays the imports and the suites' preparation once."""
    dirs = [Path(d.strip()) for d in spec.split(",") if d.strip()]
    if len(dirs) == 1:
        return (dirs, None) if len(models) == 1 else ([dirs[0] / name for name, _ in models], dirs[0])
    if len(dirs) != len(models):
        raise UserError(f"--output-dir: {len(dirs)} directories for {len(models)} models; give one directory, "
                        "or one per model in --model's order")
    return dirs, None


def _eval_config(overrides: list[str]) -> EvalConfig:
    for item in overrides:
        key, _, value = item.partition("=")
        if not key.startswith("eval.") or not _:
            raise UserError(f"override {item!r} must look like eval.field=value")
    raw = apply_overrides({}, overrides).get("eval", {})
    return build_section(EvalConfig, raw, "eval", "command line")


def expand_models(spec: str) -> list[tuple[str, str]]:
    """`a,b` -> [(name, path)]; a run directory -> its checkpoints/step-* in step order."""
    out = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        ckpts = Path(part) / "checkpoints"
        if ckpts.is_dir() and not (Path(part) / "config.json").is_file():
            steps = sorted(ckpts.glob("step-*"), key=lambda p: step_of(p.name))
            if not steps:
                raise UserError(f"{part}: a run directory without checkpoints/step-*")
            out += [(p.name, str(p)) for p in steps]
        else:
            out.append((Path(part).name or part, part))
    return out


def _evaluate_one(model: str, args: argparse.Namespace, cfg: EvalConfig, suites: list[Suite], out: Path,
                  data_dir: str | None) -> dict[str, dict[str, Any]]:
    if model in CONTROLS:
        return evaluate(None, None, suites, cfg, out, stop_ids=[], policy_fp=model, data_dir=data_dir,
                        label=model, control=model)
    mcfg = ModelConfig(name_or_path=model, trust_remote_code=args.trust_remote_code)
    path = resolve_model_path(mcfg)
    tokenizer = load_tokenizer(path, mcfg)
    net = load_model(path, mcfg)
    backend = TransformersBackend(net, pad_token_id=tokenizer.pad_token_id, batch_size=cfg.batch_size,
                                  precision=cfg.precision)
    return evaluate(backend, tokenizer, suites, cfg, out, stop_ids=stop_token_ids(tokenizer, net),
                    policy_fp=model_fingerprint(path, mcfg), data_dir=data_dir, label=model)


def validation_config(cfg: EvalConfig) -> EvalConfig:
    """The small slice evaluated every `eval.validation.every` training steps: `eval.validation.problems`
    evenly spaced problems per suite, `samples_per_problem` samples (1 when it is the protocol default)."""
    return replace(cfg, max_problems=cfg.validation.problems, samples_per_problem=cfg.samples_per_problem or 1)


if __name__ == "__main__":
    sys.exit(main())
