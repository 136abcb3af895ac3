"""The orchestrator: curate once, then for every step prefixes -> generate -> reward -> update, each
stage read from its folder when a complete output with the expected fingerprint is there. SFT steps
run prefixes -> update; ReLIFT's steps add replay before the update (`pipeline.methods`).

Run directory (a contract other tools rely on):
    config.yaml                      the fully resolved config
    curate/                          Arrow dataset + meta.json + _COMPLETE
    steps/<NNNNNN>/{prefixes,generate,reward,[replay,]update}/   (SFT steps: prefixes, update)
    checkpoints/step-<NNNNNN>/       transformers checkpoint + tokenizer
    checkpoints/training-state-<NNNNNN>/  optimizer, scheduler, RNG, step
    metrics.jsonl                    one JSON object per step
    eval/{base,step-<NNNNNN>}/<suite>/

Fingerprints chain: a stage's fingerprint hashes its config section, its stage version, the run seed
and step, and the fingerprints of its inputs — including the policy it ran with (the update of the
previous step, or the base model) — so changing anything upstream invalidates exactly what follows.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
from datasets import Dataset
from tqdm.auto import tqdm

from pipeline import accounting, cache, methods, tracking
from pipeline import schema as S
from pipeline.config import Config, dump_yaml, to_dict
from pipeline.distributed import is_sharded, prepare_policy, rollout_model
from pipeline.errors import UserError
from pipeline.mismatch import check_logprob_mismatch
from pipeline.lora import load_policy_model
from pipeline.policy import (TrainState, checkpoint_dir, load_model, load_tokenizer, load_training_state,
                             model_fingerprint, prune_checkpoints, resolve_model_path,
                             save_checkpoint, training_state_dir)
from pipeline.prompts import end_of_turn_ids, stop_token_ids
from stages import curate, generate, prefixes, replay, reward, update

log = logging.getLogger(__name__)

STAGES = ("curate", "prefixes", "generate", "reward", "replay", "update")
STAGE_MODULES = {"curate": curate, "prefixes": prefixes, "generate": generate, "reward": reward, "replay": replay,
                 "update": update}


def make_accelerator(cfg: Config) -> Any:
    """An Accelerator, refusing a launch whose processes would silently train separately."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise UserError(f"the launcher started {launched} processes but accelerate runs "
                        f"{accelerator.num_processes} (distributed type {accelerator.distributed_type}); each "
                        "would train on its own. On CPU use an accelerate config with `use_cpu: true` and "
                        "`distributed_type: MULTI_CPU` (accelerate_configs/cpu.yaml with --num_processes 2); on "
                        "GPUs check that every process sees a device.")
    return accelerator


