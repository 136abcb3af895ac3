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

Everything about the stages is derived from one table, `stages.STAGES` (each stage's `SPEC`,
pipeline/graph.py): a stage's fingerprint hashes its config slice, its stage version and the
fingerprints of its inputs — including the policy it ran with (the update of the previous step, or the
base model) — so changing anything upstream invalidates exactly what follows; its inputs are checked
and handed to it from that table; `train` runs `stages.step_stages` for every step.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import yaml
from accelerate.utils import broadcast_object_list

from evaluation.plots import over_steps
from evaluation.report import run_points
from evaluation.run import evaluate, validation_config
from evaluation.suites import resolve_suites
from pipeline import accounting, cache, tracking
from pipeline import schema as S
from pipeline.backends import make_backend
from pipeline.backends.hf import TransformersBackend
from pipeline.checkpoint import checkpoint_dir, load_training_state, training_state_dir
from pipeline.config import Config, config_changes, dump_yaml, migrate, to_dict, with_defaults
from pipeline.dist_eval import evaluate_on_all_ranks, full_loading
from pipeline.distributed import engine_weights, is_sharded, prepare_policy
from pipeline.distributed import make_accelerator as build_accelerator
from pipeline.errors import UserError
from pipeline.hostmem import configure_host
from pipeline.imports import check_available
from pipeline.logs import StepBar
from pipeline.lora import load_policy_model
from pipeline.memplan import check_launch
from pipeline.policy import TrainState, load_model, load_tokenizer, model_fingerprint, resolve_model_path
from pipeline.prompts import end_of_turn_ids, stop_token_ids
from pipeline.run_outputs import run_outputs
from pipeline.summary import (elapsed_before, format_summary, log_step, plateaued, read_metrics, record_elapsed,
                              run_summary, validation_metrics, validation_points)
from stages import STAGES, step_stages

log = logging.getLogger(__name__)

