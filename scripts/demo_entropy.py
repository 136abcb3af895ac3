"""Does the entropy gate's premise hold on an embedded task? Prints one JSON line.

Prefix-RFT keeps the advantage only on the top 20% highest-entropy tokens of a demonstration prefix
(docs/method.md), on the premise that most demonstration tokens are predictable and a few carry the decisions.
This script teacher-forces a policy on the demonstrations of held-out problems and reports the policy's entropy
per demonstration token: its mean, the share of tokens under 0.1 nats, and the share of all the entropy that the
top 20% of tokens hold. Each worked line `a op b = c.` is also split into its choice tokens (`a op b`: which two
numbers, which operation) and its result tokens (`c`, the arithmetic), with their mean entropies. On Countdown the
premise asks for results near 0 and choices well above; on the chain task both are determined by the problem.

    python scripts/demo_entropy.py --task countdown                       # the embedded:countdown policy
    python scripts/demo_entropy.py --task toy                             # the embedded default
    python scripts/demo_entropy.py --task countdown --model PATH          # any checkpoint folder
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = {"toy": "embedded", "countdown": "embedded:countdown"}
LEVELS = {"toy": [1, 2, 3, 4, 5, 6], "countdown": [1, 2, 3, 4, 5]}


def token_kinds(text: str, offsets: list[tuple[int, int]]) -> list[str]:
    """'choice', 'result' or 'other' for each token (by its character span) of a demonstration."""
    from pipeline.embedded.countdown import WORKED_LINE

    spans = []
    for m in WORKED_LINE.finditer(text):
        spans += [(m.start(1), m.end(3), "choice"), (m.start(4), m.end(4), "result")]
    kinds = []
    for a, b in offsets:
        kind = "other"
        for s, e, k in spans:
            if a < e and b > s and text[a:b].strip():  # overlaps, and not a bare space
                kind = k
                break
        kinds.append(kind)
    return kinds


def entropies(model, prompt_ids: list[int], demo_ids: list[int]) -> torch.Tensor:
    """The policy's entropy (nats) at each demonstration token, teacher-forced after the prompt: [len(demo)]."""
    ids = torch.tensor([prompt_ids + demo_ids])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()  # predicts each demo token
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=sorted(MODELS), default="countdown")
    ap.add_argument("--model", default=None, help="checkpoint folder or embedded:<preset> (default: the task's)")
    ap.add_argument("--per-level", type=int, default=40, help="held-out problems per level")
    args = ap.parse_args()
    from pipeline.config import ModelConfig
    from pipeline.embedded.build import INSTRUCTION, task_module
    from pipeline.policy import load_model, load_tokenizer, resolve_model_path
    from pipeline.prompts import build_messages, render_prompt_ids

    cfg = ModelConfig(name_or_path=args.model or MODELS[args.task])
    path = resolve_model_path(cfg)
    tok, model = load_tokenizer(path, cfg), load_model(path, cfg).eval()
    h_all, kinds_all = [], []
    for p in task_module(args.task).test_split(LEVELS[args.task], args.per_level):
        enc = tok(p.demonstration, add_special_tokens=False, return_offsets_mapping=True)
        h_all.append(entropies(model, render_prompt_ids(tok, build_messages(p.text, INSTRUCTION)), enc["input_ids"]))
        kinds_all += token_kinds(p.demonstration, enc["offset_mapping"])
    h = torch.cat(h_all)  # [tokens]
    top = h.sort(descending=True).values[: max(1, int(0.2 * len(h)))]

    def mean_of(kind: str) -> float | None:
        sel = [float(x) for x, k in zip(h, kinds_all) if k == kind]
        return round(sum(sel) / len(sel), 4) if sel else None

    print(json.dumps({
        "script": "demo_entropy", "task": args.task, "model": args.model or MODELS[args.task],
        "problems": len(h_all), "tokens": len(h), "mean_entropy": round(float(h.mean()), 4),
        "share_tokens_below_0.1_nats": round(float((h < 0.1).float().mean()), 4),
        "share_of_entropy_in_top_20pct_tokens": round(float(top.sum() / h.sum().clamp_min(1e-12)), 4),
        "mean_entropy_choice_tokens": mean_of("choice"), "mean_entropy_result_tokens": mean_of("result"),
        "mean_entropy_other_tokens": mean_of("other"),
        "tokens_by_kind": {k: kinds_all.count(k) for k in ("choice", "result", "other")}}))


if __name__ == "__main__":
    main()