class Run:
    """State of one run directory: config, fingerprints, the policy in memory, the rollout backend."""

    def __init__(self, cfg: Config, output_dir: str | Path, accelerator: Any):
        self.cfg = cfg
        self.out = Path(output_dir)
        self.acc = accelerator
        # the main process resolves (and, for `embedded`, builds) first: transformers' save_pretrained writes
        # nothing on a rank other than 0 once a process group exists, so a build there would be empty
        with accelerator.main_process_first():
            self.base_path = resolve_model_path(cfg.model)
        self.base_fp = model_fingerprint(self.base_path, cfg.model)
        self.tokenizer = load_tokenizer(self.base_path, cfg.model)
        self._fps: dict[tuple[str, int], str] = {}
        self._metric_rows: dict[int, str] = {}
        self.state: TrainState | None = None
        self._backend = None
        self._failed: dict[str, list[str]] = {}  # reward fingerprint -> prompts failed 0 of N (replay)
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)

    # ---------------------------------------------------------------- fingerprints and paths

    def fp(self, stage: str, step: int = 0) -> str:
        key = (stage, step)
        if key not in self._fps:
            for s in range(1, step):  # build the policy chain in order: no deep recursion for long runs
                if ("update", s) not in self._fps:
                    self._fps[("update", s)] = self._compute_fp("update", s)
            self._fps[key] = self._compute_fp(stage, step)
        return self._fps[key]

    def policy_fp(self, step: int) -> str:
        """Weights (and optimizer state) after `step`; step 0 is the base model."""
        return self.base_fp if step == 0 else self.fp("update", step)

    def _compute_fp(self, stage: str, step: int) -> str:
        c, version = self.cfg, STAGE_MODULES[stage].STAGE_VERSION
        seed = c.train.seed
        if stage == "curate":
            return cache.fingerprint(stage, version, asdict(c.data), curate.input_fingerprint(c.data), self.base_fp)
        if stage == "prefixes":
            return cache.fingerprint(stage, version, asdict(methods.prefix_config(c, step)), c.schedule_horizon,
                                     c.generate.max_response_tokens, seed, step, self.fp("curate"))
        if stage == "generate":
            return cache.fingerprint(stage, version, asdict(c.generate), seed, step, self.fp("prefixes", step),
                                     self.policy_fp(step - 1))
        if stage == "reward":
            return cache.fingerprint(stage, version, asdict(c.reward), self.fp("generate", step))
        if stage == "replay":
            return cache.fingerprint(stage, version, c.sft.buffer_size, c.generate.max_response_tokens,
                                     self.fp("reward", step), self.fp("curate"))
        if stage == "update":
            return cache.fingerprint(stage, version, asdict(c.update), methods.update_spec(c, step),
                                     c.generate.temperature, c.generate.max_response_tokens, seed, step,
                                     self.fp(methods.update_input(c, step), step), self.policy_fp(step - 1))
        raise ValueError(stage)

    def stage_dir(self, stage: str, step: int = 0) -> Path:
        return self.out / "curate" if stage == "curate" else self.out / "steps" / f"{step:06d}" / stage

    def complete(self, stage: str, step: int = 0) -> bool:
        return cache.folder_status(self.stage_dir(stage, step), self.fp(stage, step)) == "complete"

    # ---------------------------------------------------------------- the output directory

    def prepare_output_dir(self) -> None:
        """Write config.yaml, or check that the one there is this config (main process)."""
        path = self.out / "config.yaml"
        if self.acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            mine = dump_yaml(self.cfg)
            if path.is_file():
                import yaml

                theirs = yaml.safe_load(path.read_text())
                if theirs != to_dict(self.cfg):
                    diff = _diff(theirs, to_dict(self.cfg))
                    raise UserError(f"{self.out} holds a run with another config ({diff}); pass a new "
                                    f"--output-dir, or the same recipe and overrides to resume it")
            else:
                tmp = path.with_suffix(".yaml.tmp")
                tmp.write_text(mine)
                tmp.replace(path)
        self.acc.wait_for_everyone()

    # ---------------------------------------------------------------- cached stage execution

    def cached(self, stage: str, step: int, compute: Callable[[], tuple[Dataset | None, dict]], *,
               force: bool = False, collective: bool = False,
               also_require: Callable[[], bool] | None = None) -> cache.StageRecord:
        """Reuse a complete stage folder, or compute and write it. `compute` runs on the main process
        (on every process when `collective`; only the main process's result is written)."""
        from accelerate.utils import broadcast_object_list

        path, fp = self.stage_dir(stage, step), self.fp(stage, step)
        reuse = [not force and cache.is_complete(path, fp, f"{stage} stage of step {step}")
                 and (also_require is None or also_require()) if self.acc.is_main_process else None]
        if self.acc.num_processes > 1:
            broadcast_object_list(reuse)
        if reuse[0]:
            return cache.read_stage(path)
        reset_ok = accounting.reset_peak()
        t0 = time.perf_counter()
        ds, stats = compute() if (collective or self.acc.is_main_process) else (None, {})
        if self.acc.is_main_process:
            seconds = time.perf_counter() - t0
            tokens = stats.get("tokens", accounting.dataset_tokens(ds))
            stats = {"rows": len(ds), "seconds": round(seconds, 3), "tokens": tokens,
                     "tokens_per_s": round(tokens / max(seconds, 1e-9), 1), **accounting.peak_memory(reset_ok),
                     **stats}
            meta = {"stage": stage, "step": step, "stage_version": STAGE_MODULES[stage].STAGE_VERSION,
                    "inputs": self._input_fps(stage, step), "stats": stats}
            cache.write_stage(path, fp, ds, meta)
        self.acc.wait_for_everyone()
        return cache.read_stage(path)

    def _input_fps(self, stage: str, step: int) -> dict[str, str]:
        if stage == "curate":
            return {"model": self.base_fp}
        prev = {"prefixes": ("curate", 0), "generate": ("prefixes", step), "reward": ("generate", step),
                "replay": ("reward", step), "update": (methods.update_input(self.cfg, step), step)}[stage]
        out = {prev[0]: self.fp(*prev)}
        if stage in ("generate", "update"):
            out["policy"] = self.policy_fp(step - 1)
        return out

    def require_input(self, stage: str, step: int) -> cache.StageRecord:
        path = self.stage_dir(stage, step)
        if not cache.is_complete(path, self.fp(stage, step), f"{stage} stage of step {step}"):
            raise UserError(f"step {step}: the {stage} stage has no complete output at {path} for this config; "
                            f"run it first (python -m pipeline.stage {stage} --output-dir {self.out} --step {step})")
        return cache.read_stage(path)

    # ---------------------------------------------------------------- the policy

    def load_policy(self, step: int, with_optimizer: bool = True) -> TrainState:
        """The policy after `step` (0: base model), from memory when it is there, else from disk. The
        optimizer state is restored whenever the training state is on disk (required with
        `with_optimizer`)."""
        if self.state is not None and self.state.step == step and (self.state.restored or not with_optimizer):
            return self.state
        if step == 0:
            path = self.base_path
        else:
            path = str(checkpoint_dir(self.out, step))
            if cache.folder_status(path, self.policy_fp(step)) != "complete":
                raise UserError(f"the checkpoint of step {step} ({path}) is missing or was pruned; raise "
                                "train.keep_last / train.save_every, or re-run the training command")
        model = load_policy_model(None if step == 0 else path, self.base_path, self.cfg.model, self.cfg.update.lora,
                                  self.cfg.train.seed)
        model, opt, sched = prepare_policy(self.acc, model, self.cfg.update)
        state = TrainState(model, opt, sched, step, self.policy_fp(step), restored=step == 0)
        tdir = training_state_dir(self.out, step)
        if step > 0 and cache.folder_status(tdir, self.policy_fp(step)) == "complete":
            load_training_state(state, self.out, step)
            state.restored = True
        elif step > 0 and with_optimizer:
            raise UserError(f"the training state of step {step} ({tdir}) is missing or was pruned; raise "
                            "train.keep_last to re-run stages that far back")
        self.state = state
        return state

    def backend(self) -> Any:
        """The rollout backend, built once per run (an SGLang engine boots here); `sync_weights` points it
        at the current policy before every generation."""
        from pipeline.backends import make_backend

        if self._backend is None:
            self._backend = make_backend(self.cfg.generate, model=rollout_model(self.state.model, self.acc),
                                         pad_token_id=self.tokenizer.pad_token_id, model_path=self.base_path,
                                         seed=self.cfg.train.seed)
        return self._backend

    def policy_checkpoint(self, step: int) -> str:
        """Where the weights after `step` are on disk (the base model for step 0)."""
        return self.base_path if step == 0 else str(checkpoint_dir(self.out, step))

    def close(self) -> None:
        """Stop the rollout engine (SGLang: its scheduler processes)."""
        if self._backend is not None:
            self._backend.shutdown()
            self._backend = None

    def end_ids(self) -> list[int]:
        """End-of-turn tokens appended to whole demonstrations (SFT rows, LUFFY's off-policy member)."""
        return end_of_turn_ids(self.tokenizer)

    def stop_ids(self) -> list[int]:
        model = self.acc.unwrap_model(self.state.model) if self.state else None
        return stop_token_ids(self.tokenizer, model.config if model is not None else None)

    # ---------------------------------------------------------------- the five stages

    def run_curate(self, force: bool = False) -> cache.StageRecord:
        def compute():
            report: dict[str, Any] = {}
            ds = curate.run(curate.load_source(self.cfg.data, report), self.cfg.data, tokenizer=self.tokenizer,
                            report=report)
            if len(ds) == 0:
                raise UserError(f"curate kept no rows ({report}); check data.* limits and the source")
            return ds, report

        return self.cached("curate", 0, compute, force=force)

    def run_prefixes(self, step: int, force: bool = False) -> cache.StageRecord:
        def compute():
            pcfg = methods.prefix_config(self.cfg, step)
            ds = prefixes.run(self.require_input("curate", 0).load(), pcfg, step=step,
                              horizon=self.cfg.schedule_horizon, seed=self.cfg.train.seed,
                              max_response_tokens=self.cfg.generate.max_response_tokens, end_ids=self.end_ids())
            low = prefixes.low_bound(step, pcfg, self.cfg.schedule_horizon)
            return ds, {"low_bound": low, "layout": pcfg.layout}

        return self.cached("prefixes", step, compute, force=force)

    def run_generate(self, step: int, force: bool = False) -> cache.StageRecord:
        def compute():
            src = self.require_input("prefixes", step).load()
            self.load_policy(step - 1, with_optimizer=False)
            backend = self.backend()
            backend.sync_weights(rollout_model(self.state.model, self.acc),  # sharded: a gathered copy
                                 checkpoint=self.policy_checkpoint(step - 1))
            rows = list(range(self.acc.process_index, len(src), self.acc.num_processes))
            t0 = time.perf_counter()
            part = generate.run(src.select(rows), self.cfg.generate, backend=backend, stop_token_ids=self.stop_ids(),
                                seed=self.cfg.train.seed, step=step)
            seconds = time.perf_counter() - t0
            ds = _merge_shards(self.acc, src, rows, part)
            tokens = sum(len(c) for c in S.column_lists(ds, S.COMPLETION_IDS)[S.COMPLETION_IDS]) if ds is not None else 0
            prefill = _prefill_tokens(ds) if ds is not None else 0
            return ds, {"completion_tokens": tokens, "tokens": tokens, "engine": backend.version(),
                        "tokens_per_s": round(tokens / max(seconds, 1e-9), 1), "rollout_tokens": tokens,
                        "rollout_flops": accounting.rollout_flops(self.state.model, prefill, tokens, len(ds or []))}

        return self.cached("generate", step, compute, force=force, collective=True)

    def run_reward(self, step: int, force: bool = False) -> cache.StageRecord:
        def compute():
            ds = reward.run(self.require_input("generate", step).load(), self.cfg.reward, tokenizer=self.tokenizer)
            statuses = S.column_lists(ds, S.REWARD_STATUS)[S.REWARD_STATUS]
            return ds, {f"status_{s}": statuses.count(s) for s in sorted(set(statuses))}

        return self.cached("reward", step, compute, force=force)

    def run_replay(self, step: int, force: bool = False) -> cache.StageRecord:
        """ReLIFT's buffer (stages/replay.py): rebuilt from the reward datasets of steps 1..step."""
        if "replay" not in methods.step_stages(self.cfg, step):
            raise UserError(f"step {step} of this run has no replay stage (sft.mode={self.cfg.sft.mode!r})")

        def compute():
            failed = []
            for s in range(1, step + 1):
                fp = self.fp("reward", s)
                if fp not in self._failed:
                    self._failed[fp] = replay.failed_prompts(self.require_input("reward", s).load())
                failed.append(self._failed[fp])
            return replay.run(self.require_input("curate", 0).load(), failed, buffer_size=self.cfg.sft.buffer_size,
                              step=step, max_response_tokens=self.cfg.generate.max_response_tokens,
                              end_ids=self.end_ids())

        return self.cached("replay", step, compute, force=force)

    def run_update(self, step: int, force: bool = False, require_checkpoint: bool = False) -> cache.StageRecord:
        state_holder: dict[str, Any] = {}
        sft_step = methods.is_sft_step(self.cfg, step)

        def compute():
            src = self.require_input("reward" if not sft_step else "prefixes", step).load()
            sft_src = src if sft_step else (self.require_input("replay", step).load()
                                             if self.cfg.sft.mode == "replay" else None)
            state = self.load_policy(step - 1, with_optimizer=True)
            if self._backend is not None:
                self._backend.release()  # a colocated engine frees its KV cache and weights for the update
            t0 = time.perf_counter()
            ds, stats = update.run(None if sft_step else src, self.cfg.update, self.cfg.objective, policy=state,
                                   accelerator=self.acc, pad_id=self.tokenizer.pad_token_id,
                                   temperature=self.cfg.generate.temperature,
                                   max_response_tokens=self.cfg.generate.max_response_tokens,
                                   seed=self.cfg.train.seed, step=step, sft_ds=sft_src,
                                   sft_lr=methods.sft_lr(self.cfg, step),
                                   fresh_optimizer=methods.fresh_optimizer(self.cfg, step))
            seconds = time.perf_counter() - t0
            check_logprob_mismatch(stats, self.cfg.generate, step)
            tokens = _tokens(src) + (_tokens(sft_src) if sft_src is not None and not sft_step else 0)
            stats.update({} if sft_step else _step_summary(src), tokens=tokens,
                         tokens_per_s=round(tokens / seconds, 1), phase="sft" if sft_step else "rl")
            stats.update(accounting.update_flops(state.model, tokens, len(src), seconds, self.cfg.update.precision,
                                                 forwards=3.0 + stats.get("separate_old_logprob_pass", 0.0)))
            state.step, state.policy_fp = step, self.policy_fp(step)
            save_checkpoint(self.acc, state, self.tokenizer, self.out,
                            {"seed": self.cfg.train.seed, "sampler_position": step * self.cfg.prefixes.prompts_per_step})
            state_holder["state"] = state
            return ds, stats

        def checkpoint_complete() -> bool:
            return all(cache.folder_status(d, self.policy_fp(step)) == "complete"
                       for d in (checkpoint_dir(self.out, step), training_state_dir(self.out, step)))

        rec = self.cached("update", step, compute, force=force, collective=True,
                          also_require=checkpoint_complete if require_checkpoint else None)
        if self.acc.is_main_process and "state" in state_holder:
            c = self.cfg.train
            prune_checkpoints(self.out, step, c.keep_last, c.save_every, c.total_steps)
        return rec

    # ---------------------------------------------------------------- whole runs

    def resume_step(self) -> int:
        """Last step whose update stage and training state are complete for this config (0 if none)."""
        for step in range(self.cfg.train.total_steps, 0, -1):
            if self.complete("update", step) and cache.folder_status(
                    training_state_dir(self.out, step), self.policy_fp(step)) == "complete":
                return step
        return 0

    def write_metrics(self, last_step: int) -> None:
        """metrics.jsonl rebuilt from the update stages' metadata (atomic)."""
        if not self.acc.is_main_process:
            return
        for step in range(1, last_step + 1):
            if step not in self._metric_rows:
                meta = cache.read_stage(self.stage_dir("update", step)).meta
                row = {"step": step, **meta["stats"]}
                for stage in methods.step_stages(self.cfg, step)[:-1]:
                    st = cache.read_stage(self.stage_dir(stage, step)).meta["stats"]
                    row[f"seconds_stage_{stage}"] = st.get("seconds")
                    row.update({k: st[k] for k in ("rollout_tokens", "rollout_flops") if k in st})
                val = self.out / "eval" / "validation" / f"step-{step:06d}" / "summary.json"
                if self.cfg.eval.validation_every and val.is_file():
                    row.update(_validation_metrics(json.loads(val.read_text())["suites"]))
                self._metric_rows[step] = json.dumps(row, sort_keys=True)
        lines = [self._metric_rows[s] for s in range(1, last_step + 1)]
        tmp = self.out / "metrics.jsonl.tmp"
        tmp.write_text("\n".join(lines) + ("\n" if lines else ""))
        tmp.replace(self.out / "metrics.jsonl")


