"""Problem-text normalisation, near-exact deduplication keys and n-gram decontamination.

Normalisation (`normalise_text`): lower case; `\\dfrac`/`\\tfrac` -> `\\frac`, `\\dbinom`/`\\tbinom` ->
`\\binom`, `\\cdots`/`\\ldots`/`\\dotsb`... -> `\\dots`, `\\le`/`\\ge`/`\\ne` -> `\\leq`/`\\geq`/`\\neq`;
`\\left`, `\\right`, `\\displaystyle`, the LaTeX spacing commands (`\\,` `\\;` `\\:` `\\!` `\\quad`
`\\qquad` `\\ ` `~`), math delimiters (`$`, `\\(`, `\\)`, `\\[`, `\\]`), braces, the punctuation `.,;:` and
all whitespace removed. What is left is a string of visible characters, so spacing, case, `\\dfrac` vs
`\\frac`, `x^4` vs `x^{4}` or `jx` vs `j x` never matter.

- Near-exact duplicates: equal normalised strings (`dedup_key`).
- Contamination: a training problem is contaminated by an evaluation problem when its normalised string
  equals the evaluation problem's, or when it contains at least `DEFAULT_THRESHOLD` = 0.5 of the
  evaluation problem's distinct character n-grams, n = `DEFAULT_N` = 32 characters of the normalised
  string (about six words). Lightly perturbed copies score 1.0; n-grams shared by more than
  `MAX_GRAM_FANOUT` evaluation problems are boilerplate and ignored; evaluation problems shorter than n
  characters match only on the whole string; multiple-choice problems are matched on their question
  without the options. Measured on MATH train / GSM8K / AIME 1983-2023 against the nine suites
  (docs/data.md): everything from 0.7 up is a copy or a reworded copy; between 0.5 and 0.7 are
  same-template variants with other numbers (MATH-500's "Convert the point $(0,3)$ ... to polar
  coordinates" vs train's "$(6,2\\sqrt{3})$") next to a few reworded copies (OlympiadBench rewordings of
  MATH train problems), so 0.5 errs on the side of dropping; n-gram overlap cannot tell a reworded copy
  at 0.4 from a template variant at 0.4, and nothing below 0.5 is dropped.

The index keeps (hash, problem) pairs in sorted numpy arrays, so 15k evaluation problems cost tens of MB
and a query is a vectorised binary search.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

DEFAULT_N = 32
DEFAULT_THRESHOLD = 0.5
MAX_GRAM_FANOUT = 50  # an n-gram in more evaluation problems than this is boilerplate

_RENAMES = [(re.compile(r"\\[dt]frac(?![a-z])"), r"\\frac"), (re.compile(r"\\[dt]binom(?![a-z])"), r"\\binom"),
            (re.compile(r"\\(?:[lc]dots|dots[bcmo]?)(?![a-z])"), r"\\dots"),
            (re.compile(r"\\(le|ge|ne)(?![a-z])"), r"\\\1q"), (re.compile(r"\\not\s*="), r"\\neq")]
_DROP = re.compile(r"\\(?:left|right|displaystyle|textstyle|qquad|quad)(?![a-z])|\\[,;:! ]|~|\\[()\[\]]|[${}\s.,;:]")


def normalise_text(text: str) -> str:
    out = text.lower()
    for pattern, repl in _RENAMES:
        out = pattern.sub(repl, out)
    return _DROP.sub("", out)


def dedup_key(text: str) -> str:
    """Equal for texts that differ only in whitespace, case, braces and LaTeX spacing/sizing."""
    return normalise_text(text)


def ngram_hashes(norm: str, n: int) -> np.ndarray:
    """Distinct hashes of the n-character substrings of a normalised string (int64, sorted)."""
    if len(norm) < n:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.fromiter((hash(norm[i:i + n]) for i in range(len(norm) - n + 1)), dtype=np.int64))


@dataclass
class Match:
    suite: str
    eval_id: str
    overlap: float  # fraction of the evaluation problem's n-grams found in the training problem


@dataclass
class EvalIndex:
    """Character n-gram index over evaluation problems; `refs[j]` = (suite, problem id) of problem j."""

    n: int = DEFAULT_N
    threshold: float = DEFAULT_THRESHOLD
    refs: list[tuple[str, str]] = field(default_factory=list)
    exact: dict[str, int] = field(default_factory=dict)
    _pending: list[np.ndarray] = field(default_factory=list)
    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    owners: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    sizes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def add(self, suite: str, problem_id: str, text: str) -> None:
        j = len(self.refs)
        self.refs.append((suite, problem_id))
        norm = normalise_text(text)
        self.exact.setdefault(norm, j)
        self._pending.append(ngram_hashes(norm, self.n))

    def finalise(self) -> "EvalIndex":
        """Build the sorted arrays; drop boilerplate n-grams (in more than MAX_GRAM_FANOUT problems)."""
        self.sizes = np.array([len(h) for h in self._pending], dtype=np.int64)
        hashes = np.concatenate(self._pending) if self._pending else np.zeros(0, dtype=np.int64)
        owners = np.repeat(np.arange(len(self._pending), dtype=np.int32), self.sizes)
        order = np.argsort(hashes, kind="stable")
        hashes, owners = hashes[order], owners[order]
        _, counts = np.unique(hashes, return_counts=True)
        keep = np.repeat(counts <= MAX_GRAM_FANOUT, counts)
        self.hashes, self.owners = hashes[keep], owners[keep]
        self._pending = []
        return self

    def match(self, text: str) -> Match | None:
        """The evaluation problem `text` is contaminated with (highest overlap, lowest index on ties)."""
        norm = normalise_text(text)
        j = self.exact.get(norm)
        if j is not None:
            return Match(*self.refs[j], 1.0)
        grams = ngram_hashes(norm, self.n)
        if not len(grams) or not len(self.hashes):
            return None
        lo = np.searchsorted(self.hashes, grams, side="left")
        hi = np.searchsorted(self.hashes, grams, side="right")
        hit = hi > lo
        if not hit.any():
            return None
        owners = np.concatenate([self.owners[a:b] for a, b in zip(lo[hit], hi[hit])])
        counts = np.bincount(owners, minlength=len(self.refs))
        frac = np.divide(counts, self.sizes, out=np.zeros(len(counts)), where=self.sizes > 0)
        best = int(np.argmax(frac))
        if frac[best] >= self.threshold:
            return Match(*self.refs[best], round(float(frac[best]), 4))
        return None
