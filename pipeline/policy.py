"""The policy being trained: resolving and loading it, its optimizer, and its in-memory training
state. Checkpoints (writing, resuming, pruning) are pipeline/checkpoint.py.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline import cache
from pipeline.config import ModelConfig, UpdateConfig
from pipeline.errors import UserError

log = logging.getLogger(__name__)


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
    (docs/method.md §7 context extension of Qwen2.5-Math: theta 10000 -> 40000, 4096 -> 16384 positions)."""
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
    """The checkpoint in fp32 (master weights); `model.checkpoint_dtype` remembers the dtype it was stored
    in, which checkpoints and engine weights are written back in (`pipeline.distributed.checkpoint_dtype`)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = patched_config(path, cfg)
        stored = getattr(config or AutoConfig.from_pretrained(path, **_hub_kwargs(cfg)), "dtype", None)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                     attn_implementation=cfg.attn_implementation,
                                                     use_kernels=cfg.hub_kernels,
                                                     **({"config": config} if config is not None else {}),
                                                     **_hub_kwargs(cfg))
    except OSError as e:
        raise UserError(f"model.name_or_path: cannot load a model from {path!r} ({e.__class__.__name__}); "
                        "check the path or hub id, or that the hub is reachable") from None
    model.config.use_cache = False
    model.checkpoint_dtype = stored if isinstance(stored, torch.dtype) and stored.is_floating_point else torch.float32
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
    """AdamW and a linear-warm-up-then-constant LR schedule (docs/method.md §6)."""
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
