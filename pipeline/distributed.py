"""Sharded training with PyTorch FSDP2 (`torch.distributed.fsdp.fully_shard`).

These are the functions the policy code calls whenever the policy is sharded: under
`accelerate launch --config_file accelerate_configs/fsdp2.yaml` on GPUs (settings read from accelerate's
FSDP plugin), and under torchrun/gloo on CPU in tests/test_distributed.py — the same calls either way:

- `prepare_policy`: shard (each decoder layer, then the root), build the optimizer on the shards, let
  accelerate wrap optimizer and scheduler; without FSDP it is the plain `accelerator.prepare` path.
- `gradient_sync`: no gradient reduction on all but the last micro-batch (gradient accumulation).
- `clip_grad_norm`: the global norm over every shard (a DTensor reduction), then clipping.
- `full_state_dict`: the whole model gathered (`get_model_state_dict(..., full_state_dict=True)`) for
  the transformers checkpoint, evaluation and the rollout engine.
- `save_sharded_state` / `load_sharded_state`: model and optimizer shards with
  torch.distributed.checkpoint (every rank writes its own shard; a different world size can load them).

    accelerate launch --config_file accelerate_configs/fsdp2.yaml -m pipeline.train --config quickstart \
        --output-dir runs/qs model.name_or_path=Qwen/Qwen2.5-Math-1.5B
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from pipeline.config import UpdateConfig
from pipeline.errors import UserError
from pipeline.lora import is_lora, merged_model
from pipeline.policy import make_optimizer


@dataclass
class ShardSettings:
    param_dtype: torch.dtype | None = None  # compute dtype of the all-gathered parameters; None: fp32
    reduce_dtype: torch.dtype | None = torch.float32  # gradient reduce-scatter dtype
    reshard_after_forward: bool = True  # free gathered parameters after forward (ZeRO-3) instead of keeping them
    activation_checkpointing: bool = False  # recompute each decoder layer's activations in backward


def settings_from_accelerator(accelerator: Any) -> ShardSettings | None:
    """FSDP2 settings of an `accelerate launch` with an FSDP config; None for any other launch."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.FSDP:
        return None
    plugin = accelerator.state.fsdp_plugin
    if getattr(plugin, "fsdp_version", 1) != 2:
        raise UserError("the accelerate config asks for FSDP version 1; set `fsdp_config.fsdp_version: 2` "
                        "(see accelerate_configs/fsdp2.yaml)")
    bf16 = accelerator.mixed_precision == "bf16"
    return ShardSettings(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32,
                         reshard_after_forward=bool(plugin.reshard_after_forward),
                         activation_checkpointing=bool(plugin.activation_checkpointing))


def is_sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _layer_classes(model: Any) -> set[str]:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(inner, "_no_split_modules", None) or [])
    if not names:
        raise UserError(f"{type(inner).__name__} declares no decoder layer classes (_no_split_modules); FSDP2 "
                        "sharding needs them to shard layer by layer")
    return names


