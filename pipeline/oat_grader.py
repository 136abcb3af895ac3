"""The OAT boxed grader's decision procedure, re-implemented without `eval` (docs/method.md §8).

LUFFY's final evaluation label and Prefix-RFT's validation reward use OAT's `boxed_reward_fn(response,
reference, fast=False)` (LUFFY eval_scripts/oat_math_grader.py; Prefix-RFT custom_rewards/math_oat.py).
Its steps, as implemented here:

1. The answer is the last `\\boxed` of the response, braces matched from the marker; the span must read
   `\\boxed{...}` exactly (`\\boxed 5`, `\\boxed {5}` and a lone `\\fbox{5}` give no answer). No box: 0.
   A reference that itself holds a `\\boxed{}` is reduced to its content.
2. Equal after the MATH (Hendrycks) normalisation of both strings (`mathd_normalize`): 1.
3. Equal after the PRM800K-style normalisation (`normalize`), or, element by element when both are
   tuples/intervals with the same brackets and length, each pair equal, where fractions `a/b` must match
   as written and an integer must not be matched by a non-integer; the reference checks the remaining
   pairs with `sympy.simplify(parse_expr(...))` (Python eval), we check them with math-verify on LaTeX
   (the hardened parse of pipeline.rewards): 1.
4. (`fast=False`) math-verify on `$reference$` and `$answer$`: 1.
Otherwise 0.

Differences from the reference, all on the safe side of a hostile completion: no `parse_expr`/`eval`
(steps 3 and 4 use math-verify's LaTeX parser only, with sympy's string parser disabled, inside a worker
with hard limits); the MATH normalisation does not strip the reference's list of ~150 unit words; LaTeX is
reduced to plain text by a few substitutions instead of pylatexenc. Statuses as in pipeline.rewards:
`ok`, `no_answer` (no `\\boxed{...}`), `timeout`, `error`.
"""

from __future__ import annotations

import re

from pipeline.answer_guard import screen_answer
from pipeline.rewards import MAX_GRADED_CHARS, _parse, prepare_worker  # noqa: F401  (worker set-up)
from pipeline.scoring import Result, get_pool

MAX_ANSWER_CHARS = 400


def oat_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (step 1), or None."""
    idx = text.rfind("\\boxed")
    if idx < 0:
        idx = text.rfind("\\fbox")
        if idx < 0:
            return None
    depth = 0
    for j in range(idx, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                span = text[idx:j + 1]
                return span[len("\\boxed{"):-1] if span.startswith("\\boxed{") else None
    return None


# ------------------------------------------------------------------------------------------ step 2

def _fix_fracs(s: str) -> str:
    """`\\frac12` -> `\\frac{1}{2}`, `\\frac1{2}` -> `\\frac{1}{2}`."""
    parts = s.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part.startswith("{"):
            out += part
        elif len(part) < 2:
            return s
        elif part[1] != "{":
            out += "{" + part[0] + "}{" + part[1] + "}" + part[2:]
        else:
            out += "{" + part[0] + "}" + part[1:]
    return out


def _fix_sqrt(s: str) -> str:
    parts = s.split("\\sqrt")
    out = parts[0]
    for part in parts[1:]:
        out += "\\sqrt" + (part if part.startswith("{") or not part else "{" + part[0] + "}" + part[1:])
    return out


def _a_slash_b(s: str) -> str:
    m = re.fullmatch(r"(-?\d+)/(-?\d+)", s)
    return f"\\frac{{{int(m.group(1))}}}{{{int(m.group(2))}}}" if m and s == f"{int(m.group(1))}/{int(m.group(2))}" else s


def mathd_normalize(answer: str | None) -> str | None:
    """The MATH dataset's answer normalisation (step 2), unit-word stripping left out."""
    if answer is None:
        return None
    s = answer.strip()
    m = re.fullmatch(r"\\text\{(.+?)\}", s)
    if m:
        s = m.group(1).strip()
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = re.sub(r"\\begin\{array\}\{[^}]*\}", r"\\begin{pmatrix}", s).replace("\\end{array}", "\\end{pmatrix}")
    s = s.replace("bmatrix", "pmatrix").replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    s = s.replace("\\left", "").replace("\\right", "")
    stripped = re.sub(r"\\text\{[^}]*\}$", "", s).strip()
    if stripped and stripped != s:
        s = stripped
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    if "\\text{ " in s:
        parts = s.split("\\text{ ")
        if len(parts) == 2:
            s = parts[0]
    s = s.replace("\\%", "").replace("%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]
    s = _fix_fracs(_fix_sqrt(s).replace(" ", ""))
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _a_slash_b(s)


# ------------------------------------------------------------------------------------------ step 3

_UNITS = ("degree", "cm", "centimeter", "meter", "mile", "second", "minute", "hour", "day", "week", "month",
          "year", "foot", "feet", "inch", "yard")
_LATEX_TEXT = ((r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}", r"(\1)/(\2)"), (r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)"),
               (r"\\pi\b", "pi"), (r"\\infty\b", "inf"), (r"\\cup\b", "U"), (r"\\(?:cdot|times)\b", "*"),
               (r"\\left|\\right", ""), (r"\\[,;! ]", ""))


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except (ValueError, OverflowError):
        return False


