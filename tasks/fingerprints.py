"""Text fingerprints shared by dedup (exact duplicates, shingles) and the data gates (no exact duplicate left).

Normalisation: Unicode NFKC, lowercase, every punctuation character (category ``P*``) to a space, whitespace
collapsed, ends stripped; the exact fingerprint is a 64-bit BLAKE2b of that text.
"""

from __future__ import annotations

import functools
import hashlib
import unicodedata


@functools.lru_cache(maxsize=1)
def _punctuation_table() -> dict[int, str]:
    # built on first use (~0.3 s), not at import: every code point of Unicode category P* maps to a space
    import sys

    return {cp: " " for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)).startswith("P")}


def normalize_text(text: str) -> str:
    """NFKC, lowercase, punctuation to spaces, whitespace collapsed: the text both dedup methods compare."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().translate(_punctuation_table()).split())


def exact_hash(normalized: str) -> int:
    """64-bit BLAKE2b of an already normalised text, as an unsigned int."""
    return int.from_bytes(hashlib.blake2b(normalized.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")
