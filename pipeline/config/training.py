"""Config sections `objective`, `update` (with `update.lora`), `sft` and `train`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipeline.config.checks import _check, _in_range


@dataclass
class ObjectiveConfig:
    advantage: Literal["group", "exclude_hybrid"] = "group"
    """`group`: Dr. GRPO over all N, hybrid included (docs/method.md §4, Q1 default); `exclude_hybrid`: baseline
    from the on-policy members only."""
    std_scale: bool = False
    """Divide advantages by the group std (off in Dr. GRPO, docs/method.md §4)."""
    prefix_loss: Literal["pg", "shaped", "nll"] = "pg"
    """Loss on demonstration tokens. `pg`: the clipped PPO term with the trajectory's advantage, like
    generated tokens (Prefix-RFT, docs/method.md §2); `shaped`: -A p/(p + shaping_gamma), no ratio, no clip
    (LUFFY policy shaping, docs/method.md §10); `nll`: nll_coef x token-mean negative log-likelihood (SFT term of
    RL-with-SFT-loss, UFT's hint loss, SFT steps)."""
    nll_coef: float = 1.0
    """`nll`: weight of the demonstration NLL (LUFFY's RL w/ SFT loss: 1.0; UFT's beta: 0.001; docs/method.md §10)."""
    shaping_gamma: float = 0.1
    """`shaped`: gamma of f(p) = p/(p + gamma) (LUFFY: 0.1, docs/method.md §10)."""
    gate: Literal["top", "bottom", "random", "all", "none"] = "top"
    """Entropy gate on prefix tokens under `pg`/`shaped` (docs/method.md §5): keep the advantage of the highest-
    (`top`), lowest- (`bottom`) or random-entropy fraction; `all` keeps every prefix token; `none`
    drops prefix tokens from the loss. `nll` tokens are never gated."""
    keep_ratio: float = 0.2
    """Fraction of prefix tokens that keep their advantage under top/bottom/random (docs/method.md §5: 0.2)."""
    gate_scope: Literal["micro_batch", "step"] = "micro_batch"
    """Pool ranked by the gate: each micro-batch with current-policy entropy (reference), or the whole
    step with pre-update entropy (docs/method.md Q2)."""
    clip_low: float = 0.2
    """PPO ε below 1 (docs/method.md §2, §7)."""
    clip_high: float = 0.2
    """PPO ε above 1 (docs/method.md §2, §7)."""
    dual_clip: float = 3.0
    """Dual-clip c for negative advantages; 0 disables (docs/method.md §2)."""
    clip_prefix: bool = True
    """Clip prefix tokens with the same ε (`enable_clip`, docs/method.md §2); off leaves them unclipped."""
    clip_continuation: bool = True
    """Clip generated tokens; off gives -A r unclipped (LUFFY/ReLIFT `loss_remove_clip`, docs/method.md §10)."""
    entropy_coef: float = 0.001
    """Entropy bonus on continuation tokens only (docs/method.md §6, Q6)."""
    entropy_norm: Literal["loss_agg", "reference"] = "loss_agg"
    """Normaliser of the entropy bonus: `loss_agg`, the policy loss's (constant: sum / (sequences · L_max));
    `reference`: the token mean per micro-batch as verl computes it (Prefix-RFT dp_actor, LUFFY mix_actor),
    divided by the mini-batch's sequences so that its weight relative to our policy loss equals the
    references' (their Σ/L_max per micro-batch is b times ours for b sequences per micro-batch): with the
    same coefficient it weighs about L_max / (tokens per sequence) times more than `loss_agg`."""
    loss_agg: Literal["constant", "token_mean"] = "constant"
    """`constant`: token sum / (sequences · L_max), the Dr. GRPO normaliser (docs/method.md §6, Q3);
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
    """AdamW learning rate, constant after warm-up (docs/method.md §6)."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up in optimizer steps."""
    weight_decay: float = 0.01
    """AdamW weight decay (docs/method.md §6)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon. RL gradients on tiny models are small and sparse; a larger epsilon keeps Adam from
    scaling pure noise up to full-size steps."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip; 0 disables (docs/method.md §6)."""
    mini_batches: int = 1
    """PPO mini-batches per step; later ones are off-policy (docs/method.md §6)."""
    micro_batch_size: int = 8
    """Sequences per forward/backward pass (gradient accumulation inside a mini-batch)."""
    micro_batch_tokens: int = 0
    """Token budget per forward/backward pass (sequences x longest length, padding included); 0 uses
    `micro_batch_size`. Sequences are sorted by length and cut into runs that minimise padded tokens
    plus budget/8 per micro-batch (pipeline/batching.py), so short ones share no padding with long ones;
    the loss is unchanged except for the per-micro-batch entropy gate (docs/method.md Q2)."""
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
    """Supervised steps (docs/method.md §9-§10). `off`: every step is RL; `only`: every step is SFT on the
    demonstrations (the SFT baseline); `then_rl`: steps 1..`sft.steps` are SFT, the rest RL, with a
    fresh optimizer at the switch (SFT -> RFT); `replay`: RL every step, plus an SFT step whenever
    `sft.buffer_size` prompts the policy failed on (0 of N) have been buffered (ReLIFT)."""
    lr: float = 1e-5
    """Learning rate of SFT steps (`update.lr` is that of RL steps; docs/method.md §9-§10)."""
    warmup_steps: int = 0
    """SFT learning rate rises linearly over the first `warmup_steps` training steps (docs/method.md §9)."""
    decay: Literal["constant", "cosine"] = "constant"
    """After the warm-up: `constant`, or `cosine` down to `min_lr_ratio` x `sft.lr` at the SFT phase's last
    step (`train.total_steps` under `only`, `sft.steps` under `then_rl`), as LUFFY's SFT run does
    (docs/method.md §9)."""
    min_lr_ratio: float = 0.0
    """`cosine`: the learning rate at the SFT phase's last step, as a fraction of `sft.lr`."""
    batch_size: int = 0
    """Demonstrations per SFT step under `only` / `then_rl` (the global batch the token-level loss is
    averaged over, docs/method.md §9 caveat); 0 means `prefixes.prompts_per_step`."""
    steps: int = 0
    """`then_rl`: how many steps the SFT phase lasts (docs/method.md §9 SFT -> RFT)."""
    buffer_size: int = 128
    """`replay`: failed prompts per SFT step (ReLIFT, docs/method.md §10)."""

    def __post_init__(self) -> None:
        _in_range(self.lr, "sft.lr", 0.0)
        _in_range(self.warmup_steps, "sft.warmup_steps", 0)
        _in_range(self.min_lr_ratio, "sft.min_lr_ratio", 0.0, 1.0)
        _check(self.decay in ("constant", "cosine"), "sft.decay", f"must be constant or cosine, got {self.decay!r}")
        _in_range(self.batch_size, "sft.batch_size", 0)
        _in_range(self.steps, "sft.steps", 0)
        _in_range(self.buffer_size, "sft.buffer_size", 1)


@dataclass
class TrainConfig:
    total_steps: int = 500
    """Training steps (docs/method.md §7: 500)."""
    seed: int = 0
    """Run seed; every stage derives its own stream from (seed, step, stage)."""
    save_every: int = 50
    """Keep the model weights of every M-th step (the last step is always kept)."""
    keep_last: int = 2
    """Most recent full training states (optimizer, scheduler, RNG) kept for resume and stage re-runs."""
    state_every: int = 1
    """Write the full training state (optimizer, scheduler, RNG) after every N-th step and the last; a run
    killed between two resumes from the last one and recomputes the steps after it, with the same result
    (README, "The run directory"). With the transformers rollout backend the weights of the steps between are
    not written either, except at `save_every` and validation steps; SGLang backends, which may load
    them, get them every step."""
    num_threads: int = 0
    """torch CPU threads; 0 leaves torch's default."""
    host_memory: Literal["keep", "release"] = "keep"
    """CPU runs under glibc (Linux): `keep` holds freed memory in the process for reuse (mallopt: large blocks
    from the heap, no trimming), so the update's large activations, re-allocated every micro-batch, land on
    pages already mapped instead of page-faulting fresh ones (docs/performance.md: the update 1.31x faster on
    the embedded default at 8 x 8 x 512, results bit-identical); the process's resident size stays near its
    peak. `release`: the C library's default. No effect on GPU runs or other C libraries."""
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])
    """Experiment trackers through accelerate, main process only: `tensorboard` (offline, in
    <output-dir>/tensorboard), `wandb`, `trackio`; [] for none."""
    process_group_timeout_s: int = 1800
    """Timeout of every collective between training processes (NCCL / gloo), in seconds: how long a rank
    waits for the others (e.g. while the main process writes a checkpoint) before the run fails."""

    def __post_init__(self) -> None:
        _in_range(self.total_steps, "train.total_steps", 1)
        _in_range(self.save_every, "train.save_every", 1)
        _in_range(self.keep_last, "train.keep_last", 1)
        _in_range(self.state_every, "train.state_every", 1)
        _in_range(self.num_threads, "train.num_threads", 0)
        _check(self.host_memory in ("keep", "release"), "train.host_memory",
               f"must be keep or release, got {self.host_memory!r}")
        _in_range(self.process_group_timeout_s, "train.process_group_timeout_s", 1)
        bad = sorted(set(self.trackers) - {"tensorboard", "wandb", "trackio"})
        _check(not bad, "train.trackers", f"unknown tracker(s) {bad}; choose from tensorboard, wandb, trackio")
