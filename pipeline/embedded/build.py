"""Build the embedded default policy offline: a BPE tokenizer with a chat template, a tiny
`Qwen2ForCausalLM`, and a short supervised warm-start on the easiest toy levels.

Everything is deterministic by seed and cached under `$PREFIX_RFT_CACHE` (default
`~/.cache/prefix_rft`) in a folder named by the preset and a fingerprint of its spec and the library
versions, so the first use builds it and later uses load it. The build writes `embedded_report.json`
with the base policy's per-level pass@1 on the held-out toy split.

    python -m pipeline.embedded.build --preset default
    python -m pipeline.embedded.build --preset countdown --sft-steps 400   # a variant, cached apart
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline import cache, precision
from pipeline.embedded import task

log = logging.getLogger(__name__)

BUILD_VERSION = 3  # 3: Qwen2Tokenizer-compatible BPE; <think> tags are plain added tokens
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class EmbeddedSpec:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    sft_steps: int
    sft_level_weights: tuple[float, ...]  # warm-start mixture over levels 1..len
    sft_sloppy_fraction: float = 0.0  # share of warm-start demonstrations that read every "-" as "+"
    sft_batch_size: int = 64
    sft_lr: float = 3e-3
    vocab_size: int = 384
    max_position_embeddings: int = 4096
    report_per_level: int = 50
    report_samples: int = 4
    seed: int = 0
    task: str = "toy"  # `toy` (pipeline/embedded/task.py) or `countdown` (pipeline/embedded/countdown.py)


PRESETS = {
    "default": EmbeddedSpec(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=512,
                            sft_steps=400, sft_level_weights=(0.3, 0.3, 0.25, 0.15), sft_sloppy_fraction=0.5),
    # Countdown (second embedded task): warm-started on levels 1-3 (2-4 numbers); RL trains on levels 2-4. 3200
    # steps, not 400: at 400, 44-82% of the worked lines the policy wrote were wrong sums, so the arithmetic, not
    # the choices, decided success (docs/tasks.md, "The Countdown policy's arithmetic")
    "countdown": EmbeddedSpec(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=512,
                              sft_steps=3200, sft_level_weights=(0.2, 0.5, 0.3), task="countdown"),
    "micro": EmbeddedSpec(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
                          sft_steps=30, sft_level_weights=(0.5, 0.5), sft_batch_size=32,
                          report_per_level=8, report_samples=1),
}
REPORT_LEVELS = [1, 2, 3, 4, 5, 6]
TASK_LEVELS = {"toy": (list(range(1, 9)), REPORT_LEVELS), "countdown": ([1, 2, 3, 4, 5], [1, 2, 3, 4, 5])}


def task_module(name: str):
    """The module of an embedded task (`toy` or `countdown`)."""
    from pipeline.embedded import countdown

    return countdown if name == "countdown" else task


def cache_root() -> Path:
    return Path(os.environ.get("PREFIX_RFT_CACHE", Path.home() / ".cache" / "prefix_rft"))


def spec_fingerprint(spec: EmbeddedSpec) -> str:
    import tokenizers
    import transformers

    fields = dataclasses.asdict(spec)
    if fields["task"] == "toy":
        del fields["task"]  # the chain task's builds keep the fingerprint they had before `task` existed
    return cache.fingerprint(fields, BUILD_VERSION, torch.__version__,
                             transformers.__version__, tokenizers.__version__)


def build_tokenizer(seed: int, vocab_size: int, task_name: str = "toy"):
    """Byte-level BPE trained on the toy corpus with exactly Qwen2's normaliser and pre-tokenizer, wrapped
    as a `Qwen2Tokenizer`, so `AutoTokenizer` (which always builds Qwen2 checkpoints' tokenizers as
    `Qwen2Tokenizer`) reloads it identically. Digits are single tokens; any text encodes through the
    byte alphabet."""
    from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    corpus = ["<|im_start|>user\n", "<|im_start|>assistant\n", INSTRUCTION]
    mod = task_module(task_name)
    for p in mod.train_split(TASK_LEVELS[task_name][0], 200, seed):
        corpus += [p.text, p.demonstration]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    state = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    out = Qwen2Tokenizer(vocab=state["vocab"], merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                         unk_token=None, extra_special_tokens=["<|im_start|>"], chat_template=CHAT_TEMPLATE,
                         model_max_length=4096)
    # reasoning tags stay in decoded text (as in Qwen tokenizers) so the grader can cut after </think>
    out.add_tokens([AddedToken(t, special=False, normalized=False) for t in ("<think>", "</think>")])
    return out


def _sft_batch(tokenizer, pools: list[list], weights, rng: random.Random, size: int,
               sloppy_fraction: float = 0.0, mod=task):
    from pipeline.prompts import build_messages, render_prompt_ids

    rows = []
    for _ in range(size):
        level = rng.choices(range(len(pools)), weights=weights)[0]
        p = rng.choice(pools[level])
        demo = mod.sloppy_demonstration(p) if rng.random() < sloppy_fraction else p.demonstration
        prompt = render_prompt_ids(tokenizer, build_messages(p.text, INSTRUCTION))
        answer = tokenizer(demo, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((prompt, answer))
    width = max(len(a) + len(b) for a, b in rows)
    ids = torch.full((size, width), tokenizer.pad_token_id)
    labels = torch.full((size, width), -100)
    mask = torch.zeros((size, width), dtype=torch.long)
    for i, (a, b) in enumerate(rows):
        seq = torch.tensor(a + b)
        ids[i, :len(seq)] = seq
        labels[i, len(a):len(seq)] = torch.tensor(b)
        mask[i, :len(seq)] = 1
    return ids, mask, labels


def warm_start(model, tokenizer, spec: EmbeddedSpec) -> list[float]:
    """Supervised pass on the easiest levels (train partition only). bf16 autocast, fp32 weights."""
    levels = list(range(1, len(spec.sft_level_weights) + 1))
    mod = task_module(spec.task)
    pools = [mod.train_split([lv], 4000, spec.seed) for lv in levels]
    rng = random.Random(f"sft-{spec.seed}")
    opt = torch.optim.AdamW(model.parameters(), lr=spec.sft_lr, weight_decay=0.0)
    warmup = max(1, spec.sft_steps // 12)
    losses = []
    model.train()
    for step in range(spec.sft_steps):
        lr_scale = min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / spec.sft_steps)))
        for g in opt.param_groups:
            g["lr"] = spec.sft_lr * lr_scale
        ids, mask, labels = _sft_batch(tokenizer, pools, spec.sft_level_weights, rng, spec.sft_batch_size,
                                       spec.sft_sloppy_fraction, mod)
        with precision.autocast("bf16", "cpu"):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 100 == 0:
            log.info("embedded warm-start step %d/%d loss %.4f", step, spec.sft_steps, losses[-1])
    model.eval()
    return losses


def level_report(model, tokenizer, spec: EmbeddedSpec) -> dict[str, dict[str, float]]:
    """pass@1 per level on the held-out split (temperature 0.6, top_p 0.95; mean over samples), and for
    Countdown the share of the same completions' worked lines whose arithmetic is wrong, per level."""
    from pipeline.backends import GenerationRequest, SamplingParams
    from pipeline.backends.hf import TransformersBackend
    from pipeline.prompts import build_messages, render_prompt_ids, stop_token_ids
    from pipeline.rewards import math_verify_reward

    levels = TASK_LEVELS[spec.task][1]
    problems = task_module(spec.task).test_split(levels, spec.report_per_level)
    reqs, answers, item_levels = [], [], []
    for i, p in enumerate(problems):
        ids = render_prompt_ids(tokenizer, build_messages(p.text, INSTRUCTION))
        for s in range(spec.report_samples):
            reqs.append(GenerationRequest(ids, [], 96, seed=spec.seed * 1_000_003 + i * 101 + s))
            answers.append(str(p.answer))
            item_levels.append(p.level)
    backend = TransformersBackend(model, pad_token_id=tokenizer.pad_token_id, batch_size=256, precision="bf16")
    outs = backend.generate(reqs, SamplingParams(0.6, 0.95, 0, stop_token_ids(tokenizer, model.config)))
    texts = tokenizer.batch_decode([o.token_ids for o in outs], skip_special_tokens=True)
    scores = math_verify_reward(texts, answers)
    report: dict[str, dict[str, float]] = {"pass_at_1_by_level": {}}
    for lv in levels:
        vals = [s[0] for s, l in zip(scores, item_levels) if l == lv]
        report["pass_at_1_by_level"][f"level_{lv}"] = round(sum(vals) / max(1, len(vals)), 4)
    if spec.task == "countdown":  # how often the worked arithmetic is wrong (None: no worked line written)
        from pipeline.embedded.countdown import wrong_line_rate

        rates = {lv: wrong_line_rate([t for t, l in zip(texts, item_levels) if l == lv]) for lv in levels}
        report["wrong_line_rate_by_level"] = {f"level_{lv}": r if r is None else round(r, 4) for lv, r in rates.items()}
    return report


