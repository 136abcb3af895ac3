"""Verifier rewards: plain functions from completions (and their row's columns) to scores.

`math_verify_reward` is the 0/1 verifier of docs/method.md §4: it grades the last `\\boxed{}` of the response
(prefix + continuation; after the last `</think>` when present, docs/method.md Q8) against the reference answer
with math-verify. Completions are untrusted: the graded text is capped before any parsing, the box is
found by a linear brace scan (no regex backtracking, no `eval`), and math-verify only ever sees the
short boxed content, inside a worker process with a hard time limit (`pipeline.scoring`).

Statuses: `ok` (graded; reward 0 or 1), `no_answer` (no box, nothing parsable in it, or content refused
by `answer_guard.screen_answer`), `timeout`, `error`. Workers parse LaTeX only, with sympy hardened so
that no string reaches `eval` (`prepare_worker`); a constant equation (`18 = 17`) must hold on every side.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict

from pipeline.answer_guard import harden_sympy, screen_answer
from pipeline.scoring import Result, get_pool
from pipeline.embedded import countdown

MAX_GRADED_CHARS = 20_000  # tail of the response that is searched for the answer
MAX_BOXED_CHARS = 400  # longer boxed content is not an answer to these problems
_BOX_MARKERS = ("\\boxed", "\\fbox")


def graded_region(text: str, after_think: bool = True) -> str:
    """The part of a response that is graded: after the last `</think>` if any, capped to its tail."""
    if after_think:
        cut = text.rfind("</think>")
        if cut >= 0:
            text = text[cut + len("</think>"):]
    return text[-MAX_GRADED_CHARS:]


def last_boxed(text: str) -> str | None:
    """Content of the last complete `\\boxed{...}` (or `\\fbox{...}`), or None.

    Scans backwards for the marker and matches braces forward; content longer than MAX_BOXED_CHARS or an
    unclosed brace means no answer."""
    pos = len(text)
    while True:
        start = max(text.rfind(m, 0, pos) for m in _BOX_MARKERS)
        if start < 0:
            return None
        i = start + (6 if text.startswith("\\boxed", start) else 5)
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            limit = min(len(text), i + MAX_BOXED_CHARS + 2)
            while j < limit:
                c = text[j]
                if c == "\\":
                    j += 2
                    continue
                if c == "{":
                    depth += 1
                elif c == "}":
                    depth -= 1
                    if depth == 0:
                        return text[i + 1:j]
                j += 1
        pos = start  # malformed or oversized box: look at an earlier one


# Warm-up grades, run before hardening on these constant strings only: they pay the parser's and
# sympy's lazy initialisation (imports that parse sympy's own strings, caches), which would otherwise
# eat the first items' time limits in every fresh worker, or fail once hardened.
WARM_UP = (("x = \\frac{1}{2}", "0.5"), ("(x+1)^2", "x^2+2x+1"), ("\\sin^2 x + \\cos^2 x", "1"),
           ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"), ("[1, 2)", "[1,2)"), ("\\{1, 2\\}", "\\{2, 1\\}"),
           ("\\frac{10!}{2^{5}}", "113400"), ("90^\\circ", "90"),
           ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
           ("1 + i", "i + 1"), ("\\log_2 8", "3"), ("50\\%", "0.5"))


def prepare_worker() -> None:
    """Run once in each scoring worker before it announces itself ready: WARM_UP grades on trusted
    strings, then `harden_sympy` (no string of a completion reaches `eval` from here on)."""
    for boxed, reference in WARM_UP:
        grade_math(f"\\boxed{{{boxed}}}", reference, False)
    harden_sympy()
    grade_math("\\boxed{x = \\frac{1}{2}}", "0.5", False)


def equation_sides(content: str) -> list[str]:
    """`a = b = c` split at top-level `=` (not `<=`, `>=`, `!=`, nor inside braces); [content] otherwise."""
    sides, depth, start = [], 0, 0
    for i, c in enumerate(content):
        if c in "{([":
            depth += 1
        elif c in "})]":
            depth -= 1
        elif c == "=" and depth == 0:
            if i > 0 and content[i - 1] in "<>!" or content[i + 1:i + 2] == "=":
                return [content]
            sides.append(content[start:i])
            start = i + 1
    return sides + [content[start:]] if sides else [content]


def _is_label(side: str) -> bool:
    """A left-hand side naming what is answered (`x`, `f(2)`, `\\text{area}`): it holds a letter
    outside LaTeX commands."""
    return bool(re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", side)))


def _parse(text: str) -> list:
    from math_verify import LatexExtractionConfig, parse

    # LaTeX extraction only: the default ExprExtractionConfig hands plain text to sympy's parse_expr (eval)
    return parse(f"\\boxed{{{text}}}", extraction_config=[LatexExtractionConfig()], parsing_timeout=None)


def grade_math(response: str, reference: str, after_think: bool) -> Result:
    """Grade one response against one reference (runs inside a scoring worker). Boxed content that
    `screen_answer` refuses (towers, deep nesting, look-alike unicode, ...) is `no_answer`, unparsed."""
    from math_verify import verify

    boxed = last_boxed(graded_region(response, after_think))
    if boxed is None or not boxed.strip():
        return 0.0, "no_answer", ""
    if screen_answer(boxed) is not None:
        return 0.0, "no_answer", boxed[:MAX_BOXED_CHARS]
    if boxed.strip() == str(reference).strip():
        return 1.0, "ok", boxed  # the reference's own text: no sympy (simplify on a long formula takes seconds)
    gold = _parse(str(reference))
    if not gold:
        return 0.0, "error", boxed
    sides = equation_sides(boxed)
    if len(sides) > 1 and not _is_label(sides[0]):
        # `18 = 17` states a falsehood; math-verify would grade only its last side: grade every side
        preds = [_parse(side) for side in sides]
        if not all(preds):
            return 0.0, "no_answer", boxed
        ok = all(verify(gold, pred, timeout_seconds=None) for pred in preds)
        return (1.0 if ok else 0.0), "ok", boxed
    pred = _parse(boxed)
    if not pred:
        return 0.0, "no_answer", boxed
    ok = verify(gold, pred, timeout_seconds=None)
    return (1.0 if ok else 0.0), "ok", boxed


class _LRU(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def put(self, key: str, value: Result) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


_CACHE = _LRU(200_000)


def _key(response: str, reference: str, after_think: bool) -> str:
    h = hashlib.sha256()
    for part in (graded_region(response, after_think), "\x00", reference, "\x00", str(after_think)):
        h.update(part.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def countdown_reward(completion: str, reference: str, after_think: bool = True) -> Result:
    """The Countdown verifier (pipeline/embedded/countdown.py): the last boxed expression must use exactly the
    reference's numbers and equal its target. Parsed by a linear recursive-descent parser over a capped string
    (no eval, no sympy), so it runs in-process."""
    boxed = last_boxed(graded_region(completion, after_think))
    if boxed is None or not boxed.strip():
        return 0.0, "no_answer", ""
    score, status = countdown.check_expression(boxed, reference)
    return score, status, boxed[:MAX_BOXED_CHARS]


def math_verify_reward(completions: list[str], answers: list[str], *, after_think: bool = True,
                       timeout_s: float = 5.0, num_workers: int = 0) -> list[Result]:
    """Score every completion against its reference answer; results cached by (completion, reference).
    A `countdown:` reference (the embedded Countdown task) is graded by `countdown_reward` instead."""
    if any(str(a).startswith(countdown.PREFIX) for a in answers):
        plain = [i for i, a in enumerate(answers) if not str(a).startswith(countdown.PREFIX)]
        out: list[Result | None] = [None] * len(answers)
        for i, (c, a) in enumerate(zip(completions, answers, strict=True)):
            if str(a).startswith(countdown.PREFIX):
                out[i] = countdown_reward(c, str(a), after_think)
        if plain:
            for i, r in zip(plain, math_verify_reward([completions[i] for i in plain], [answers[i] for i in plain],
                                                      after_think=after_think, timeout_s=timeout_s,
                                                      num_workers=num_workers)):
                out[i] = r
        return out  # type: ignore[return-value]
    keys = [_key(c, a, after_think) for c, a in zip(completions, answers, strict=True)]
    known: dict[str, Result] = {k: _CACHE[k] for k in keys if k in _CACHE}
    todo: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in known and k not in todo:
            todo[k] = i
    if todo:
        pool = get_pool(grade_math, num_workers, timeout_s)
        items = [(graded_region(completions[i], after_think), str(answers[i]), after_think) for i in todo.values()]
        for k, res in zip(todo, pool.map(items)):
            known[k] = res
            if res[1] != "timeout":  # a timeout can be load rather than the input: do not pin it
                _CACHE.put(k, res)
    return [known[k] for k in keys]
