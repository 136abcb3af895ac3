"""SGLang rollout backend: an in-process `sgl.Engine` colocated with the trainer.

The only module of the project that imports sglang, and only when this backend is built
(`generate.backend: sglang`); `pipeline.imports.require` turns a missing install into a one-line error.

Lifecycle (driven by `pipeline.run` through the `RolloutBackend` protocol):
- boot: `sgl.Engine(model_path=<starting checkpoint>, skip_tokenizer_init=True, **generate.sglang.engine_args)`
  plus what the launch decides (`placement.py`): one engine per engine group (tp x pp x dp GPUs), booted
  by the group's first rank at `base_gpu_id` = its device, `random_seed` distinct per engine, `port` /
  `nccl_port` distinct per engine on a node; and `json_model_override_args` carrying the policy's config
  patch (`model.rope_theta`, `model.max_position_embeddings`), so the engine serves the same RoPE and
  context as the trainer. On a CUDA machine with `enable_memory_saver` (default there) so release really
  frees memory; on a CPU the defaults of docs/sglang.md (`SGLANG_USE_CPU_ENGINE=1`, torch_native
  attention, no CUDA graphs). Every other ServerArgs field passes through `engine_args` unchanged. The
  other ranks of an engine group hold no engine: they generate no rows and take part in weight
  gathering only.
- `release()` before the update: `release_memory_occupation()` (KV cache, weights, CUDA graphs; the
  engine must be idle, which it is between stages).
- `sync_weights(model, checkpoint)` before generation: resume the weights, push them in bounded buckets
  (`begin_weight_update` -> `update_weights_from_tensor(bucket, flush_cache=False)`... ->
  `end_weight_update`; FSDP2 shards are gathered one tensor at a time, see `weights.py`), resume the KV
  cache, `flush_cache()`. `generate.sglang.weight_sync: disk`, or a failed tensor push when a checkpoint is
  given, loads the checkpoint with `update_weights_from_disk` instead.
- `shutdown()` at the end of the run (also registered by SGLang with atexit).

On CUDA the tensors of a bucket travel as CUDA-IPC handles, on CPU through shared memory; the calls are
the same. What has and has not run on a GPU is listed in the README ("SGLang backend").
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from typing import Any

import torch

from pipeline.backends import Completion, GenerationRequest, SamplingParams
from pipeline.backends import placement as P
from pipeline.backends.sglang_protocol import (CPU_ENGINE_DEFAULTS, check_ok, engine_seed, generate_in_order,
                                               merge_engine_args, model_overrides, push_weights)
from pipeline.errors import ConfigError
from pipeline.imports import check_available, require

log = logging.getLogger(__name__)


def _import_sglang(device: str) -> Any:
    if device == "cpu":
        os.environ.setdefault("SGLANG_USE_CPU_ENGINE", "1")  # read when sglang is imported
    return require("sglang", "generate.backend: sglang")


def installed_version() -> str:
    """`sglang-<version>` of the installed package, without importing it."""
    from importlib.metadata import version

    check_available("sglang")
    return f"sglang-{version('sglang')}"


def default_engine_args() -> dict[str, Any]:
    """ServerArgs defaults for this machine (engine_args override them)."""
    if torch.cuda.is_available():
        return {"device": "cuda", "enable_memory_saver": True}
    return dict(CPU_ENGINE_DEFAULTS)


def merge_overrides(user: Any, ours: dict[str, Any]) -> str:
    """`json_model_override_args`: the user's (a JSON string or a mapping) plus the policy's config patch;
    a user value that contradicts the patch is an error naming the field."""
    theirs = json.loads(user) if isinstance(user, str) else dict(user or {})
    for key, value in ours.items():
        if key in theirs and theirs[key] != value:
            raise ConfigError(f"generate.sglang.engine_args.json_model_override_args sets {key}={theirs[key]!r}, "
                              f"but the policy is loaded with {key}={value!r} (model.rope_theta / "
                              "model.max_position_embeddings); remove it from engine_args")
    return json.dumps({**theirs, **ours}, sort_keys=True)


def engine_args_for(user: dict[str, Any], *, model_path: str, seed: int, overrides: dict[str, Any],
                    where: P.Placement, cuda: bool, current_device: int = 0, device_count: int = 0) -> dict[str, Any]:
    """Every `sgl.Engine` keyword of this rank's engine: machine defaults < engine_args < placement
    (base GPU, ports, per-engine seed) and the policy's config overrides < what the adapter needs."""
    user = dict(user)
    base_seed = user.pop("random_seed", seed)
    placed: dict[str, Any] = {**P.engine_ports(where, user), "random_seed": engine_seed(base_seed, where.engine_index)}
    if cuda and where.leader:  # the other ranks of the group boot nothing
        placed.update(P.gpu_args(where, user, current_device, device_count))
    if overrides or "json_model_override_args" in user:
        placed["json_model_override_args"] = merge_overrides(user.pop("json_model_override_args", None), overrides)
    user = {k: v for k, v in user.items() if k not in placed}
    return merge_engine_args({**(default_engine_args() if cuda else dict(CPU_ENGINE_DEFAULTS)), **placed}, user,
                             {"model_path": str(model_path), "skip_tokenizer_init": True})


