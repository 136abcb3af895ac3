"""SGLang server backend: running SGLang servers (or an sglang-router in front of them) over HTTP.

For disaggregated and multi-node runs: the training process talks JSON over HTTP (stdlib only) and
never imports sglang. Same protocol as the in-process engine (`sglang_protocol.py`):
- generate: `POST /generate {"input_ids": [...], "sampling_params": [...], "return_logprob": true}`;
  requests are split into contiguous blocks (a group's members stay together, sharing their prompt's
  prefix cache), one per server, sent concurrently; with `router_url` set, into
  `ROUTER_CHUNKS_PER_SERVER` blocks per server, all posted to the router at once so that it can spread them
  over its workers (one POST would go to one worker).
- weights, `generate.sglang.weight_sync`:
  - `disk` (default here): `POST /update_weights_from_disk {"model_path": <checkpoint>}` to every
    server; the checkpoint directory the run writes each step must be visible to the servers.
  - `distributed`: the trainer opens a process group with every server's tensor-parallel ranks
    (`/init_weights_update_group`; the trainer is rank 0, server i's ranks follow), then per bucket
    `POST /update_weights_from_distributed {names, dtypes, shapes}` while it broadcasts each tensor,
    inside `/begin_weight_update` ... `/end_weight_update`. NCCL when the trainer has CUDA, else gloo.
  then `/flush_cache`. Weight updates go to `server_urls` (not through a router). With N training
  processes only rank 0 talks to the servers (one reload or push per step, not N; every rank still walks
  the weight stream, whose sharded tensors gather collectively); the other ranks wait at a barrier until
  rank 0 has updated and flushed every server, so no rank generates from partial weights and no flush
  meets another rank's requests. A failure on rank 0 is raised on every rank.
- the model-config patch (`model.rope_theta`, `model.max_position_embeddings`) must be given to the
  servers at launch (`--json-model-override-args`, see docs/sglang.md); the backend checks each server's
  `/server_info` and refuses a server launched without it.
- `release()`/`resume()` are no-ops: the servers do not share memory with the trainer. `shutdown()`
  closes the weight group; it does not stop servers it did not start.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import torch

from pipeline.backends import Completion, GenerationRequest, SamplingParams
from pipeline.backends.sglang_protocol import (check_ok, generate_in_order, model_overrides, overrides_missing,
                                               push_weights, version_string)
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)
GROUP_NAME = "prefix-rft-weights"
ROUTER_CHUNKS_PER_SERVER = 4


def blocks(n: int, k: int) -> list[range]:
    """`n` consecutive indices cut into at most `k` contiguous blocks whose sizes differ by at most one."""
    k = max(1, min(k, n))
    q, r = divmod(n, k)
    starts = [i * q + min(i, r) for i in range(k + 1)]
    return [range(starts[i], starts[i + 1]) for i in range(k) if starts[i + 1] > starts[i]]


def weight_group_layout(infos: list[dict[str, Any]], urls: list[str]) -> tuple[int, list[int]]:
    """(world size, rank offset of each server) of the weight-update group: the trainer is rank 0 and
    server i's tensor-parallel workers join as `offset_i + tp_rank` (SGLang 0.5.23 `init_weights_update_group`).
    SGLang refuses data-parallel replicas for this path (an assertion in its tokenizer manager), and its
    pipeline stages would all join under the same `offset + tp_rank`; such servers are refused here."""
    for url, info in zip(urls, infos):
        dp, pp = int(info.get("dp_size", 1) or 1), int(info.get("pp_size", 1) or 1)
        if dp > 1 or pp > 1:
            raise ConfigError(f"generate.sglang.weight_sync=distributed: the server {url} runs dp_size={dp}, "
                              f"pp_size={pp}; SGLang's weight-update group takes tensor-parallel servers only. "
                              "Launch one server per replica (--dp-size 1 --pp-size 1, listed in "
                              "generate.sglang.server_urls, behind a router if you like) or use "
                              "generate.sglang.weight_sync=disk")
    tps = [int(i.get("tp_size", 1) or 1) for i in infos]
    return 1 + sum(tps), [1 + sum(tps[:i]) for i in range(len(tps))]


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _on_rank0_then_barrier(fn: Any) -> None:
    """Run `fn` on rank 0 while the other ranks wait; a failure there is raised on every rank."""
    err = None
    if _rank() == 0:
        try:
            fn()
        except Exception as e:  # re-raised below, on every rank
            err = e
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        box = [None if err is None else f"{type(err).__name__}: {err}"]
        torch.distributed.broadcast_object_list(box, src=0)
        if box[0] is not None and err is None:
            raise RuntimeError(f"rank 0 could not update the SGLang servers: {box[0]}")
    if err is not None:
        raise err


def http_json(url: str, payload: dict[str, Any] | None = None, timeout: float = 600.0) -> Any:
    """POST `payload` as JSON (GET when None) and decode the JSON answer; HTTP errors carry the body."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                 method="GET" if payload is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{url}: HTTP {e.code}: {e.read().decode(errors='replace')[:500]}") from None
    except (urllib.error.URLError, OSError) as e:
        raise RuntimeError(f"{url}: cannot reach the SGLang server ({e}); check generate.sglang.server_urls") from None
    try:
        return json.loads(body) if body.strip() else None
    except ValueError:
        return body.decode(errors="replace")  # some control endpoints answer in plain text


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def open_trainer_group(host: str, port: int, world_size: int, backend: str, timeout_s: float) -> Any:
    """The trainer's end (rank 0) of the weight-update group the servers join with
    `/init_weights_update_group`: same rendezvous (a TCP store served by rank 0, keys prefixed by the
    group name) and a process group separate from any default group the trainer already has."""
    from torch.distributed import PrefixStore, TCPStore
    from torch.distributed.distributed_c10d import Backend, _new_process_group_helper, _world

    timeout = timedelta(seconds=timeout_s)
    store = PrefixStore(GROUP_NAME, TCPStore(host, port, world_size, is_master=True, timeout=timeout,
                                             wait_for_workers=False))
    pg, _ = _new_process_group_helper(world_size, 0, [], Backend(backend), store, group_name=GROUP_NAME,
                                      backend_options=None, timeout=timeout)
    _world.pg_group_ranks[pg] = {i: i for i in range(world_size)}
    return pg


