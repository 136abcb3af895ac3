"""Multiple-choice suites (ARC-Challenge, GPQA-Diamond, MMLU-Pro): prompt layout and letter grading.

Prompt layout (LUFFY's `valid.arc_c` / `valid.gpqa` parquets, which Prefix-RFT evaluates as they are,
docs/method.md §8): LUFFY's system prompt, then a user turn

    <question>
    <blank line>
    A) <option>
    B) <option>
    ...

with one `X) ` line per option and a trailing newline. MMLU-Pro's raw rows (up to ten options) are
rendered with the same template, labels A-J; LUFFY's own MMLU-Pro copy could not be obtained, so this
template is ours. ARC keeps its original labels, which are the digits 1-4 for a few rows.

Grading extracts one option from the response (after the last `</think>`, the same graded region as
math): the last `\\boxed{...}` when it names an option (`C`, `(C)`, `C) text`, `\\text{C}`, `Option C`,
or the full text of an option), otherwise the last answer statement (`ANSWER: C`, `The answer is (C)`,
`correct option: C`). Labels are compared by position, so a digit-labelled ARC question answered with
`B` (or `2`) matches the reference `2`. Only bounded scans and linear regular expressions run over the
untrusted text, so it is graded in-process.
"""

from __future__ import annotations

import re

from pipeline.rewards import graded_region, last_boxed
from pipeline.scoring import Result

LETTERS = "ABCDEFGHIJ"
# LUFFY's system prompt, verbatim from the `prompt[0]` of its valid.* parquets (ElliottYan/LUFFY @ 01f4ae0).
LUFFY_SYSTEM_PROMPT = (
    "Your task is to follow a systematic, thorough reasoning process before providing the final solution. "
    "This involves analyzing, summarizing, exploring, reassessing, and refining your thought process through "
    "multiple iterations. Structure your response into two sections: Thought and Solution. In the Thought "
    "section, present your reasoning using the format: \"<think>\n {thoughts} </think>\n\". Each thought should "
    "include detailed analysis, brainstorming, verification, and refinement of ideas. After \"</think>\n,\" in "
    "the Solution section, provide the final, logical, and accurate answer, clearly derived from the exploration "
    "in the Thought section. If applicable, include the answer in \\boxed{} for closed-form results like "
    "multiple choices or mathematical solutions.")

_OPTION_LINE = re.compile(r"([A-J]|10|[1-9])\) ")
_BLOCK_START = re.compile(r"\n\n(?=(?:A|1)\) )")
_LABEL = r"(10|[1-9]|[A-J])"
_SPAN_LABEL = re.compile(r"^(?:(?i:option|choice)\s*)?\(?\s*" + _LABEL + r"\s*\)?(?:[.:)\]]|\s|$)")
_SPAN_LOWER = re.compile(r"^\(?([a-j])(?:\)|[.:]|$)")  # "c", "(c)", "c." -- not a word such as "a"
_STATEMENT = re.compile(r"\b(?i:answer|option|choice)\b(?:\s+(?i:is))?\s*[:=]?\s*(?:\*\*|\$|\\text\{|\\textbf\{|\(|\[)*\s*"
                        + _LABEL + r"(?![A-Za-z0-9])")
_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{|[{}$*]")


def format_choices(question: str, options: list[str], labels: list[str] | None = None) -> str:
    """The user turn of a multiple-choice item (LUFFY's layout, see the module docstring)."""
    labels = labels or list(LETTERS[:len(options)])
    return question.rstrip() + "\n\n" + "".join(f"{label}) {opt}\n" for label, opt in zip(labels, options))


def parse_choices(text: str) -> tuple[str, list[str], list[str]] | None:
    """A LUFFY-layout user turn -> (question stem, labels, option texts), or None when it has no options.
    An option may run over several lines; a line starting with the next `X) ` starts the next option."""
    starts = list(_BLOCK_START.finditer(text))
    if not starts:
        return None
    stem, block = text[:starts[-1].start()], text[starts[-1].end():]
    labels: list[str] = []
    options: list[str] = []
    for line in block.split("\n"):
        m = _OPTION_LINE.match(line)
        if m and (not labels or _next_label(labels[-1]) == m.group(1)):
            labels.append(m.group(1))
            options.append(line[m.end():])
        elif labels:
            options[-1] += "\n" + line
    options = [o.rstrip("\n") for o in options]
    return (stem, labels, options) if len(labels) >= 2 else None


def _next_label(label: str) -> str:
    if label.isdigit():
        return str(int(label) + 1)
    return LETTERS[LETTERS.index(label) + 1] if label in LETTERS[:-1] else ""


def canonical(label: str, labels: list[str]) -> str | None:
    """The positional letter of `label` among the item's `labels` (`1` -> `A` for digit labels); a letter
    within range also names its position when the labels are digits. None when it names no option."""
    label = label.strip()
    if label in labels:
        return LETTERS[labels.index(label)]
    upper = label.upper()
    if len(upper) == 1 and upper in LETTERS[:len(labels)] and labels and labels[0].isdigit():
        return upper
    return None


def _norm(text: str) -> str:
    return " ".join(_WRAPPERS.sub(" ", text).split()).strip(" .").lower()


def _label_in_span(span: str, labels: list[str], options: list[str]) -> str | None:
    cleaned = " ".join(_WRAPPERS.sub(" ", span).split())
    m = _SPAN_LABEL.match(cleaned) or _SPAN_LOWER.match(cleaned)
    if m:
        found = canonical(m.group(1).upper(), labels)
        if found:
            return found
    target = _norm(span)
    for i, opt in enumerate(options):
        if target and target == _norm(opt):
            return LETTERS[i]
    return None


def extract_choice(response: str, labels: list[str], options: list[str], after_think: bool = True) -> str | None:
    """The option a response chooses, as a positional letter (see the module docstring), or None."""
    region = graded_region(response, after_think)
    boxed = last_boxed(region)
    if boxed is not None:
        found = _label_in_span(boxed, labels, options)
        if found:
            return found
    for m in reversed(list(_STATEMENT.finditer(region))):
        found = canonical(m.group(1), labels)
        if found:
            return found
    return None


def grade_choices(completions: list[str], references: list[str], labels: list[list[str]],
                  options: list[list[str]], after_think: bool = True) -> list[Result]:
    """(reward, status, extracted letter) per completion; references are positional letters."""
    out: list[Result] = []
    for text, ref, labs, opts in zip(completions, references, labels, options, strict=True):
        got = extract_choice(text, labs, opts, after_think)
        if got is None:
            out.append((0.0, "no_answer", ""))
        else:
            out.append((1.0 if got == ref else 0.0, "ok", got))
    return out
