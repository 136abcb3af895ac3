"""Multi-process SGLang layout without SGLang: one engine per engine group, distinct ports and seeds per
engine, group-whole generation shards with shard-independent row seeds, the model-config patch handed to
the engine and checked on servers, the weight-update group layout, router chunking, and rank-0-only
server weight sync under 2 gloo processes (fake HTTP servers record what reaches them). The real engine
and server run the same paths in tests/sglang (`make test-sglang`)."""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.backends import GenerationRequest, SamplingParams
from pipeline.backends import placement as P
from pipeline.backends.sglang import SGLangBackend, engine_args_for
from pipeline.backends.sglang_protocol import engine_seed, model_overrides
from pipeline.errors import ConfigError
from tests.conftest import tiny_qwen2


def _node(n: int, tp: int = 1, node: int = 0, nodes: int = 1, **extra) -> list[dict]:
    """engine_args of every rank of node `node` (n processes per node, one GPU each, 8 visible)."""
    out = []
    for local in range(n):
        user = {"tp_size": tp, **extra}
        where = P.Placement(rank=node * n + local, world=n * nodes, local_rank=local, local_world=n,
                            width=P.engine_width(user))
        args = engine_args_for(user, model_path="m", seed=0, overrides={}, where=where, cuda=True,
                               current_device=local, device_count=8)
        out.append({"leader": where.leader, "index": where.engine_index, "count": where.num_engines, **args})
    return out


def test_one_engine_per_tp_group_on_its_own_gpus():
    ranks = _node(8, tp=2)
    leaders = [r for r in ranks if r["leader"]]
    assert [r["base_gpu_id"] for r in leaders] == [0, 2, 4, 6]  # GPUs 0-1, 2-3, 4-5, 6-7: disjoint, all < 8
    assert [r["index"] for r in leaders] == [0, 1, 2, 3] and {r["count"] for r in ranks} == {4}
    assert [r["leader"] for r in ranks] == [True, False] * 4
    # today's main gave every rank an engine at base_gpu_id = its device with tp_size GPUs: rank 7 -> GPUs 7, 8
    spans = [set(range(r["base_gpu_id"], r["base_gpu_id"] + 2)) for r in leaders]
    assert set().union(*spans) == set(range(8)) and sum(map(len, spans)) == 8
    # the second node: engine indices continue, ports and GPUs restart
    second = [r for r in _node(8, tp=2, node=1, nodes=2) if r["leader"]]
    assert [r["index"] for r in second] == [4, 5, 6, 7] and [r["base_gpu_id"] for r in second] == [0, 2, 4, 6]
    # tp 4 x dp 2 = 8 GPUs: one engine per node
    assert [r["base_gpu_id"] for r in _node(8, tp=4, dp_size=2) if r["leader"]] == [0]
    # one process driving a 2-GPU engine
    one = P.Placement(width=2)
    assert one.leader and one.num_engines == 1 and P.gpu_args(one, {}, 0, 2) == {"base_gpu_id": 0}
    with pytest.raises(ConfigError, match="tp_size x pp_size x dp_size = 3 GPUs.*8 processes"):
        P.Placement(local_rank=0, local_world=8, world=8, width=3)
    with pytest.raises(ConfigError, match="would use GPUs 0..1 but this process sees 1"):
        P.gpu_args(one, {}, 0, 1)


def test_every_engine_on_a_node_gets_its_own_ports_and_seed():
    ranks = _node(8)
    ports = [r["port"] for r in ranks]
    nccl = [r["nccl_port"] for r in ranks]
    assert ports == [30000 + 16 * e for e in range(8)] and nccl == [p + 1 for p in ports]
    # no port of one engine is another's, including the ZMQ ports SGLang derives for attention-DP (+233..+239)
    taken = [set([p, q, *range(p + 233, p + 240)]) for p, q in zip(ports, nccl)]
    assert sum(map(len, taken)) == len(set().union(*taken))
    seeds = [r["random_seed"] for r in ranks]
    assert len(set(seeds)) == 8 and seeds[0] == engine_seed(0, 0) and seeds[3] == engine_seed(0, 3)
    assert _node(8)[5]["random_seed"] == seeds[5]  # a pure function of (run seed, engine index)
    assert {r["random_seed"] for r in _node(8, node=1, nodes=2)}.isdisjoint(seeds)  # other node, other engines
    # a user port / seed is the base of the layout
    custom = _node(2, port=40000, random_seed=7)
    assert [r["port"] for r in custom] == [40000, 40016] and custom[1]["random_seed"] == engine_seed(7, 1)
    # dp replicas pick their torch.distributed ports themselves (a pinned one would collide inside the engine)
    assert "nccl_port" not in _node(2, dp_size=2)[0]


