"""LoRA adapters through peft (`update.lora`): wrapping the policy, resuming a trained adapter, and
checkpoints holding the adapter in `adapter/` (loads with `peft.PeftModel.from_pretrained`) next to the
merged weights (a plain transformers checkpoint: what generation, evaluation and `from_pretrained` read).

    python -m pipeline.train --config lora_quickstart --output-dir runs/lora
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from pipeline.config import LoraConfig, ModelConfig
from pipeline.errors import UserError
from pipeline.policy import load_model

ADAPTER_DIR = "adapter"


def is_lora(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def apply_lora(model: Any, cfg: LoraConfig, seed: int) -> Any:
    """Fresh adapters on `model` (A random with a seeded stream, B zero: the policy is unchanged)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                              target_modules=list(cfg.targets), task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return get_peft_model(model, peft_cfg)
        except ValueError as e:
            raise UserError(f"update.lora.targets={cfg.targets}: {e}") from None


def load_policy_model(checkpoint: str | Path | None, base_path: str, model_cfg: ModelConfig, lora: LoraConfig,
                      seed: int) -> Any:
    """The trainable policy: the base model (checkpoint None) or a step's checkpoint; with LoRA the base
    weights plus fresh adapters, or plus the checkpoint's trained adapter."""
    if not lora.rank:
        return load_model(str(checkpoint or base_path), model_cfg)
    base = load_model(base_path, model_cfg)
    if checkpoint is None:
        return apply_lora(base, lora, seed)
    adapter = Path(checkpoint) / ADAPTER_DIR
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"{checkpoint} has no LoRA adapter ({adapter}); it was trained without update.lora — "
                        "resume it with update.lora.rank=0 or start a new --output-dir")
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(adapter), is_trainable=True)


def merged_model(model: Any) -> Any:
    """A plain transformers model with the adapters folded into the weights (the trained model is kept)."""
    return copy.deepcopy(model).merge_and_unload()


def save_lora_checkpoint(model: Any, directory: Path) -> None:
    """`directory/adapter/` (peft) and the merged weights in `directory` (transformers)."""
    model.save_pretrained(str(directory / ADAPTER_DIR))
    merged_model(model).save_pretrained(str(directory))
