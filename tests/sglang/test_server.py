"""`SGLangServerBackend` against a real SGLang server (`python -m sglang.launch_server`) on loopback.

The server runs the micro model on CPU in float32; the test talks to it over HTTP only (the backend
module never imports sglang). Weights go by disk checkpoint and by a gloo process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.backends import SamplingParams
from pipeline.backends.hf import TransformersBackend
from tests.sglang.helpers import ids, load_fp32, perturbed, record


@pytest.fixture(scope="module")
def server(micro_path, tmp_path_factory):
    from pipeline.backends.sglang_server import free_port, http_json

    port = free_port("127.0.0.1")
    log = tmp_path_factory.mktemp("sglang-server") / "server.log"
    cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", str(micro_path), "--host", "127.0.0.1",
           "--port", str(port), "--device", "cpu", "--attention-backend", "torch_native", "--disable-cuda-graph",
           "--disable-overlap-schedule", "--skip-tokenizer-init", "--dtype", "float32", "--mem-fraction-static", "0.1",
           "--max-total-tokens", "8192", "--context-length", "1024", "--random-seed", "0", "--log-level", "warning"]
    env = {**os.environ, "SGLANG_USE_CPU_ENGINE": "1"}
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 240
        while True:
            try:
                http_json(f"{url}/health", timeout=5)
                break
            except RuntimeError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the SGLang server did not come up; log:\n{log.read_text()[-3000:]}")
                time.sleep(1)
        record("server_boot_seconds", round(time.perf_counter() - t0, 1))
        yield url
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """End the server and its workers: the process group it leads (start_new_session), by its id."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def model(micro_path):
    return load_fp32(micro_path)


def greedy(stop_ids):
    return SamplingParams(temperature=0.0, stop_token_ids=stop_ids)


def reference(model, tokenizer, requests, stop_ids):
    return TransformersBackend(model, pad_token_id=tokenizer.pad_token_id).generate(requests, greedy(stop_ids))


def test_server_generates_like_the_transformers_backend(server, model, micro_tokenizer, micro_requests, stop_ids):
    from pipeline.backends.sglang_server import SGLangServerBackend

    backend = SGLangServerBackend([server])
    assert backend.version() == "sglang-0.5.23"
    outs = backend.generate(micro_requests, greedy(stop_ids))
    assert ids(outs) == ids(reference(model, micro_tokenizer, micro_requests, stop_ids))
    sampled = backend.generate(micro_requests, SamplingParams(1.0, stop_token_ids=stop_ids))
    assert all(len(o.token_ids) == len(o.logprobs) <= r.max_new_tokens for r, o in zip(micro_requests, sampled))
    # two "servers" (the same one twice): requests are split, answers come back in request order
    twice = SGLangServerBackend([server, server]).generate(micro_requests, greedy(stop_ids))
    assert ids(twice) == ids(outs)


def test_server_weight_sync_from_disk(server, model, micro_path, micro_tokenizer, micro_requests, stop_ids, tmp_path):
    from pipeline.backends.sglang_server import SGLangServerBackend

    backend = SGLangServerBackend([server], weight_sync="disk")
    backend.flush_cache()
    before = backend.generate(micro_requests, greedy(stop_ids))
    other = perturbed(model, seed=3)
    other.save_pretrained(tmp_path)
    backend.sync_weights(other, checkpoint=str(tmp_path))
    changed = backend.generate(micro_requests, greedy(stop_ids))
    assert ids(changed) != ids(before)
    assert ids(changed) == ids(reference(other, micro_tokenizer, micro_requests, stop_ids))
    backend.sync_weights(model, checkpoint=str(micro_path))
    restored = backend.generate(micro_requests, greedy(stop_ids))
    assert ids(restored) == ids(before) and [o.logprobs for o in restored] == [o.logprobs for o in before]


