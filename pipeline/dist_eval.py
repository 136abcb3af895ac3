"""Evaluation with every training process taking part.

Under a multi-process launch (FSDP2 or DDP) the main process runs `evaluation.run.evaluate` as in a
single-process run (it alone reads and writes the eval folders and grades), but every `generate` call is
split across the ranks: the main process broadcasts the requests, each rank decodes every N-th of them
with its own copy of the checkpoint on its own device, and the completions are gathered back in request
order. The other ranks sit in `serve` (collectives that each return within one generation call) instead
of one barrier spanning the whole evaluation, which outlived NCCL's timeout. Requests carry their own
sampling seeds, so which rank decodes a request does not change its sample.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator

from pipeline.backends import Completion, GenerationRequest, SamplingParams

log = logging.getLogger(__name__)


@contextlib.contextmanager
def full_loading() -> Iterator[None]:
    """Load whole checkpoints on every rank: under `fsdp_cpu_ram_efficient_loading` transformers gives
    ranks other than 0 empty weights (accelerate broadcasts rank 0's when it shards), which evaluation
    copies must not have."""
    key = "FSDP_CPU_RAM_EFFICIENT_LOADING"
    old = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _share(inner: Any, acc: Any, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
    from accelerate.utils import gather_object

    n, rank = acc.num_processes, acc.process_index
    mine = requests[rank::n]
    parts = gather_object([inner.generate(mine, sampling) if mine else []])  # [rank 0's, rank 1's, ...]
    merged: list[Any] = [None] * len(requests)
    for r, part in enumerate(parts):
        merged[r::n] = part
    if acc.is_main_process:
        log.info("evaluation: %d requests decoded by %d ranks (%s)", len(requests), n, [len(p) for p in parts])
    return merged


def _broadcast(message: tuple) -> tuple:
    from accelerate.utils import broadcast_object_list

    box = [message]
    broadcast_object_list(box, from_process=0)
    return box[0]


class SharedBackend:
    """The main process's backend during a multi-process evaluation: `generate` is split over all ranks
    (each running `serve`); `close()` releases them. Other protocol calls go to the local engine."""

    def __init__(self, inner: Any, accelerator: Any):
        self.inner, self.acc = inner, accelerator
        self.name = inner.name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        _broadcast(("generate", requests, sampling))
        return _share(self.inner, self.acc, requests, sampling)

    def close(self, failed: bool = False) -> None:
        _broadcast(("failed" if failed else "done", None, None))


def serve(inner: Any, accelerator: Any) -> None:
    """A non-main rank's part of an evaluation: decode its share of each request batch until the main
    process is done."""
    while True:
        kind, requests, sampling = _broadcast((None, None, None))
        if kind == "done":
            return
        if kind == "failed":
            raise RuntimeError("the main process failed during evaluation (see its error above)")
        _share(inner, accelerator, requests, sampling)


def evaluate_on_all_ranks(accelerator: Any, build: Any, main: Any) -> Any:
    """`main(backend)` on the main process (its result returned there; {} elsewhere), with `build()`'s
    backend on every rank decoding a share of each generation call when there are several processes."""
    if accelerator.num_processes == 1:
        return main(build())
    backend = build()
    result: Any = {}
    if accelerator.is_main_process:
        shared = SharedBackend(backend, accelerator)
        try:
            result = main(shared)
        except BaseException:
            shared.close(failed=True)
            raise
        shared.close()
    else:
        serve(backend, accelerator)
    accelerator.wait_for_everyone()
    return result
