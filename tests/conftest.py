"""Shared fixtures: an isolated cache for the embedded model, and tiny in-process models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Embedded builds go to a per-session cache unless PREFIX_RFT_TEST_CACHE points at a shared one."""
    root = os.environ.get("PREFIX_RFT_TEST_CACHE") or str(tmp_path_factory.mktemp("prefix_rft_cache"))
    old = os.environ.get("PREFIX_RFT_CACHE")
    os.environ["PREFIX_RFT_CACHE"] = root
    yield Path(root)
    if old is None:
        os.environ.pop("PREFIX_RFT_CACHE", None)
    else:
        os.environ["PREFIX_RFT_CACHE"] = old


@pytest.fixture(scope="session")
def micro_path(_isolated_cache) -> Path:
    """The `micro` embedded model (tokenizer + tiny Qwen2), built once per session."""
    from pipeline.embedded.build import ensure_embedded

    return ensure_embedded("micro")


@pytest.fixture(scope="session")
def micro_tokenizer(micro_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(micro_path)


@pytest.fixture()
def micro_model(micro_path):
    from transformers import AutoModelForCausalLM

    import torch

    return AutoModelForCausalLM.from_pretrained(micro_path, dtype=torch.float32)


def tiny_qwen2(vocab_size: int = 64, hidden: int = 32, layers: int = 2, seed: int = 0):
    """A randomly initialised tiny Qwen2ForCausalLM built in-process."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=256, tie_word_embeddings=True)
    return Qwen2ForCausalLM(cfg).eval()
