"""LUFFY's training reward, `reward_impl_version=3` (`reward.kind=luffy_v3`; docs/method.md §10).

What LUFFY computes (luffy/verl/verl/mix_src/main_mix_ppo.py, math_verify_reward.py; exp_scripts/train.sh
`reward_impl_version=3`, also its RL-w/-SFT-loss and SFT->RL scripts):
1. the decoded response gets `<think>\\n` prepended (its prompts end inside an open think block);
2. without `</think>` in it the reward is 0; otherwise the graded segment is the text between the first
   and the second `</think>` (`split('</think>')[1]`);
3. math-verify `parse` of the whole segment (no `\\boxed{}` needed: LaTeX and plain-number extraction)
   is verified against `parse('$' + ground_truth + '$')`.

Here the same steps run in a scoring worker with a hard time limit, with sympy's string parser hardened
(pipeline.answer_guard.harden_sympy via pipeline.rewards.prepare_worker): plain-text extraction
(`ExprExtractionConfig`) then only turns number literals into sympy numbers and refuses every other
string instead of `eval`-ing it, so `the answer is 42` is still found while `2**2**40` is not evaluated.
The segment is capped to its last MAX_GRADED_CHARS characters. Statuses as in pipeline.rewards.
"""

from __future__ import annotations

from pipeline.rewards import MAX_GRADED_CHARS, prepare_worker  # noqa: F401  (worker set-up)
from pipeline.scoring import Result, get_pool

END_THINK = "</think>"


def luffy_segment(response: str) -> str | None:
    """The text LUFFY's v3 reward grades, or None (reward 0) when there is no `</think>`."""
    parts = ("<think>\n" + response).split(END_THINK)
    return parts[1] if len(parts) > 1 else None


def grade_luffy_v3(segment: str, reference: str) -> Result:
    """math-verify on a whole segment (runs inside a scoring worker)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    gold = parse(f"${reference}$", extraction_config=configs, parsing_timeout=None)
    if not gold:
        return 0.0, "error", ""
    pred = parse(segment[-MAX_GRADED_CHARS:], extraction_config=configs, parsing_timeout=None)
    if not pred:
        return 0.0, "no_answer", ""
    answer = str(pred[-1])[:400]
    return (1.0 if verify(gold, pred, timeout_seconds=None) else 0.0), "ok", answer


def luffy_v3_reward(completions: list[str], answers: list[str], *, timeout_s: float = 5.0,
                    num_workers: int = 0) -> list[Result]:
    """LUFFY v3 reward of every completion (prefix + continuation as decoded)."""
    segments = [luffy_segment(c) for c in completions]
    todo = [(s[-MAX_GRADED_CHARS:], str(a)) for s, a in zip(segments, answers, strict=True) if s is not None]
    graded = iter(get_pool(grade_luffy_v3, num_workers, timeout_s).map(todo) if todo else [])
    return [next(graded) if s is not None else (0.0, "no_answer", "") for s in segments]
