"""Typed configuration: one dataclass per section, loaded from a YAML recipe plus `section.field=value`
overrides, validated on construction.

A recipe is a YAML mapping of sections (`model`, `data`, `prefixes`, `generate`, `reward`, `objective`,
`update`, `sft`, `train`, `eval`), each a mapping of fields. `inherit: <recipe>` at the top level starts from
another recipe. `--config` takes a path or the name of a recipe shipped in `pipeline/recipes/`.

Every field is documented once, by the attribute docstring under it; `python -m pipeline.config`
prints the reference table.

    python -m pipeline.config                       # field reference (markdown)
    python -m pipeline.config quickstart train.total_steps=10   # resolved YAML
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.errors import ConfigError

RECIPE_DIR = Path(__file__).parent / "recipes"


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {msg}")


def _in_range(value: float, name: str, lo: float | None = None, hi: float | None = None) -> None:
    if lo is not None and value < lo or hi is not None and value > hi:
        bounds = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise ConfigError(f"{name}={value!r} is out of range: must be in {bounds}")


@dataclass
class ModelConfig:
    name_or_path: str = "embedded"
    """Policy to train: a hub id, a local transformers checkpoint directory, or `embedded[:preset]`,
    the offline tiny Qwen2 built by the project (presets: `default`, `micro`)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) when `name_or_path` is a hub id."""
    trust_remote_code: bool = False
    """Allow custom modelling code from the checkpoint. Off unless you turn it on."""
    attn_implementation: str = "sdpa"
    """transformers attention implementation (`sdpa`, `eager`, `flash_attention_2`)."""
    rope_theta: float | None = None
    """Override the checkpoint's RoPE base at load; the patched config is saved with every checkpoint.
    SPEC §7: Qwen2.5-Math ships 4096 positions with theta 10000; its recipes use 40000 (LUFFY#9)."""
    max_position_embeddings: int | None = None
    """Override the checkpoint's position limit at load (SPEC §7: 16384 for Qwen2.5-Math)."""
    chat_template_from: str | None = None
    """Take the chat template of this tokenizer (hub id or local path) instead of the policy's own:
    Llama-3.1-8B (base) ships none, and the reference uses Llama-3.1-8B-Instruct's (SPEC §7)."""

    def __post_init__(self) -> None:
        _check(bool(self.name_or_path.strip()), "model.name_or_path", "must not be empty")
        if self.rope_theta is not None:
            _in_range(self.rope_theta, "model.rope_theta", 1.0)
        if self.max_position_embeddings is not None:
            _in_range(self.max_position_embeddings, "model.max_position_embeddings", 1)


@dataclass
class DataConfig:
    source: Literal["toy", "countdown", "files"] = "toy"
    """Where demonstrations come from. `toy`: the embedded chain task; `countdown`: the embedded Countdown
    task (pipeline/embedded/countdown.py; pair it with `model.name_or_path: embedded:countdown`); `files`:
    `data.sources`."""
    sources: list[dict[str, str]] = field(default_factory=list)
    """Real training sources when `source: files`: mappings with `path`, `format`, `weight`, ... (see
    pipeline/sources.py)."""
    seed: int = 0
    """Seed of the per-source `weight` samples and of `prompt_fraction`."""
    prompt_fraction: float = 1.0
    """Fraction of the curated prompts kept (seeded sample after all filters; data-volume ablation, SPEC Q10)."""
    demo_fraction: float = 1.0
    """Fraction of the curated prompts that keep their demonstration (seeded); the others keep the prompt
    with an empty demonstration and get no hybrid slot (RFT only). Data-volume ablation, SPEC Q10."""
    dedup: bool = True
    """Drop exact and near-exact duplicate problems (normalised text; the first occurrence is kept)."""
    decontaminate: list[str] = field(default_factory=lambda: ["math", "general"])
    """Evaluation suites (or groups) real sources are decontaminated against (pipeline/decontam.py); [] for
    none. Not applied to the toy source, which is disjoint from every suite."""
    eval_data_dir: str | None = None
    """Local copies of the evaluation suites for decontamination (the `--data-dir` layout); None: hub ids."""
    decontam_ngram: int = 32
    """n of the character n-grams of normalised problem text compared for contamination."""
    decontam_threshold: float = 0.5
    """A training problem holding at least this fraction of an evaluation problem's n-grams is dropped."""
    toy_levels: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6])
    """Embedded task difficulty levels to train on (level k = k+1 operands/numbers; toy and countdown)."""
    toy_problems_per_level: int = 2000
    """Training problems generated per toy level (fewer when a level has fewer distinct problems)."""
    toy_seed: int = 0
    """Seed of the toy training problems (the held-out split is fixed and disjoint by construction)."""
    instruction: str = "Please reason step by step, and put your final answer within \\boxed{}."
    """Appended to the problem on a new line to form the user turn (SPEC §7, Q7)."""
    system_prompt: str | None = None
    """System turn; none by default, as in the reference code (SPEC §7)."""
    max_prompt_tokens: int = 1024
    """Rows whose rendered prompt is longer (policy tokenizer) are dropped."""
    max_demo_tokens: int = 8192
    """Rows whose demonstration is longer (policy tokenizer) are dropped."""
    on_demo_mismatch: Literal["drop", "flag"] = "drop"
    """A demonstration whose final answer math-verify does not match to the reference: dropped, or kept
    with `demo_verified=False`."""

    def __post_init__(self) -> None:
        _check(self.source != "files" or bool(self.sources), "data.sources", "source `files` needs at least one source")
        _in_range(self.prompt_fraction, "data.prompt_fraction", 0.0, 1.0)
        _in_range(self.demo_fraction, "data.demo_fraction", 0.0, 1.0)
        _in_range(self.decontam_ngram, "data.decontam_ngram", 1)
        _in_range(self.decontam_threshold, "data.decontam_threshold", 0.0, 1.0)
        _check(len(self.toy_levels) > 0, "data.toy_levels", "must name at least one level")
        for lv in self.toy_levels:
            _in_range(lv, "data.toy_levels[]", 1, 12)
        _in_range(self.toy_problems_per_level, "data.toy_problems_per_level", 1)
        _in_range(self.max_prompt_tokens, "data.max_prompt_tokens", 1)
        _in_range(self.max_demo_tokens, "data.max_demo_tokens", 2)


