"""Config sections `model` (the policy to train) and `data` (curation, with `data.decontam` and
`data.toy`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipeline.config.checks import _check, _in_range


@dataclass
class ModelConfig:
    name_or_path: str = "embedded"
    """Policy to train: a hub id, a local transformers checkpoint directory, or `embedded[:preset]`,
    the offline tiny Qwen2 built by the project (presets: `default`, `micro`)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) when `name_or_path` is a hub id."""
    trust_remote_code: bool = False
    """Allow custom modelling code from the checkpoint. Off unless you turn it on."""
    hub_kernels: bool = False
    """Let transformers replace layers with kernels it downloads from the Hugging Face hub (the `kernels`
    package; transformers 5.2x turns this on by default, and on a GPU it then fetches them at the first
    `model.train()`, which fails offline). Off: they are binary code from the hub, like `trust_remote_code`."""
    attn_implementation: str = "sdpa"
    """transformers attention implementation (`sdpa`, `eager`, `flash_attention_2`)."""
    rope_theta: float | None = None
    """Override the checkpoint's RoPE base at load; the patched config is saved with every checkpoint.
    docs/method.md §7: Qwen2.5-Math ships 4096 positions with theta 10000; its recipes use 40000 (LUFFY#9)."""
    max_position_embeddings: int | None = None
    """Override the checkpoint's position limit at load (docs/method.md §7: 16384 for Qwen2.5-Math)."""
    chat_template_from: str | None = None
    """Take the chat template of this tokenizer (hub id or local path) instead of the policy's own:
    Llama-3.1-8B (base) ships none, and the reference uses Llama-3.1-8B-Instruct's (docs/method.md §7)."""

    def __post_init__(self) -> None:
        _check(bool(self.name_or_path.strip()), "model.name_or_path", "must not be empty")
        if self.rope_theta is not None:
            _in_range(self.rope_theta, "model.rope_theta", 1.0)
        if self.max_position_embeddings is not None:
            _in_range(self.max_position_embeddings, "model.max_position_embeddings", 1)


@dataclass
class DecontamConfig:
    suites: list[str] = field(default_factory=lambda: ["math", "general"])
    """Evaluation suites (or groups) real sources are decontaminated against (pipeline/decontam.py); [] for
    none. Not applied to the embedded sources (toy, countdown), which are disjoint from every suite."""
    data_dir: str | None = None
    """Local copies of the evaluation suites for decontamination (the `--data-dir` layout); None: hub ids."""
    ngram: int = 32
    """n of the character n-grams of normalised problem text compared for contamination."""
    threshold: float = 0.5
    """A training problem holding at least this fraction of an evaluation problem's n-grams is dropped."""

    def __post_init__(self) -> None:
        _in_range(self.ngram, "data.decontam.ngram", 1)
        _in_range(self.threshold, "data.decontam.threshold", 0.0, 1.0)


@dataclass
class ToyConfig:
    levels: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6])
    """Embedded task difficulty levels to train on (level k = k+1 operands/numbers; toy and countdown)."""
    problems_per_level: int = 2000
    """Training problems generated per level of the embedded task (toy and countdown; fewer when a level
    has fewer distinct problems)."""
    seed: int = 0
    """Seed of the embedded task's training problems (toy and countdown; the held-out split is fixed and
    disjoint by construction)."""

    def __post_init__(self) -> None:
        _check(len(self.levels) > 0, "data.toy.levels", "must name at least one level")
        for lv in self.levels:
            _in_range(lv, "data.toy.levels[]", 1, 12)
        _in_range(self.problems_per_level, "data.toy.problems_per_level", 1)


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
    """Fraction of the curated prompts kept (seeded sample after all filters; data-volume ablation,
    docs/method.md Q10)."""
    demo_fraction: float = 1.0
    """Fraction of the curated prompts that keep their demonstration (seeded); the others keep the prompt
    with an empty demonstration and get no hybrid slot (RFT only). Data-volume ablation, docs/method.md Q10."""
    dedup: bool = True
    """Drop exact and near-exact duplicate problems (normalised text; the first occurrence is kept)."""
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    """Decontamination of real sources against the evaluation suites (`data.decontam.*`)."""
    toy: ToyConfig = field(default_factory=ToyConfig)
    """Training problems of the embedded tasks, toy and countdown (`data.toy.*`)."""
    instruction: str = "Please reason step by step, and put your final answer within \\boxed{}."
    """Appended to the problem on a new line to form the user turn (docs/method.md §7, Q7)."""
    system_prompt: str | None = None
    """System turn we add; none by default, as in the reference code (docs/method.md §7). The tokenizer's chat template
    may still insert its own default system turn (Qwen2.5-Math's, Llama-3.1's): see pipeline/prompts.py."""
    max_prompt_tokens: int = 1024
    """Rows whose rendered prompt is longer (policy tokenizer) are dropped."""
    max_demo_tokens: int = 8192
    """Rows whose demonstration is longer (policy tokenizer) are dropped."""
    on_demo_mismatch: Literal["drop", "flag"] = "drop"
    """A demonstration whose final answer math-verify does not match to the reference: dropped, or kept
    with `demo_verified=False`."""
    filters: Literal["ours", "reference"] = "ours"
    """`ours`: dedup, decontamination and demonstration checks as configured; `reference`: the rows of the
    source as Prefix-RFT trains on them (its correctness filter is commented out): nothing is dropped but
    empty or over-length rows; what dedup, decontamination and the demonstration check would have removed
    is still counted in the curate report (`reference_would_drop_*`)."""

    def __post_init__(self) -> None:
        _check(self.source != "files" or bool(self.sources), "data.sources", "source `files` needs at least one source")
        _in_range(self.prompt_fraction, "data.prompt_fraction", 0.0, 1.0)
        _in_range(self.demo_fraction, "data.demo_fraction", 0.0, 1.0)
        _in_range(self.max_prompt_tokens, "data.max_prompt_tokens", 1)
        _in_range(self.max_demo_tokens, "data.max_demo_tokens", 2)
