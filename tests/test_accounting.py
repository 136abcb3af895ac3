"""Per-stage accounting: model FLOPs by hand, per-stage peak memory, tokens of a stage's output."""

import numpy as np
import pytest

from pipeline import accounting
from tests.conftest import tiny_qwen2


def test_matmul_params_and_flops_by_hand():
    model = tiny_qwen2(vocab_size=40)  # hidden 32, 2 layers, MLP 64, 2 heads of 16, 1 kv head, tied head
    # per layer: q 32*32+32, k 32*16+16, v 32*16+16, o 32*32, MLP 3*32*64, 2 norms 2*32
    #   = 1056 + 528 + 528 + 1024 + 6144 + 64 = 9344; 2 layers 18688 + final norm 32 + tied head 40*32 1280
    assert accounting.matmul_params(model) == 20000
    # forward per token at context 10: 2 * 20000 + 2 * 2 layers * 32 * 10 = 41280
    assert accounting.forward_flops_per_token(model, 10) == 41280
    accounting.measured_peak_flops.cache_clear()
    out = accounting.update_flops(model, tokens=100, sequences=5, seconds=2.0, precision="fp32")
    # context 100 / 5 / 2 = 10; forward + backward = 3 forwards * 100 tokens * 41280 = 12,384,000 FLOPs over 2 s
    assert out["model_flops"] == 12_384_000 and out["flops_per_s"] == 6_192_000
    assert out["peak_flops_per_s"] > 0 and out["mfu"] == pytest.approx(6_192_000 / out["peak_flops_per_s"], rel=1e-3)
    # with the separate pre-update log-prob pass: 4 forwards -> 16,512,000
    assert accounting.update_flops(model, 100, 5, 2.0, "fp32", forwards=4.0)["model_flops"] == 16_512_000


def test_untied_embedding_is_not_counted():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    # the tied model's 20000, plus an untied head of 40*32 = 1280; the input embedding is a lookup
    assert accounting.matmul_params(Qwen2ForCausalLM(cfg)) == 20000


_PEAKS = """
import json, sys
import numpy as np
sys.path.insert(0, {root!r})
from pipeline import accounting, hostmem
if sys.argv[1] == "keep":
    hostmem.keep_freed_memory()
if not accounting.reset_peak():
    print(json.dumps(None))
    raise SystemExit
big = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
del big
first = accounting.peak_memory(True)
accounting.reset_peak()
print(json.dumps([first, accounting.peak_memory(True)]))
"""


@pytest.mark.parametrize("host_memory", ["release", "keep"])
def test_peak_memory_is_per_stage(host_memory):
    import json
    import subprocess
    import sys
    from pathlib import Path

    # a fresh process each: whether freed memory is kept is process-wide (pipeline/hostmem.py)
    code = _PEAKS.format(root=str(Path(__file__).resolve().parent.parent))
    out = json.loads(subprocess.run([sys.executable, "-c", code, host_memory], capture_output=True, text=True,
                                    check=True).stdout.strip().splitlines()[-1])
    if out is None:
        pytest.skip("peak RSS cannot be reset here")
    first, second = out
    if host_memory == "release" or not accounting.hostmem._glibc():
        # the 64 MiB were freed before the second window opened, so its peak is at least 48 MiB lower
        assert second["peak_rss_scope"] == "stage" and second["peak_rss_mb"] < first["peak_rss_mb"] - 48
    else:
        # kept: the freed 64 MiB stay resident into the next stage's window, and the scope says so
        assert first["peak_rss_scope"] == second["peak_rss_scope"] == "stage+kept"
        assert second["peak_rss_mb"] > first["peak_rss_mb"] - 16


def test_dataset_tokens_counts_id_columns():
    from datasets import Dataset

    ds = Dataset.from_dict({"prompt_ids": [[1, 2], [3]], "completion_ids": [[4, 5, 6], []], "reward": [1.0, 0.0]})
    assert accounting.dataset_tokens(ds) == 2 + 1 + 3 + 0
    assert accounting.dataset_tokens(None) == 0


def test_rollout_flops_and_run_totals_by_hand():
    model = tiny_qwen2(vocab_size=40)  # 20000 matmul params, 2 layers, hidden 32 (see above)
    # 60 prefill + 40 generated tokens over 5 sequences: context 100 / 5 / 2 = 10 -> 41280 FLOPs per token
    assert accounting.rollout_flops(model, 60, 40, 5) == 100 * 41280
    rows = [{"phase": "sft", "model_flops": 10.0, "tokens": 4},
            {"phase": "rl", "model_flops": 30.0, "tokens": 6, "rollout_flops": 5.0, "rollout_tokens": 2},
            {"phase": "rl", "model_flops": 30.0, "tokens": 6, "rollout_flops": 7.0, "rollout_tokens": 3}]
    c = accounting.run_compute(rows)
    assert c == {"update_flops": 70.0, "update_tokens": 16.0, "rollout_flops": 12.0, "rollout_tokens": 5.0,
                 "total_flops": 82.0, "sft_steps": 1.0, "rl_steps": 2.0}
