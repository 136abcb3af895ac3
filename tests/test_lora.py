"""LoRA through peft: adapters train only the targeted projections; checkpoints hold a peft adapter and
merged transformers weights that compute the same function; a LoRA run resumes its adapter."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import LoraConfig, load_config
from tests.conftest import tiny_qwen2


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_lora_checkpoint_loads_with_peft_and_merged_with_transformers(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from pipeline.lora import ADAPTER_DIR, apply_lora, save_lora_checkpoint

    model = apply_lora(tiny_qwen2(vocab_size=40), LoraConfig(rank=4, alpha=8.0, targets=["q_proj", "down_proj"]),
                       seed=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and ("q_proj" in n or "down_proj" in n) for n in trainable)
    with torch.no_grad():  # B starts at zero (policy unchanged); give it weight so merging matters
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(n)))
    save_lora_checkpoint(model, tmp_path)
    ids = torch.randint(1, 40, (2, 9), generator=torch.Generator().manual_seed(1))
    adapted = PeftModel.from_pretrained(tiny_qwen2(vocab_size=40), str(tmp_path / ADAPTER_DIR)).eval()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    base = tiny_qwen2(vocab_size=40)
    assert "lora" not in " ".join(merged.state_dict())  # a plain transformers checkpoint
    assert (_logits(adapted, ids) - _logits(model.eval(), ids)).abs().max() <= 1e-5
    assert (_logits(merged, ids) - _logits(adapted, ids)).abs().max() <= 1e-4
    assert (_logits(merged, ids) - _logits(base, ids)).abs().max() > 1e-2  # the adapter changed the function


def test_lora_seed_makes_adapters_reproducible():
    from pipeline.lora import apply_lora

    a, b = (apply_lora(tiny_qwen2(vocab_size=40), LoraConfig(rank=2), seed=7) for _ in range(2))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.slow
def test_lora_run_on_the_embedded_model(tmp_path, micro_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from pipeline.checkpoint import checkpoint_dir
    from pipeline.policy import load_model
    from pipeline.run import Run, make_accelerator, train
    from tests.test_pipeline import MICRO

    cfg = load_config("lora_quickstart", MICRO + ["update.lora.rank=4", "update.lr=1e-2", "eval.at_start=false"])
    out = tmp_path / "lora"
    train(cfg, out)
    base = AutoModelForCausalLM.from_pretrained(micro_path, dtype=torch.float32).eval()
    ckpt = checkpoint_dir(out, 2)
    merged = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    adapted = PeftModel.from_pretrained(load_model(str(micro_path), cfg.model), str(ckpt / "adapter")).eval()
    ids = torch.randint(3, 30, (2, 12), generator=torch.Generator().manual_seed(0))
    assert (_logits(merged, ids) - _logits(adapted, ids)).abs().max() <= 1e-4
    assert (_logits(merged, ids) - _logits(base, ids)).abs().max() > 1e-4  # two steps moved the adapter
    frozen = {k: v for k, v in base.state_dict().items() if "proj" not in k}  # embeddings and norms stay
    assert all(torch.equal(merged.state_dict()[k], v) for k, v in frozen.items())
    # resuming the run loads base + the step-2 adapter + the optimizer state of the adapter
    run = Run(cfg, out, make_accelerator(cfg))
    state = run.load_policy(2, with_optimizer=True)
    assert state.restored and (_logits(state.model.eval(), ids) - _logits(adapted, ids)).abs().max() <= 1e-5
