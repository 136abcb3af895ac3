"""A pool of scoring worker processes with a hard wall-clock limit per item.

Model completions are untrusted: parsing one can hang sympy or eat memory. Each item is graded in a
worker subprocess (`python -m pipeline.scoring_worker <module:function>`); the parent waits on the
worker's pipe with a deadline and, past it, kills the worker (SIGKILL), records the item as `timeout`
and starts a replacement. Nothing relies on `signal.alarm` in the caller's thread, and nothing depends
on how the caller's program is started (no re-import of `__main__`, no fork of a process holding
threads). A worker announces itself ready after its imports, so start-up never eats an item's budget.

A worker also protects the machine on its own: it dies with its parent (a SIGKILLed run leaves no
grader spinning on a power tower), caps its address space (`memory_mb`, so an exploding expression
fails with MemoryError instead of swapping the host), and arms `alarm()` as a backstop at a few times
the item limit. Results that are not a (reward, status, answer) triple count as `error`.

Messages are length-prefixed pickles over the worker's stdin/stdout.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import time
from collections import deque
from typing import Any, Callable

log = logging.getLogger(__name__)

Result = tuple[float, str, str]  # reward, status, extracted answer
TIMEOUT: Result = (0.0, "timeout", "")
DIED: Result = (0.0, "error", "worker died")
BAD_RESULT: Result = (0.0, "error", "malformed grader result")
READY = b"ready"
_HEADER = struct.Struct("<I")


def write_message(stream: Any, obj: Any) -> None:
    blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(blob)) + blob)
    stream.flush()


def _read_exact(fd: int, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_message(fd: int) -> Any:
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size))
    return pickle.loads(_read_exact(fd, size))


def _qualified_name(fn: Callable[..., Result]) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _valid(result: Any) -> bool:
    return (isinstance(result, tuple) and len(result) == 3 and isinstance(result[0], (int, float))
            and not isinstance(result[0], bool) and isinstance(result[1], str) and isinstance(result[2], str))


class _Worker:
    def __init__(self, target: str, timeout_s: float, memory_mb: int):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        cmd = [sys.executable, "-m", "pipeline.scoring_worker", target, "--item-limit-s", str(timeout_s),
               "--memory-mb", str(memory_mb)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.fd = self.proc.stdout.fileno()
        self.ready = False
        self.item: int | None = None
        self.deadline = 0.0
        self.sent_at = 0.0

    def send(self, item: int, args: tuple, timeout_s: float) -> None:
        self.item = item
        self.sent_at = time.monotonic()
        self.deadline = self.sent_at + timeout_s
        write_message(self.proc.stdin, args)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


class ScoringPool:
    """`map(items)` grades argument tuples in worker processes; each item gets at most `timeout_s`
    seconds of a worker's time. `num_workers` 0 means one per available core. After a `map`,
    `item_seconds[i]` is the wall time item i held a worker (send to result, or to the kill)."""

    def __init__(self, fn: Callable[..., Result], num_workers: int = 0, timeout_s: float = 5.0,
                 start_timeout_s: float = 120.0, memory_mb: int = 2048):
        self.target = _qualified_name(fn)
        self.num_workers = num_workers or available_cores()
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.memory_mb = memory_mb
        self.workers: list[_Worker] = []
        self.timeouts = 0
        self.replaced = 0
        self.start_failures = 0
        self.item_seconds: list[float] = []

    def _spawn(self) -> _Worker:
        w = _Worker(self.target, self.timeout_s, self.memory_mb)
        w.deadline = time.monotonic() + self.start_timeout_s
        self.workers.append(w)
        return w

    def map(self, items: list[tuple]) -> list[Result]:
        results: list[Result | None] = [None] * len(items)
        self.item_seconds = [0.0] * len(items)
        pending = deque(range(len(items)))
        self.workers = [w for w in self.workers if w.proc.poll() is None]
        while len(self.workers) < min(self.num_workers, max(1, len(items))):
            self._spawn()
        idle = [w for w in self.workers if w.ready]
        while pending or any(w.item is not None for w in self.workers):
            while pending and idle:
                w = idle.pop()
                try:
                    w.send(pending[0], items[pending[0]], self.timeout_s)
                    pending.popleft()
                except (BrokenPipeError, OSError):
                    self._replace(w)
            watched = [w for w in self.workers if w.item is not None or not w.ready]
            if not watched:
                if pending:
                    raise RuntimeError("scoring: no worker could be started")
                break
            timeout = max(0.0, min(w.deadline for w in watched) - time.monotonic())
            readable, _, _ = select.select([w.fd for w in watched], [], [], timeout)
            for w in [w for w in watched if w.fd in readable]:
                try:
                    msg = read_message(w.fd)
                except (EOFError, OSError, pickle.UnpicklingError):
                    if w.item is not None:
                        results[w.item] = DIED
                        self.item_seconds[w.item] = time.monotonic() - w.sent_at
                        w.item = None
                    elif not w.ready:
                        self.start_failures += 1
                        if self.start_failures > 3:
                            raise RuntimeError(f"scoring workers for {self.target} exit at start-up "
                                               "(see the messages above)") from None
                    self._replace(w)
                    continue
                if not w.ready:
                    w.ready = msg == READY
                else:
                    results[w.item] = msg if _valid(msg) else BAD_RESULT
                    self.item_seconds[w.item] = time.monotonic() - w.sent_at
                    w.item = None
                idle.append(w)
            now = time.monotonic()
            for w in list(watched):
                if w in self.workers and w.fd not in readable and now >= w.deadline:
                    if w.item is not None:
                        results[w.item] = TIMEOUT
                        self.item_seconds[w.item] = now - w.sent_at
                        self.timeouts += 1
                        w.item = None
                    elif not w.ready:
                        self.start_failures += 1
                        if self.start_failures > 3:
                            raise RuntimeError(f"scoring workers for {self.target} did not start within "
                                               f"{self.start_timeout_s}s (see the messages above)")
                    self._replace(w)
        return results  # type: ignore[return-value]

    def _replace(self, w: _Worker) -> None:
        w.kill()
        if w in self.workers:
            self.workers.remove(w)
        self._spawn()
        self.replaced += 1

    def close(self) -> None:
        for w in self.workers:
            w.kill()
        self.workers = []


_POOLS: dict[tuple, ScoringPool] = {}


def get_pool(fn: Callable[..., Result], num_workers: int, timeout_s: float) -> ScoringPool:
    """A process-wide pool per (grader, workers, timeout), closed at exit."""
    key = (_qualified_name(fn), num_workers, timeout_s)
    if key not in _POOLS:
        _POOLS[key] = ScoringPool(fn, num_workers, timeout_s)
    return _POOLS[key]


@atexit.register
def _close_pools() -> None:
    for pool in _POOLS.values():
        pool.close()
    _POOLS.clear()
