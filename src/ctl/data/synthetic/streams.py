"""Independent, reproducible random streams, one per generator part.

Every part of the synthetic world (the users of one arrival cohort, the impressions of one domain
in one period, ...) draws from its own stream, seeded from the world seed, the part's name and an
index. Growing one part (more rows in domain C, more transfer periods) therefore never shifts the
draws of another part: a shared generator would make every later draw depend on every earlier
draw's size.
"""

from __future__ import annotations

import hashlib

import numpy as np


def stable_hash(name: str) -> int:
    """A 64-bit hash of ``name`` that, unlike ``hash()``, is the same in every process."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def stream(seed: int, part: str, index: int) -> np.random.Generator:
    """The random stream of ``part`` number ``index`` (e.g. a period or a cohort) under ``seed``."""
    if seed < 0 or index < 0:
        raise ValueError(f"stream {part!r}: seed and index must be >= 0, got seed={seed}, index={index}")
    return np.random.default_rng(np.random.SeedSequence([seed, stable_hash(part), index]))
