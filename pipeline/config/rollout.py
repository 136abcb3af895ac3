"""Config sections `prefixes`, `generate` (with `generate.sglang`) and `reward`: what a step samples and
how it is scored."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.config.checks import _check, _in_range


@dataclass
class PrefixConfig:
    prompts_per_step: int = 128
    """Prompts drawn per training step (B). docs/method.md §7 / Q4: 128."""
    samples_per_prompt: int = 8
    """Group size N: trajectories per prompt, hybrids included (docs/method.md §1, §3)."""
    hybrids_per_prompt: int = 1
    """k: how many of the N trajectories start from a demonstration prefix (docs/method.md §3). 0 gives RFT."""
    schedule: Literal["cosine", "uniform", "linear", "fixed"] = "cosine"
    """Lower bound of the prefix ratio over training (docs/method.md §3; `uniform` is Q9: l ~ U(low_end, high))."""
    low_start: float = 0.95
    """Lower bound of l at step 0 (docs/method.md §3)."""
    low_end: float = 0.05
    """Lower bound of l at the horizon (docs/method.md §3)."""
    high: float = 0.95
    """Upper bound of l, constant (docs/method.md §3)."""
    horizon_steps: int = 0
    """Schedule horizon T in steps; 0 means the run's total steps (docs/method.md §3)."""
    warmup_steps: int = 0
    """Steps the lower bound stays at `low_start` before decaying (docs/method.md §3)."""
    min_prefix_tokens: int = 1
    """L = max(L, min_prefix_tokens) before the |y*|-1 cap (docs/method.md §3)."""
    layout: Literal["partial", "full", "hint"] = "partial"
    """What the k demonstration slots hold. `partial`: y*[:L] with l ~ U(low_t, high), continued by the
    policy (Prefix-RFT, docs/method.md §3); `full`: the whole y* and its end-of-turn, nothing generated (LUFFY's
    off-policy member, docs/method.md §10); `hint`: one hint per group, y* cut at a chunk boundary, placed in the
    prompt (UFT, docs/method.md §10): each of `hint_chunks` chunks is kept with probability low_t, none after
    the horizon."""
    hint_chunks: int = 5
    """`hint` layout: y* is split into min(hint_chunks, |y*|) chunks; Binomial(chunks, low_t) of them
    form the hint (UFT, docs/method.md §10)."""

    def __post_init__(self) -> None:
        _in_range(self.prompts_per_step, "prefixes.prompts_per_step", 1)
        _in_range(self.samples_per_prompt, "prefixes.samples_per_prompt", 1)
        _in_range(self.hybrids_per_prompt, "prefixes.hybrids_per_prompt", 0, self.samples_per_prompt)
        for name in ("low_start", "low_end", "high"):
            _in_range(getattr(self, name), f"prefixes.{name}", 0.0, 1.0)
        _check(self.low_start <= self.high and self.low_end <= self.high, "prefixes.high",
               f"must be >= low_start and low_end (got high={self.high}, low_start={self.low_start}, "
               f"low_end={self.low_end})")
        _in_range(self.horizon_steps, "prefixes.horizon_steps", 0)
        _in_range(self.warmup_steps, "prefixes.warmup_steps", 0)
        _in_range(self.min_prefix_tokens, "prefixes.min_prefix_tokens", 0)
        _in_range(self.hint_chunks, "prefixes.hint_chunks", 1)


@dataclass
class SGLangConfig:
    engine_args: dict[str, Any] = field(default_factory=dict)
    """`sglang` backend: extra `sgl.Engine` keyword arguments (SGLang ServerArgs fields, passed through),
    e.g. `{tp_size: 2, dp_size: 1, mem_fraction_static: 0.4, dtype: bfloat16}`. `port`, `nccl_port`,
    `base_gpu_id` and `random_seed` are bases that each engine offsets by its index (docs/sglang.md)."""
    weight_sync: Literal["auto", "tensor", "disk", "distributed"] = "auto"
    """How new weights reach an SGLang engine after each update: `tensor` (bucketed
    update_weights_from_tensor; `auto` for `sglang`), `disk` (update_weights_from_disk of the step's
    checkpoint; `auto` for `sglang_server`), `distributed` (`sglang_server`: broadcast over a process group)."""
    weight_bucket_mb: float = 512.0
    """Largest bucket of weights pushed to an SGLang engine in one call (MiB)."""
    mem_fraction_static: float = 0.5
    """`sglang` on CUDA (colocated with the trainer): fraction of GPU memory the engine takes for weights and
    KV cache (SGLang's `mem_fraction_static`; its own default assumes the GPU is the engine's alone).
    `engine_args.mem_fraction_static` overrides it; `prefix-rft plan` shows what it leaves the trainer."""
    server_urls: list[str] = field(default_factory=list)
    """`sglang_server`: base URLs of the SGLang servers (weights are pushed to each)."""
    router_url: str = ""
    """`sglang_server`: an sglang-router URL to send generation through instead of `server_urls`."""
    weight_group_address: str = "127.0.0.1:0"
    """`sglang_server` with `weight_sync: distributed`: host:port of the trainer that the servers connect
    to (port 0 picks a free one)."""

    def __post_init__(self) -> None:
        _in_range(self.weight_bucket_mb, "generate.sglang.weight_bucket_mb", 1e-3)
        _check(0 < self.mem_fraction_static < 1, "generate.sglang.mem_fraction_static", "must be in (0, 1)")


