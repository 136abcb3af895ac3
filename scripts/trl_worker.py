"""TRL side of scripts/bench_vs_trl.py; runs in TRL's own environment (not the project's).

    <trl-venv>/bin/python scripts/trl_worker.py SPEC.json

SPEC.json: model path, rows (prompt messages + answer, in step order), and the GRPO settings. The
worker builds a GRPOTrainer, then runs one optimizer step per `go` line read from stdin and answers
each with `@@step <seconds> <completion_tokens>` on stdout (the bench alternates these steps with its
own). A step is timed from the `go` to the trainer's `on_step_end`: data, generation, reward, loss,
backward and the optimizer step. The reward is a cheap boxed-answer string match (ours runs the full
math-verify grader in worker processes, so this favours TRL).
"""

from __future__ import annotations

import json
import re
import sys
import time

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
STATE = {"t0": 0.0, "tokens": 0}


def boxed_match(prompts, completions, answer, completion_ids=None, **_):
    if completion_ids is not None:
        STATE["tokens"] += sum(len(c) for c in completion_ids)
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    out = []
    for text, ans in zip(texts, answer):
        m = BOXED.findall(text)
        out.append(1.0 if m and m[-1].strip() == str(ans).strip() else 0.0)
    return out


def wait_for_go() -> bool:
    line = sys.stdin.readline()
    if line.strip() != "go":
        return False
    STATE["t0"], STATE["tokens"] = time.perf_counter(), 0
    return True


class Lockstep(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
        if not wait_for_go():
            control.should_training_stop = True

    def on_step_end(self, args, state, control, **kwargs):
        print(f"@@step {time.perf_counter() - STATE['t0']:.4f} {STATE['tokens']}", flush=True)
        if state.global_step < args.max_steps and not wait_for_go():
            control.should_training_stop = True


def main() -> int:
    spec = json.loads(open(sys.argv[1]).read())
    torch.manual_seed(spec["seed"])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    tok = AutoTokenizer.from_pretrained(spec["model"])
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    ds = Dataset.from_list(spec["rows"])
    n, p, m = spec["samples"], spec["prompts_per_step"], spec["max_new_tokens"]
    cfg = GRPOConfig(
        output_dir=spec["output_dir"], per_device_train_batch_size=p * n, gradient_accumulation_steps=1,
        num_generations=n, max_completion_length=m, generation_kwargs={"min_new_tokens": m},
        temperature=spec["temperature"], top_p=1.0, top_k=0, learning_rate=spec["lr"],
        weight_decay=spec["weight_decay"], adam_beta1=spec["betas"][0], adam_beta2=spec["betas"][1],
        adam_epsilon=spec["eps"], max_grad_norm=spec["max_grad_norm"], lr_scheduler_type="constant",
        warmup_steps=0, beta=0.0, loss_type="dr_grpo", scale_rewards="none", epsilon=0.2, num_iterations=1,
        max_steps=spec["steps"], shuffle_dataset=False, use_cpu=True, bf16=bool(spec.get("bf16")), logging_steps=1,
        report_to="none", save_strategy="no", disable_tqdm=True, seed=spec["seed"], dataloader_num_workers=0,
        gradient_checkpointing=False,  # TRL 1.x turns it on by default; ours is off, so off on both sides
    )
    trainer = GRPOTrainer(model=model, reward_funcs=boxed_match, args=cfg, train_dataset=ds,
                          processing_class=tok, callbacks=[Lockstep()])
    trainer.train()
    print("@@done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
