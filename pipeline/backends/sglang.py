"""SGLang rollout backend: an in-process `sgl.Engine` colocated with the trainer.

The only module of the project that imports sglang, and only when this backend is built
(`generate.backend: sglang`); `pipeline.imports.require` turns a missing install into a one-line error.

Lifecycle (driven by `pipeline.run` through the `RolloutBackend` protocol):
- boot: `sgl.Engine(model_path=<starting checkpoint>, skip_tokenizer_init=True, random_seed=<from the run
  seed>, **generate.engine_args)`; on a CUDA machine with `enable_memory_saver` (default there) so release
  really frees memory, on `base_gpu_id` = this process's device; on a CPU the CPU defaults of `sglang_protocol.py`
  (`SGLANG_USE_CPU_ENGINE=1`, torch_native attention, no CUDA graphs). `tp_size`, `dp_size` and every
  other ServerArgs field pass through `engine_args` unchanged.
- `release()` before the update: `release_memory_occupation()` (KV cache, weights, CUDA graphs; the
  engine must be idle, which it is between stages).
- `sync_weights(model, checkpoint)` before generation: resume the weights, push them in bounded buckets
  (`begin_weight_update` -> `update_weights_from_tensor(bucket, flush_cache=False)`... ->
  `end_weight_update`; FSDP2 shards are gathered one tensor at a time, see `weights.py`), resume the KV
  cache, `flush_cache()`. `generate.weight_sync: disk`, or a failed tensor push when a checkpoint is
  given, loads the checkpoint with `update_weights_from_disk` instead.
- `shutdown()` at the end of the run (also registered by SGLang with atexit).

On CUDA the tensors of a bucket travel as CUDA-IPC handles, on CPU through shared memory; the calls are
the same. What has and has not run on a GPU is listed in the README ("SGLang backend").
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from typing import Any

import torch

from pipeline.backends import Completion, GenerationRequest, SamplingParams
from pipeline.backends.sglang_protocol import (CPU_ENGINE_DEFAULTS, check_ok, engine_seed, generate_in_order,
                                               merge_engine_args, push_weights)

log = logging.getLogger(__name__)


def _import_sglang(device: str) -> Any:
    from pipeline.imports import require

    if device == "cpu":
        os.environ.setdefault("SGLANG_USE_CPU_ENGINE", "1")  # read when sglang is imported
    return require("sglang", "generate.backend: sglang")


def default_engine_args() -> dict[str, Any]:
    """ServerArgs defaults for this machine (engine_args override them)."""
    if torch.cuda.is_available():
        return {"device": "cuda", "base_gpu_id": torch.cuda.current_device(), "enable_memory_saver": True}
    return dict(CPU_ENGINE_DEFAULTS)


class SGLangBackend:
    name = "sglang"

    def __init__(self, model_path: str, *, engine_args: dict[str, Any] | None = None, seed: int = 0,
                 weight_sync: str = "tensor", bucket_bytes: int = 512 * 2 ** 20, engine: Any = None):
        if weight_sync not in ("tensor", "disk"):
            raise ValueError(f"weight_sync={weight_sync!r}: the in-process engine takes `tensor` or `disk`")
        self.weight_sync = weight_sync
        self.bucket_bytes = bucket_bytes
        self.last_push: dict[str, float] = {}
        self._released = False
        self._closed = False
        if engine is not None:  # an engine built elsewhere (tests of the bookkeeping use a fake one)
            self.engine, self._version = engine, getattr(engine, "version", "sglang-unknown")
            return
        args = merge_engine_args(default_engine_args(), dict(engine_args or {}),
                                 {"model_path": str(model_path), "skip_tokenizer_init": True})
        args.setdefault("random_seed", engine_seed(seed))
        sgl = _import_sglang(str(args.get("device", "")))
        log.info("booting sgl.Engine %s", {k: v for k, v in args.items() if k != "model_path"})
        self.engine = sgl.Engine(**args)
        self._version = f"sglang-{sgl.__version__}"

    @classmethod
    def from_config(cls, cfg: Any, *, model_path: str, seed: int) -> "SGLangBackend":
        sync = "tensor" if cfg.weight_sync == "auto" else cfg.weight_sync
        engine_args = {"dtype": {"fp32": "float32", "bf16": "bfloat16"}[cfg.precision],
                       **({"mem_fraction_static": cfg.mem_fraction_static} if torch.cuda.is_available() else {}),
                       **cfg.engine_args}  # colocated: the engine's share of the GPU (generate.mem_fraction_static)
        return cls(model_path, engine_args=engine_args, seed=seed, weight_sync=sync,
                   bucket_bytes=int(cfg.weight_bucket_mb * 2 ** 20))

    def version(self) -> str:
        return self._version

    def _live(self) -> Any:
        if self._closed:
            raise RuntimeError("the SGLang engine was shut down")
        return self.engine

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        engine = self._live()
        if self._released:
            self.resume()

        def call(input_ids, params):
            out = engine.generate(input_ids=input_ids, sampling_params=params, return_logprob=True)
            return [out] if isinstance(out, dict) else list(out)

        return generate_in_order(requests, sampling, call)

    def sync_weights(self, model: Any, checkpoint: str | None = None) -> None:
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
        if not self._released:
            self.flush_cache()  # waits for an idle scheduler: release_memory_occupation asserts idleness
            self._live().release_memory_occupation()
            self._released = True

    def flush_cache(self, timeout_s: float = 120.0) -> None:
        """Drop the prefix cache, waiting for an idle scheduler. `generate` can return before the scheduler
        has cleared its last batch; SGLang's flush then answers success=False (and a release in that state
        fails an assertion that kills the engine), so the flush is retried until it succeeds."""
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
        if self._released:
            self._live().resume_memory_occupation()
            self._released = False

    def shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            self.engine.shutdown()