def make_accelerator(cfg: Config) -> Any:
    """An Accelerator, refusing a launch whose processes would silently train separately."""
    accelerator = build_accelerator(cfg.train.process_group_timeout_s)  # FSDP2 under an FSDP launch (CPU too)
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
        self.failed: dict[str, list[str]] = {}  # reward fingerprint -> prompts failed 0 of N (replay)
        configure_host(cfg.train, accelerator.device)  # threads; on CPU, freed memory kept (pipeline/hostmem.py)

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
        spec = STAGES[stage]
        inputs = [self.fp(name, spec.input_step(name, step)) for name in spec.inputs(self.cfg, step)]
        return spec.fingerprint(self.cfg, step, inputs, self._policy_input(stage, step))

    def _policy_input(self, stage: str, step: int) -> str | None:
        policy = STAGES[stage].policy
        return None if policy is None else self.base_fp if policy == "base" else self.policy_fp(step - 1)

    def _input_fps(self, stage: str, step: int) -> dict[str, str]:
        """The fingerprints a stage's output records in its meta.json: its inputs and the weights it read."""
        spec = STAGES[stage]
        out = {name: self.fp(name, spec.input_step(name, step)) for name in spec.inputs(self.cfg, step)}
        if spec.policy is not None:
            out["model" if spec.policy == "base" else "policy"] = self._policy_input(stage, step)
        return out

    def stage_dir(self, stage: str, step: int = 0) -> Path:
        return self.out / stage if not STAGES[stage].per_step else self.out / "steps" / f"{step:06d}" / stage

    def complete(self, stage: str, step: int = 0) -> bool:
        return cache.folder_status(self.stage_dir(stage, step), self.fp(stage, step)) == "complete"

    # ---------------------------------------------------------------- the output directory

    def prepare_output_dir(self) -> None:
        """Write config.yaml, or check that the one there is this config (main process; one written before
        keys were renamed is compared under the new names)."""
        path = self.out / "config.yaml"
        if self.acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            mine = dump_yaml(self.cfg)
            if path.is_file():
                theirs = with_defaults(migrate(yaml.safe_load(path.read_text()), str(path)))
                if theirs != to_dict(self.cfg):
                    diff = config_changes(theirs, to_dict(self.cfg))
                    raise UserError(f"{self.out} holds a run with another config ({diff}); pass a new "
                                    f"--output-dir, or the same recipe and overrides to resume it")
            else:
                tmp = path.with_suffix(".yaml.tmp")
                tmp.write_text(mine)
                tmp.replace(path)
        self.acc.wait_for_everyone()

    # ---------------------------------------------------------------- cached stage execution

    def run_stage(self, stage: str, step: int = 0, force: bool = False, strict: bool = False) -> cache.StageRecord:
        """Reuse a complete stage folder, or compute and write it from the stage's inputs. The stage's
        `compute` runs on the main process (on every process when it is `collective`; only the main
        process's result is written). `strict` (training) also requires what the stage's `valid` asks
        for (the update: its checkpoint) before reusing it."""
        spec = STAGES[stage]
        if spec.per_step and stage not in step_stages(self.cfg, step):
            raise UserError(f"step {step} of this run has no {stage} stage (it runs "
                            f"{' -> '.join(step_stages(self.cfg, step))})")
        path, fp = self.stage_dir(stage, step), self.fp(stage, step)
        reuse = [not force and cache.is_complete(path, fp, f"{stage} stage of step {step}")
                 and (not strict or spec.valid is None or spec.valid(self, step)) if self.acc.is_main_process
                 else None]
        if self.acc.num_processes > 1:
            broadcast_object_list(reuse)
        if reuse[0]:
            return cache.read_stage(path)
        reset_ok = accounting.reset_peak()
        t0 = time.perf_counter()
        ds, stats = None, {}
        if spec.collective or self.acc.is_main_process:
            inputs = {name: self.require_input(name, spec.input_step(name, step))
                      for name in spec.inputs(self.cfg, step)}
            ds, stats = spec.compute(self, step, inputs)
        if self.acc.is_main_process:
            S.require_columns(ds, spec.produces, stage, "output")
            seconds = time.perf_counter() - t0
            tokens = stats.get("tokens", accounting.dataset_tokens(ds))
            stats = {"rows": len(ds), "seconds": round(seconds, 3), "tokens": tokens,
                     "tokens_per_s": round(tokens / max(seconds, 1e-9), 1), **accounting.peak_memory(reset_ok),
                     **stats}
            meta = {"stage": stage, "step": step, "stage_version": spec.version,
                    "inputs": self._input_fps(stage, step), "stats": stats}
            cache.write_stage(path, fp, ds, meta)
        self.acc.wait_for_everyone()
        if self.acc.is_main_process and spec.after is not None:
            spec.after(self, step)
        return cache.read_stage(path)

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
                raise UserError(f"the checkpoint of step {step} ({path}) is missing or was pruned; raise train."
                                "keep_last / save_every (or lower state_every), or re-run the training command")
        model = load_policy_model(None if step == 0 else path, self.base_path, self.cfg.model, self.cfg.update.lora,
                                  self.cfg.train.seed)
        model, opt, sched = prepare_policy(self.acc, model, self.cfg.update)
        state = TrainState(model, opt, sched, step, self.policy_fp(step), restored=step == 0)
        tdir = training_state_dir(self.out, step)
        if step > 0 and cache.folder_status(tdir, self.policy_fp(step)) == "complete":
            load_training_state(state, self.out, step)
            state.restored = True
        elif step > 0 and with_optimizer:
            raise UserError(f"the training state of step {step} ({tdir}) is missing or was pruned (train.keep_last; "
                            "train.state_every N writes one every N steps): raise keep_last, or re-run from one")
        self.state = state
        return state

    def backend(self) -> Any:
        """The rollout backend, built once per run (an SGLang engine boots here); `sync_weights` points it
        at the current policy before every generation."""
        if self._backend is None:
            self._backend = make_backend(self.cfg.generate, model=engine_weights(self.cfg.generate, self.state.model, self.acc),
                                         pad_token_id=self.tokenizer.pad_token_id, model_path=self.base_path,
                                         seed=self.cfg.train.seed, model_cfg=self.cfg.model)
        return self._backend

    def policy_checkpoint(self, step: int) -> str:
        """Where the weights after `step` are on disk (the base model for step 0)."""
        return self.base_path if step == 0 else str(checkpoint_dir(self.out, step))

    def release_backend(self) -> None:
        """A colocated engine frees its KV cache and weights (before an update)."""
        if self._backend is not None:
            self._backend.release()

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
        return stop_token_ids(self.tokenizer, model)

    # ---------------------------------------------------------------- whole runs

    def resume_step(self) -> int:
        """Last step whose final stage (the update, `step_stages`) and training state are complete for
        this config (0 if none)."""
        for step in range(self.cfg.train.total_steps, 0, -1):
            if self.complete(step_stages(self.cfg, step)[-1], step) and cache.folder_status(
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
                for stage in step_stages(self.cfg, step)[:-1]:
                    st = cache.read_stage(self.stage_dir(stage, step)).meta["stats"]
                    row[f"seconds_stage_{stage}"] = st.get("seconds")
                    row.update({k: st[k] for k in ("rollout_tokens", "rollout_flops") if k in st})
                val = self.out / "eval" / "validation" / f"step-{step:06d}" / "summary.json"
                if self.cfg.eval.validation.every and val.is_file():
                    row.update(validation_metrics(json.loads(val.read_text())["suites"]))
                self._metric_rows[step] = json.dumps(row, sort_keys=True)
        lines = [self._metric_rows[s] for s in range(1, last_step + 1)]
        tmp = self.out / "metrics.jsonl.tmp"
        tmp.write_text("\n".join(lines) + ("\n" if lines else ""))
        tmp.replace(self.out / "metrics.jsonl")


def evaluate_step(run: Run, step: int, validation: bool = False) -> dict[str, dict[str, Any]]:
    """Evaluate the policy after `step` (0: base) on `eval.suites` into eval/<base|step-N>/, or on the validation
    slice into eval/validation/step-N/, without plots (main process; cached by policy and eval config)."""
    name = "base" if step == 0 else f"step-{step:06d}"
    out = run.out / "eval" / ("validation/" + name if validation else name)
    eval_cfg = validation_config(run.cfg.eval) if validation else run.cfg.eval

    def build() -> TransformersBackend:
        if run.state is not None and run.state.step == step and not is_sharded(run.state.model):
            model = run.acc.unwrap_model(run.state.model)
        else:
            with full_loading():  # every rank gets the whole checkpoint (it decodes a share of the requests)
                model = load_model(run.base_path if step == 0 else str(checkpoint_dir(run.out, step)), run.cfg.model)
            model = model.to(run.acc.device)
        return TransformersBackend(model, pad_token_id=run.tokenizer.pad_token_id,
                                   batch_size=eval_cfg.batch_size, precision=eval_cfg.precision)

    def main(backend: Any) -> dict[str, dict[str, Any]]:
        out.mkdir(parents=True, exist_ok=True)
        names = run.cfg.eval.validation.suites if validation and run.cfg.eval.validation.suites else run.cfg.eval.suites
        return evaluate(backend, run.tokenizer, resolve_suites(names), eval_cfg, out,
                        stop_ids=stop_token_ids(run.tokenizer, backend.model), policy_fp=run.policy_fp(step),
                        data_dir=eval_cfg.data_dir,
                        label=("validation " if validation else "") + ("base" if step == 0 else f"step {step}"),
                        plots=not validation)

    return evaluate_on_all_ranks(run.acc, build, main)  # main grades and writes; every rank decodes a share


def train(cfg: Config, output_dir: str | Path, accelerator: Any = None) -> dict[str, Any]:
    """Run (or resume) a whole training run; returns the summary printed at the end."""
    t_start = time.time()
    if cfg.generate.backend == "sglang":  # fail before any stage runs, not at the first generation
        check_available("sglang")
    acc = accelerator or make_accelerator(cfg)
    check_launch(cfg, acc)  # on GPUs: stop a run that will not fit, naming the knob to turn
    run = Run(cfg, output_dir, acc)
    run.prepare_output_dir()
    earlier = elapsed_before(run.out)  # what earlier commands spent on this run (0 unless resuming)
    run.run_stage("curate")
    start = run.resume_step()
    if start:
        log.info("resuming %s after step %d", run.out, start)
    run.load_policy(start, with_optimizer=True)
    tracking.start(acc, cfg, run.out)
    base_eval = _start_evaluations(run, start)
    bar = StepBar(cfg.train.total_steps, start, enabled=acc.is_main_process)
    last = start  # the last step trained: train.total_steps unless early stopping ends the run before it
    for step in range(start + 1, cfg.train.total_steps + 1):
        if (step - 1) % max(1, cfg.eval.validation.every) == 0 and _plateaued(run):
            log.info("stopping early after step %d: no new best validation accuracy in the last %d validations "
                     "(eval.validation.patience)", last, cfg.eval.validation.patience)
            break
        t = time.time()
        for stage in step_stages(cfg, step):
            bar.set_postfix_str(stage)
            record = run.run_stage(stage, step, strict=True)
        stats = record.meta["stats"]
        if cfg.eval.validates_at(step):
            bar.set_postfix_str("validation")
            stats = {**stats, **validation_metrics(evaluate_step(run, step, validation=True))}
        run.write_metrics(step)
        tracking.log_step(acc, stats, step)
        bar.update(1)
        last = step
        if acc.is_main_process:
            log_step(step, cfg.train.total_steps, stats, time.time() - t)
            record_elapsed(run.out, earlier + time.time() - t_start)
    bar.close()
    run.write_metrics(last)
    run.close()  # stop the rollout engine before the final evaluation (SGLang also stops at exit on errors)
    tracking.finish(acc)
    final_eval = evaluate_step(run, last) if cfg.eval.at_end and cfg.eval.suites else {}
    if acc.is_main_process and cfg.eval.suites:
        over_steps(run.out / "eval" / "accuracy_over_steps.png", run_points(run.out))
    summary = run_summary(run.out, last, checkpoint_dir(run.out, last), base_eval, final_eval,
                          time.time() - t_start, earlier, cap=cfg.train.total_steps)
    if acc.is_main_process:
        record_elapsed(run.out, summary["wall_seconds_total"])
        summary.update(run_outputs(run.out, summary, cfg.train.trackers))
        (run.out / "summary.json").write_text(json.dumps(summary, indent=1))
        print(format_summary(summary), flush=True)
    return summary


def _plateaued(run: Run) -> bool:
    """Early stopping (eval.validation.patience): decided on the main process, broadcast to every rank."""
    patience = run.cfg.eval.validation.patience if run.cfg.eval.suites else 0
    box = [patience and run.acc.is_main_process and plateaued(validation_points(read_metrics(run.out)), patience)]
    if patience and run.acc.num_processes > 1:
        broadcast_object_list(box)
    return bool(box[0])


def _start_evaluations(run: Run, start: int) -> dict[str, dict[str, Any]]:
    """The base model's evaluation (returned) and the validation points a fresh or resumed run needs."""
    ev = run.cfg.eval
    base_eval = evaluate_step(run, 0) if ev.at_start and ev.suites else {}
    if ev.validation.every and ev.at_start and ev.suites:
        evaluate_step(run, 0, validation=True)  # step 0 of the validation curve
    if start and ev.validates_at(start):
        evaluate_step(run, start, validation=True)  # cached; a crash may have come between an update and this
    if start:
        run.write_metrics(start)  # with that validation point, which early stopping reads
    return base_eval
