"""The whole config: one field per section, the cross-section checks, and `SECTIONS` (name -> class)."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field

from pipeline.config.checks import _check
from pipeline.config.eval import EvalConfig, ValidationConfig
from pipeline.config.model_data import DataConfig, DecontamConfig, ModelConfig, ToyConfig
from pipeline.config.rollout import GenerateConfig, PrefixConfig, RewardConfig, SGLangConfig
from pipeline.config.training import LoraConfig, ObjectiveConfig, SFTConfig, TrainConfig, UpdateConfig

__all__ = ["Config", "SECTIONS", "DataConfig", "DecontamConfig", "EvalConfig", "GenerateConfig", "LoraConfig",
           "ModelConfig", "ObjectiveConfig", "PrefixConfig", "RewardConfig", "SFTConfig", "SGLangConfig", "ToyConfig",
           "TrainConfig", "UpdateConfig", "ValidationConfig"]


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
        v = self.eval.validation
        _check(v.patience == 0 or (v.every > 0 and bool(self.eval.suites)), "eval.validation.patience",
               "early stopping needs validation points: set eval.validation.every (and eval.suites), or patience 0")

    @property
    def schedule_horizon(self) -> int:
        """T of the prefix schedule: `prefixes.horizon_steps`, or the run's total steps."""
        return self.prefixes.horizon_steps or self.train.total_steps


SECTIONS: dict[str, type] = typing.get_type_hints(Config)