def _merge_shards(acc: Any, src: Dataset, rows: list[int], part: Dataset) -> Dataset | None:
    """Gather every rank's rows to the main process, in the source order."""
    if acc.num_processes == 1:
        return part
    from accelerate.utils import gather_object

    pieces = gather_object([(rows, part.to_dict())])
    if not acc.is_main_process:
        return None
    by_row = {}
    for idx, cols in pieces:
        for k, r in enumerate(idx):
            by_row[r] = {c: v[k] for c, v in cols.items()}
    merged = {c: [by_row[r][c] for r in range(len(src))] for c in pieces[0][1]}
    return S.make_dataset(merged)


def _tokens(ds: Dataset) -> int:
    """Prompt + demonstration + completion tokens of a stage's rows."""
    cols = [c for c in (S.PROMPT_IDS, S.PREFIX_IDS, S.COMPLETION_IDS) if c in ds.column_names]
    return sum(len(x) for col in S.column_lists(ds, *cols).values() for x in col)


def _prefill_tokens(ds: Dataset) -> int:
    """Prompt + demonstration-prefix tokens of the rows the engine generated for (not whole demonstrations)."""
    c = S.column_lists(ds, S.PROMPT_IDS, S.PREFIX_IDS, S.IS_DEMO)
    return sum(len(p) + len(f) for p, f, d in zip(c[S.PROMPT_IDS], c[S.PREFIX_IDS], c[S.IS_DEMO]) if not d)


