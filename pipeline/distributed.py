"""Sharded training with PyTorch FSDP2, prepared by accelerate.

The sharded path is accelerate's own: `accelerate launch --config_file accelerate_configs/fsdp2.yaml`
sets the FSDP_* environment, `make_accelerator` builds an `Accelerator` with an FSDP plugin read from
it (plus the mixed-precision policy below), and `prepare_policy` hands model, optimizer and scheduler
to `accelerator.prepare` together, as accelerate requires for FSDP2 (it shards each decoder layer,
applies activation checkpointing, switches the optimizer onto the shards and, with
`fsdp_cpu_ram_efficient_loading`, broadcasts rank 0's weights into ranks that loaded none).

accelerate never chooses FSDP on a machine without CUDA (every process would run alone), so on CPU an
FSDP launch is built as accelerate's gloo MULTI_CPU state and then switched to FSDP with the same
plugin: `accelerator.prepare`, `clip_grad_norm_` and `get_state_dict` then run the code a GPU run runs
(tests/test_distributed.py launches it with the shipped config).

Mixed precision (`mixed_precision: bf16`): parameters are all-gathered and computed in bf16, gradients
reduce-scattered in fp32, and the sharded master weights and optimizer state stay fp32 (accelerate
upcasts trainable parameters to fp32 before sharding).

- `gradient_sync`: no gradient reduction on all but the last micro-batch (gradient accumulation).
- `clip_grad_norm`: the global norm over every shard (accelerate's DTensor-aware clip), then clipping.
- `full_state_dict`: the whole model, gathered one tensor at a time, on the main process, cast to the
  checkpoint's dtype (a bf16 model is saved in bf16).
- `save_sharded_state` / `load_sharded_state`: model and optimizer shards with
  torch.distributed.checkpoint (every rank writes its own shard; a different world size can load them).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from pathlib import Path
from typing import Any, Iterator

import torch

from pipeline.backends.weights import ENGINE_DTYPE_ATTR, checkpoint_name
from pipeline.config import UpdateConfig
from pipeline.errors import UserError
from pipeline.lora import is_lora, merged_model
from pipeline.policy import make_optimizer

# FSDP2 mixed precision under `mixed_precision: bf16`: bf16 compute and all-gathers, fp32 gradient
# reduction and fp32 outputs (log-probs are taken from fp32 logits); master weights stay fp32.
BF16_POLICY = {"param_dtype": torch.bfloat16, "reduce_dtype": torch.float32, "output_dtype": torch.float32}


def fsdp_launch() -> bool:
    """This process was started by `accelerate launch` with an FSDP config (`distributed_type: FSDP`)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def fsdp_plugin() -> Any:
    """accelerate's FSDP plugin, every fsdp_* setting read from the launcher's environment; the mixed
    precision policy is ours (accelerate's default for bf16 would also reduce gradients in bf16)."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if precision not in ("no", "bf16"):
        raise UserError(f"mixed_precision: {precision} is not supported with FSDP2 here; set `mixed_precision: bf16` "
                        "(or 'no') in the accelerate config")
    if os.environ.get("FSDP_VERSION", "1") != "2":
        raise UserError("the accelerate config asks for FSDP version 1; set `fsdp_config.fsdp_version: 2` "
                        "(see accelerate_configs/fsdp2.yaml)")
    return FullyShardedDataParallelPlugin(mixed_precision_policy=dict(BF16_POLICY) if precision == "bf16" else None)


def make_accelerator(timeout_s: float = 1800.0) -> Any:
    """The run's Accelerator: FSDP2 (prepared by accelerate) under an FSDP launch, DDP / one process
    otherwise; `timeout_s` bounds every collective (`train.process_group_timeout_s`)."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    handlers = [InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=timeout_s))]
    if not fsdp_launch():
        return Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=handlers)
    plugin = fsdp_plugin()
    if torch.cuda.is_available():
        return Accelerator(fsdp_plugin=plugin, kwargs_handlers=handlers)
    return _cpu_fsdp(Accelerator(cpu=True, kwargs_handlers=handlers), plugin)