def test_generation_shards_keep_groups_whole_and_seeds_do_not_depend_on_the_shard():
    from pipeline import schema as S
    from pipeline.config import GenerateConfig
    from stages.generate import build_requests, shard_rows

    groups = [g for g in range(5) for _ in range(4)]  # 5 prompts x 4 samples
    ds = S.make_dataset({S.GROUP_ID: groups, S.SLOT: [i % 4 for i in range(20)], S.PROMPT_IDS: [[g] for g in groups],
                         S.PREFIX_IDS: [[] for _ in groups]})
    shards = [shard_rows(ds, i, 2) for i in range(2)]
    assert shards == [list(range(12)), list(range(12, 20))]  # groups 0-2 | 3-4, never split
    assert shard_rows(ds, None, 2) == [] and sorted(sum((shard_rows(ds, i, 3) for i in range(3)), [])) == list(range(20))
    for i in range(3):
        assert len({groups[r] for r in shard_rows(ds, i, 3)}) in (1, 2)
    cfg = GenerateConfig(max_response_tokens=8)
    whole = [r.seed for r in build_requests(ds, cfg, seed=1, step=2)]
    sharded = {r: q.seed for rows in shards for r, q in zip(rows, build_requests(ds.select(rows), cfg, seed=1, step=2,
                                                                                  row_ids=rows))}
    assert [sharded[r] for r in range(20)] == whole and len(set(whole)) == 20
    # today's main seeded rows by their index inside the shard: row 0 and row 12 drew the same seed
    local = [q.seed for rows in shards for q in build_requests(ds.select(rows), cfg, seed=1, step=2)]
    assert len(set(local)) < 20


def test_non_leading_ranks_hold_no_engine_but_walk_the_weight_stream(monkeypatch):
    import pipeline.backends.sglang as sg
    from pipeline.backends.placement import generation_shard
    from tests.test_backend_sglang import FakeEngine

    monkeypatch.setattr(sg, "installed_version", lambda: "sglang-0.5.23")
    member = SGLangBackend("m", engine_args={"device": "cpu", "tp_size": 2},
                           placement=P.Placement(rank=3, world=4, local_rank=3, local_world=4, width=2))
    assert member.engine is None and generation_shard(member, 3, 4) == (None, 2)
    assert member.generate([], SamplingParams()) == [] and member.version() == "sglang-0.5.23"
    walked = []
    monkeypatch.setattr(sg, "push_weights", lambda *a, **k: walked.append(k["pusher"]))
    member.sync_weights(tiny_qwen2())
    member.release(), member.resume(), member.flush_cache(), member.shutdown()
    assert walked == [False]
    with pytest.raises(RuntimeError, match="runs no SGLang engine"):
        SGLangBackend("m", engine_args={"device": "cpu", "tp_size": 2}, placement=P.Placement(
            rank=1, world=2, local_rank=1, local_world=2, width=2)).generate([GenerationRequest([1], [], 2, 0)],
                                                                              SamplingParams())
    leader = SGLangBackend("m", engine=FakeEngine(), placement=P.Placement(rank=2, world=4, local_rank=2,
                                                                           local_world=4, width=2))
    assert generation_shard(leader, 2, 4) == (1, 2)
    assert generation_shard(object(), 2, 4) == (2, 4)  # transformers backend: one shard per process


def test_the_policy_config_patch_reaches_the_engine():
    ov = model_overrides(40000.0, 16384)
    assert ov == {"rope_parameters": {"rope_theta": 40000.0}, "max_position_embeddings": 16384}
    assert model_overrides(None, None) == {}
    args = engine_args_for({"device": "cpu"}, model_path="m", seed=0, overrides=ov, where=P.Placement(), cuda=False)
    assert json.loads(args["json_model_override_args"]) == ov
    assert "json_model_override_args" not in engine_args_for({}, model_path="m", seed=0, overrides={},
                                                             where=P.Placement(), cuda=False)
    merged = engine_args_for({"json_model_override_args": '{"sliding_window": null}'}, model_path="m", seed=0,
                             overrides=ov, where=P.Placement(), cuda=False)
    assert json.loads(merged["json_model_override_args"]) == {**ov, "sliding_window": None}
    with pytest.raises(ConfigError, match="json_model_override_args sets max_position_embeddings=4096"):
        engine_args_for({"json_model_override_args": {"max_position_embeddings": 4096}}, model_path="m", seed=0,
                        overrides=ov, where=P.Placement(), cuda=False)
    # the backend takes it from the model section
    from pipeline.config import load_config

    cfg = load_config("quickstart", ["generate.backend=sglang", "model.rope_theta=40000",
                                     "model.max_position_embeddings=16384"])
    seen = {}
    orig = SGLangBackend.__init__

    def spy(self, *a, **k):
        seen.update(k)
        orig(self, *a, engine=object(), **{x: v for x, v in k.items() if x != "engine"})

    try:
        SGLangBackend.__init__ = spy
        SGLangBackend.from_config(cfg.generate, model_path="m", seed=0, model_cfg=cfg.model)
    finally:
        SGLangBackend.__init__ = orig
    assert seen["overrides"] == ov


