"""Seeds derived from (run seed, step, stage, row), so every stage's randomness is a pure function of
where it runs and a resumed run draws exactly what an uninterrupted one would."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of parts."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
