"""The in-process `sgl.Engine` behind `SGLangBackend`, on the micro embedded model, CPU, float32.

One engine for the module (boot ~20 s); tests that change its weights put the original ones back.
The last test shuts it down.
"""

from __future__ import annotations

import time

import pytest
import torch

from pipeline.backends import GenerationRequest, SamplingParams
from tests.sglang.helpers import deltas, ids, load_fp32, perturbed, record, trainer_logprobs

BUCKET = 16 * 1024  # bytes: the micro model (~70 KB) travels in several buckets


@pytest.fixture(scope="module")
def model(micro_path):
    return load_fp32(micro_path)


@pytest.fixture(scope="module")
def hf(model, micro_tokenizer):
    from pipeline.backends.hf import TransformersBackend

    return TransformersBackend(model, pad_token_id=micro_tokenizer.pad_token_id)


@pytest.fixture(scope="module")
def engine(micro_path):
    import psutil

    from pipeline.backends.sglang import SGLangBackend

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    t0 = time.perf_counter()
    backend = SGLangBackend(str(micro_path), engine_args={"dtype": "float32", "max_total_tokens": 8192,
                                                         "context_length": 1024}, seed=0, bucket_bytes=BUCKET)
    record("engine_boot_seconds", round(time.perf_counter() - t0, 1))
    backend.test_pids = {p.pid for p in psutil.Process().children(recursive=True)} - before
    yield backend
    backend.shutdown()


def greedy(stop_ids):
    return SamplingParams(temperature=0.0, stop_token_ids=stop_ids)


def test_generate_from_token_ids(engine, micro_requests, stop_ids):
    outs = engine.generate(micro_requests, SamplingParams(1.0, stop_token_ids=stop_ids))
    assert engine.version() == "sglang-0.5.23"
    assert len(outs) == len(micro_requests)
    for r, o in zip(micro_requests, outs):
        assert len(o.token_ids) == len(o.logprobs) and 1 <= len(o.token_ids) <= r.max_new_tokens
        assert all(lp <= 0 for lp in o.logprobs)
        inner_stops = [t for t in o.token_ids[:-1] if t in stop_ids]
        assert not inner_stops  # generation ends at the first stop token
        if o.finish_reason == "stop":
            assert o.token_ids[-1] in stop_ids  # and the stop token is included, as in the transformers backend
        else:
            assert o.finish_reason == "length" and len(o.token_ids) == r.max_new_tokens
    # an empty budget needs no round trip
    empty = engine.generate([GenerationRequest([5, 6], [7], 0, seed=1)], SamplingParams(1.0))[0]
    assert empty.token_ids == [] and empty.finish_reason == "length"


def test_prefix_ids_are_forced_then_continued(engine, micro_requests, stop_ids):
    with_prefix = [r for r in micro_requests if r.prefix_ids]
    as_prompt = [GenerationRequest(r.prompt_ids + r.prefix_ids, [], r.max_new_tokens, r.seed) for r in with_prefix]
    no_prefix = [GenerationRequest(r.prompt_ids, [], r.max_new_tokens, r.seed) for r in with_prefix]
    a, b, c = (engine.generate(x, greedy(stop_ids)) for x in (with_prefix, as_prompt, no_prefix))
    assert ids(a) == ids(b)  # the continuation starts after the prefix and excludes it
    assert ids(a) != ids(c)  # and the prefix changes what follows
    assert all(len(o.token_ids) <= r.max_new_tokens for r, o in zip(with_prefix, a))


def test_greedy_continuation_equals_the_transformers_backend(engine, hf, micro_requests, stop_ids):
    a = engine.generate(micro_requests, greedy(stop_ids))
    b = hf.generate(micro_requests, greedy(stop_ids))
    assert ids(a) == ids(b)
    assert [o.finish_reason for o in a] == [o.finish_reason for o in b]
    assert sum(len(o.token_ids) for o in a) >= 2 * len(micro_requests)  # not a vacuous comparison
    d = deltas([o.logprobs for o in a], [o.logprobs for o in b])
    record("greedy_tokens_compared", int(d.numel()))
    record("greedy_logprob_max_abs_delta_vs_transformers", float(d.max()))
    assert float(d.max()) < 1e-3


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_agree_with_the_trainer_forward_pass(engine, model, micro_requests, stop_ids, temperature):
    reqs = micro_requests * 4  # 32 sampled continuations
    outs = engine.generate(reqs, SamplingParams(temperature, stop_token_ids=stop_ids))
    d = deltas([o.logprobs for o in outs], trainer_logprobs(model, reqs, outs, temperature))
    record(f"logprob_delta_T{temperature}", {"tokens": int(d.numel()), "mean": float(d.mean()),
                                              "max": float(d.max())})
    assert d.numel() > 100
    assert float(d.mean()) <= 0.02  # the acceptance bound (nats); float32 on both sides gives ~1e-6


