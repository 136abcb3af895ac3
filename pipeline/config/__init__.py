"""Typed configuration: one dataclass per section, loaded from a YAML recipe plus `section.field=value`
overrides, validated on construction.

A recipe is a YAML mapping of sections (`model`, `data`, `prefixes`, `generate`, `reward`, `objective`,
`update`, `sft`, `train`, `eval`), each a mapping of fields. `inherit: <recipe>` at the top level starts from
another recipe. `--config` takes a path or the name of a recipe shipped in `pipeline/recipes/`.

Every field is documented once, by the attribute docstring under it; `python -m pipeline.config`
prints the reference table. Modules: `checks` (validation helpers), one module per group of sections
(`model_data`, `rollout`, `training`, `eval`; large sections group fields in nested mappings such as
`update.lora` or `data.toy`), `root` (the whole Config), `loader` (recipes, overrides, coercion),
`renamed` (old flat key names still accepted, with a warning), `reference` (the field reference and the
command line).

    python -m pipeline.config                       # field reference (markdown)
    python -m pipeline.config quickstart train.total_steps=10   # resolved YAML
"""

from __future__ import annotations

from pipeline.config.eval import EvalConfig, ValidationConfig
from pipeline.config.loader import (RECIPE_DIR, apply_overrides, build_section, config_changes, config_from_dict,
                                    dump_yaml, list_recipes, load_config, merge_recipes, read_recipe,
                                    resolve_recipe_path, to_dict, with_defaults)
from pipeline.config.model_data import DataConfig, DecontamConfig, ModelConfig, ToyConfig
from pipeline.config.reference import field_docs, main, reference_markdown
from pipeline.config.renamed import RENAMED, fingerprint_view, migrate
from pipeline.config.rollout import GenerateConfig, PrefixConfig, RewardConfig, SGLangConfig
from pipeline.config.root import SECTIONS, Config
from pipeline.config.training import LoraConfig, ObjectiveConfig, SFTConfig, TrainConfig, UpdateConfig
from pipeline.errors import ConfigError

__all__ = ["Config", "ConfigError", "DataConfig", "DecontamConfig", "EvalConfig", "GenerateConfig", "LoraConfig",
           "ModelConfig", "ObjectiveConfig", "PrefixConfig", "RECIPE_DIR", "RENAMED", "RewardConfig", "SECTIONS",
           "SFTConfig", "SGLangConfig", "ToyConfig", "TrainConfig", "UpdateConfig", "ValidationConfig",
           "apply_overrides", "build_section", "config_changes", "config_from_dict", "dump_yaml", "field_docs", "fingerprint_view",
           "list_recipes", "load_config", "main", "merge_recipes", "migrate", "read_recipe", "reference_markdown",
           "resolve_recipe_path", "to_dict", "with_defaults"]
