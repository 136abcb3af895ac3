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

`screen_answer` refuses, before any parsing, boxed content that can never be an answer to a math
problem: too long, nested too deep, exponent towers, factorials of huge or nested arguments, sums,
products, integrals and the like over huge ranges, symbolic expansions to a huge power, non-ASCII
look-alikes. It judges the magnitude of what is computed, not the presence of an operator:
`\\frac{100!}{2^{50}}`, `\\frac{d!}{2k(d-k)!}` and `11,\\!111` (`\\!` is LaTeX spacing) pass. Every gold
answer of the six math suites passes it (tests/test_gold_answers.py). The worker's hard time and
memory limits stay the backstop for anything that passes it.
"""

from __future__ import annotations

import math
import re
import unicodedata

MAX_ANSWER_CHARS = 400
MAX_BRACE_DEPTH = 8
MAX_LITERAL_DIGITS = 120
MAX_POWER_DEPTH = 2  # a^{b^{c}} is the deepest tower accepted
# Non-ASCII characters an answer may legitimately contain (mapped or understood by the LaTeX parser).
ALLOWED_UNICODE = frozenset("πθαβγ√∞×÷·−±≤≥≠°∈∪∩")
_BIG_OPERATORS = ("\\sum", "\\prod", "\\int", "\\lim", "\\Gamma", "\\binom", "\\det", "\\begin")
MAX_FACTORIAL = 10_000  # n! is refused from this n on (100000! has 456,574 digits)
MAX_BIG_OPERATOR_LOG10 = 5  # \sum, \prod, \binom, ... next to a number >= 10^5 are refused
_SPACING = re.compile(r"\\[!,;:> ]")  # LaTeX spacing commands: `11,\!111` is not a factorial
_NUMERIC_POWER = re.compile(r"([0-9]+)\s*\^\s*\{?\s*([0-9]+)", re.ASCII)
_LONG_EXPONENT = re.compile(r"\^\s*\{?\s*-?\s*[0-9]{3}", re.ASCII)
_LITERAL = re.compile(r"(?:[0-9]+|[0-9]*\.[0-9]+|[0-9]+\.)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_DIGIT_RUN = re.compile(r"[0-9]+", re.ASCII)
_DIGIT_RUN_2 = re.compile(r"[0-9]{2}", re.ASCII)
_DIGIT_RUN_5 = re.compile(r"[0-9]{5}", re.ASCII)
_OPENERS = {")": "(", "}": "{", "]": "["}


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


# sympy modules that sympy imports lazily on grading paths and whose import sympifies the library's own
# strings (`Prefix('yotta', ...)`): imported before hardening, or the first `simplify` fails in every
# worker and every symbolic equivalence ((x+1)^2 = x^2+2x+1) scores 0.
LAZY_IMPORTS = ("sympy.physics.units",)


def harden_sympy() -> None:
    """Route every string -> sympy conversion of this process through `literal_parse_expr`, after
    importing the LAZY_IMPORTS (trusted code that parses its own strings at import)."""
    import importlib

    for name in LAZY_IMPORTS:
        importlib.import_module(name)
    import sympy.parsing
    import sympy.parsing.sympy_parser as sympy_parser

    sympy_parser.parse_expr = literal_parse_expr
    sympy_parser.eval_expr = _eval_tripwire
    sympy.parsing.parse_expr = literal_parse_expr
    for name in ("math_verify.parser", "latex2sympy2_extended.latex2sympy2"):
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


def _group_before(text: str, end: int) -> tuple[int, str]:
    """The operand that ends just before `end` (spaces skipped): a bracketed group, a number literal,
    or a single letter/command; returns (start, operand text)."""
    i = end
    while i > 0 and text[i - 1].isspace():
        i -= 1
    if i == 0:
        return 0, ""
    close = text[i - 1]
    if close in _OPENERS:
        depth, j = 0, i - 1
        while j >= 0:
            if text[j] == close:
                depth += 1
            elif text[j] == _OPENERS[close]:
                depth -= 1
                if depth == 0:
                    return j, text[j:i]
            j -= 1
        return 0, text[:i]
    j = i
    while j > 0 and (text[j - 1].isdigit() or text[j - 1] == "."):
        j -= 1
    if j < i:
        return j, text[j:i]
    return i - 1, text[i - 1:i]


def _huge_number(text: str) -> bool:
    """A literal of 5+ digits or a numeric power b^e with b^e >= 10^5 (10^{10}, 2^{20}) in `text`."""
    if _DIGIT_RUN_5.search(text):
        return True
    for base, exp in _NUMERIC_POWER.findall(text):
        b = int(base)
        if b > 1 and int(exp) * math.log10(b) >= MAX_BIG_OPERATOR_LOG10:
            return True
    return False


def _huge_factorial(text: str) -> bool:
    """A factorial of a literal >= MAX_FACTORIAL, or of a group holding a power, a factorial or a
    huge number (`(10^{10})!`, `((100!)!)!`); `100!`, `n!`, `(d-k)!` pass."""
    for pos, c in enumerate(text):
        if c != "!" or text[pos + 1:pos + 2] == "=":
            continue
        _, operand = _group_before(text, pos)
        if operand.isdigit():
            if int(operand) >= MAX_FACTORIAL:
                return True
        elif operand[:1] in "({[" and ("^" in operand or "!" in operand or _huge_number(operand)
                                       or any(int(r) >= MAX_FACTORIAL for r in _DIGIT_RUN.findall(operand))):
            return True
    return False


def _huge_symbolic_power(text: str) -> bool:
    """A bracketed expression holding a letter raised to a 3+ digit power: `(x+1)^{1000}` expands to
    a thousand terms. `x^{100}` and `2^{100}` pass."""
    for m in re.finditer(r"\^\s*\{?\s*[0-9]{3}", text):
        start, base = _group_before(text, m.start())
        if base[:1] in "({[" and re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", base)):
            return True
    return False


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
    text = _SPACING.sub(" ", content)
    if _brace_depth(text) > MAX_BRACE_DEPTH:
        return "nested too deep"
    powers = _power_depth(text)
    if powers > MAX_POWER_DEPTH or (powers == MAX_POWER_DEPTH and _DIGIT_RUN_2.search(text)):
        return "exponent tower"  # 2^{3^{2}} is fine, 10^{10^{10}} is not
    if _huge_factorial(text):
        return "factorial of a huge argument"  # (10^{10})!, ((100!)!)!, 100000!
    if any(op in text for op in _BIG_OPERATORS) and (_huge_number(text) or _LONG_EXPONENT.search(text)):
        return "big operator on a huge argument"  # \\Gamma(10^{5}), \\sum_{n=1}^{10^{10}}, e^{-x^{100}}
    if _huge_symbolic_power(text):
        return "huge symbolic power"  # (x+1)^{1000} expands to a thousand terms
    if any(len(run) > MAX_LITERAL_DIGITS for run in _DIGIT_RUN.findall(text)):
        return "number literal too long"
    return None