def test_weight_group_layout_counts_tp_ranks_and_refuses_dp_and_pp():
    from pipeline.backends.sglang_server import weight_group_layout

    assert weight_group_layout([{"tp_size": 2}, {"tp_size": 1}], ["a", "b"]) == (4, [1, 3])
    for bad in ({"tp_size": 2, "dp_size": 2}, {"tp_size": 1, "pp_size": 2}):
        with pytest.raises(ConfigError, match="generate.sglang.weight_sync=distributed: the server b runs"):
            weight_group_layout([{"tp_size": 1}, bad], ["a", "b"])


# ------------------------------------------------------------------------------------ fake servers


class _Server(BaseHTTPRequestHandler):
    log_message = lambda *a: None  # noqa: E731

    def _send(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send({"version": "0.5.23", "tp_size": 1, "json_model_override_args": self.server.overrides})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        with self.server.lock:
            self.server.seen.append((self.path, time.monotonic(), body))
        if self.path == "/update_weights_from_disk":
            time.sleep(0.3)  # a reload takes a while: ranks that do not wait would generate meanwhile
        if self.path == "/generate":
            self._send([{"output_ids": [ids[-1] + 100], "meta_info": {
                "finish_reason": {"type": "length"}, "output_token_logprobs": [(-1.0, ids[-1] + 100, None)]}}
                for ids in body["input_ids"]])
        else:
            self._send({"success": True, "message": "ok"})


@pytest.fixture()
def servers():
    out = []
    for _ in range(2):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
        srv.seen, srv.lock, srv.overrides = [], threading.Lock(), "{}"
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        out.append(srv)
    yield out
    for srv in out:
        srv.shutdown()
        srv.server_close()


def _urls(servers):
    return [f"http://127.0.0.1:{s.server_address[1]}" for s in servers]


def test_servers_must_run_the_policy_config_patch(servers):
    from pipeline.backends.sglang_server import SGLangServerBackend

    ov = model_overrides(40000.0, 16384)
    with pytest.raises(ConfigError, match=r"launched without the policy's config patch.*--json-model-override-args"):
        SGLangServerBackend(_urls(servers), overrides=ov)
    for s in servers:
        s.overrides = json.dumps({"rope_parameters": {"rope_theta": 40000.0, "rope_type": "default"},
                                  "max_position_embeddings": 16384})
    SGLangServerBackend(_urls(servers), overrides=ov)  # accepted


def test_a_router_gets_the_batch_in_chunks_it_can_spread(servers):
    from pipeline.backends.sglang_server import ROUTER_CHUNKS_PER_SERVER, SGLangServerBackend

    router = _urls(servers)[0]
    backend = SGLangServerBackend(_urls(servers), router_url=router)
    reqs = [GenerationRequest([i], [], 4, seed=i) for i in range(20)]
    outs = backend.generate(reqs, SamplingParams(1.0))
    assert [o.token_ids for o in outs] == [[i + 100] for i in range(20)]
    posts = [b["input_ids"] for p, _, b in servers[0].seen if p == "/generate"]
    assert len(posts) == ROUTER_CHUNKS_PER_SERVER * 2 == 8  # today's main: one POST of all 20
    assert sorted(x for p in posts for x in p) == [[i] for i in range(20)]
    assert all(len(p) in (2, 3) for p in posts)


def _sync_worker(rank: int, world: int, port: int, urls: list[str], out: str) -> None:
    import torch.distributed as dist

    from pipeline.backends.sglang_server import SGLangServerBackend

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        backend = SGLangServerBackend(urls, weight_sync="disk")
        backend.sync_weights(None, checkpoint="/ckpt/step-000001")
        t = time.monotonic()
        backend.generate([GenerationRequest([rank], [], 2, seed=rank)], SamplingParams(1.0))
        with open(f"{out}.{rank}", "w") as f:
            json.dump({"generated_at": t}, f)
    finally:
        dist.destroy_process_group()


def test_only_rank0_updates_servers_and_the_others_wait(servers, tmp_path):
    import torch.multiprocessing as mp

    from pipeline.backends.sglang_server import free_port

    mp.spawn(_sync_worker, args=(2, free_port("127.0.0.1"), _urls(servers), str(tmp_path / "w")), nprocs=2)
    started = [json.loads((tmp_path / f"w.{r}").read_text())["generated_at"] for r in range(2)]
    for s in servers:
        paths = [p for p, _, _ in s.seen]
        assert paths.count("/update_weights_from_disk") == 1  # one reload per step, not one per rank
        assert paths.count("/flush_cache") == 1
        flushed = max(t for p, t, _ in s.seen if p == "/flush_cache")
        assert all(t > flushed for t in started)  # no rank generated before every server was updated and flushed
