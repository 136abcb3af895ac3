"""pipeline/precision.py: bf16 autocast only where bf16 is native; fp32 (logged once) on CPUs that emulate it."""

import logging

import pytest
import torch

from pipeline import precision


@pytest.fixture
def native(monkeypatch):
    def set_native(value: bool):
        monkeypatch.setattr(precision, "cpu_bf16_is_native", lambda: value)
    return set_native


def test_cpu_without_native_bf16_computes_in_fp32_and_says_so_once(native, caplog):
    native(False)
    precision._say_fp32.cache_clear()
    with caplog.at_level(logging.WARNING, logger="pipeline.precision"):
        assert precision.effective("bf16", "cpu") == "fp32"
        assert precision.effective("bf16", "cpu") == "fp32"
    assert sum("no native bf16" in r.message for r in caplog.records) == 1
    lin, x = torch.nn.Linear(4, 3), torch.randn(2, 4)
    with precision.autocast("bf16", "cpu"):
        assert lin(x).dtype == torch.float32
    assert precision.effective("fp32", "cpu") == "fp32" and precision.effective("bf16", "cuda") == "bf16"


def test_cpu_with_native_bf16_keeps_bf16(native):
    native(True)
    lin, x = torch.nn.Linear(4, 3), torch.randn(2, 4)
    with precision.autocast("bf16", torch.device("cpu")):
        assert lin(x).dtype == torch.bfloat16
    with precision.autocast("fp32", "cpu"):
        assert lin(x).dtype == torch.float32


def test_env_keeps_bf16_and_the_check_is_onednns(monkeypatch):
    precision.cpu_bf16_is_native.cache_clear()
    monkeypatch.setenv("PREFIX_RFT_CPU_BF16", "1")
    try:
        assert precision.cpu_bf16_is_native() is True
        precision.cpu_bf16_is_native.cache_clear()
        monkeypatch.delenv("PREFIX_RFT_CPU_BF16")
        assert precision.cpu_bf16_is_native() is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    finally:
        precision.cpu_bf16_is_native.cache_clear()