def shard_model(model: Any, settings: ShardSettings) -> Any:
    """`fully_shard` every decoder layer, then the root (embeddings, final norm, lm head), in place."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if settings.activation_checkpointing:
        # non-reentrant checkpointing composes with FSDP2's per-layer all-gathers
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    mp = MixedPrecisionPolicy(param_dtype=settings.param_dtype, reduce_dtype=settings.reduce_dtype)
    names = _layer_classes(model)
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise UserError(f"no module of the classes {sorted(names)} found in {type(model).__name__}")
    for layer in layers:
        fully_shard(layer, mp_policy=mp, reshard_after_forward=settings.reshard_after_forward)
    fully_shard(model, mp_policy=mp, reshard_after_forward=settings.reshard_after_forward)
    return model


def prepare_policy(accelerator: Any, model: Any, cfg: UpdateConfig,
                   shard: ShardSettings | None = None) -> tuple[Any, Any, Any]:
    """(model, optimizer, scheduler) ready to train. Sharded when `shard` is given or the launch is an
    accelerate FSDP launch; otherwise prepared by accelerate (DDP across processes, or nothing)."""
    shard = shard or settings_from_accelerator(accelerator)
    if shard is None:
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        opt, sched = make_optimizer(model, cfg)
        return accelerator.prepare(model, opt, sched)
    if cfg.lora.rank:
        raise UserError("update.lora with FSDP2 is not supported yet; LoRA adapters of a model that fits one "
                        "device train with accelerate_configs/single_gpu.yaml or data-parallel (MULTI_GPU)")
    shard.activation_checkpointing = shard.activation_checkpointing or cfg.gradient_checkpointing
    # The optimizer is built on the shards, so accelerate never sees unsharded parameters (its own FSDP2
    # preparation would shard a second time); it only wraps optimizer and scheduler.
    model = shard_model(model.to(accelerator.device), shard)
    opt, sched = make_optimizer(model, cfg)
    opt, sched = accelerator.prepare(opt, sched)
    return model, opt, sched


@contextlib.contextmanager
def gradient_sync(model: Any, accelerator: Any, enabled: bool) -> Iterator[None]:
    """Reduce gradients across ranks in this backward only when `enabled` (the last micro-batch)."""
    if enabled or accelerator.num_processes == 1:
        yield
    elif is_sharded(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        with accelerator.no_sync(model):
            yield


def clip_grad_norm(model: Any, accelerator: Any, max_norm: float) -> float:
    """Global gradient 2-norm (over every shard and rank), gradients scaled down to `max_norm` when above."""
    if not is_sharded(model):
        return float(accelerator.clip_grad_norm_(model.parameters(), max_norm))
    from torch.distributed.tensor import DTensor

    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)  # DTensor grads: the norm is reduced across shards
    return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)


def full_state_dict(model: Any, accelerator: Any, *, all_ranks: bool = False) -> dict[str, torch.Tensor]:
    """The whole model's state dict on CPU: on the main process (every rank with `all_ranks`); other
    ranks get {}. Collective when sharded: every rank must call it."""
    if not is_sharded(model):
        if all_ranks:
            return {k: v.detach().cpu() for k, v in accelerator.unwrap_model(model).state_dict().items()}
        return accelerator.get_state_dict(model)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=not all_ranks)
    state = get_model_state_dict(model, options=options)
    return {k: v.cpu() for k, v in state.items()} if all_ranks else state


def rollout_model(model: Any, accelerator: Any) -> Any:
    """The model the rollout engine runs: the trained module itself (a merged copy, for LoRA), or, when
    sharded, an unsharded copy built from the gathered full state (sharded forwards would need every rank
    in lock-step, and data-parallel generation gives ranks different numbers of decoding steps)."""
    if not is_sharded(model):
        plain = accelerator.unwrap_model(model)
        # LoRA: decode with the adapters merged in (the same function, without the extra matmuls per token)
        return merged_model(plain).eval() if is_lora(plain) else plain
    from transformers import AutoModelForCausalLM

    state = full_state_dict(model, accelerator, all_ranks=True)
    copy = AutoModelForCausalLM.from_config(model.config, dtype=torch.float32)
    copy.load_state_dict(state, strict=False)  # tied lm_head may be absent from the state
    copy.tie_weights()
    return copy.to(accelerator.device).eval()


def _raw(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps the torch one


def save_sharded_state(model: Any, optimizer: Any, directory: str | Path) -> None:
    """Every rank writes its model and optimizer shards to `directory` (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, _raw(optimizer))
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(directory))


def load_sharded_state(model: Any, optimizer: Any, directory: str | Path) -> None:
    """Restore model and optimizer shards written by `save_sharded_state` (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, _raw(optimizer))
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=str(directory))
    set_state_dict(model, _raw(optimizer), model_state_dict=state["model"], optim_state_dict=state["optimizer"])
