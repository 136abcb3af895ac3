"""Per-stage accounting: peak memory of one stage, tokens it handled, and the update's achieved FLOP/s
against the machine's measured matmul peak.

Peak memory is per stage, not per process: on CPU the kernel's peak-RSS mark (VmHWM) is reset when a
stage starts (`/proc/self/clear_refs`) and read when it ends; on CUDA the allocator's peak is reset
and `max_memory_allocated` read. Where the mark cannot be reset, the process's lifetime peak is
reported and `peak_rss_scope` says so (`process`). A CPU run that keeps freed memory in the process
(`train.host_memory=keep`, pipeline/hostmem.py) starts each stage with what earlier stages freed still
resident, so its stage peak is an upper bound on the stage's own need: `stage+kept`.

Model FLOPs per token of a forward pass: 2 x (parameters in matmuls: every weight except the input
embedding, which is a lookup, unless it is tied to the output head) + 2 x layers x hidden x context
(attention scores and values over a causal context of `context` keys on average). The update runs
one forward for the pre-update log-probs and one forward + backward (3 forwards) for the loss: 4
forwards per token. Recomputation (chunked log-probs, gradient checkpointing) is not counted, as is
the convention for model FLOP utilisation (MFU).
"""

from __future__ import annotations

import functools
import resource
import time
from typing import Any

import torch

from pipeline import hostmem
from pipeline.precision import effective


def _cuda() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def reset_peak() -> bool:
    """Start a stage's memory window. False where the CPU mark cannot be reset."""
    if _cuda():
        torch.cuda.reset_peak_memory_stats()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _vm_hwm_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_memory(reset_ok: bool) -> dict[str, Any]:
    """The stage's peak memory: RSS in MiB (and CUDA max allocated where CUDA is in use)."""
    hwm = _vm_hwm_mb() if reset_ok else None
    out: dict[str, Any] = {
        "peak_rss_mb": round(hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_scope": "process" if hwm is None else "stage+kept" if hostmem.kept() else "stage",
    }
    if _cuda():
        out["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def dataset_tokens(ds: Any) -> int:
    """Tokens in the token-id columns (`*_ids`) of a stage's output."""
    if ds is None:
        return 0
    total = 0
    for col in ds.column_names:
        if col.endswith("_ids"):
            total += sum(len(x) for x in ds[col])
    return total


def matmul_params(model: Any) -> int:
    """Parameters that take part in matmuls (all but an untied input embedding)."""
    inner = getattr(model, "module", model)
    total = sum(p.numel() for p in inner.parameters())
    emb, head = inner.get_input_embeddings(), inner.get_output_embeddings()
    if emb is not None and (head is None or head.weight is not emb.weight):
        total -= emb.weight.numel()
    return total


def forward_flops_per_token(model: Any, context: float) -> float:
    cfg = getattr(getattr(model, "module", model), "config", None)
    layers, hidden = getattr(cfg, "num_hidden_layers", 0), getattr(cfg, "hidden_size", 0)
    return 2.0 * matmul_params(model) + 2.0 * layers * hidden * context


@functools.lru_cache(maxsize=None)
def measured_peak_flops(device: str = "cpu", dtype: torch.dtype = torch.float32, n: int | None = None,
                        repeats: int = 5) -> float:
    """Best FLOP/s of an n x n matmul on this device and dtype (the achievable peak, measured once per
    process). n is 1024 on CPU and 8192 on CUDA, timed over 10 back-to-back products per repeat: one 1024
    product on a GPU is mostly launch latency (an H200 read 93 TFLOP/s that way, a fifth of its bf16 peak,
    and the update's MFU came out at 1.8)."""
    cuda = device == "cuda"
    n = n or (8192 if cuda else 1024)
    inner = 10 if cuda else 1
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(inner):
            a @ b
        if cuda:
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / inner)
    return 2.0 * n ** 3 / best


def update_flops(model: Any, tokens: int, sequences: int, seconds: float, precision: str,
                 forwards: float = 3.0) -> dict[str, float]:
    """Achieved model FLOP/s of an update over `tokens` in `sequences`, and its fraction of the peak.
    `forwards`: forward-pass equivalents per token, 3 for forward + backward, 4 when a separate no-grad
    pre-update log-prob pass ran as well."""
    device = next(getattr(model, "module", model).parameters()).device.type
    context = tokens / max(1, sequences) / 2  # causal: on average half the sequence is attended to
    flops = forwards * tokens * forward_flops_per_token(model, context)
    peak = measured_peak_flops(device, torch.bfloat16 if effective(precision, device) == "bf16" else torch.float32)
    achieved = flops / max(seconds, 1e-9)
    return {"model_flops": flops, "flops_per_s": round(achieved, 1), "peak_flops_per_s": round(peak, 1),
            "mfu": float(f"{achieved / peak:.4g}")}


# ---------------------------------------------------------------------------------------------------
# compute charged to a run (what scripts/compare_methods.py matches budgets on)
#
# Every step is charged what it spends: an update its model FLOPs (`model_flops`, above: 3 forward
# equivalents per trained token, 4 with the separate pre-update log-prob pass; SFT steps included), a
# generation its rollout tokens (tokens the engine generated) and their FLOPs: one forward per token the
# engine processed (prompt and demonstration prefix once at prefill, then every generated token; the KV
# cache makes each a single forward). Evaluation is not charged: every method runs the same one.


def rollout_flops(model: Any, prompt_tokens: int, generated_tokens: int, sequences: int) -> float:
    """Forward FLOPs of generating `generated_tokens` after `prompt_tokens` of prefill, over `sequences`."""
    processed = prompt_tokens + generated_tokens
    context = processed / max(1, sequences) / 2
    return float(processed * forward_flops_per_token(model, context))


COMPUTE_FIELDS = ("update_flops", "rollout_flops", "rollout_tokens", "update_tokens")


def run_compute(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Totals over a run's metric rows (metrics.jsonl): update FLOPs and tokens, rollout FLOPs and
    generated tokens, their sum (`total_flops`), and the number of SFT and RL steps."""
    out = {k: 0.0 for k in COMPUTE_FIELDS}
    sft = rl = 0
    for r in rows:
        out["update_flops"] += float(r.get("model_flops") or 0.0)
        out["update_tokens"] += float(r.get("tokens") or 0.0)
        out["rollout_flops"] += float(r.get("rollout_flops") or 0.0)
        out["rollout_tokens"] += float(r.get("rollout_tokens") or 0.0)
        sft += r.get("phase") == "sft"
        rl += r.get("phase") == "rl"
    out["total_flops"] = out["update_flops"] + out["rollout_flops"]
    out["sft_steps"], out["rl_steps"] = float(sft), float(rl)
    return out
