"""`prefix-rft plan`: per-GPU memory of a recipe before anything starts.

    prefix-rft plan --config qwen2.5-math-7b --gpus 8 --gpu-memory-gib 80 [section.field=value ...]

The model's shape comes from its config.json (a local checkpoint directory, the embedded models, or the
published shapes in `KNOWN_SHAPES` for hub ids, so no download is needed). Two phases share a GPU:

  update   (the engine has released its memory): FSDP2 shards of the fp32 master parameters, fp32
           gradients and AdamW's two fp32 moments (each total / G); the bf16 all-gathered parameters of
           two decoder layers in flight (one computing, one prefetched); activations of one micro-batch.
  generate (the trainer keeps its shards; gradients are freed by zero_grad): parameter and optimizer
           shards, plus the rollout engine: SGLang (one engine per GPU, tp_size 1) takes
           `generate.sglang.mem_fraction_static` of the GPU for its weights (engine dtype) and KV cache; the
           transformers backend holds a gathered copy of the model (checkpoint dtype) and a KV cache for
           min(generate.batch_size, rows per rank) sequences of prompt + response tokens.

Activations of a micro-batch of T tokens (T = update.micro_batch_tokens, else micro_batch_size x
(data.max_prompt_tokens + generate.max_response_tokens)), in bf16 (2 bytes) unless update.precision is
fp32 (4): with activation checkpointing, each layer's input (T x hidden) for every layer plus one layer's
recomputed working set; without, that working set for every layer. The working set per token is
q, k, v, attention output, o-projection output and the two norms' outputs (4 x hidden + 2 x kv_dim) plus
the MLP's gate, up, activation (3 x intermediate), x bytes. The lm head's log-probs are computed
in chunks of update.logprob_chunk_tokens: 3 fp32 [chunk x vocab] buffers (logits, log-softmax, grad).
A fixed `RESERVE_GIB` covers the CUDA context and allocator fragmentation. These are estimates of the
dominant terms, not measurements; scripts/gpu_smoke.sh prints measured peaks to compare.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import load_config
from pipeline.errors import UserError

GIB = 2 ** 30
RESERVE_GIB = 2.0

# Shapes of published checkpoints (their config.json on the hub), so a plan needs no download.
KNOWN_SHAPES: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-Math-7B": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                 num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                                 tie_word_embeddings=False, dtype="bfloat16"),
    "Qwen/Qwen2.5-Math-1.5B": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                   num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                                   tie_word_embeddings=True, dtype="bfloat16"),
}
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    dtype_bytes: int  # checkpoint dtype

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.hidden // self.heads)

    def layer_params(self) -> int:
        """q (with bias), k, v (with bias), o, gate/up/down, two RMSNorms (Qwen2 / Llama layout)."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h

    def params(self) -> int:
        return self.layers * self.layer_params() + self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden


def shape_of(config: dict[str, Any]) -> Shape:
    dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    return Shape(config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"],
                 config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"],
                 config["vocab_size"], bool(config.get("tie_word_embeddings", False)), BYTES.get(dtype, 4))


def model_shape(name_or_path: str) -> Shape:
    if name_or_path in KNOWN_SHAPES:
        return shape_of(KNOWN_SHAPES[name_or_path])
    if name_or_path == "embedded" or name_or_path.startswith("embedded:"):
        from pipeline.embedded.build import ensure_embedded

        name_or_path = str(ensure_embedded(name_or_path.split(":", 1)[1] if ":" in name_or_path else "default"))
    config = Path(name_or_path) / "config.json"
    if not config.is_file():
        raise UserError(f"model.name_or_path: no config.json at {name_or_path} and no known shape for it; point it "
                        f"at a local checkpoint directory (known hub ids: {sorted(KNOWN_SHAPES)})")
    return shape_of(json.loads(config.read_text()))


