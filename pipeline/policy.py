"""The policy being trained: resolving and loading it, its optimizer, and checkpoints.

A checkpoint `checkpoints/step-<N>/` is a plain transformers checkpoint with its tokenizer
(`from_pretrained` loads it). The state needed to continue training exactly — optimizer, LR
scheduler, every RNG state and the step — sits beside it in `checkpoints/training-state-<N>/`. Both are
written atomically with a completion marker (`pipeline.cache`).
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import cache
from pipeline.config import ModelConfig, UpdateConfig
from pipeline.errors import UserError

log = logging.getLogger(__name__)

SHARDED_DIR = "sharded"  # FSDP2 model + optimizer shards (torch.distributed.checkpoint) in a training state


def resolve_model_path(cfg: ModelConfig) -> str:
    """`embedded[:preset]` -> the cached embedded build; an existing directory -> itself; otherwise the
    string is taken as a hub id. A path-like string that does not exist is an error."""
    name = cfg.name_or_path
    if name == "embedded" or name.startswith("embedded:"):
        from pipeline.embedded.build import ensure_embedded

        return str(ensure_embedded(name.split(":", 1)[1] if ":" in name else "default"))
    if os.path.isdir(name):
        if not (Path(name) / "config.json").is_file():
            raise UserError(f"model.name_or_path: {name} is a directory without config.json; point it at a "
                            "transformers checkpoint directory")
        return name
    if name.startswith((".", "/", "~")) or name.count("/") > 1:  # a hub id is `name` or `org/name`
        raise UserError(f"model.name_or_path: {name} does not exist; pass an existing checkpoint directory, "
                        "a hub id (org/name), or `embedded`")
    return name


def model_fingerprint(path: str, cfg: ModelConfig) -> str:
    """Identity of the starting weights: file names and sizes (and config.json) of a local directory,
    or hub id + revision; plus the load-time patches (config overrides, borrowed chat template) when
    any is set."""
    p = Path(path)
    if p.is_dir():
        files = sorted((f.name, f.stat().st_size) for f in p.iterdir() if f.is_file() and f.name != cache.MARKER)
        config = (p / "config.json").read_text() if (p / "config.json").is_file() else ""
        fp = cache.fingerprint("dir", files, config)
    else:
        fp = cache.fingerprint("hub", path, cfg.revision)
    patches = load_patches(cfg)
    return cache.fingerprint(fp, patches) if patches else fp


def load_patches(cfg: ModelConfig) -> dict[str, Any]:
    """What the pipeline changes in the checkpoint when it loads it (documented in the recipes)."""
    patches = {"rope_theta": cfg.rope_theta, "max_position_embeddings": cfg.max_position_embeddings,
               "chat_template_from": cfg.chat_template_from}
    return {k: v for k, v in patches.items() if v is not None}


def _hub_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    return {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}


def load_tokenizer(path: str, cfg: ModelConfig) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, **_hub_kwargs(cfg))
    except OSError as e:
        raise UserError(f"model.name_or_path: cannot load a tokenizer from {path!r} ({e.__class__.__name__}); "
                        "check the path or hub id, or that the hub is reachable") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if cfg.chat_template_from:
        try:
            donor = AutoTokenizer.from_pretrained(cfg.chat_template_from, trust_remote_code=cfg.trust_remote_code)
        except OSError as e:
            raise UserError(f"model.chat_template_from: cannot load a tokenizer from {cfg.chat_template_from!r} "
                            f"({e.__class__.__name__}); check the path or hub id") from None
        if not donor.chat_template:
            raise UserError(f"model.chat_template_from: {cfg.chat_template_from} has no chat template")
        tok.chat_template = donor.chat_template
    return tok


def patched_config(path: str, cfg: ModelConfig) -> Any:
    """The checkpoint's config with `model.rope_theta` / `model.max_position_embeddings` applied, or None
    when neither is set. Applied before the weights load, so the rotary tables are built with them
    (SPEC §7 context extension of Qwen2.5-Math: theta 10000 -> 40000, 4096 -> 16384 positions)."""
    if cfg.rope_theta is None and cfg.max_position_embeddings is None:
        return None
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, **_hub_kwargs(cfg))
    if cfg.rope_theta is not None and getattr(config, "rope_parameters", None) is None and hasattr(config, "rope_theta"):
        config.rope_theta = cfg.rope_theta  # transformers < 5 keeps the base as a top-level attribute
    elif cfg.rope_theta is not None:
        rope = dict(getattr(config, "rope_parameters", None) or {"rope_type": "default"})
        rope["rope_theta"] = cfg.rope_theta
        config.rope_parameters = rope
    if cfg.max_position_embeddings is not None:
        config.max_position_embeddings = cfg.max_position_embeddings
    return config


def load_model(path: str, cfg: ModelConfig) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        config = patched_config(path, cfg)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                     attn_implementation=cfg.attn_implementation,
                                                     **({"config": config} if config is not None else {}),
                                                     **_hub_kwargs(cfg))
    except OSError as e:
        raise UserError(f"model.name_or_path: cannot load a model from {path!r} ({e.__class__.__name__}); "
                        "check the path or hub id, or that the hub is reachable") from None
    model.config.use_cache = False
    return model


def _fused_adamw(params: list) -> bool:
    """torch's fused AdamW kernel where it applies: one process (sharded FSDP2 parameters keep the default
    implementation), plain floating-point parameters, one device type that has the kernel (CPU has it).
    On CPU it halved the optimizer step of the embedded default (docs/performance.md); the update
    differs from the unfused one only by float rounding (~1e-9)."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return False
    kinds = {p.device.type for p in params}
    return (len(kinds) == 1 and kinds <= set(_get_fused_kernels_supported_devices())
            and all(type(p.detach()) is torch.Tensor and p.is_floating_point() for p in params))