@dataclass
class PrefixConfig:
    prompts_per_step: int = 128
    """Prompts drawn per training step (B). SPEC §7 / Q4: 128."""
    samples_per_prompt: int = 8
    """Group size N: trajectories per prompt, hybrids included (SPEC §1, §3)."""
    hybrids_per_prompt: int = 1
    """k: how many of the N trajectories start from a demonstration prefix (SPEC §3). 0 gives RFT."""
    schedule: Literal["cosine", "uniform", "linear", "fixed"] = "cosine"
    """Lower bound of the prefix ratio over training (SPEC §3; `uniform` is Q9: l ~ U(low_end, high))."""
    low_start: float = 0.95
    """Lower bound of l at step 0 (SPEC §3)."""
    low_end: float = 0.05
    """Lower bound of l at the horizon (SPEC §3)."""
    high: float = 0.95
    """Upper bound of l, constant (SPEC §3)."""
    horizon_steps: int = 0
    """Schedule horizon T in steps; 0 means the run's total steps (SPEC §3)."""
    warmup_steps: int = 0
    """Steps the lower bound stays at `low_start` before decaying (SPEC §3)."""
    min_prefix_tokens: int = 1
    """L = max(L, min_prefix_tokens) before the |y*|-1 cap (SPEC §3)."""
    layout: Literal["partial", "full", "hint"] = "partial"
    """What the k demonstration slots hold. `partial`: y*[:L] with l ~ U(low_t, high), continued by the
    policy (Prefix-RFT, SPEC §3); `full`: the whole y* and its end-of-turn, nothing generated (LUFFY's
    off-policy member, SPEC §10); `hint`: one hint per group, y* cut at a chunk boundary, placed in the
    prompt (UFT, SPEC §10): each of `hint_chunks` chunks is kept with probability low_t, none after
    the horizon."""
    hint_chunks: int = 5
    """`hint` layout: y* is split into min(hint_chunks, |y*|) chunks; Binomial(chunks, low_t) of them
    form the hint (UFT, SPEC §10)."""

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
class GenerateConfig:
    backend: Literal["transformers", "sglang", "sglang_server"] = "transformers"
    """Rollout engine behind the generation protocol: `transformers` (the trainer's own module), `sglang`
    (an in-process `sgl.Engine` colocated with the trainer; needs `pip install -e .[sglang]`) or
    `sglang_server` (running SGLang servers over HTTP; sglang is not imported)."""
    temperature: float = 1.0
    """Sampling temperature for rollouts (SPEC §7: 1.0)."""
    top_p: float = 1.0
    """Nucleus sampling threshold (SPEC §7: 1.0)."""
    top_k: int = 0
    """Top-k sampling; 0 disables it."""
    max_response_tokens: int = 8192
    """L_max: cap on prefix + continuation tokens, and the loss normaliser (SPEC §3, §6)."""
    batch_size: int = 256
    """Sequences decoded together by the transformers backend."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Compute dtype of generation: the transformers backend autocasts (weights stay fp32); an SGLang
    engine runs in float32 / bfloat16 unless `engine_args` sets `dtype`."""
    engine_args: dict[str, Any] = field(default_factory=dict)
    """`sglang` backend: extra `sgl.Engine` keyword arguments (SGLang ServerArgs fields, passed through),
    e.g. `{tp_size: 2, dp_size: 1, mem_fraction_static: 0.4, dtype: bfloat16}`."""
    weight_sync: Literal["auto", "tensor", "disk", "distributed"] = "auto"
    """How new weights reach an SGLang engine after each update: `tensor` (bucketed
    update_weights_from_tensor; `auto` for `sglang`), `disk` (update_weights_from_disk of the step's
    checkpoint; `auto` for `sglang_server`), `distributed` (`sglang_server`: broadcast over a process group)."""
    weight_bucket_mb: float = 512.0
    """Largest bucket of weights pushed to an SGLang engine in one call (MiB)."""
    server_urls: list[str] = field(default_factory=list)
    """`sglang_server`: base URLs of the SGLang servers (weights are pushed to each)."""
    router_url: str = ""
    """`sglang_server`: an sglang-router URL to send generation through instead of `server_urls`."""
    weight_group_address: str = "127.0.0.1:0"
    """`sglang_server` with `weight_sync: distributed`: host:port of the trainer that the servers connect
    to (port 0 picks a free one)."""
    max_logprob_mismatch: float = 0.5
    """Stop the run when the mean |log-prob(engine) - log-prob(trainer)| over a step's continuation tokens
    exceeds this (nats; 0 disables the stop). The mean and max are logged every step."""
    min_new_tokens: int = 0
    """Stop tokens cannot be sampled before this many continuation tokens (benchmarks that need equal
    generation lengths; 0 for training)."""

    def __post_init__(self) -> None:
        _check(self.backend != "sglang_server" or bool(self.server_urls), "generate.server_urls",
               "the sglang_server backend needs at least one server URL")
        _check(self.weight_sync != "distributed" or self.backend == "sglang_server", "generate.weight_sync",
               "`distributed` is for the sglang_server backend")
        _in_range(self.weight_bucket_mb, "generate.weight_bucket_mb", 1e-3)
        _in_range(self.max_logprob_mismatch, "generate.max_logprob_mismatch", 0.0)
        _in_range(self.temperature, "generate.temperature", 1e-4)
        _in_range(self.min_new_tokens, "generate.min_new_tokens", 0)
        _check(0.0 < self.top_p <= 1.0, "generate.top_p", f"must be in (0, 1], got {self.top_p}")
        _in_range(self.top_k, "generate.top_k", 0)
        _in_range(self.max_response_tokens, "generate.max_response_tokens", 2)
        _in_range(self.batch_size, "generate.batch_size", 1)


