"""Evaluation protocols (`eval.protocol`): what is prompted, how it is sampled and how it is graded.

Declared once here; evaluation/suites.py (data) and evaluation/run.py (sampling, grading) read the table.

| | `ours` (default) | `paper` (Prefix-RFT) | `luffy` (LUFFY) |
|---|---|---|---|
| math problems | each suite's own copy | LUFFY's valid.all user turns | LUFFY's valid.all user turns |
| math user turn | problem + "\\n" + instruction with a final period | + "\\nPlease reason step by step, and put your final answer within \\boxed{}" (no period) | as it is (no instruction) |
| system turn we add (math) | none | none (valid.all's is dropped) | none (valid.all's is dropped) |
| ARC-c / GPQA | each suite's copy, LUFFY's system prompt | LUFFY's parquets as they are (system prompt kept) | LUFFY's parquets, system prompt dropped |
| MMLU-Pro | our template, LUFFY's system prompt | same (LUFFY's copy is not public) | same, system prompt dropped |
| top_p | 0.95 | 0.95 | 1.0 |
| grader | math-verify on the last `\\boxed{}` | OAT boxed grader on the whole response | OAT boxed grader, `<think>` rule below |
| graded region | after the last `</think>` | whole response | whole; see below |
| choice answers | boxed or stated letter/option text, labels by position | `\\boxed{}` with the literal label | `\\boxed{}` with the literal label |

Every protocol renders with the model's own chat template (which may add its default system turn:
pipeline/prompts.py) at temperature 0.6 with 8192 new tokens, avg@32 on AIME24/AIME25/AMC.

Sources: Prefix-RFT recipe/prepare_data/luffy_test.py (math: system turn commented out, instruction
without period), luffy_test_ood.py (OOD parquets saved raw), config/prefix_rft_trainer.yaml val_kwargs
(top_p 0.95), custom_rewards/math_oat.py (`rfn`: OAT on the whole response). LUFFY
eval_scripts/generate_vllm.py: `remove_system` asserted and applied to every row, `template='own'`,
`top_p=1.0`, README command `--add_oat_evaluate True` (the final label is OAT's alone), and its `<think>`
rule: when the rendered prompt ends in `<think>\\n`, the response is prefixed with `<think>\\n` and split
at `</think>`; the text between the first and second `</think>` is graded. Without any `</think>` the
math-verify label is 0, but the OAT label, which is the final one, is computed on the whole prefixed
response (the split failed, so the text was never cut) -- so under the OAT grader a response without
`</think>` is still graded, on everything. `grade_region` reproduces both.
"""

from __future__ import annotations

from dataclasses import dataclass

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
PAPER_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}"
THINK, END_THINK = "<think>", "</think>"


@dataclass(frozen=True)
class Protocol:
    name: str
    math_source: str  # "suites": each suite's copy; "valid_all": LUFFY's valid.all user turns
    instruction: str | None  # appended to a math user turn after a newline; None: nothing appended
    choice_source: str  # "suites": our adapters; "luffy": LUFFY's valid.* parquets where they exist
    choice_system: bool  # keep LUFFY's system prompt on the choice suites
    top_p: float
    grader: str  # "math_verify" or "oat"
    think: str  # "after_last": grade after the last </think>; "none": whole response; "luffy": see module doc
    boxed_choice: bool  # choice answers only as \boxed{literal label}


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in [
    Protocol("ours", "suites", INSTRUCTION, "suites", True, 0.95, "math_verify", "after_last", False),
    Protocol("paper", "valid_all", PAPER_INSTRUCTION, "luffy", True, 0.95, "oat", "none", True),
    Protocol("luffy", "valid_all", None, "luffy", False, 1.0, "oat", "luffy", True),
]}
GRADERS = ("math_verify", "oat")


def grade_region(text: str, protocol: Protocol, grader: str, think_prompt: bool) -> tuple[str, bool]:
    """(text to grade, forced zero) for one response under `protocol`. `think_prompt`: the rendered
    prompt ends in `<think>\\n` (LUFFY's rule applies only then)."""
    if protocol.think == "after_last":
        cut = text.rfind(END_THINK)
        return (text[cut + len(END_THINK):] if cut >= 0 else text), False
    if protocol.think == "luffy" and think_prompt:
        text = THINK + "\n" + text
        parts = text.split(END_THINK)
        if len(parts) < 2:
            return text, grader != "oat"  # math-verify: 0; OAT: graded on the unsplit response
        return parts[1], False
    return text, False
