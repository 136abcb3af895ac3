"""One rank of a multi-process launch with `generate.backend: sglang`, run by tests/sglang/test_ranks.py.

The launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE) comes from the test; the
backend is built the way `pipeline.run` builds it (`make_backend` with the run's generate and model
sections), so placement, ports, seeds and the config patch are the product's. Writes what the engine
reports and what it generated to a JSON file.

    python -m tests.sglang.rank_worker <spec.json> <out.json>
"""

from __future__ import annotations

import json
import sys


def main(spec_path: str, out_path: str) -> None:
    from pipeline.backends import GenerationRequest, SamplingParams, make_backend
    from pipeline.backends.placement import generation_shard
    from pipeline.config import GenerateConfig, ModelConfig, SGLangConfig

    spec = json.loads(open(spec_path).read())
    gen = GenerateConfig(backend="sglang", precision="fp32", sglang=SGLangConfig(engine_args=spec["engine_args"]))
    model = ModelConfig(name_or_path=spec["model"], **spec["model_patch"])
    backend = make_backend(gen, model=None, pad_token_id=0, model_path=spec["model"], seed=spec["seed"],
                           model_cfg=model)
    out: dict = {"shard": list(generation_shard(backend, -1, -1))}
    try:
        if backend.engine is not None:
            info = backend.engine.get_server_info()
            out["info"] = {k: info.get(k) for k in ("port", "nccl_port", "random_seed", "json_model_override_args",
                                                     "context_length", "tp_size")}
            reqs = [GenerationRequest(**r) for r in spec["requests"]]
            sampled = backend.generate(reqs, SamplingParams(1.0, stop_token_ids=spec["stop_ids"]))
            greedy = backend.generate(reqs, SamplingParams(0.0, stop_token_ids=spec["stop_ids"]))
            out["sampled"] = [c.token_ids for c in sampled]
            out["greedy"] = [c.token_ids for c in greedy]
            out["greedy_logprobs"] = [c.logprobs for c in greedy]
    finally:
        backend.shutdown()
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
