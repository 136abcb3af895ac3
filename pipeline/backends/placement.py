"""Where colocated SGLang engines run when the trainer is launched as N processes, and which rows each
rank generates. Pure functions of the launch (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, as torchrun
and `accelerate launch` set them) and of `generate.sglang.engine_args`; nothing here imports sglang.

- One engine per engine group: an engine spans `tp_size x pp_size x dp_size` GPUs (SGLang 0.5.23 lays out
  `dp_size` replicas of `tp_size x pp_size` GPUs from `base_gpu_id`). With one process per GPU, the
  `width` consecutive local ranks of a group share one engine, booted by the group's first rank (the
  leader) at `base_gpu_id` = its own device; the other ranks of the group boot nothing and generate
  nothing. A single process per node may own a whole multi-GPU engine.
- Ports: engine e on a node takes `port + 16 e` and `nccl_port = port + 16 e + 1` (`port` from
  engine_args, default 30000). SGLang would otherwise give every engine port 30000 and draw the
  torch.distributed port at random per engine (22000-29999, checked free but bound later), an
  intermittent collision with 8 engines per node. 16 apart also keeps the ZMQ ports SGLang derives for
  attention-DP (`port + 233 ... + 239`) clear of every other engine's.
- Seeds: engine i of the run gets its own `random_seed` (`sglang_protocol.engine_seed(seed, i)`).
- Generation shards: `generation_shard` says which shard of the step's rows this rank generates (the
  engine index for a colocated engine, the process index otherwise); `stages.generate.shard_rows` keeps
  every group on one shard.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pipeline.errors import ConfigError

PORT_STRIDE = 16
DEFAULT_PORT = 30000


@dataclass(frozen=True)
class Placement:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    width: int = 1  # GPUs one engine spans (tp x pp x dp)

    def __post_init__(self) -> None:
        if self.local_world > 1 and self.local_world % self.width:
            raise ConfigError(f"generate.sglang.engine_args: one SGLang engine spans tp_size x pp_size x dp_size = "
                              f"{self.width} GPUs, which does not divide the {self.local_world} processes per "
                              "node; launch a multiple of it per node or change tp_size/pp_size/dp_size")

    @property
    def per_engine(self) -> int:
        """Processes that share one engine: `width` with one process per GPU, 1 with one process per node."""
        return 1 if self.local_world == 1 else self.width

    @property
    def leader(self) -> bool:
        return self.local_rank % self.per_engine == 0

    @property
    def local_engine(self) -> int:
        return self.local_rank // self.per_engine

    @property
    def engine_index(self) -> int:
        return self.rank // self.per_engine

    @property
    def num_engines(self) -> int:
        return max(1, self.world // self.per_engine)


def engine_width(engine_args: dict[str, Any]) -> int:
    return int(engine_args.get("tp_size", 1)) * int(engine_args.get("pp_size", 1)) * int(engine_args.get("dp_size", 1))


def from_env(engine_args: dict[str, Any]) -> Placement:
    env = os.environ
    world = int(env.get("WORLD_SIZE", "1"))
    return Placement(rank=int(env.get("RANK", "0")), world=world, local_rank=int(env.get("LOCAL_RANK", "0")),
                     local_world=int(env.get("LOCAL_WORLD_SIZE", str(world))), width=engine_width(engine_args))


def engine_ports(p: Placement, engine_args: dict[str, Any]) -> dict[str, int]:
    """`port` (and `nccl_port`, unless SGLang must pick one per data-parallel replica) of this rank's engine."""
    port = int(engine_args.get("port", DEFAULT_PORT)) + PORT_STRIDE * p.local_engine
    out = {"port": port}
    if int(engine_args.get("dp_size", 1)) == 1:  # dp replicas each bind their own; a pinned one would collide
        nccl = engine_args.get("nccl_port")
        out["nccl_port"] = (int(nccl) + PORT_STRIDE * p.local_engine) if nccl is not None else port + 1
    return out


def gpu_args(p: Placement, engine_args: dict[str, Any], current_device: int, device_count: int) -> dict[str, int]:
    """`base_gpu_id` of this rank's engine on CUDA: the leader's own device (plus any `base_gpu_id` the
    user gave as an offset), checked to fit on the node."""
    base = int(engine_args.get("base_gpu_id", 0)) + current_device
    if base + p.width > device_count:
        raise ConfigError(f"generate.sglang.engine_args: the SGLang engine of local rank {p.local_rank} would use GPUs "
                          f"{base}..{base + p.width - 1} but this process sees {device_count}; launch one process per "
                          "GPU with every GPU visible to each (accelerate launch does), or lower "
                          "tp_size/pp_size/dp_size")
    return {"base_gpu_id": base}


def generation_shard(backend: Any, process_index: int, num_processes: int) -> tuple[int | None, int]:
    """(shard index, shard count) of the rows this rank generates; index None: this rank generates nothing
    (a colocated engine group's non-leading ranks)."""
    shard = getattr(backend, "generation_shard", None)
    return shard if shard is not None else (process_index, num_processes)
