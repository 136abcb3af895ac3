"""Scoring worker: `python -m pipeline.scoring_worker <module:function> [--item-limit-s S] [--memory-mb M]`.

Imports the grader (and runs its module's `prepare_worker()` when there is one), writes READY, then
answers length-prefixed pickled argument tuples on stdin with pickled results on stdout until stdin
closes. Exceptions (MemoryError and RecursionError included) become `error` results; the parent
enforces the time limit by killing this process.

Self-protection, independent of the parent: the worker asks the kernel to SIGKILL it when its parent
dies (Linux), caps its address space at M MiB, and arms `alarm()` at 3x the item limit + 5 s around
each item, whose default action terminates the process even inside C code."""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import resource
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGKILL this process when the parent exits (Linux prctl); a no-op elsewhere."""
    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def cap_memory(memory_mb: int) -> None:
    if memory_mb <= 0:
        return
    limit = memory_mb << 20
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("--item-limit-s", type=float, default=0.0)
    ap.add_argument("--memory-mb", type=int, default=0)
    args = ap.parse_args()
    die_with_parent()
    logging.disable(logging.CRITICAL)  # grading libraries log per item; the parent reports statuses
    module_name, _, name = args.target.partition(":")
    module = importlib.import_module(module_name)
    fn = module
    for part in name.split("."):
        fn = getattr(fn, part)
    prepare = getattr(module, "prepare_worker", None)
    if callable(prepare):
        prepare()
    cap_memory(args.memory_mb)  # after the imports: they map more address space than grading needs
    backstop = math.ceil(3 * args.item_limit_s + 5) if args.item_limit_s > 0 else 0
    from pipeline.scoring import read_message, write_message

    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # a grader that prints must not corrupt the protocol
    write_message(out, b"ready")
    fd = sys.stdin.fileno()
    while True:
        try:
            item = read_message(fd)
        except EOFError:
            return
        signal.alarm(backstop)
        try:
            result = fn(*item)
        except Exception as e:  # MemoryError, RecursionError too: the grader must never take the run down
            result = (0.0, "error", type(e).__name__)
        signal.alarm(0)
        write_message(out, result)


if __name__ == "__main__":
    main()