def make_optimizer(model: Any, cfg: UpdateConfig) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW and a linear-warm-up-then-constant LR schedule (SPEC §6)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay,
                            **({"fused": True} if _fused_adamw(params) else {}))
    warmup = cfg.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    return opt, sched


@dataclass
class TrainState:
    model: Any  # prepared by accelerate
    optimizer: Any
    scheduler: Any
    step: int  # last completed step (0: base model)
    policy_fp: str  # fingerprint of the weights + optimizer state after `step`
    restored: bool = False  # optimizer/scheduler/RNG state is that of `step` (not freshly made)


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


def save_checkpoint(accelerator: Any, state: TrainState, tokenizer: Any, output_dir: Path,
                    extra_state: dict[str, Any]) -> None:
    """Write checkpoints/step-N (weights + tokenizer) and training-state-N (optimizer, scheduler, RNG,
    step, sampler position), each atomically, main process only."""
    from pipeline import distributed, lora

    model = accelerator.unwrap_model(state.model)
    state_dict = distributed.full_state_dict(state.model, accelerator)  # collective when sharded
    staged = _save_sharded(accelerator, state, output_dir) if distributed.is_sharded(state.model) else None
    if not accelerator.is_main_process:
        return

    def fill_model(tmp: Path) -> None:
        if lora.is_lora(model):
            lora.save_lora_checkpoint(model, tmp)
        else:
            model.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)

    def fill_state(tmp: Path) -> None:
        if staged is not None:
            os.replace(staged, tmp / SHARDED_DIR)
        else:
            torch.save(state.optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(state.scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({"step": state.step, "policy_fp": state.policy_fp,
                                                    **extra_state}, indent=1, sort_keys=True))

    cache.write_folder(checkpoint_dir(output_dir, state.step), state.policy_fp, fill_model)
    cache.write_folder(training_state_dir(output_dir, state.step), state.policy_fp, fill_state)


def _save_sharded(accelerator: Any, state: TrainState, output_dir: Path) -> Path:
    """Every rank writes its model and optimizer shards into a hidden staging folder (collective); the
    main process then moves it into the training-state folder, which gets its marker last."""
    import shutil

    from pipeline import distributed

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
        from pipeline import distributed

        distributed.load_sharded_state(state.model, state.optimizer, d / SHARDED_DIR)
    else:
        state.optimizer.load_state_dict(torch.load(d / "optimizer.pt", weights_only=False))
    state.scheduler.load_state_dict(torch.load(d / "scheduler.pt", weights_only=False))
    set_rng_state(torch.load(d / "rng.pt", weights_only=False))
    return json.loads((d / "state.json").read_text())


def prune_checkpoints(output_dir: Path, last_step: int, keep_last: int, save_every: int, total_steps: int) -> None:
    """Drop training states older than the last `keep_last` steps, and model weights of those steps
    unless the step is a multiple of `save_every` or the final step."""
    recent = set(range(last_step - keep_last + 1, last_step + 1))
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return
    import shutil

    for d in root.iterdir():
        if d.name.startswith("training-state-") and int(d.name.rsplit("-", 1)[1]) not in recent:
            shutil.rmtree(d, ignore_errors=True)
        elif d.name.startswith("step-"):
            n = int(d.name.rsplit("-", 1)[1])
            if n not in recent and n % save_every != 0 and n != total_steps:
                shutil.rmtree(d, ignore_errors=True)