def _strip_commas(s: str) -> str:
    while True:
        t = re.sub(r"(\d),(\d\d\d)($|\D)", r"\1\2\3", s)
        if t == s:
            return s
        s = t


def _str_is_int(s: str) -> bool:
    t = _strip_commas(s)
    return _is_float(t) and abs(float(t)) < 1e18 and abs(float(t) - round(float(t))) <= 1e-7


def normalize(expr: str | None) -> str | None:
    """The PRM800K-style normalisation of step 3 (LaTeX reduced to text by substitutions)."""
    if expr is None:
        return None
    m = re.fullmatch(r"\\text\{(.+?)\}", expr)
    if m:
        expr = m.group(1)
    expr = expr.replace("\\%", "%").replace("\\$", "$").replace("$", "").replace("%", "")
    expr = expr.replace(" or ", " , ").replace(" and ", " , ")
    expr = expr.replace("million", "*10^6").replace("billion", "*10^9").replace("trillion", "*10^12")
    for unit in _UNITS:
        expr = re.sub(unit + r"(es)?(s)? *(\^[0-9]+)?", "", expr)
    expr = re.sub(r"\^ *\\circ", "", expr)
    if expr[:1] == "{" and expr[-1:] == "}":
        expr = expr[1:-1]
    expr = re.sub(r",\\! *", "", expr)
    if _is_float(expr) and abs(float(expr)) < 1e18 and abs(float(expr) - round(float(expr))) <= 1e-7:
        expr = str(int(round(float(expr))))
    if "\\" in expr:
        for pattern, repl in _LATEX_TEXT:
            expr = re.sub(pattern, repl, expr)
    expr = re.sub(r"- *", "-", expr)
    expr = re.sub(r"([0-9]) +([0-9])", r"\1+\2", expr)  # mixed number 7 3/4 -> 7+3/4
    expr = expr.replace(" ", "").replace("{", "").replace("}", "").lower()
    if _str_is_int(expr):
        expr = str(int(float(_strip_commas(expr).replace(",", ""))))
    return expr


def _split_tuple(expr: str) -> list[str]:
    expr = _strip_commas(expr)
    if not expr:
        return []
    if len(expr) > 2 and expr[0] in "()[]" and expr[-1] in "()[]" and not any(c in expr[1:-1] for c in "()[]"):
        return [e.strip() for e in expr[1:-1].split(",")]
    return [expr]


def _is_frac(expr: str) -> bool:
    return bool(re.search(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$", expr))


def _verify_latex(reference: str, answer: str) -> bool:
    """math-verify equivalence of two LaTeX strings (LaTeX parser only; no eval)."""
    from math_verify import verify

    if screen_answer(reference) is not None or screen_answer(answer) is not None:
        return False
    gold, pred = _parse(reference), _parse(answer)
    return bool(gold and pred and verify(gold, pred, timeout_seconds=None))


def _sympy_step(answer: str, reference: str) -> bool:
    gt, given = normalize(reference), normalize(answer)
    if gt is None:
        return False
    if gt == given:
        return True
    if not given:
        return False
    gt_elems, given_elems = _split_tuple(gt), _split_tuple(given)
    if len(gt_elems) > 1 and (gt[0] != given[0] or gt[-1] != given[-1]):
        return False
    if len(gt_elems) != len(given_elems):
        return False
    for g, a in zip(gt_elems, given_elems):
        if _is_frac(g) and _is_frac(a):
            ok = g == a
        elif _str_is_int(g) != _str_is_int(a):
            ok = False
        else:
            ok = _verify_latex(g, a)
        if not ok:
            return False
    return True


def oat_grade(answer: str, reference: str, fast: bool = False) -> bool:
    """Steps 2-4 on an extracted answer."""
    if "\\boxed" in reference:
        reference = oat_boxed(reference) or reference
    if mathd_normalize(answer) == mathd_normalize(reference) or _sympy_step(answer, reference):
        return True
    if fast:
        return False
    if normalize(reference) == normalize(answer):
        return True
    return _verify_latex(reference.replace("$", ""), answer.replace("$", ""))


def grade_oat(response: str, reference: str) -> Result:
    """One response (runs inside a scoring worker)."""
    answer = oat_boxed(response[-MAX_GRADED_CHARS:])
    if answer is None:
        return 0.0, "no_answer", ""
    if len(answer) > MAX_ANSWER_CHARS:
        return 0.0, "no_answer", answer[:MAX_ANSWER_CHARS]
    return (1.0 if oat_grade(answer, str(reference)) else 0.0), "ok", answer


def oat_reward(completions: list[str], answers: list[str], *, timeout_s: float = 5.0,
               num_workers: int = 0) -> list[Result]:
    """Grade every completion with the OAT procedure in the scoring pool (hard time limit per item);
    identical (completion, reference) pairs (avg@32 replicas of a deterministic answer) are graded once."""
    items = [(c[-MAX_GRADED_CHARS:], str(a)) for c, a in zip(completions, answers, strict=True)]
    unique = list(dict.fromkeys(items))
    graded = dict(zip(unique, get_pool(grade_oat, num_workers, timeout_s).map(unique))) if unique else {}
    return [graded[it] for it in items]