@dataclass
class RewardConfig:
    grade_after_think: bool = True
    """Grade only the text after the last `</think>` when present (SPEC §4, Q8)."""
    timeout_s: float = 5.0
    """Hard wall-clock limit per completion; a worker past it is killed and the item scores 0."""
    num_workers: int = 0
    """Scoring worker processes; 0 means one per CPU core."""

    def __post_init__(self) -> None:
        _in_range(self.timeout_s, "reward.timeout_s", 0.1)
        _in_range(self.num_workers, "reward.num_workers", 0)


@dataclass
class ObjectiveConfig:
    advantage: Literal["group", "exclude_hybrid"] = "group"
    """`group`: Dr. GRPO over all N, hybrid included (SPEC §4, Q1 default); `exclude_hybrid`: baseline
    from the on-policy members only."""
    std_scale: bool = False
    """Divide advantages by the group std (off in Dr. GRPO, SPEC §4)."""
    prefix_loss: Literal["pg", "shaped", "nll"] = "pg"
    """Loss on demonstration tokens. `pg`: the clipped PPO term with the trajectory's advantage, like
    generated tokens (Prefix-RFT, SPEC §2); `shaped`: -A p/(p + shaping_gamma), no ratio, no clip
    (LUFFY policy shaping, SPEC §10); `nll`: nll_coef x token-mean negative log-likelihood (SFT term of
    RL-with-SFT-loss, UFT's hint loss, SFT steps)."""
    nll_coef: float = 1.0
    """`nll`: weight of the demonstration NLL (LUFFY's RL w/ SFT loss: 1.0; UFT's beta: 0.001; SPEC §10)."""
    shaping_gamma: float = 0.1
    """`shaped`: gamma of f(p) = p/(p + gamma) (LUFFY: 0.1, SPEC §10)."""
    gate: Literal["top", "bottom", "random", "all", "none"] = "top"
    """Entropy gate on prefix tokens under `pg`/`shaped` (SPEC §5): keep the advantage of the highest-
    (`top`), lowest- (`bottom`) or random-entropy fraction; `all` keeps every prefix token; `none`
    drops prefix tokens from the loss. `nll` tokens are never gated."""
    keep_ratio: float = 0.2
    """Fraction of prefix tokens that keep their advantage under top/bottom/random (SPEC §5: 0.2)."""
    gate_scope: Literal["micro_batch", "step"] = "micro_batch"
    """Pool ranked by the gate: each micro-batch with current-policy entropy (reference), or the whole
    step with pre-update entropy (SPEC Q2)."""
    clip_low: float = 0.2
    """PPO ε below 1 (SPEC §2, §7)."""
    clip_high: float = 0.2
    """PPO ε above 1 (SPEC §2, §7)."""
    dual_clip: float = 3.0
    """Dual-clip c for negative advantages; 0 disables (SPEC §2)."""
    clip_prefix: bool = True
    """Clip prefix tokens with the same ε (`enable_clip`, SPEC §2); off leaves them unclipped."""
    clip_continuation: bool = True
    """Clip generated tokens; off gives -A r unclipped (LUFFY/ReLIFT `loss_remove_clip`, SPEC §10)."""
    entropy_coef: float = 0.001
    """Entropy bonus on continuation tokens only (SPEC §6, Q6)."""
    loss_agg: Literal["constant", "token_mean"] = "constant"
    """`constant`: token sum / (sequences · L_max), the Dr. GRPO normaliser (SPEC §6, Q3);
    `token_mean`: token sum / loss-bearing tokens."""

    def __post_init__(self) -> None:
        _in_range(self.keep_ratio, "objective.keep_ratio", 0.0, 1.0)
        _in_range(self.clip_low, "objective.clip_low", 0.0, 1.0)
        _in_range(self.clip_high, "objective.clip_high", 0.0)
        _check(self.dual_clip == 0 or self.dual_clip > 1, "objective.dual_clip",
               f"must be 0 (off) or > 1, got {self.dual_clip}")
        _in_range(self.entropy_coef, "objective.entropy_coef", 0.0)
        _in_range(self.nll_coef, "objective.nll_coef", 0.0)
        _check(self.shaping_gamma > 0, "objective.shaping_gamma", f"must be > 0, got {self.shaping_gamma}")