def _step_summary(ds: Dataset) -> dict[str, float]:
    """Reward and prefix statistics of a step's trajectories."""
    import numpy as np

    c = S.column_lists(ds, S.REWARD, S.IS_HYBRID, S.PREFIX_RATIO, S.PREFIX_IDS, S.COMPLETION_IDS)
    r = np.array(c[S.REWARD], dtype=float)
    hyb = np.array(c[S.IS_HYBRID], dtype=bool)
    ratios = np.array(c[S.PREFIX_RATIO], dtype=float)[hyb]
    lengths = np.array([len(f) + len(x) for f, x in zip(c[S.PREFIX_IDS], c[S.COMPLETION_IDS])], dtype=float)
    out = {"reward_mean": float(r.mean()), "reward_on_policy": float(r[~hyb].mean()) if (~hyb).any() else float("nan"),
           "response_length": float(lengths.mean()),
           "completion_length": float(np.mean([len(x) for x in c[S.COMPLETION_IDS]]))}
    if hyb.any():
        out.update(reward_hybrid=float(r[hyb].mean()), prefix_ratio_mean=float(ratios.mean()),
                   prefix_ratio_min=float(ratios.min()), prefix_ratio_max=float(ratios.max()))
    return out


def _diff(old: dict, new: dict) -> str:
    changed = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section) or {}, new.get(section) or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                changed.append(f"{section}.{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return "; ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")


def evaluate_step(run: Run, step: int, validation: bool = False) -> dict[str, dict[str, Any]]:
    """Evaluate the policy after `step` (0: base) on `eval.suites` into eval/<base|step-N>/, or on the
    validation slice into eval/validation/step-N/ (main process; cached by policy and eval config)."""
    from evaluation.run import evaluate, validation_config
    from evaluation.suites import resolve_suites
    from pipeline.backends.hf import TransformersBackend

    name = "base" if step == 0 else f"step-{step:06d}"
    out = run.out / "eval" / ("validation/" + name if validation else name)
    eval_cfg = validation_config(run.cfg.eval) if validation else run.cfg.eval
    summaries: dict[str, dict[str, Any]] = {}
    if run.acc.is_main_process:
        suites = resolve_suites(run.cfg.eval.validation_suites if validation and run.cfg.eval.validation_suites
                                else run.cfg.eval.suites)
        if run.state is not None and run.state.step == step and not is_sharded(run.state.model):
            model = run.acc.unwrap_model(run.state.model)
        else:
            model = load_model(run.base_path if step == 0 else str(checkpoint_dir(run.out, step)), run.cfg.model)
        backend = TransformersBackend(model, pad_token_id=run.tokenizer.pad_token_id,
                                      batch_size=eval_cfg.batch_size, precision=eval_cfg.precision)
        out.mkdir(parents=True, exist_ok=True)
        summaries = evaluate(backend, run.tokenizer, suites, eval_cfg, out,
                             stop_ids=stop_token_ids(run.tokenizer, model.config), policy_fp=run.policy_fp(step),
                             data_dir=eval_cfg.data_dir,
                             label=("validation " if validation else "") + ("base" if step == 0 else f"step {step}"))
    run.acc.wait_for_everyone()
    return summaries


def train(cfg: Config, output_dir: str | Path, accelerator: Any = None) -> dict[str, Any]:
    """Run (or resume) a whole training run; returns the summary printed at the end."""
    t_start = time.time()
    if cfg.generate.backend == "sglang":  # fail before any stage runs, not at the first generation
        from pipeline.imports import check_available
        check_available("sglang")
    acc = accelerator or make_accelerator(cfg)
    run = Run(cfg, output_dir, acc)
    run.prepare_output_dir()
    run.run_curate()
    start = run.resume_step()
    if start:
        log.info("resuming %s after step %d", run.out, start)
    run.load_policy(start, with_optimizer=True)
    tracking.start(acc, cfg, run.out)
    base_eval = evaluate_step(run, 0) if cfg.eval.at_start and cfg.eval.suites else {}
    if cfg.eval.validation_every and cfg.eval.at_start and cfg.eval.suites:
        evaluate_step(run, 0, validation=True)  # step 0 of the validation curve
    if cfg.eval.validation_every and start and start % cfg.eval.validation_every == 0 and cfg.eval.suites:
        evaluate_step(run, start, validation=True)  # cached; a crash may have come between an update and this
    bar = tqdm(total=cfg.train.total_steps, initial=start, desc="steps", disable=not acc.is_main_process)
    for step in range(start + 1, cfg.train.total_steps + 1):
        t = time.time()
        for stage in methods.step_stages(cfg, step):
            bar.set_postfix_str(stage)
            record = getattr(run, f"run_{stage}")(step, **({"require_checkpoint": True} if stage == "update" else {}))
        stats = record.meta["stats"]
        if cfg.eval.validation_every and step % cfg.eval.validation_every == 0 and cfg.eval.suites:
            bar.set_postfix_str("validation")
            stats = {**stats, **_validation_metrics(evaluate_step(run, step, validation=True))}
        run.write_metrics(step)
        tracking.log_step(acc, stats, step)
        bar.update(1)
        val = "".join(f"  {k} {v:.3f}" for k, v in stats.items() if k.startswith("val_"))
        if acc.is_main_process and stats.get("phase") == "sft":
            log.info("step %d/%d  SFT  nll %.4f  grad %.3f  lr %.2e  %.1fs%s", step, cfg.train.total_steps,
                     stats["demo_nll"], stats["grad_norm"], stats["lr"], time.time() - t, val)
        elif acc.is_main_process:
            log.info("step %d/%d  reward %.3f (hybrid %s)  prefix %s  loss %.4f  grad %.3f  clip %.3f%s  %.1fs%s",
                     step, cfg.train.total_steps, stats["reward_mean"], _fmt(stats.get("reward_hybrid")),
                     _fmt(stats.get("prefix_ratio_mean")), stats["loss"], stats["grad_norm"], stats["clip_frac"],
                     f"  + SFT on {stats['sft_rows']:.0f} replayed (nll {stats['sft_demo_nll']:.4f})"
                     if "sft_rows" in stats else "", time.time() - t, val)
    bar.close()
    run.write_metrics(cfg.train.total_steps)
    run.close()  # stop the rollout engine before the final evaluation (SGLang also stops at exit on errors)
    tracking.finish(acc)
    final_eval = evaluate_step(run, cfg.train.total_steps) if cfg.eval.at_end and cfg.eval.suites else {}
    if acc.is_main_process and cfg.eval.suites:
        from evaluation.plots import over_steps
        from evaluation.report import run_points

        over_steps(run.out / "eval" / "accuracy_over_steps.png", run_points(run.out))
    summary = _summary(run, base_eval, final_eval, time.time() - t_start)
    if acc.is_main_process:
        (run.out / "summary.json").write_text(json.dumps(summary, indent=1))
        print(format_summary(summary), flush=True)
    return summary


def _validation_metrics(summaries: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Step-metric fields of a validation evaluation: val_<suite>_accuracy."""
    return {f"val_{name}_accuracy": s["accuracy"] for name, s in summaries.items()}


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _summary(run: Run, base: dict, final: dict, seconds: float) -> dict[str, Any]:
    rows = []
    if (run.out / "metrics.jsonl").is_file():
        rows = [json.loads(line) for line in (run.out / "metrics.jsonl").read_text().splitlines()]
    q = max(1, len(rows) // 4)

    def quarters(key: str) -> tuple[float | None, float | None]:
        vals = [r[key] for r in rows if r.get(key) is not None and r[key] == r[key]]
        return (sum(vals[:q]) / len(vals[:q]), sum(vals[-q:]) / len(vals[-q:])) if vals else (None, None)

    T = run.cfg.train.total_steps
    first, last = quarters("reward_mean")
    on_first, on_last = quarters("reward_on_policy")
    return {
        "output_dir": str(run.out), "steps": T, "wall_seconds": round(seconds, 1),
        "eval": {name: {"base": base.get(name), "final": final.get(name)} for name in set(base) | set(final)},
        "reward_first_quarter": first, "reward_last_quarter": last,
        "reward_on_policy_first_quarter": on_first, "reward_on_policy_last_quarter": on_last,
        "rewards": [r["reward_mean"] for r in rows if "reward_mean" in r],
        "final_checkpoint": str(checkpoint_dir(run.out, T)), "metrics": str(run.out / "metrics.jsonl"),
        "eval_dir": str(run.out / "eval"),
        "compute": accounting.run_compute(rows),  # update FLOPs + rollout tokens/FLOPs charged (SFT included)
    }


def format_summary(s: dict[str, Any]) -> str:
    """The short table printed at the end of a run."""
    lines = [f"\nprefix-rft: {s['steps']} steps; this command ran {s['wall_seconds']:.0f}s", "",
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
    return "\n".join(lines)
