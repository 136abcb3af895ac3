"""Checkpoints of the policy being trained.

A checkpoint `checkpoints/step-<N>/` is a plain transformers checkpoint with its tokenizer
(`from_pretrained` loads it). The state needed to continue training exactly — optimizer, LR
scheduler, every RNG state and the step — sits beside it in `checkpoints/training-state-<N>/`. Both are
written atomically with a completion marker (`pipeline.cache`).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import cache, distributed, lora
from pipeline.policy import TrainState

SHARDED_DIR = "sharded"  # FSDP2 model + optimizer shards (torch.distributed.checkpoint) in a training state
MASTER_WEIGHTS = "model_fp32.pt"  # unsharded fp32 weights when the transformers checkpoint is stored in bf16


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step-{step:06d}"


def training_state_dir(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"training-state-{step:06d}"


def writes_after(cfg: Any, step: int) -> tuple[bool, bool]:
    """(weights, training state): what the update of `step` writes. The training state after every
    `train.state_every`-th step and the last; the weights with it, at every `train.save_every`-th step and every
    validation step (evaluation and checkpoint selection read them), and at every step for an SGLang backend (it
    may load them from disk). With state_every 1: both at every step."""
    t = cfg.train
    state = step % t.state_every == 0 or step == t.total_steps
    weights = state or cfg.eval.validates_at(step) or step % t.save_every == 0 or cfg.generate.backend != "transformers"
    return weights, state


def save_checkpoint(accelerator: Any, state: TrainState, tokenizer: Any, output_dir: Path,
                    extra_state: dict[str, Any], weights: bool = True, training_state: bool = True) -> None:
    """Write checkpoints/step-N (weights + tokenizer) and training-state-N (optimizer, scheduler, RNG,
    step, sampler position), each atomically, main process only; either can be left out (writes_after).
    Collective on every process when the model is sharded."""
    if not (weights or training_state):
        return
    model = accelerator.unwrap_model(state.model)
    state_dict = distributed.full_state_dict(state.model, accelerator) if weights else None  # collective if sharded
    staged = (_save_sharded(accelerator, state, output_dir)
              if training_state and distributed.is_sharded(state.model) else None)
    if not accelerator.is_main_process:
        return

    def fill_model(tmp: Path) -> None:
        if lora.is_lora(model):
            lora.save_lora_checkpoint(model, tmp)
        else:  # in the checkpoint's dtype (full_state_dict casts): a bf16 model is saved in bf16
            model.save_pretrained(tmp, state_dict=state_dict)
            config = json.loads((tmp / "config.json").read_text())  # save_pretrained writes the fp32 master's dtype
            config["dtype"] = str(distributed.checkpoint_dtype(model)).removeprefix("torch.")
            (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        tokenizer.save_pretrained(tmp)

    def fill_state(tmp: Path) -> None:
        if staged is not None:
            os.replace(staged, tmp / SHARDED_DIR)
        else:
            torch.save(state.optimizer.state_dict(), tmp / "optimizer.pt")
            if not lora.is_lora(model) and distributed.checkpoint_dtype(model) != torch.float32:
                torch.save(model.state_dict(), tmp / MASTER_WEIGHTS)  # resume from the fp32 weights, not bf16
        torch.save(state.scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({"step": state.step, "policy_fp": state.policy_fp,
                                                    **extra_state}, indent=1, sort_keys=True))

    if weights:
        cache.write_folder(checkpoint_dir(output_dir, state.step), state.policy_fp, fill_model)
    if training_state:
        cache.write_folder(training_state_dir(output_dir, state.step), state.policy_fp, fill_state)


def _save_sharded(accelerator: Any, state: TrainState, output_dir: Path) -> Path:
    """Every rank writes its model and optimizer shards into a hidden staging folder (collective); the
    main process then moves it into the training-state folder, which gets its marker last."""
    staged = training_state_dir(output_dir, state.step)
    staged = staged.parent / f".{staged.name}.sharded-staging"  # not ".tmp-*": write_folder sweeps those
    if accelerator.is_main_process:
        shutil.rmtree(staged, ignore_errors=True)
    accelerator.wait_for_everyone()
    distributed.save_sharded_state(state.model, state.optimizer, staged)
    accelerator.wait_for_everyone()
    return staged


def load_training_state(state: TrainState, output_dir: Path, step: int) -> dict[str, Any]:
    d = training_state_dir(output_dir, step)
    if (d / SHARDED_DIR).is_dir():
        distributed.load_sharded_state(state.model, state.optimizer, d / SHARDED_DIR)
    else:
        state.optimizer.load_state_dict(torch.load(d / "optimizer.pt", weights_only=False))
        if (d / MASTER_WEIGHTS).is_file():
            model = getattr(state.model, "module", state.model)
            model.load_state_dict(torch.load(d / MASTER_WEIGHTS, weights_only=True), strict=True)
    state.scheduler.load_state_dict(torch.load(d / "scheduler.pt", weights_only=False))
    set_rng_state(torch.load(d / "rng.pt", weights_only=False))
    return json.loads((d / "state.json").read_text())


def prune_checkpoints(output_dir: Path, last_step: int, keep_last: int, save_every: int, total_steps: int) -> None:
    """Keep the `keep_last` most recent training states up to `last_step` (with train.state_every > 1 they
    are not those of the last steps) and their weights; drop other model weights unless the step is one of
    the last `keep_last`, a multiple of `save_every` or the final step. States after `last_step` (a re-run
    of an earlier step) are left alone."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return
    states = sorted(int(d.name.rsplit("-", 1)[1]) for d in root.glob("training-state-*"))
    kept = {n for n in states if n > last_step} | set([n for n in states if n <= last_step][-keep_last:])
    keep_weights = kept | set(range(last_step - keep_last + 1, last_step + 1))  # the kept states and last steps
    for d in root.iterdir():
        if d.name.startswith("training-state-") and int(d.name.rsplit("-", 1)[1]) not in kept:
            shutil.rmtree(d, ignore_errors=True)
        elif d.name.startswith("step-"):
            n = int(d.name.rsplit("-", 1)[1])
            if n not in keep_weights and n % save_every != 0 and n != total_steps:
                shutil.rmtree(d, ignore_errors=True)