@dataclass
class LoraConfig:
    rank: int = 0
    """LoRA rank (peft); 0 trains every weight. Checkpoints then hold the adapter (`adapter/`) next to
    the merged transformers weights used for generation and evaluation."""
    alpha: float = 16.0
    """LoRA scaling numerator (the update is scaled by alpha / rank)."""
    dropout: float = 0.0
    """Dropout on the LoRA input."""
    targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                        "up_proj", "down_proj"])
    """Module names that get adapters (peft `target_modules`)."""

    def __post_init__(self) -> None:
        _in_range(self.rank, "update.lora.rank", 0)
        _in_range(self.alpha, "update.lora.alpha", 0.0)
        _in_range(self.dropout, "update.lora.dropout", 0.0, 1.0)
        _check(not self.rank or bool(self.targets), "update.lora.targets", "must name at least one module")


@dataclass
class UpdateConfig:
    lr: float = 1e-6
    """AdamW learning rate, constant after warm-up (SPEC §6)."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up in optimizer steps."""
    weight_decay: float = 0.01
    """AdamW weight decay (SPEC §6)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon. RL gradients on tiny models are small and sparse; a larger epsilon keeps Adam from
    scaling pure noise up to full-size steps."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip; 0 disables (SPEC §6)."""
    mini_batches: int = 1
    """PPO mini-batches per step; later ones are off-policy (SPEC §6)."""
    micro_batch_size: int = 8
    """Sequences per forward/backward pass (gradient accumulation inside a mini-batch)."""
    micro_batch_tokens: int = 0
    """Token budget per forward/backward pass (sequences x longest length, padding included); 0 uses
    `micro_batch_size`. Sequences are sorted by length and binned, so short ones share no padding
    with long ones; the loss is unchanged except for the per-micro-batch entropy gate (SPEC Q2)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Compute dtype of the update (bf16 = autocast; weights, optimizer and log-probs stay fp32)."""
    logprob_chunk_tokens: int = 1024
    """Tokens per lm-head chunk when computing log-probs and entropy: the [tokens x vocab] logits are
    never held whole."""
    old_logprob_pass: Literal["auto", "always"] = "auto"
    """PPO reference log-probs: `auto` takes them from the update's own forward (detached) when the step
    is one optimizer step (`mini_batches` 1, micro-batch gate scope), which is exact and saves a forward
    pass; `always` runs the separate no-grad pass first (needed and used automatically otherwise)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA adapters instead of full fine-tuning (off while `update.lora.rank` is 0)."""

    def __post_init__(self) -> None:
        _in_range(self.lr, "update.lr", 0.0)
        _in_range(self.warmup_steps, "update.warmup_steps", 0)
        _in_range(self.weight_decay, "update.weight_decay", 0.0)
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "update.betas",
               f"must be two numbers in [0, 1), got {self.betas}")
        _in_range(self.eps, "update.eps", 0.0)
        _in_range(self.max_grad_norm, "update.max_grad_norm", 0.0)
        _in_range(self.mini_batches, "update.mini_batches", 1)
        _in_range(self.micro_batch_size, "update.micro_batch_size", 1)
        _in_range(self.micro_batch_tokens, "update.micro_batch_tokens", 0)
        _in_range(self.logprob_chunk_tokens, "update.logprob_chunk_tokens", 1)


