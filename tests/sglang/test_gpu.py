"""The colocated SGLang backend on a CUDA device: what the CPU tier cannot exercise (docs/sglang.md, "What has and has not run on a GPU").

- `release()` really frees device memory (torch_memory_saver, `enable_memory_saver`, the CUDA default of
  `SGLangBackend`) and `sync_weights` takes it back;
- the bucketed tensor push from a CUDA-resident policy (buckets travel as CUDA-IPC handles) changes the
  engine's outputs to exactly those of the pushed weights, and pushing the old weights restores them;
- tensor parallel (`engine_args.tp_size: 2`) generates what tp 1 generates, when two GPUs are visible.

Skipped without CUDA (and, like the whole tier, without sglang: `pip install -e .[sglang]` on the GPU
machine, then `python -m pytest -q tests/sglang`). Has not been run yet: no GPU machine with sglang
installed has been available to this project (see the README, "SGLang backend").

The micro model has head_dim 16, which FlashInfer/FA3 kernels do not take; the attention backend is
`triton` unless PREFIX_RFT_SGLANG_GPU_ATTENTION names another (e.g. torch_native).
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from pipeline.backends import SamplingParams
from tests.sglang.helpers import ids, load_fp32, perturbed, record

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

ATTENTION = os.environ.get("PREFIX_RFT_SGLANG_GPU_ATTENTION", "triton")
BUCKET = 16 * 1024  # bytes: several buckets for the micro model
MEM_FRACTION = 0.3  # weights + KV pool of the engine: what release must give back (mostly KV)


def _args(**extra):
    return {"dtype": "float32", "attention_backend": ATTENTION, "mem_fraction_static": MEM_FRACTION,
            "context_length": 1024, **extra}


@pytest.fixture(scope="module")
def engine(micro_path):
    from pipeline.backends.sglang import SGLangBackend

    t0 = time.perf_counter()
    backend = SGLangBackend(str(micro_path), engine_args=_args(), seed=0, bucket_bytes=BUCKET)
    record("gpu_engine_boot_seconds", round(time.perf_counter() - t0, 1))
    yield backend
    backend.shutdown()


@pytest.fixture(scope="module")
def model(micro_path):
    return load_fp32(micro_path).cuda()


def greedy(stop_ids):
    return SamplingParams(temperature=0.0, stop_token_ids=stop_ids)


def _free_bytes() -> int:
    torch.cuda.synchronize()
    return torch.cuda.mem_get_info()[0]  # device-wide: counts the engine's scheduler process too


def test_release_frees_device_memory_and_sync_takes_it_back(engine, model, micro_requests, stop_ids):
    engine.flush_cache()
    before = engine.generate(micro_requests, greedy(stop_ids))
    total = torch.cuda.mem_get_info()[1]
    held = _free_bytes()
    engine.release()
    released = _free_bytes()
    engine.sync_weights(model)  # resume weights, push, resume KV cache and CUDA graphs, flush
    resumed = _free_bytes()
    record("gpu_release", {"total_gib": round(total / 2 ** 30, 2), "freed_gib": round((released - held) / 2 ** 30, 2),
                           "retaken_gib": round((released - resumed) / 2 ** 30, 2)})
    # the KV pool is most of MEM_FRACTION * total; half of it is a loose lower bound
    assert released - held > 0.5 * MEM_FRACTION * total
    assert released - resumed > 0.5 * MEM_FRACTION * total
    after = engine.generate(micro_requests, greedy(stop_ids))
    assert ids(after) == ids(before)


def test_cuda_weight_push_changes_outputs_and_restores(engine, model, micro_path, micro_tokenizer, micro_requests,
                                                       stop_ids):
    from pipeline.backends.hf import TransformersBackend

    engine.flush_cache()
    before = engine.generate(micro_requests, greedy(stop_ids))
    other = perturbed(load_fp32(micro_path)).cuda()  # noise drawn on the CPU generator, as in the CPU tier
    t0 = time.perf_counter()
    engine.sync_weights(other)
    record("gpu_tensor_push", {**engine.last_push, "seconds_with_flush": round(time.perf_counter() - t0, 3)})
    assert engine.last_push["buckets"] >= 3
    changed = engine.generate(micro_requests, greedy(stop_ids))
    expected = TransformersBackend(other, pad_token_id=micro_tokenizer.pad_token_id).generate(
        micro_requests, greedy(stop_ids))
    assert ids(changed) != ids(before)
    assert ids(changed) == ids(expected)
    engine.sync_weights(model)
    restored = engine.generate(micro_requests, greedy(stop_ids))
    assert ids(restored) == ids(before) and [o.logprobs for o in restored] == [o.logprobs for o in before]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="tensor parallel needs two GPUs")
def test_tensor_parallel_generates_like_one_gpu(engine, micro_path, micro_requests, stop_ids):
    from pipeline.backends.sglang import SGLangBackend

    one = engine.generate(micro_requests, greedy(stop_ids))
    engine.release()  # leave room for the tp=2 engine on GPU 0
    # its own ports: the first engine still holds 30000/30001 (pipeline/backends/placement.py)
    tp = SGLangBackend(str(micro_path), engine_args=_args(tp_size=2, mem_fraction_static=0.2, port=30100), seed=0)
    try:
        two = tp.generate(micro_requests, greedy(stop_ids))
    finally:
        tp.shutdown()
        engine.resume()
    assert ids(two) == ids(one)