def _config(spec: EmbeddedSpec, **extra):
    """The Qwen2 config of a preset's shapes (tied head); `extra` adds the tokenizer-dependent fields."""
    from transformers import Qwen2Config

    return Qwen2Config(**{"vocab_size": spec.vocab_size, "hidden_size": spec.hidden_size,
                          "intermediate_size": spec.intermediate_size, "num_hidden_layers": spec.num_layers,
                          "num_attention_heads": spec.num_heads, "num_key_value_heads": spec.num_kv_heads,
                          "tie_word_embeddings": True, **extra})


def random_model(preset: str, seed: int = 0):
    """A model of an embedded preset's shapes with random weights (no build, no tokenizer): for benchmarks that
    time arithmetic, not answers."""
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(seed)
    return Qwen2ForCausalLM(_config(PRESETS[preset]))


def build(spec: EmbeddedSpec, out_dir: Path, preset: str) -> None:
    from transformers import GenerationConfig, Qwen2ForCausalLM

    t0 = time.time()
    torch.manual_seed(spec.seed)
    tokenizer = build_tokenizer(spec.seed, spec.vocab_size, spec.task)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = _config(spec, vocab_size=len(tokenizer), max_position_embeddings=spec.max_position_embeddings,
                     rope_theta=10000.0, bos_token_id=None, eos_token_id=im_end, pad_token_id=tokenizer.pad_token_id)
    model = Qwen2ForCausalLM(config)
    losses = warm_start(model, tokenizer, spec)
    t_train = time.time() - t0
    report = level_report(model, tokenizer, spec)
    info = {"preset": preset, "spec": dataclasses.asdict(spec), "parameters": sum(p.numel() for p in model.parameters()),
            "warm_start_final_loss": losses[-1], "warm_start_seconds": round(t_train, 1),
            "build_seconds": round(time.time() - t0, 1), **report,
            "report_protocol": f"held-out {spec.task} split, {spec.report_per_level} problems/level x "
                               f"{spec.report_samples} samples, temperature 0.6, top_p 0.95"}

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        GenerationConfig(eos_token_id=[im_end, tokenizer.pad_token_id], pad_token_id=tokenizer.pad_token_id,
                         do_sample=True, temperature=0.6, top_p=0.95).save_pretrained(tmp)
        (tmp / "embedded_report.json").write_text(json.dumps(info, indent=1))

    cache.write_folder(out_dir, spec_fingerprint(spec), fill)
    log.info("built embedded model %s in %.0fs; base pass@1 by level: %s", preset, info["build_seconds"],
             report["pass_at_1_by_level"])


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_embedded(preset: str = "default", sft_steps: int | None = None) -> Path:
    """Path of the cached embedded model for `preset`, building it first if needed (process-safe).
    `sft_steps` builds a variant with another warm-start length (its own cache folder; for studies of the build,
    not named by any recipe)."""
    if preset not in PRESETS:
        from pipeline.errors import UserError

        raise UserError(f"model.name_or_path: unknown embedded preset {preset!r}; choose one of {sorted(PRESETS)}")
    spec = PRESETS[preset] if sft_steps is None else dataclasses.replace(PRESETS[preset], sft_steps=sft_steps)
    fp = spec_fingerprint(spec)
    out = cache_root() / "embedded" / f"{preset}-{fp}"
    if cache.folder_status(out, fp) == "complete":
        return out
    with _file_lock(cache_root() / "embedded" / f".{preset}.lock"):
        if cache.folder_status(out, fp) != "complete":
            cache.clean_temporaries(out.parent)
            log.info("building the embedded %s model (first use; cached at %s)", preset, out)
            build(spec, out, preset)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS))
    ap.add_argument("--sft-steps", type=int, default=None,
                    help="build a variant with this many warm-start steps (cached apart; docs/tasks.md)")
    args = ap.parse_args()
    if args.sft_steps is not None and args.sft_steps < 1:
        ap.error(f"--sft-steps must be >= 1, got {args.sft_steps}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = ensure_embedded(args.preset, args.sft_steps)
    print(path)
    print((path / "embedded_report.json").read_text())


if __name__ == "__main__":
    main()