class SGLangBackend:
    name = "sglang"

    def __init__(self, model_path: str, *, engine_args: dict[str, Any] | None = None, seed: int = 0,
                 weight_sync: str = "tensor", bucket_bytes: int = 512 * 2 ** 20, engine: Any = None,
                 overrides: dict[str, Any] | None = None, placement: P.Placement | None = None):
        if weight_sync not in ("tensor", "disk"):
            raise ValueError(f"weight_sync={weight_sync!r}: the in-process engine takes `tensor` or `disk`")
        self.weight_sync = weight_sync
        self.bucket_bytes = bucket_bytes
        self.last_push: dict[str, float] = {}
        self._released = False
        self._closed = False
        user = dict(engine_args or {})
        self.placement = placement or P.from_env(user)
        self.engine_args: dict[str, Any] = {}
        if engine is not None:  # an engine built elsewhere (tests of the bookkeeping use a fake one)
            self.engine, self._version = engine, getattr(engine, "version", "sglang-unknown")
            return
        cuda = torch.cuda.is_available() and str(user.get("device", "cuda")).startswith("cuda")
        self.engine_args = engine_args_for(
            user, model_path=model_path, seed=seed, overrides=overrides or {}, where=self.placement, cuda=cuda,
            current_device=torch.cuda.current_device() if cuda else 0,
            device_count=torch.cuda.device_count() if cuda else 0)
        if not self.placement.leader:  # another rank of this engine group boots and drives the engine
            self.engine, self._version = None, installed_version()
            return
        sgl = _import_sglang(str(self.engine_args.get("device", "")))
        self._version = f"sglang-{sgl.__version__}"
        log.info("booting sgl.Engine %s", {k: v for k, v in self.engine_args.items() if k != "model_path"})
        self.engine = sgl.Engine(**self.engine_args)

    @classmethod
    def from_config(cls, cfg: Any, *, model_path: str, seed: int,
                    model_cfg: Any = None) -> "SGLangBackend":
        sg = cfg.sglang
        sync = "tensor" if sg.weight_sync == "auto" else sg.weight_sync
        engine_args = {"dtype": {"fp32": "float32", "bf16": "bfloat16"}[cfg.precision],
                       **({"mem_fraction_static": sg.mem_fraction_static} if torch.cuda.is_available() else {}),
                       **sg.engine_args}  # colocated: the engine's GPU share (generate.sglang.mem_fraction_static)
        overrides = model_overrides(model_cfg.rope_theta, model_cfg.max_position_embeddings) if model_cfg else {}
        return cls(model_path, engine_args=engine_args, seed=seed, weight_sync=sync,
                   bucket_bytes=int(sg.weight_bucket_mb * 2 ** 20), overrides=overrides)

    @property
    def generation_shard(self) -> tuple[int | None, int]:
        """Rows are sharded over engines: the leader of engine i generates shard i; the rest none."""
        p = self.placement
        return (p.engine_index if p.leader else None), p.num_engines

    def version(self) -> str:
        return self._version

    def _live(self) -> Any:
        if self._closed:
            raise RuntimeError("the SGLang engine was shut down")
        if self.engine is None:
            raise RuntimeError(f"rank {self.placement.rank} runs no SGLang engine (local rank "
                               f"{self.placement.local_rank - self.placement.local_rank % self.placement.per_engine} "
                               "drives its engine group)")
        return self.engine

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        if not requests and self.engine is None and not self._closed:
            return []
        engine = self._live()
        if self._released:
            self.resume()

        def call(input_ids, params):
            out = engine.generate(input_ids=input_ids, sampling_params=params, return_logprob=True)
            return [out] if isinstance(out, dict) else list(out)

        return generate_in_order(requests, sampling, call)

    def sync_weights(self, model: Any, checkpoint: str | None = None) -> None:
        if self.engine is None and not self._closed:  # walk the stream: sharded tensors gather collectively
            if self.weight_sync == "tensor":
                push_weights(model, self.bucket_bytes, begin=lambda: None, push=lambda b: None, end=lambda: None,
                             pusher=False)
            return
        engine = self._live()
        released = self._released
        if released:  # weights first, KV cache after the push: the lower peak on a shared GPU
            engine.resume_memory_occupation(tags=["weights"])
        if self.weight_sync == "disk":
            self._load_from_disk(model, checkpoint)
        else:
            try:
                self.last_push = push_weights(
                    model, self.bucket_bytes, begin=engine.begin_weight_update,
                    push=lambda bucket: engine.update_weights_from_tensor(bucket, flush_cache=False),
                    end=engine.end_weight_update)
            except RuntimeError as e:
                if checkpoint is None:
                    raise
                log.warning("tensor weight push failed (%s); loading %s from disk instead", e, checkpoint)
                self._load_from_disk(model, checkpoint)
        if released:
            engine.resume_memory_occupation(tags=["kv_cache", "cuda_graph"])
            self._released = False
        self.flush_cache()

    def _load_from_disk(self, model: Any, checkpoint: str | None) -> None:
        engine = self._live()
        if checkpoint is not None:
            check_ok(engine.update_weights_from_disk(str(checkpoint)), f"update_weights_from_disk({checkpoint})")
            return
        with tempfile.TemporaryDirectory(prefix="prefix-rft-weights-") as tmp:  # an unsharded module only
            model.save_pretrained(tmp)
            check_ok(engine.update_weights_from_disk(tmp), "update_weights_from_disk")

    def release(self) -> None:
        if not self._released and self.engine is not None:
            self.flush_cache()  # waits for an idle scheduler: release_memory_occupation asserts idleness
            self._live().release_memory_occupation()
            self._released = True

    def flush_cache(self, timeout_s: float = 120.0) -> None:
        """Drop the prefix cache, waiting for an idle scheduler. `generate` can return before the scheduler
        has cleared its last batch; SGLang's flush then answers success=False (and a release in that state
        fails an assertion that kills the engine), so the flush is retried until it succeeds."""
        if self.engine is None:
            return
        deadline = time.monotonic() + timeout_s
        while True:
            result = self._live().flush_cache()
            if getattr(result, "success", True):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the SGLang engine did not become idle within {timeout_s:.0f}s; cannot "
                                   "release its memory")
            time.sleep(0.02)

    def resume(self) -> None:
        if self._released and self.engine is not None:
            self._live().resume_memory_occupation()
            self._released = False

    def shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            if self.engine is not None:
                self.engine.shutdown()