@dataclass
class SFTConfig:
    mode: Literal["off", "only", "then_rl", "replay"] = "off"
    """Supervised steps (SPEC §9-§10). `off`: every step is RL; `only`: every step is SFT on the
    demonstrations (the SFT baseline); `then_rl`: steps 1..`sft.steps` are SFT, the rest RL, with a
    fresh optimizer at the switch (SFT -> RFT); `replay`: RL every step, plus an SFT step whenever
    `sft.buffer_size` prompts the policy failed on (0 of N) have been buffered (ReLIFT)."""
    lr: float = 1e-5
    """Learning rate of SFT steps (`update.lr` is that of RL steps; SPEC §9-§10)."""
    warmup_steps: int = 0
    """SFT learning rate rises linearly over the first `warmup_steps` training steps, then stays (SPEC §9)."""
    batch_size: int = 0
    """Demonstrations per SFT step under `only` / `then_rl` (the global batch the token-level loss is
    averaged over, SPEC §9 caveat); 0 means `prefixes.prompts_per_step`."""
    steps: int = 0
    """`then_rl`: how many steps the SFT phase lasts (SPEC §9 SFT -> RFT)."""
    buffer_size: int = 128
    """`replay`: failed prompts per SFT step (ReLIFT, SPEC §10)."""

    def __post_init__(self) -> None:
        _in_range(self.lr, "sft.lr", 0.0)
        _in_range(self.warmup_steps, "sft.warmup_steps", 0)
        _in_range(self.batch_size, "sft.batch_size", 0)
        _in_range(self.steps, "sft.steps", 0)
        _in_range(self.buffer_size, "sft.buffer_size", 1)


