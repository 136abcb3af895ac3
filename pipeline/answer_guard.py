"""What of a completion reaches sympy, and how. Used inside the scoring workers (`pipeline.rewards`).

Audit of math-verify 0.9 / latex2sympy2_extended 1.11 — the paths from a string to a sympy object:
- `ExprExtractionConfig` (on by default in `math_verify.parse`): regex-matched plain-text arithmetic
  goes to `sympy.parsing.parse_expr`, i.e. Python `eval` of a transformed string. We never enable it.
- `LatexExtractionConfig`: latex2sympy parses with an ANTLR grammar (no eval), except that number
  tokens become `sympy.Number(text)`, i.e. `sympify(text)` -> `parse_expr` -> `eval`; and set/logic
  helpers call `sympify` on already-built sympy objects (no string parsing).
- `math_verify.verify` compares sympy objects (simplify, evalf) and strings (plain equality).

`harden_sympy()` closes the remaining string path for the whole worker process: sympy's `parse_expr`
(which `sympify` imports on every call) is replaced by `literal_parse_expr`, which builds ASCII number
literals (`17`, `0.5`, `.5`, `2.5E3`) without eval and refuses every other string; `eval_expr` becomes
a tripwire, so a caller that kept a reference to the original `parse_expr` cannot reach `eval` either.

`screen_answer` refuses, before any parsing, boxed content no answer to a math problem looks like:
(rules and examples in its body)
too long, nested too deep, exponent towers, huge factorials/sums/products, non-ASCII look-alikes.
The worker's hard time and memory limits stay the backstop for anything that passes it.
"""

from __future__ import annotations

import re
import unicodedata

MAX_ANSWER_CHARS = 400
MAX_BRACE_DEPTH = 8
MAX_LITERAL_DIGITS = 120
MAX_POWER_DEPTH = 2  # a^{b^{c}} is the deepest tower accepted
# Non-ASCII characters an answer may legitimately contain (mapped or understood by the LaTeX parser).
ALLOWED_UNICODE = frozenset("πθαβγ√∞×÷·−±≤≥≠°∈∪∩")
_BIG_OPERATORS = ("\\sum", "\\prod", "\\int", "\\lim", "!", "\\Gamma", "\\binom", "\\det", "\\begin")
_LITERAL = re.compile(r"(?:[0-9]+|[0-9]*\.[0-9]+|[0-9]+\.)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_DIGIT_RUN = re.compile(r"[0-9]+", re.ASCII)
_DIGIT_RUN_2 = re.compile(r"[0-9]{2}", re.ASCII)
_DIGIT_RUN_5 = re.compile(r"[0-9]{5}", re.ASCII)
_BIG_SYMBOLIC_POWER = re.compile(r"\^\s*\{?\s*[0-9]{3}", re.ASCII)


class UnsafeParse(SyntaxError):
    """A string reached sympy's parser that is not a plain number literal (sympify turns a
    SyntaxError into its usual SympifyError, so callers see an unparsable answer)."""


def literal_parse_expr(s, local_dict=None, transformations=None, global_dict=None, evaluate=True):
    """`parse_expr` for number literals only, built without eval (same values as sympify gives)."""
    from sympy import Float, Integer

    text = s.strip() if isinstance(s, str) else s
    if not isinstance(text, str) or len(text) > MAX_LITERAL_DIGITS + 20 or not _LITERAL.fullmatch(text):
        raise UnsafeParse(f"refusing to parse a non-literal string ({len(str(s))} chars)")
    if "." in text or "e" in text.lower():
        return Float(text)
    if len(text) > 1 and text.startswith("0") and text.strip("0"):
        raise UnsafeParse("leading zeros")  # Python (and so sympify) rejects 007
    return Integer(text)


def _eval_tripwire(*args, **kwargs):
    raise UnsafeParse("eval of a parsed string is disabled in scoring workers")


def harden_sympy() -> None:
    """Route every string -> sympy conversion of this process through `literal_parse_expr`."""
    import sympy.parsing
    import sympy.parsing.sympy_parser as sympy_parser

    sympy_parser.parse_expr = literal_parse_expr
    sympy_parser.eval_expr = _eval_tripwire
    sympy.parsing.parse_expr = literal_parse_expr
    for name in ("math_verify.parser", "latex2sympy2_extended.latex2sympy2"):
        import importlib

        module = importlib.import_module(name)
        if hasattr(module, "parse_expr"):
            module.parse_expr = literal_parse_expr


def _brace_depth(text: str) -> int:
    depth = deepest = 0
    for c in text:
        if c in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "})]":
            depth = max(0, depth - 1)
    return deepest


def _power_depth(text: str) -> int:
    """How many `^` are stacked inside one another's exponent (`a^{b^{c}}` -> 2)."""
    stack: list[int] = []  # powers open at each brace level
    level_powers, deepest, pending = 0, 0, False
    for c in text:
        if c == "^":
            pending = True
            deepest = max(deepest, level_powers + 1)
        elif c == "{":
            stack.append(level_powers)
            level_powers += 1 if pending else 0
            pending = False
        elif c == "}":
            level_powers = stack.pop() if stack else 0
        elif not c.isspace():
            if pending and c not in "\\-(":
                pending = False  # a bare single-token exponent: a^2
    return deepest


def screen_answer(content: str) -> str | None:
    """Why `content` (the inside of the last box) is refused before parsing, or None when it may be
    parsed. Refused content scores 0 with status `no_answer`."""
    if len(content) > MAX_ANSWER_CHARS:
        return "too long"
    for c in content:
        if ord(c) > 127 and c not in ALLOWED_UNICODE:
            return f"character U+{ord(c):04X} ({unicodedata.name(c, 'unnamed')})"
        if ord(c) < 32 and c not in "\t\n\r":
            return f"control character U+{ord(c):04X}"
    if _brace_depth(content) > MAX_BRACE_DEPTH:
        return "nested too deep"
    powers = _power_depth(content)
    if powers > MAX_POWER_DEPTH or (powers == MAX_POWER_DEPTH and _DIGIT_RUN_2.search(content)):
        return "exponent tower"  # 2^{3^{2}} is fine, 10^{10^{10}} is not
    if any(op in content for op in _BIG_OPERATORS) and (
            "^" in content or content.count("!") > 1 or _DIGIT_RUN_5.search(content)):
        return "big operator on a huge argument"  # (10^{10})!, \\Gamma(10^{5}), ((100!)!)!
    if _BIG_SYMBOLIC_POWER.search(content) and re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", content)):
        return "huge symbolic power"  # (x+1)^{1000} expands to a thousand terms
    if any(len(run) > MAX_LITERAL_DIGITS for run in _DIGIT_RUN.findall(content)):
        return "number literal too long"
    return None