def _cpu_fsdp(accelerator: Any, plugin: Any) -> Any:
    """Switch a gloo MULTI_CPU accelerator to FSDP with `plugin` (accelerate itself only picks FSDP with
    CUDA); from here on `prepare`, clipping and state dicts take accelerate's FSDP2 code paths."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)  # turns the policy dict into MixedPrecisionPolicy
    PartialState().distributed_type = DistributedType.FSDP
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin
    return accelerator


def is_sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def prepare_policy(accelerator: Any, model: Any, cfg: UpdateConfig) -> tuple[Any, Any, Any]:
    """(model, optimizer, scheduler) ready to train, all three through `accelerator.prepare` in one call
    (FSDP2 refuses an optimizer prepared without its model)."""
    if getattr(accelerator, "is_fsdp2", False):
        if cfg.lora.rank:
            raise UserError("update.lora with FSDP2 is not supported yet; LoRA adapters of a model that fits one "
                            "device train with accelerate_configs/single_gpu.yaml or data-parallel (MULTI_GPU)")
        if cfg.gradient_checkpointing:
            accelerator.state.fsdp_plugin.activation_checkpointing = True  # accelerate applies it per layer
        # one policy at a time: accelerate's FSDP2 clip finds its model by comparing parameter lists, which
        # fails between two prepared models; a freshly loaded policy replaces the previous one
        accelerator.free_memory()
        if getattr(model.config, "tie_word_embeddings", False):
            model.tie_weights()  # accelerate maps optimizer parameters by name; a tied head must be one tensor
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    opt, sched = make_optimizer(model, cfg)
    return accelerator.prepare(model, opt, sched)


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
    norm = accelerator.clip_grad_norm_(model.parameters(), max_norm)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def checkpoint_dtype(model: Any) -> torch.dtype:
    """The dtype the starting checkpoint was stored in (`pipeline.policy.load_model` records it); the
    trainer's fp32 master weights are saved back in it."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(inner, "checkpoint_dtype", None) or torch.float32


def full_state_dict(model: Any, accelerator: Any, *, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The whole model's state dict on CPU on the main process (other ranks get {}), floating tensors cast
    to `dtype` (default: the model's own). Collective when sharded: every rank must call it; tensors are
    gathered one at a time, so the main process holds the result plus one tensor."""
    inner = accelerator.unwrap_model(model)
    dtype = dtype or checkpoint_dtype(inner)
    out: dict[str, torch.Tensor] = {}
    for name, t in inner.state_dict().items():
        name = checkpoint_name(name)
        if hasattr(t, "full_tensor"):
            t = t.full_tensor()
        if accelerator.is_main_process:
            t = t.detach().to("cpu")
            out[name] = t.to(dtype) if t.is_floating_point() else t
        del t
    return out


def rollout_model(model: Any, accelerator: Any) -> Any:
    """The module the transformers backend decodes with: the trained module itself (a merged copy, for
    LoRA). Under FSDP it is an unsharded copy in the checkpoint's dtype (sharded forwards would need every
    rank in lock-step), loaded strictly; SGLang backends never use it: they stream from the shards."""
    if not is_sharded(model):
        plain = accelerator.unwrap_model(model)
        # LoRA: decode with the adapters merged in (the same function, without the extra matmuls per token)
        return merged_model(plain).eval() if is_lora(plain) else plain
    from transformers import AutoModelForCausalLM

    inner = accelerator.unwrap_model(model)
    with torch.device(accelerator.device):  # built on the device: no host-memory copy per rank
        copy = AutoModelForCausalLM.from_config(inner.config, dtype=checkpoint_dtype(inner))
    source = {checkpoint_name(k): v for k, v in inner.state_dict().items()}
    check_keys(copy, source, "the FSDP2 policy's state")
    targets = copy.state_dict(keep_vars=True)
    for name, t in source.items():  # one gathered tensor at a time, straight into the copy
        full = t.full_tensor() if hasattr(t, "full_tensor") else t
        if name in targets:
            with torch.no_grad():
                targets[name].copy_(full)
        del full
    copy.tie_weights()
    return copy.eval()


ENGINE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "half": torch.float16,
                 "float": torch.float32}


def engine_weights(gen_cfg: Any, model: Any, accelerator: Any) -> Any:
    """What a rollout backend's `sync_weights` reads. The transformers backend decodes with a module
    (`rollout_model`); SGLang engines get the trainer's own module, which `pipeline.backends.weights`
    streams from (sharded: one gathered tensor at a time, cast to the engine's dtype, in buckets), so no
    rank builds a second full copy of the model."""
    if gen_cfg.backend == "transformers":
        return rollout_model(model, accelerator)
    name = str(gen_cfg.sglang.engine_args.get("dtype", {"fp32": "float32", "bf16": "bfloat16"}[gen_cfg.precision]))
    setattr(model, ENGINE_DTYPE_ATTR, ENGINE_DTYPES.get(name))  # "auto": pushed as trained
    return model


def check_keys(model: Any, names: Any, source: str) -> None:
    """Raise one line naming missing / unexpected keys when `names` is not exactly `model`'s state dict
    (a tied output head may be absent)."""
    want = set(model.state_dict())
    got = set(names)
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    missing, unexpected = sorted(want - got - tied), sorted(got - want)
    if missing or unexpected:
        raise UserError(f"{source} does not match {type(model).__name__}: missing keys {missing[:5]}"
                        f"{' ...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
                        f"{' ...' if len(unexpected) > 5 else ''}; the weights would stay random")


def release_cached_memory() -> None:
    """Hand the CUDA caching allocator's free blocks back to the device before a colocated engine
    re-takes its memory (no-op on CPU)."""
    if torch.cuda.is_available():
        import gc

        gc.collect()  # a full collection costs ~0.25 s per step even with nothing to free; CUDA only
        torch.cuda.empty_cache()


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
