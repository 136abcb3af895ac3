"""bf16 autocast where the hardware computes bf16 natively, fp32 where it would only emulate it.

A CPU without bf16 support in oneDNN (x86 without AVX-512, e.g. AMD Zen 2/3 and many laptops) runs bf16
matmuls through a slow fallback: on a 2-core AMD EPYC (AVX2) with torch 2.13 an `nn.Linear(128, 512)` on 256
rows took 4.9 ms under bf16 autocast against 0.65 ms in fp32, and the embedded model's build did not reach 100
of its 400 warm-start steps in 8 minutes. On such a CPU `precision: bf16` (update, generate, eval, the embedded
build) computes in fp32 instead, logged once; `PREFIX_RFT_CPU_BF16=1` keeps bf16 (to reproduce a bf16 machine's
arithmetic). CUDA and bf16-capable CPUs are unchanged. Results then differ from a bf16 machine's: per step at the
rounding level, but the embedded build, 400 training steps from the same seed, comes out a different policy
(docs/tasks.md).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from typing import Any

import torch

log = logging.getLogger(__name__)


@functools.cache
def cpu_bf16_is_native() -> bool:
    """Whether this CPU computes bf16 matmuls natively (oneDNN's own check), or PREFIX_RFT_CPU_BF16=1."""
    if os.environ.get("PREFIX_RFT_CPU_BF16") == "1":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def _say_fp32() -> None:
    log.warning("precision bf16 asked for, but this CPU has no native bf16 (torch CPU capability %s): computing "
                "in fp32, which is several times faster here (PREFIX_RFT_CPU_BF16=1 keeps bf16)",
                torch.backends.cpu.get_cpu_capability())


def effective(precision: str, device_type: str) -> str:
    """The precision that runs: "bf16" becomes "fp32" on a CPU without native bf16."""
    if precision == "bf16" and device_type == "cpu" and not cpu_bf16_is_native():
        _say_fp32()
        return "fp32"
    return precision


def autocast(precision: str, device: Any) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` when `effective(precision)` is bf16, else nothing."""
    device_type = torch.device(device).type
    if effective(precision, device_type) == "bf16":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