def plan(cfg: Any, gpus: int, gpu_memory_gib: float) -> dict[str, Any]:
    """Per-GPU bytes of every term, the two phases' totals, and whether they fit."""
    s = model_shape(cfg.model.name_or_path)
    P, G = s.params(), gpus
    act_bytes = 2 if cfg.update.precision == "bf16" else 4
    T = cfg.update.micro_batch_tokens or cfg.update.micro_batch_size * (cfg.data.max_prompt_tokens
                                                                        + cfg.generate.max_response_tokens)
    working = T * (4 * s.hidden + 2 * s.kv_dim + 3 * s.intermediate) * act_bytes
    if cfg.update.gradient_checkpointing:
        activations = T * s.hidden * act_bytes * s.layers + working
    else:
        activations = working * s.layers
    terms = {
        "parameters (fp32 shards)": P * 4 / G,
        "gradients (fp32 shards)": P * 4 / G,
        "optimizer (AdamW, 2 fp32 shards)": P * 8 / G,
        "gathered layers (bf16, 2 in flight)": 2 * s.layer_params() * 2 if G > 1 else 0,
        "activations": activations,
        "log-prob chunks (3 fp32 chunk x vocab)": 3 * cfg.update.logprob_chunk_tokens * s.vocab * 4,
    }
    if cfg.generate.backend == "transformers":
        rows = cfg.prefixes.prompts_per_step * cfg.prefixes.samples_per_prompt
        seqs = min(cfg.generate.batch_size, math.ceil(rows / G))
        tokens = cfg.data.max_prompt_tokens + cfg.generate.max_response_tokens
        engine_weights = P * s.dtype_bytes if G > 1 else 0  # unsharded: decodes with the trainer's module
        kv = seqs * tokens * 2 * s.layers * s.kv_dim * (s.dtype_bytes if G > 1 else 4)
        engine_knob = "generate.batch_size"
    else:
        sg = cfg.generate.sglang
        fraction = float(sg.engine_args.get("mem_fraction_static", sg.mem_fraction_static))
        engine_bytes = BYTES.get(str(sg.engine_args.get("dtype", "")), 2 if cfg.generate.precision == "bf16" else 4)
        tp = int(sg.engine_args.get("tp_size", 1))
        engine_weights = P * engine_bytes / tp
        kv = fraction * gpu_memory_gib * GIB - engine_weights
        engine_knob = "generate.sglang.mem_fraction_static"
    terms["engine weights"] = engine_weights
    terms["engine KV cache"] = kv
    terms["reserve (CUDA context, fragmentation)"] = RESERVE_GIB * GIB
    names = list(terms)
    update_phase = sum(terms[k] for k in names[:6]) + terms[names[-1]]
    generate_phase = terms[names[0]] + terms[names[2]] + engine_weights + kv + terms[names[-1]]
    limit = gpu_memory_gib * GIB
    out = {"model_params": P, "gpus": G, "gpu_memory_gib": gpu_memory_gib, "micro_batch_tokens": T,
           "per_gpu_gib": {k: round(v / GIB, 2) for k, v in terms.items()},
           "update_phase_gib": round(update_phase / GIB, 2), "generate_phase_gib": round(generate_phase / GIB, 2),
           "fits": update_phase <= limit and generate_phase <= limit and kv > 0}
    out["knob"] = None if out["fits"] else _knob(terms, update_phase, generate_phase, limit, kv, engine_knob)
    return out


def _knob(terms: dict[str, float], update_phase: float, generate_phase: float, limit: float, kv: float,
          engine_knob: str) -> str:
    shards = sum(v for k, v in terms.items() if "shards" in k)
    if kv <= 0:
        return "generate.sglang.mem_fraction_static (raise it: the engine's weights leave no room for a KV cache)"
    if update_phase > limit:
        if terms["activations"] + terms["log-prob chunks (3 fp32 chunk x vocab)"] >= shards:
            return "update.micro_batch_tokens (lower it; or enable update.gradient_checkpointing)"
        return "--num_processes (more GPUs: the fp32 shards of parameters, gradients and optimizer are too large)"
    if engine_knob == "generate.batch_size":
        return "generate.batch_size (lower it: the rollout KV cache is too large)"
    return "generate.sglang.mem_fraction_static (lower it)"


def format_plan(p: dict[str, Any]) -> str:
    lines = [f"memory plan: {p['model_params'] / 1e9:.2f}B parameters, {p['gpus']} GPU(s) x {p['gpu_memory_gib']} GiB, "
             f"micro-batch {p['micro_batch_tokens']} tokens", ""]
    lines += [f"  {k:<44}{v:>9.2f} GiB" for k, v in p["per_gpu_gib"].items()]
    lines += ["", f"  {'update phase (engine released)':<44}{p['update_phase_gib']:>9.2f} GiB",
              f"  {'generate phase (trainer shards + engine)':<44}{p['generate_phase_gib']:>9.2f} GiB",
              "", "fits" if p["fits"] else f"does not fit: turn {p['knob']}"]
    return "\n".join(lines)


def check_fits(cfg: Any, gpus: int, gpu_memory_gib: float) -> None:
    """Stop a launch that will not fit, with one line naming the knob to turn."""
    p = plan(cfg, gpus, gpu_memory_gib)
    if not p["fits"]:
        raise UserError(f"this run needs {max(p['update_phase_gib'], p['generate_phase_gib']):.1f} GiB per GPU of "
                        f"{gpu_memory_gib:.1f} (prefix-rft plan --config ... --gpus {gpus} --gpu-memory-gib "
                        f"{gpu_memory_gib:.0f} shows the terms); turn {p['knob']}")


def check_launch(cfg: Any, accelerator: Any) -> None:
    """`check_fits` for this launch's GPUs (nothing to check on CPU, or for a model of unknown shape)."""
    import torch

    if not torch.cuda.is_available() or cfg.model.name_or_path.startswith("embedded"):
        return  # embedded models are tiny (and would be built here by every rank at once)
    try:
        model_shape(cfg.model.name_or_path)
    except UserError:
        return
    total = torch.cuda.get_device_properties(accelerator.device).total_memory / GIB
    check_fits(cfg, accelerator.num_processes, total)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="prefix-rft plan", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="recipe YAML path, or a shipped recipe name")
    ap.add_argument("--gpus", type=int, required=True, help="training processes (one GPU each)")
    ap.add_argument("--gpu-memory-gib", type=float, required=True, help="memory of one GPU")
    ap.add_argument("--json", action="store_true", help="print the plan as JSON")
    ap.add_argument("overrides", nargs="*", help="section.field=value")
    args = ap.parse_args(argv)
    try:
        if args.gpus < 1 or args.gpu_memory_gib <= 0:
            raise UserError("--gpus must be >= 1 and --gpu-memory-gib > 0")
        p = plan(load_config(args.config, args.overrides), args.gpus, args.gpu_memory_gib)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(p) if args.json else format_plan(p))
    return 0 if p["fits"] else 1


if __name__ == "__main__":
    import sys

    sys.exit(main())