class SGLangServerBackend:
    name = "sglang_server"

    def __init__(self, server_urls: list[str], *, router_url: str = "", weight_sync: str = "disk",
                 bucket_bytes: int = 512 * 2 ** 20, group_address: str = "127.0.0.1:0", timeout_s: float = 1800.0,
                 overrides: dict[str, Any] | None = None):
        if not server_urls:
            raise ConfigError("generate.sglang.server_urls: the sglang_server backend needs the URL of at least one "
                              "SGLang server (e.g. [http://10.0.0.5:30000])")
        if weight_sync not in ("disk", "distributed"):
            raise ConfigError(f"generate.sglang.weight_sync={weight_sync!r}: the sglang_server backend takes `disk` or "
                              "`distributed`")
        self.urls = [u.rstrip("/") for u in server_urls]
        self.router = router_url.rstrip("/")
        self.weight_sync = weight_sync
        self.bucket_bytes = bucket_bytes
        self.group_address = group_address
        self.timeout = timeout_s
        self.last_push: dict[str, float] = {}
        self._group = None
        self._info = [http_json(f"{u}/server_info", timeout=60) for u in self.urls]
        if overrides:
            self._check_overrides(overrides)
        if weight_sync == "distributed":
            weight_group_layout(self._info, self.urls)  # refuse dp/pp servers on every rank, before any step

    @classmethod
    def from_config(cls, cfg: Any, *, model_path: str, seed: int, model_cfg: Any = None) -> "SGLangServerBackend":
        sg = cfg.sglang
        sync = "disk" if sg.weight_sync == "auto" else sg.weight_sync
        overrides = model_overrides(model_cfg.rope_theta, model_cfg.max_position_embeddings) if model_cfg else {}
        return cls(sg.server_urls, router_url=sg.router_url, weight_sync=sync,
                   bucket_bytes=int(sg.weight_bucket_mb * 2 ** 20), group_address=sg.weight_group_address,
                   overrides=overrides)

    def _check_overrides(self, expected: dict[str, Any]) -> None:
        """Every server must run the policy's config patch (the RoPE base and context the trainer uses)."""
        for url, info in zip(self.urls, self._info):
            raw = (info or {}).get("json_model_override_args") or "{}"
            actual = json.loads(raw) if isinstance(raw, str) else dict(raw)
            missing = overrides_missing(expected, actual)
            if missing:
                raise ConfigError(f"generate.sglang.server_urls: the SGLang server {url} was launched without "
                                  f"the policy's config patch ({', '.join(missing)} differ); launch it with "
                                  f"--json-model-override-args '{json.dumps(expected)}' (model.rope_theta / "
                                  "model.max_position_embeddings)")

    def version(self) -> str:
        versions = sorted({version_string(i) for i in self._info})
        return ",".join(versions)

    def _all(self, path: str, payload: dict[str, Any] | None) -> list[Any]:
        with ThreadPoolExecutor(len(self.urls)) as pool:
            return list(pool.map(lambda u: http_json(f"{u}{path}", payload, self.timeout), self.urls))

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        def call(input_ids: list[list[int]], params: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if self.router:
                cuts = blocks(len(input_ids), ROUTER_CHUNKS_PER_SERVER * len(self.urls))
                shards = [(self.router, r) for r in cuts]
            else:
                shards = list(zip(self.urls, blocks(len(input_ids), len(self.urls))))

            def post(shard):
                url, r = shard
                out = http_json(f"{url}/generate", {"input_ids": input_ids[r.start:r.stop],
                                                    "sampling_params": params[r.start:r.stop], "return_logprob": True},
                                self.timeout)
                out = [out] if isinstance(out, dict) else out
                if len(out) != len(r):
                    raise RuntimeError(f"{url}/generate returned {len(out)} outputs for {len(r)} requests")
                return out

            with ThreadPoolExecutor(len(shards)) as pool:
                parts = list(pool.map(post, shards))
            return [out for part in parts for out in part]

        return generate_in_order(requests, sampling, call)

    def sync_weights(self, model: Any, checkpoint: str | None = None) -> None:
        """Rank 0 updates every server and flushes its cache; the other ranks wait (see the module doc)."""
        if self.weight_sync == "disk":
            if checkpoint is None:
                raise ConfigError("generate.sglang.weight_sync=disk: no checkpoint of the current weights exists; use "
                                  "weight_sync=distributed or save the model where the servers can read it")

            def update() -> None:
                for r in self._all("/update_weights_from_disk", {"model_path": str(checkpoint)}):
                    check_ok(r, f"update_weights_from_disk({checkpoint})")
                self.flush_cache()

            _on_rank0_then_barrier(update)
        else:
            self._push_distributed(model)
            _on_rank0_then_barrier(self.flush_cache)

    def _push_distributed(self, model: Any) -> None:
        pusher = _rank() == 0
        if pusher and self._group is None:
            self._open_group()
        backend = "nccl" if torch.cuda.is_available() else "gloo"

        def push(bucket: list[tuple[str, torch.Tensor]]) -> Any:
            meta = {"names": [n for n, _ in bucket], "dtypes": [str(t.dtype).replace("torch.", "") for _, t in bucket],
                    "shapes": [list(t.shape) for _, t in bucket], "group_name": GROUP_NAME, "flush_cache": False}
            results: list[Any] = []
            thread = threading.Thread(target=lambda: results.append(self._all("/update_weights_from_distributed", meta)))
            thread.start()
            for _, t in bucket:
                t = t.contiguous() if backend == "nccl" else t.detach().cpu().contiguous()
                torch.distributed.broadcast(t, src=0, group=self._group)
            thread.join()
            if not results:
                raise RuntimeError("update_weights_from_distributed: no answer from the servers")
            for r in results[0]:
                check_ok(r, "update_weights_from_distributed")
            return None

        self.last_push = push_weights(model, self.bucket_bytes, begin=lambda: self._all("/begin_weight_update", {}),
                                      push=push, end=lambda: self._all("/end_weight_update", {}), pusher=pusher)

    def _open_group(self) -> None:
        host, _, port = self.group_address.rpartition(":")
        port_n = int(port) or free_port(host)
        world, offsets = weight_group_layout(self._info, self.urls)
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        answers: list[Any] = [None] * len(self.urls)

        def join(i: int) -> None:
            answers[i] = http_json(f"{self.urls[i]}/init_weights_update_group",
                                   {"master_address": host, "master_port": port_n, "rank_offset": offsets[i],
                                    "world_size": world, "group_name": GROUP_NAME, "backend": backend}, self.timeout)

        threads = [threading.Thread(target=join, args=(i,)) for i in range(len(self.urls))]
        for t in threads:
            t.start()
        self._group = open_trainer_group(host, port_n, world, backend, self.timeout)
        for t in threads:
            t.join()
        for a in answers:
            check_ok(a, "init_weights_update_group")
        log.info("weight-update group %s:%d open: trainer + %d server ranks (%s)", host, port_n, world - 1, backend)

    def release(self) -> None:
        pass

    def resume(self) -> None:
        pass

    def flush_cache(self, wait_s: float = 120.0) -> None:
        """Flush every server's prefix cache. A server that still holds a finished batch answers HTTP 400
        ("pending requests"); that is retried until `wait_s`."""
        for u in self.urls:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    http_json(f"{u}/flush_cache", {}, self.timeout)
                    break
                except RuntimeError as e:
                    if "HTTP 400" not in str(e) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    def shutdown(self) -> None:
        if self._group is not None:
            try:
                self._all("/destroy_weights_update_group", {"group_name": GROUP_NAME})
            except RuntimeError as e:
                log.warning("closing the weight-update group: %s", e)
            try:
                torch.distributed.destroy_process_group(self._group)
            except (RuntimeError, ValueError) as e:
                log.warning("closing the weight-update group: %s", e)
            self._group = None
