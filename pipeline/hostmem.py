"""A CPU run's host settings: torch threads, and whether freed memory stays in the process.

Why keep freed memory. glibc serves every allocation above its mmap threshold (at most 32 MB on 64-bit)
with a fresh `mmap` and gives it back with `munmap` on free. An update step re-allocates its large
activations (e.g. the MLP's [tokens, intermediate] tensors, 75 MB on the embedded default at 8 x 8 x 512)
in every layer of every micro-batch, so each one is first touched page by page: one minor page fault,
and a zeroed page from the kernel, per 4 KB. Measured there (docs/performance.md, "Freed host memory kept
in the process"; `scripts/bench_vs_trl.py --max-new-tokens 512 [--host-memory release]`): a median of
470,762 page faults and 1.33 s of system time per update, against 10 faults and 0.02 s once freed memory
is kept; the update 5.75 s against 4.38 s. `keep_freed_memory` tells glibc (mallopt) to serve large
blocks from its heap and never trim it, so after the first steps freed blocks are reused warm; the
process's resident size then stays near its peak (+9% there).

Nothing numeric changes: the same operators run on the same values; only where their outputs live does.
GPU runs are left alone (their large tensors live in the CUDA caching allocator, and host memory
that a checkpoint load once needed should go back to the system). Other C libraries: a no-op.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys
from typing import Any

import torch

log = logging.getLogger(__name__)

# glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
KEEP_TOP = 2**31 - 1  # the largest value mallopt takes (an int): free heap above 2 GB still goes back


@functools.cache
def _glibc() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it (musl's mallopt is a stub)
    except (OSError, AttributeError):
        return None
    return libc


@functools.cache
def keep_freed_memory() -> bool:
    """Serve large allocations from the heap and never trim it (process-wide, once); whether it took effect."""
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, KEEP_TOP) == 1
    if not ok:
        log.warning("mallopt refused train.host_memory=keep; freed memory goes back to the system as usual")
    return ok


def kept() -> bool:
    """Whether this process keeps its freed memory (`keep_freed_memory` ran and took effect): its resident size
    then includes memory freed earlier, e.g. by a previous stage (pipeline/accounting.py says so per stage)."""
    return keep_freed_memory.cache_info().currsize > 0 and keep_freed_memory()


def glibc_tunables() -> str:
    """The same setting for a process not yet started (GLIBC_TUNABLES, read by glibc at start-up)."""
    return f"glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold={KEEP_TOP}"


def configure_host(train: Any, device: Any) -> bool:
    """Apply `train.num_threads` and `train.host_memory` (TrainConfig) for a run on `device`; whether freed
    memory is now kept in the process."""
    if train.num_threads:
        torch.set_num_threads(train.num_threads)
    if train.host_memory != "keep" or torch.device(device).type != "cpu":
        return False
    return keep_freed_memory()
