"""What the two SGLang backends share, without importing sglang: request and response conversion,
the engine seeds, the model-config overrides, CPU defaults, and the bucketed weight-push session.

Requests go in as token ids (prompt ids + forced prefix ids; the engine runs with
`skip_tokenizer_init`), one sampling-parameter dict per request carrying its own `sampling_seed`. SGLang
0.5.23 honours `sampling_seed` only with `enable_deterministic_inference` (fa3/flashinfer/triton
attention, i.e. GPUs; `sampling_batch_info.py` fills the seeds only then); otherwise each row draws from
the engine's torch generator, seeded once per engine with `engine_seed(run seed, engine index)`: rows of
one batch draw different numbers, and no two engines of a run share a seed.
Responses carry `output_ids` (continuation, a matched stop token included), `meta_info.
output_token_logprobs` as (log-prob, token, None) triples of log softmax(logits / T) over the
untruncated distribution, and `meta_info.finish_reason` ({"type": "stop"|"length"|"abort", ...}).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from pipeline.backends import Completion, GenerationRequest, SamplingParams
from pipeline.backends.weights import buckets, full_tensors
from pipeline.errors import ConfigError
from pipeline.seeding import derive_seed

log = logging.getLogger(__name__)

# ServerArgs that make the engine run on a CPU (docs/sglang.md, conformance tier); engine_args override them
CPU_ENGINE_DEFAULTS = {"device": "cpu", "attention_backend": "torch_native", "disable_cuda_graph": True,
                       "disable_overlap_schedule": True, "mem_fraction_static": 0.1, "max_total_tokens": 65536}


def engine_seed(run_seed: int, engine_index: int = 0) -> int:
    """The `random_seed` of engine `engine_index` of a run (SGLang seeds python, numpy and torch with it:
    < 2**31). Distinct per engine: identically seeded engines given the same requests sample the same."""
    return derive_seed(run_seed, "sglang-engine", engine_index) % (2 ** 31)


def model_overrides(rope_theta: float | None, max_position_embeddings: int | None) -> dict[str, Any]:
    """SGLang `json_model_override_args` (as a dict) that apply the policy's load-time config patch
    (`model.rope_theta`, `model.max_position_embeddings`; `pipeline.policy.patched_config`) to the engine.
    SGLang 0.5.23 (transformers 5) reads the RoPE base from `rope_parameters` and merges a dict override
    into it (`utils/hf_transformers/config.py get_config`), and derives its context length from
    `max_position_embeddings` (`get_context_length`)."""
    out: dict[str, Any] = {}
    if rope_theta is not None:
        out["rope_parameters"] = {"rope_theta": float(rope_theta)}
    if max_position_embeddings is not None:
        out["max_position_embeddings"] = int(max_position_embeddings)
    return out


def overrides_missing(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Keys of `expected` that `actual` (a server's parsed json_model_override_args) does not set to the
    same value (dict values: every expected entry present and equal)."""
    missing = []
    for key, value in expected.items():
        have = actual.get(key)
        if isinstance(value, dict):
            ok = isinstance(have, dict) and all(have.get(k) == v for k, v in value.items())
        else:
            ok = have == value
        if not ok:
            missing.append(key)
    return missing


def request_seed(seed: int) -> int:
    """A request's `sampling_seed` (int64 in the engine)."""
    return seed % (2 ** 63)


def sampling_dict(req: GenerationRequest, sampling: SamplingParams) -> dict[str, Any]:
    """SGLang `sampling_params` of one request. temperature 0 is greedy in both protocols."""
    return {"max_new_tokens": req.max_new_tokens, "temperature": sampling.temperature, "top_p": sampling.top_p,
            "top_k": sampling.top_k if sampling.top_k > 0 else -1, "stop_token_ids": list(sampling.stop_token_ids),
            "min_new_tokens": min(sampling.min_new_tokens, req.max_new_tokens),
            "sampling_seed": request_seed(req.seed), "skip_special_tokens": False}


