"""SGLang adapter bookkeeping without SGLang: bucketing, naming, call order of the weight-sync lifecycle,
request/response conversion, the server backend's HTTP plumbing, config checks, and the engine/trainer
mismatch check. A fake engine stands in for `sgl.Engine` here; the real engine is exercised by the
conformance tier (tests/sglang, `make test-sglang`)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from pipeline.backends import Completion, GenerationRequest, SamplingParams
from pipeline.backends.sglang import SGLangBackend
from pipeline.backends.sglang_protocol import (completion_from_output, engine_seed, merge_engine_args,
                                               sampling_dict)
from pipeline.backends.weights import buckets, checkpoint_name, full_tensors
from pipeline.errors import ConfigError, UserError
from tests.conftest import tiny_qwen2


def _t(numel: int) -> torch.Tensor:
    return torch.zeros(numel, dtype=torch.float32)  # 4 bytes per element


def test_buckets_are_bounded_ordered_and_complete():
    # sizes 4, 4, 8, 20, 4 bytes with a 12-byte limit: a+b = 8 (c would make 16) | c = 8 (d would make 28)
    # | d = 20 alone (larger than the limit) | e = 4
    named = [("a", _t(1)), ("b", _t(1)), ("c", _t(2)), ("d", _t(5)), ("e", _t(1))]
    groups = [[n for n, _ in g] for g in buckets(named, 12)]
    assert groups == [["a", "b"], ["c"], ["d"], ["e"]]
    assert [[n for n, _ in g] for g in buckets(named, 10 ** 6)] == [["a", "b", "c", "d", "e"]]
    with pytest.raises(ValueError):
        list(buckets(named, 0))


def test_full_tensors_use_checkpoint_names_and_skip_the_tied_head():
    model = tiny_qwen2()
    wrapped = torch.nn.Module()
    wrapped.module = model  # what DDP looks like: names gain a `module.` prefix
    names = [n for n, _ in full_tensors(wrapped)]
    expected = [n for n in model.state_dict() if n != "lm_head.weight"]
    assert names == expected and "lm_head.weight" not in names
    assert checkpoint_name("module._orig_mod.model.layers.0._checkpoint_wrapped_module.mlp.up_proj.weight") == \
        "model.layers.0.mlp.up_proj.weight"
    tensors = dict(full_tensors(model))
    assert tensors["model.embed_tokens.weight"].data_ptr() == model.model.embed_tokens.weight.data_ptr()  # no copy


class FakeEngine:
    """Records the calls the adapter makes, in order; answers like sgl.Engine 0.5.23."""

    version = "sglang-fake"

    def __init__(self, fail_push: bool = False, busy_flushes: int = 0):
        self.busy_flushes = busy_flushes  # flush_cache answers success=False this often (scheduler busy)
        self.calls: list[tuple] = []
        self.fail_push = fail_push
        self.pushed: list[list[str]] = []

    def generate(self, input_ids, sampling_params, return_logprob):
        self.calls.append(("generate", len(input_ids)))
        outs = []
        for ids, sp in zip(input_ids, sampling_params):
            n = min(3, sp["max_new_tokens"])
            toks = [ids[-1] + k + 1 for k in range(n)]
            outs.append({"output_ids": toks, "meta_info": {
                "finish_reason": {"type": "length", "length": n},
                "output_token_logprobs": [(-0.5 * (k + 1), t, None) for k, t in enumerate(toks)]}})
        return outs

    def begin_weight_update(self):
        self.calls.append(("begin",))
        return True, "ok"

    def update_weights_from_tensor(self, named, flush_cache=True):
        self.calls.append(("push", len(named), flush_cache))
        self.pushed.append([n for n, _ in named])
        return (False, "boom") if self.fail_push else (True, "ok")

    def end_weight_update(self):
        self.calls.append(("end",))
        return True, "ok"

    def update_weights_from_disk(self, path):
        self.calls.append(("disk", path))
        return True, "ok", 0

    def release_memory_occupation(self, tags=None):
        self.calls.append(("release", tags))

    def resume_memory_occupation(self, tags=None):
        self.calls.append(("resume", tags))

    def flush_cache(self):
        self.calls.append(("flush",))
        busy, self.busy_flushes = self.busy_flushes > 0, max(0, self.busy_flushes - 1)
        return type("FlushCacheReqOutput", (), {"success": not busy})()

    def shutdown(self):
        self.calls.append(("shutdown",))


def test_release_then_sync_resumes_weights_pushes_buckets_resumes_cache_and_flushes():
    model = tiny_qwen2()
    fake = FakeEngine(busy_flushes=2)
    backend = SGLangBackend("unused", engine=fake, bucket_bytes=4096)
    backend.release()
    backend.release()  # idempotent: one call to the engine
    backend.sync_weights(model)
    kinds = [c[0] for c in fake.calls]
    n_push = kinds.count("push")
    # release waits for an idle scheduler: flush until it succeeds (2 busy answers, then success)
    assert kinds == ["flush"] * 3 + ["release", "resume", "begin"] + ["push"] * n_push + ["end", "resume", "flush"]
    assert fake.calls[3] == ("release", None)  # everything: KV cache, weights, CUDA graphs
    assert fake.calls[4] == ("resume", ["weights"]) and fake.calls[-2] == ("resume", ["kv_cache", "cuda_graph"])
    assert all(c[2] is False for c in fake.calls if c[0] == "push")  # one flush at the end, not per bucket
    sizes = dict((n, t.numel() * 4) for n, t in model.state_dict().items())
    assert n_push == backend.last_push["buckets"] > 1
    for names in fake.pushed:  # each bucket within the limit unless it is a single larger tensor
        assert sum(sizes[n] for n in names) <= 4096 or len(names) == 1
    assert [n for b in fake.pushed for n in b] == [n for n in model.state_dict() if n != "lm_head.weight"]
    fake.calls.clear()
    backend.sync_weights(model)  # not released: no resume calls
    assert [c[0] for c in fake.calls if c[0] != "push"] == ["begin", "end", "flush"]


def test_failed_tensor_push_falls_back_to_the_checkpoint_on_disk():
    fake = FakeEngine(fail_push=True)
    backend = SGLangBackend("unused", engine=fake)
    backend.sync_weights(tiny_qwen2(), checkpoint="/ckpt/step-000003")
    kinds = [c[0] for c in fake.calls]
    assert kinds == ["begin", "push", "end", "disk", "flush"]  # the session is closed before the fallback
    assert fake.calls[3] == ("disk", "/ckpt/step-000003")
    with pytest.raises(RuntimeError, match="boom"):
        SGLangBackend("unused", engine=FakeEngine(fail_push=True)).sync_weights(tiny_qwen2())


def test_disk_mode_and_shutdown():
    fake = FakeEngine()
    backend = SGLangBackend("unused", engine=fake, weight_sync="disk")
    backend.sync_weights(tiny_qwen2(), checkpoint="/ckpt")
    backend.shutdown()
    backend.shutdown()
    assert [c[0] for c in fake.calls] == ["disk", "flush", "shutdown"]
    with pytest.raises(RuntimeError, match="shut down"):
        backend.generate([GenerationRequest([1], [], 2, 0)], SamplingParams())


def test_generate_sends_prompt_plus_prefix_and_converts_in_order():
    fake = FakeEngine()
    backend = SGLangBackend("unused", engine=fake)
    reqs = [GenerationRequest([1, 2], [3], 5, seed=1), GenerationRequest([4], [], 0, seed=2),
            GenerationRequest([7], [8, 9], 2, seed=3)]
    outs = backend.generate(reqs, SamplingParams(1.0))
    assert fake.calls == [("generate", 2)]  # the zero-budget request never reaches the engine
    assert outs[0] == Completion([4, 5, 6], [-0.5, -1.0, -1.5], "length")  # continues after the prefix (3)
    assert outs[1] == Completion([], [], "length")
    assert outs[2].token_ids == [10, 11]


def test_sampling_params_and_output_parsing():
    req = GenerationRequest([1], [2], 7, seed=2 ** 64 + 5)
    sp = sampling_dict(req, SamplingParams(0.7, top_p=0.9, top_k=0, stop_token_ids=[2, 9]))
    assert sp == {"max_new_tokens": 7, "temperature": 0.7, "top_p": 0.9, "top_k": -1, "stop_token_ids": [2, 9],
                  "min_new_tokens": 0, "sampling_seed": 5,
                  "skip_special_tokens": False}  # 2**64 + 5 mod 2**63 = 5; top_k 0 -> -1
    # min_new_tokens is capped by the request's budget: min(10, 7) = 7
    assert sampling_dict(req, SamplingParams(min_new_tokens=10))["min_new_tokens"] == 7
    out = {"output_ids": [5, 2], "meta_info": {"finish_reason": {"type": "stop", "matched": 2},
                                               "output_token_logprobs": [(-0.1, 5, None), (-0.2, 2, None)]}}
    assert completion_from_output(out, req) == Completion([5, 2], [-0.1, -0.2], "stop")
    with pytest.raises(RuntimeError, match="did not finish"):
        completion_from_output({"output_ids": [], "meta_info": {"finish_reason": {"type": "abort"}}}, req)
    with pytest.raises(RuntimeError, match="log-probs"):
        completion_from_output({"output_ids": [5], "meta_info": {"finish_reason": {"type": "length"},
                                                                 "output_token_logprobs": []}}, req)
    assert engine_seed(0) == engine_seed(0) != engine_seed(1) and 0 <= engine_seed(0) < 2 ** 31


def test_engine_args_cannot_contradict_what_the_adapter_needs():
    args = merge_engine_args({"device": "cpu", "dtype": "float32"}, {"dtype": "bfloat16", "tp_size": 2},
                             {"skip_tokenizer_init": True})
    assert args == {"device": "cpu", "dtype": "bfloat16", "tp_size": 2, "skip_tokenizer_init": True}
    with pytest.raises(ConfigError, match="generate.sglang.engine_args.skip_tokenizer_init"):
        merge_engine_args({}, {"skip_tokenizer_init": False}, {"skip_tokenizer_init": True})


def test_config_fields():
    from pipeline.config import load_config

    cfg = load_config("quickstart", ["generate.backend=sglang",
                                     "generate.sglang.engine_args={tp_size: 2, dp_size: 1}"])
    assert cfg.generate.sglang.engine_args == {"tp_size": 2, "dp_size": 1}
    with pytest.raises(ConfigError, match="generate.sglang.server_urls"):
        load_config("quickstart", ["generate.backend=sglang_server"])
    with pytest.raises(ConfigError, match="generate.sglang.weight_sync"):
        load_config("quickstart", ["generate.backend=sglang", "generate.sglang.weight_sync=distributed"])


def test_missing_sglang_is_one_line_naming_the_install(monkeypatch):
    import importlib.util

    from pipeline import imports

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sglang" else real(name, *a))
    assert not imports.is_sglang_available()
    with pytest.raises(UserError, match=r"pip install -e \.\[sglang\]"):
        imports.require("sglang")
    with pytest.raises(UserError, match=r"pip install -e \.\[sglang\]"):
        SGLangBackend("some/model", engine_args={"device": "cpu"})


def test_a_run_with_sglang_missing_stops_before_any_stage(monkeypatch, tmp_path):
    import importlib.util

    from pipeline.config import load_config
    from pipeline.run import train

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sglang" else real(name, *a))
    with pytest.raises(UserError, match=r"generate.backend: sglang needs sglang.*pip install -e \.\[sglang\]"):
        train(load_config("quickstart", ["generate.backend=sglang"]), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing was written


def test_no_module_imports_sglang_at_import_time():
    code = ("import importlib, pkgutil, sys, pipeline, stages, evaluation\n"
            "for pkg in (pipeline, stages, evaluation):\n"
            "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
            "        importlib.import_module(m.name)\n"
            "print(sorted(k for k in sys.modules if k == 'sglang' or k.startswith('sglang.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------------------- server backend


class _Handler(BaseHTTPRequestHandler):
    log_message = lambda *a: None  # noqa: E731

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200, {"version": "0.5.23", "tp_size": 1})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        self.server.seen.append((self.path, body))
        if self.path == "/generate":
            outs = [{"output_ids": [ids[-1] + 100], "meta_info": {"finish_reason": {"type": "length"},
                                                                  "output_token_logprobs": [(-1.0, ids[-1] + 100, None)]}}
                    for ids in body["input_ids"]]
            self._send(200, outs)
        elif self.path == "/flush_cache" and self.server.busy_flushes > 0:  # a finished batch not yet cleared
            self.server.busy_flushes -= 1
            self._send(400, {"success": False, "message": "pending requests"})
        elif self.path == "/update_weights_from_disk" and body["model_path"] == "/bad":
            self._send(400, {"success": False, "message": "no such checkpoint"})
        else:
            self._send(200, {"success": True, "message": "ok"})


@pytest.fixture()
def fake_servers():
    servers = []
    for _ in range(2):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        srv.seen = []
        srv.busy_flushes = 0
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    yield servers
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_server_backend_splits_requests_keeps_order_and_pushes_to_every_server(fake_servers):
    from pipeline.backends.sglang_server import SGLangServerBackend

    urls = [f"http://127.0.0.1:{s.server_address[1]}" for s in fake_servers]
    backend = SGLangServerBackend(urls)
    assert backend.version() == "sglang-0.5.23"
    reqs = [GenerationRequest([i], [i + 1] if i % 2 else [], 4, seed=i) for i in range(5)]
    outs = backend.generate(reqs, SamplingParams(1.0))
    assert [o.token_ids for o in outs] == [[100], [102], [102], [104], [104]]  # last input id + 100, in order
    gen = [[b["input_ids"] for p, b in s.seen if p == "/generate"] for s in fake_servers]
    assert gen == [[[[0], [1, 2], [2]]], [[[3, 4], [4]]]]  # contiguous blocks 0-2 | 3-4 (prompt + prefix)
    fake_servers[1].busy_flushes = 2  # the second server answers 400 twice before its flush succeeds
    backend.sync_weights(tiny_qwen2(), checkpoint="/ckpt/step-000002")
    assert [p for p, _ in fake_servers[1].seen][-4:] == ["/update_weights_from_disk"] + ["/flush_cache"] * 3
    assert [p for p, _ in fake_servers[0].seen][-2:] == ["/update_weights_from_disk", "/flush_cache"]
    for s in fake_servers:
        assert [b for p, b in s.seen if p == "/update_weights_from_disk"] == [{"model_path": "/ckpt/step-000002"}]
    with pytest.raises(RuntimeError, match="HTTP 400.*no such checkpoint"):
        backend.sync_weights(tiny_qwen2(), checkpoint="/bad")
    with pytest.raises(ConfigError, match="weight_sync=disk"):
        backend.sync_weights(tiny_qwen2(), checkpoint=None)


def test_server_backend_unreachable_is_a_clear_error():
    from pipeline.backends.sglang_server import SGLangServerBackend, free_port

    with pytest.raises(RuntimeError, match="cannot reach the SGLang server"):
        SGLangServerBackend([f"http://127.0.0.1:{free_port('127.0.0.1')}"])
    with pytest.raises(ConfigError, match="generate.sglang.server_urls"):
        SGLangServerBackend([])