@dataclass
class TrainConfig:
    total_steps: int = 500
    """Training steps (SPEC §7: 500)."""
    seed: int = 0
    """Run seed; every stage derives its own stream from (seed, step, stage)."""
    save_every: int = 50
    """Keep the model weights of every M-th step (the last step is always kept)."""
    keep_last: int = 2
    """Most recent full training states (optimizer, scheduler, RNG) kept for resume and stage re-runs."""
    num_threads: int = 0
    """torch CPU threads; 0 leaves torch's default."""
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])
    """Experiment trackers through accelerate, main process only: `tensorboard` (offline, in
    <output-dir>/tensorboard), `wandb`, `trackio`; [] for none."""

    def __post_init__(self) -> None:
        _in_range(self.total_steps, "train.total_steps", 1)
        _in_range(self.save_every, "train.save_every", 1)
        _in_range(self.keep_last, "train.keep_last", 1)
        _in_range(self.num_threads, "train.num_threads", 0)
        bad = sorted(set(self.trackers) - {"tensorboard", "wandb", "trackio"})
        _check(not bad, "train.trackers", f"unknown tracker(s) {bad}; choose from tensorboard, wandb, trackio")


@dataclass
class EvalConfig:
    suites: list[str] = field(default_factory=lambda: ["toy"])
    """Suites evaluated before and after training (`toy` is the embedded held-out split)."""
    at_start: bool = True
    """Evaluate the base model before the first step."""
    at_end: bool = True
    """Evaluate the final checkpoint."""
    protocol: Literal["paper", "luffy"] = "paper"
    """`paper`: problem + instruction, no system turn, on the suites' own data (SPEC §8); `luffy`: LUFFY's
    valid.all parquet as it is (its system prompt, AIME/AMC rows x32). See evaluation/suites.py."""
    samples_per_problem: int = 0
    """Samples per problem (avg@k, pass@k up to k); 0 means the protocol's count: 32 on AIME24, AIME25
    and AMC, 1 elsewhere (SPEC §8)."""
    temperature: float = 0.6
    """Evaluation sampling temperature (SPEC §8)."""
    top_p: float = 0.95
    """Evaluation nucleus threshold (SPEC §8, Q5)."""
    max_new_tokens: int = 8192
    """Generation budget per problem (SPEC §8)."""
    max_problems: int = 0
    """Problems per suite; 0 means all."""
    seed: int = 1234
    """Evaluation sampling seed."""
    data_dir: str | None = None
    """Local copies of the evaluation suites (e.g. ../shared/data); default: hub ids."""
    batch_size: int = 256
    """Sequences decoded together by the transformers backend during evaluation."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Compute dtype of evaluation generation (bf16 = autocast)."""
    chunk_size: int = 4096
    """Sequences generated, graded and written per chunk (bounds memory for n up to 2048 per problem; an
    interrupted suite resumes after its last complete chunk)."""
    validation_every: int = 0
    """During training, evaluate `eval.suites` on a validation slice every M steps and log
    `val_<suite>_accuracy` with the step metrics; 0 disables."""
    validation_problems: int = 60
    """Problems per suite in the validation slice (evenly spaced; `samples_per_problem`, 1 if 0)."""
    validation_suites: list[str] = field(default_factory=list)
    """Suites of the validation evaluation; [] evaluates a slice of `eval.suites`. Set it to a split
    disjoint from the held-out one (`toy_val`, `countdown_val`) when choices are made on validation."""

    def __post_init__(self) -> None:
        _check(all(isinstance(s, str) and s for s in self.suites), "eval.suites", "must be suite names")
        _in_range(self.samples_per_problem, "eval.samples_per_problem", 0)
        _in_range(self.temperature, "eval.temperature", 0.0)
        _check(0.0 < self.top_p <= 1.0, "eval.top_p", f"must be in (0, 1], got {self.top_p}")
        _in_range(self.max_new_tokens, "eval.max_new_tokens", 1)
        _in_range(self.max_problems, "eval.max_problems", 0)
        _in_range(self.batch_size, "eval.batch_size", 1)
        _in_range(self.chunk_size, "eval.chunk_size", 1)
        _in_range(self.validation_every, "eval.validation_every", 0)
        _in_range(self.validation_problems, "eval.validation_problems", 1)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prefixes: PrefixConfig = field(default_factory=PrefixConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        n_seq = self.prefixes.prompts_per_step * self.prefixes.samples_per_prompt
        _check(n_seq % self.update.mini_batches == 0, "update.mini_batches",
               f"must divide prompts_per_step x samples_per_prompt = {n_seq}")
        _check(self.prefixes.horizon_steps == 0 or self.prefixes.warmup_steps < self.prefixes.horizon_steps,
               "prefixes.warmup_steps", "must be smaller than prefixes.horizon_steps")
        _check(self.sft.mode != "then_rl" or 0 < self.sft.steps < self.train.total_steps, "sft.steps",
               f"under sft.mode=then_rl must be in [1, train.total_steps - 1] = [1, {self.train.total_steps - 1}], "
               f"got {self.sft.steps}")

    @property
    def schedule_horizon(self) -> int:
        """T of the prefix schedule: `prefixes.horizon_steps`, or the run's total steps."""
        return self.prefixes.horizon_steps or self.train.total_steps


SECTIONS: dict[str, type] = typing.get_type_hints(Config)


# ----------------------------------------------------------------------------------------------------
# coercion of YAML values to annotated types


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, name: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], name)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {type(value).__name__} {value!r}")
        return build_section(tp, value, name, "config")
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{name}={value!r} is not allowed; choose one of {allowed}")
        return value
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, args[0], f"{name}[]") for v in value]
    if tp is Any:
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {type(value).__name__} {value!r}")
        return {str(k): _coerce(v, args[1], f"{name}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"unsupported config type {_type_name(tp)} for {name}")


def _unknown(key: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(known))}"
    return ConfigError(f"unknown key {key!r} in {where}; {hint}")


def build_section(cls: type, raw: dict[str, Any], section: str, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = list(hints)
    kwargs = {}
    for key, value in raw.items():
        if key not in hints:
            raise _unknown(key, known, f"section {section!r} of {where}")
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key}")
    return cls(**kwargs)


def config_from_dict(raw: dict[str, Any], where: str = "config") -> Config:
    """Build and validate a Config from a nested mapping; errors name the key and `where`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a recipe must be a mapping of sections, got {type(raw).__name__}")
    sections = {}
    for name, body in raw.items():
        if name not in SECTIONS:
            raise _unknown(name, list(SECTIONS), where)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ConfigError(f"section {name!r} of {where} must be a mapping, got {body!r}")
        sections[name] = build_section(SECTIONS[name], body, name, where)
    return Config(**sections)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def resolve_recipe_path(config: str) -> Path:
    """A path to a YAML file, or the name of a shipped recipe."""
    path = Path(config)
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in config:
        if not path.is_file():
            raise ConfigError(f"config file {config} does not exist; pass a YAML path or one of the shipped "
                              f"recipes: {', '.join(list_recipes())}")
        return path
    shipped = RECIPE_DIR / f"{config}.yaml"
    if not shipped.is_file():
        close = difflib.get_close_matches(config, list_recipes(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"no recipe named {config!r}; {hint}shipped recipes: {', '.join(list_recipes())}")
    return shipped


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections, got {type(raw).__name__}")
    return raw


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`, mappings merged recursively (nested sections such as update.lora too); copies."""
    out = {k: _merge(v, {}) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_recipe(config: str, _seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], str]:
    """The raw nested mapping of a recipe with `inherit:` resolved, and the file it came from."""
    path = resolve_recipe_path(config)
    if str(path.resolve()) in _seen:
        raise ConfigError(f"{path}: `inherit` forms a cycle")
    raw = _read_yaml(path)
    parent = raw.pop("inherit", None)
    if parent is not None:
        if not isinstance(parent, str):
            raise ConfigError(f"{path}: `inherit` must name a recipe, got {parent!r}")
        base, _ = read_recipe(parent, _seen + (str(path.resolve()),))
        raw = _merge(base, raw)
    return raw, str(path)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.field=value` strings (values parsed as YAML) to a raw recipe mapping."""
    out = _merge(raw, {})
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"override key {key!r} must look like section.field (e.g. train.total_steps)")
        if parts[0] not in SECTIONS:
            raise _unknown(parts[0], list(SECTIONS), f"override {item!r}")
        cls, node = SECTIONS[parts[0]], out
        for depth, name in enumerate(parts[1:], start=1):
            hints = typing.get_type_hints(cls) if cls is not None else {}
            if name not in hints:
                raise _unknown(name, list(hints), f"override {item!r}")
            if node.get(parts[depth - 1]) is None:
                node[parts[depth - 1]] = {}
            node = node[parts[depth - 1]]
            cls = hints[name] if dataclasses.is_dataclass(hints[name]) and depth < len(parts) - 1 else None
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        node[parts[-1]] = value
    return out


def load_config(config: str, overrides: list[str] | None = None) -> Config:
    """Load a recipe (path or shipped name), apply overrides, validate."""
    raw, where = read_recipe(config)
    raw = apply_overrides(raw, overrides or [])
    return config_from_dict(raw, where)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, width=110)


# ----------------------------------------------------------------------------------------------------
# documentation from attribute docstrings


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass: the string literal right under each annotated field."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def reference_markdown() -> str:
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    defaults = to_dict(Config())
    for section, cls in SECTIONS.items():
        lines += _reference_rows(section, cls, defaults[section])
    return "\n".join(lines)


def _reference_rows(prefix: str, cls: type, defaults: dict[str, Any]) -> list[str]:
    docs, rows = field_docs(cls), []
    for name, tp in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(tp):
            rows += _reference_rows(f"{prefix}.{name}", tp, defaults[name])
            continue
        t = _type_name(tp).replace("|", "\\|")
        rows.append(f"| `{prefix}.{name}` | {t} | `{defaults[name]!r}` | {docs.get(name, '')} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(reference_markdown())
        return 0
    try:
        print(dump_yaml(load_config(argv[0], argv[1:])), end="")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