def completion_from_output(out: dict[str, Any], req: GenerationRequest) -> Completion:
    """Our `Completion` from one SGLang output dict; an aborted or malformed request raises."""
    meta = out.get("meta_info") or {}
    reason = meta.get("finish_reason") or {}
    kind = reason.get("type") if isinstance(reason, dict) else reason
    if kind not in ("stop", "length"):
        raise RuntimeError(f"SGLang did not finish a request (finish_reason={reason!r}); engine message: "
                           f"{reason.get('message') if isinstance(reason, dict) else ''}")
    ids = [int(t) for t in out["output_ids"]]
    lps = meta.get("output_token_logprobs") or []
    if len(lps) != len(ids) or any(int(t) != i for (_, t, *_), i in zip(lps, ids)):
        raise RuntimeError(f"SGLang returned {len(ids)} tokens but {len(lps)} log-probs (or other tokens); "
                           "was return_logprob set?")
    if len(ids) > req.max_new_tokens:
        raise RuntimeError(f"SGLang returned {len(ids)} tokens for a budget of {req.max_new_tokens}")
    return Completion(token_ids=ids, logprobs=[float(lp) for lp, *_ in lps],
                      finish_reason="stop" if kind == "stop" else "length")


def generate_in_order(requests: list[GenerationRequest], sampling: SamplingParams,
                      call: Callable[[list[list[int]], list[dict[str, Any]]], list[dict[str, Any]]]) -> list[Completion]:
    """Send the non-empty requests through `call(input_ids, sampling_params) -> outputs` (one batch, in
    order) and convert; requests with no budget get an empty `length` completion without a round trip."""
    live = [i for i, r in enumerate(requests) if r.max_new_tokens > 0]
    results = [Completion([], [], "length") for _ in requests]
    if live:
        outs = call([requests[i].prompt_ids + requests[i].prefix_ids for i in live],
                    [sampling_dict(requests[i], sampling) for i in live])
        if len(outs) != len(live):
            raise RuntimeError(f"SGLang returned {len(outs)} outputs for {len(live)} requests")
        for i, out in zip(live, outs):
            results[i] = completion_from_output(out, requests[i])
    return results


def check_ok(result: Any, what: str) -> None:
    """SGLang control calls return (success, message[, ...]) or an object with `.success`; None is a
    call with nothing to report (release/resume)."""
    if result is None:
        return
    if isinstance(result, (tuple, list)):
        ok, msg = result[0], result[1] if len(result) > 1 else result
    elif isinstance(result, dict):
        ok, msg = result.get("success", True), result.get("message", result)
    else:
        ok, msg = getattr(result, "success", bool(result)), getattr(result, "message", result)
    if not ok:
        raise RuntimeError(f"SGLang {what} failed: {msg}")


def push_weights(model: Any, bucket_bytes: int, *, begin: Callable[[], Any], push: Callable[[list], Any],
                 end: Callable[[], Any], pusher: bool = True) -> dict[str, float]:
    """One weight-update session: begin, every bucket in order, end. Every rank walks the whole stream
    (sharded tensors are gathered collectively); only the `pusher` rank talks to the engine."""
    t0 = time.perf_counter()
    stats = {"buckets": 0, "tensors": 0, "bytes": 0, "max_bucket_bytes": 0}
    if pusher:
        check_ok(begin(), "begin_weight_update")
    try:
        for bucket in buckets(full_tensors(model), bucket_bytes):
            size = sum(t.numel() * t.element_size() for _, t in bucket)
            if pusher:
                check_ok(push(bucket), "weight update")
            stats["buckets"] += 1
            stats["tensors"] += len(bucket)
            stats["bytes"] += size
            stats["max_bucket_bytes"] = max(stats["max_bucket_bytes"], size)
    finally:
        if pusher:
            check_ok(end(), "end_weight_update")
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    log.info("pushed %d tensors (%.1f MB) in %d buckets in %.2fs", stats["tensors"], stats["bytes"] / 2 ** 20,
             stats["buckets"], stats["seconds"])
    return stats


def version_string(info: dict[str, Any]) -> str:
    return f"sglang-{info.get('version', 'unknown')}"


def merge_engine_args(defaults: dict[str, Any], user: dict[str, Any], forced: dict[str, Any]) -> dict[str, Any]:
    """defaults < user engine_args < what the adapter needs (token-id I/O); a user value that contradicts a
    forced one is an error naming the field."""
    for key, value in forced.items():
        if key in user and user[key] != value:
            raise ConfigError(f"generate.sglang.engine_args.{key}={user[key]!r} cannot be used: the SGLang "
                              f"backend needs {key}={value!r}")
    return {**defaults, **user, **forced}