def test_weight_push_changes_outputs_and_the_old_weights_restore_them(engine, model, micro_requests, stop_ids,
                                                                        micro_tokenizer):
    from pipeline.backends.hf import TransformersBackend

    engine.flush_cache()  # the same (empty) prefix cache as after the pushes, so numerics can match bit for bit
    before = engine.generate(micro_requests, greedy(stop_ids))
    other = perturbed(model)
    t0 = time.perf_counter()
    engine.sync_weights(other)
    record("tensor_push", {**engine.last_push, "seconds_with_flush": round(time.perf_counter() - t0, 3)})
    assert engine.last_push["buckets"] >= 3  # bounded buckets, not one call with the whole model
    assert engine.last_push["tensors"] == sum(1 for n, _ in other.state_dict().items() if n != "lm_head.weight")
    changed = engine.generate(micro_requests, greedy(stop_ids))
    assert ids(changed) != ids(before)
    expected = TransformersBackend(other, pad_token_id=micro_tokenizer.pad_token_id).generate(
        micro_requests, greedy(stop_ids))
    assert ids(changed) == ids(expected)  # the engine now serves exactly the pushed weights
    engine.sync_weights(model)
    restored = engine.generate(micro_requests, greedy(stop_ids))
    assert ids(restored) == ids(before)
    assert [o.logprobs for o in restored] == [o.logprobs for o in before]  # bit for bit


def test_disk_sync_loads_the_checkpoint(engine, model, micro_requests, stop_ids, tmp_path):
    other = perturbed(model, seed=11)
    engine.sync_weights(other)
    via_tensors = engine.generate(micro_requests, greedy(stop_ids))
    engine.sync_weights(model)
    other.save_pretrained(tmp_path)
    engine.weight_sync = "disk"
    try:
        engine.sync_weights(other, checkpoint=str(tmp_path))
        via_disk = engine.generate(micro_requests, greedy(stop_ids))
    finally:
        engine.weight_sync = "tensor"
        engine.sync_weights(model)
    assert ids(via_disk) == ids(via_tensors)
    assert [o.logprobs for o in via_disk] == [o.logprobs for o in via_tensors]


def test_release_resume_and_flush(engine, model, micro_requests, stop_ids):
    engine.flush_cache()
    before = engine.generate(micro_requests, greedy(stop_ids))
    engine.release()  # what the orchestrator does before the update
    engine.sync_weights(model)  # resumes weights, pushes, resumes the KV cache, flushes
    assert not engine._released
    after_sync = engine.generate(micro_requests, greedy(stop_ids))
    engine.release()
    engine.resume()
    engine.flush_cache()
    after_resume = engine.generate(micro_requests, greedy(stop_ids))
    engine.release()  # releasing the KV cache flushes it too
    implicit = engine.generate(micro_requests, greedy(stop_ids))  # generate resumes a released engine itself
    for outs in (after_sync, after_resume, implicit):
        assert ids(outs) == ids(before) and [o.logprobs for o in outs] == [o.logprobs for o in before]


def test_shutdown_stops_the_engine_processes(engine, micro_requests):
    import psutil

    assert engine.test_pids and all(psutil.pid_exists(p) for p in engine.test_pids)
    engine.shutdown()
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(p) for p in engine.test_pids):
        time.sleep(0.2)
    assert not any(_alive(p) for p in engine.test_pids)
    with pytest.raises(RuntimeError, match="shut down"):
        engine.generate(micro_requests[:1], SamplingParams(1.0))
    engine.shutdown()  # idempotent


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


_ = torch