@dataclass
class GenerateConfig:
    backend: Literal["transformers", "sglang", "sglang_server"] = "transformers"
    """Rollout engine behind the generation protocol: `transformers` (the trainer's own module), `sglang`
    (an in-process `sgl.Engine` colocated with the trainer; needs `pip install -e .[sglang]`) or
    `sglang_server` (running SGLang servers over HTTP; sglang is not imported)."""
    temperature: float = 1.0
    """Sampling temperature for rollouts (docs/method.md §7: 1.0)."""
    top_p: float = 1.0
    """Nucleus sampling threshold (docs/method.md §7: 1.0)."""
    top_k: int = 0
    """Top-k sampling; 0 disables it."""
    max_response_tokens: int = 8192
    """L_max: cap on prefix + continuation tokens, and the loss normaliser (docs/method.md §3, §6)."""
    batch_size: int = 256
    """Sequences decoded together by the transformers backend."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Compute dtype of generation: the transformers backend autocasts (weights stay fp32); an SGLang
    engine runs in float32 / bfloat16 unless `generate.sglang.engine_args` sets `dtype`."""
    sglang: SGLangConfig = field(default_factory=SGLangConfig)
    """Settings of the `sglang` and `sglang_server` backends (`generate.sglang.*`); unused by `transformers`."""
    max_logprob_mismatch: float = 0.5
    """Stop the run when the mean |log-prob(engine) - log-prob(trainer)| over a step's continuation tokens
    exceeds this (nats; 0 disables the stop). The mean and max are logged every step."""
    min_new_tokens: int = 0
    """Stop tokens cannot be sampled before this many continuation tokens (benchmarks that need equal
    generation lengths; 0 for training)."""

    def __post_init__(self) -> None:
        _check(self.backend != "sglang_server" or bool(self.sglang.server_urls), "generate.sglang.server_urls",
               "the sglang_server backend needs at least one server URL")
        _check(self.sglang.weight_sync != "distributed" or self.backend == "sglang_server",
               "generate.sglang.weight_sync", "`distributed` is for the sglang_server backend")
        _in_range(self.max_logprob_mismatch, "generate.max_logprob_mismatch", 0.0)
        _in_range(self.temperature, "generate.temperature", 1e-4)
        _in_range(self.min_new_tokens, "generate.min_new_tokens", 0)
        _check(0.0 < self.top_p <= 1.0, "generate.top_p", f"must be in (0, 1], got {self.top_p}")
        _in_range(self.top_k, "generate.top_k", 0)
        _in_range(self.max_response_tokens, "generate.max_response_tokens", 2)
        _in_range(self.batch_size, "generate.batch_size", 1)


@dataclass
class RewardConfig:
    kind: Literal["math_verify", "luffy_v3"] = "math_verify"
    """`math_verify`: the last `\\boxed{}` (docs/method.md §4); `luffy_v3`: LUFFY's `reward_impl_version=3` (`<think>\\n`
    prepended, 0 without `</think>`, math-verify on the text up to the next `</think>`, no box needed;
    pipeline/luffy_reward.py)."""
    grade_after_think: bool = True
    """Grade only the text after the last `</think>` when present (docs/method.md §4, Q8)."""
    timeout_s: float = 5.0
    """Hard wall-clock limit per completion; a worker past it is killed and the item scores 0."""
    num_workers: int = 0
    """Scoring worker processes; 0 means one per CPU core."""

    def __post_init__(self) -> None:
        _in_range(self.timeout_s, "reward.timeout_s", 0.1)
        _in_range(self.num_workers, "reward.num_workers", 0)
