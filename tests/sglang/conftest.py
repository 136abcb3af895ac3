"""The SGLang conformance tier: the real `sgl.Engine` on CPU (docs/sglang.md, conformance tier), opt-in.

Run it with `make test-sglang` (builds or reuses ./.venv-sglang with tests/sglang/install.sh). Outside that
venv sglang is not installed and every test here is skipped, so the default suite never needs it.
"""

from __future__ import annotations

import os

import pytest

from pipeline.imports import is_sglang_available


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if not _has_cuda():  # before anything imports sglang (a CPU engine must be selected before the import); on a GPU the engine stays on CUDA
    os.environ.setdefault("SGLANG_USE_CPU_ENGINE", "1")

SKIP = pytest.mark.skipif(not is_sglang_available(), reason="needs the real SGLang engine: make test-sglang")
if os.environ.get("PREFIX_RFT_REQUIRE_SGLANG") == "1" and not is_sglang_available():  # the tier's own venv (CI)
    raise pytest.UsageError("PREFIX_RFT_REQUIRE_SGLANG=1 but sglang is not importable: the tier would be skipped")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/sglang/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.sglang)
            item.add_marker(SKIP)


@pytest.fixture(scope="session")
def micro_requests(micro_tokenizer):
    """Rendered toy prompts of the micro model, with and without a forced prefix, as token ids."""
    from pipeline.backends import GenerationRequest
    from pipeline.prompts import build_messages, render_prompt_ids

    problems = ["What is 3 + 4?", "What is 7 - 2 + 5?", "What is 9 + 9 - 8?", "What is 1 + 2 + 3 + 4?"]
    prompts = [render_prompt_ids(micro_tokenizer, build_messages(p, "Please reason step by step.")) for p in problems]
    prefix = micro_tokenizer("3 + 4 = 7. The answer", add_special_tokens=False)["input_ids"]
    reqs = [GenerationRequest(p, [], 24, seed=i) for i, p in enumerate(prompts)]
    reqs += [GenerationRequest(p, prefix[:k], 24 - k, seed=10 + i)
             for i, (p, k) in enumerate(zip(prompts, (1, 3, 5, len(prefix))))]
    return reqs


@pytest.fixture(scope="session")
def stop_ids(micro_tokenizer, micro_path):
    from transformers import AutoConfig

    from pipeline.prompts import stop_token_ids

    return stop_token_ids(micro_tokenizer, AutoConfig.from_pretrained(micro_path))