def test_server_weight_sync_over_a_process_group(server, model, micro_tokenizer, micro_requests, stop_ids):
    from pipeline.backends.sglang_server import SGLangServerBackend

    backend = SGLangServerBackend([server], weight_sync="distributed", bucket_bytes=16 * 1024)
    try:
        backend.flush_cache()
        before = backend.generate(micro_requests, greedy(stop_ids))
        other = perturbed(model, seed=5)
        t0 = time.perf_counter()
        backend.sync_weights(other)
        record("distributed_push", {**backend.last_push, "seconds_with_flush": round(time.perf_counter() - t0, 3)})
        assert backend.last_push["buckets"] >= 3
        changed = backend.generate(micro_requests, greedy(stop_ids))
        assert ids(changed) == ids(reference(other, micro_tokenizer, micro_requests, stop_ids))
        assert ids(changed) != ids(before)
        backend.sync_weights(model)
        restored = backend.generate(micro_requests, greedy(stop_ids))
        assert ids(restored) == ids(before) and [o.logprobs for o in restored] == [o.logprobs for o in before]
    finally:
        backend.shutdown()


def test_a_server_launched_without_the_policy_config_patch_is_refused(server):
    from pipeline.backends.sglang_protocol import model_overrides
    from pipeline.backends.sglang_server import SGLangServerBackend
    from pipeline.errors import ConfigError

    assert SGLangServerBackend([server])._info[0]["json_model_override_args"] == "{}"  # the field the check reads
    with pytest.raises(ConfigError, match="--json-model-override-args"):
        SGLangServerBackend([server], overrides=model_overrides(40000.0, 16384))


class _CountingProxy:
    """Forwards HTTP to the real server and records (path, time) of every POST that reaches it."""

    def __init__(self, target: str):
        import threading
        import urllib.error
        import urllib.request
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            log_message = lambda *a: None  # noqa: E731

            def _forward(self, body):
                req = urllib.request.Request(target + self.path, data=body, method=self.command,
                                             headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=600) as resp:
                        code, data = resp.status, resp.read()
                except urllib.error.HTTPError as e:
                    code, data = e.code, e.read()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._forward(None)

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                seen.append((self.path, time.monotonic()))
                self._forward(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _rank_worker(rank: int, world: int, port: int, url: str, ckpt: str, reqs: list, stops: list, out: str) -> None:
    import json

    import torch.distributed as dist

    from pipeline.backends import GenerationRequest
    from pipeline.backends.sglang_server import SGLangServerBackend

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        backend = SGLangServerBackend([url], weight_sync="disk")
        backend.sync_weights(None, checkpoint=ckpt)
        t = time.monotonic()
        outs = backend.generate([GenerationRequest(**r) for r in reqs], SamplingParams(0.0, stop_token_ids=stops))
        with open(f"{out}.{rank}", "w") as f:
            json.dump({"t": t, "ids": [o.token_ids for o in outs]}, f)
    finally:
        dist.destroy_process_group()


def test_two_training_ranks_update_the_server_once_and_wait_for_it(server, model, micro_path, micro_tokenizer,
                                                                     micro_requests, stop_ids, tmp_path):
    """Server mode under 2 gloo processes: one disk reload and one flush reach the server (rank 0's), and
    neither rank generates before they are done; both then decode with the new weights."""
    import json

    import torch.multiprocessing as mp

    from pipeline.backends.sglang_server import SGLangServerBackend, free_port

    other = perturbed(model, seed=13)
    other.save_pretrained(tmp_path / "ckpt")
    proxy = _CountingProxy(server)
    try:
        mp.spawn(_rank_worker, nprocs=2, args=(2, free_port("127.0.0.1"), proxy.url, str(tmp_path / "ckpt"),
                                               [vars(r) for r in micro_requests], list(stop_ids), str(tmp_path / "w")))
    finally:
        proxy.close()
        SGLangServerBackend([server]).sync_weights(model, checkpoint=str(micro_path))  # the next tests' weights
    paths = [p for p, _ in proxy.seen]
    assert paths.count("/update_weights_from_disk") == 1  # today's main: one per rank
    flushed = max(t for p, t in proxy.seen if p == "/flush_cache")
    outs = [json.loads((tmp_path / f"w.{r}").read_text()) for r in range(2)]
    assert all(o["t"] > flushed for o in outs)
    want = ids(reference(other, micro_tokenizer, micro_requests, stop_ids))
    assert outs[0]["ids"] == want and outs[1]["ids"] == want
