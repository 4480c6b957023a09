"""Unicode repair and language identification for the clean stage.

`fix_text` repairs mojibake and normalises to NFC with ftfy. `LanguageDetector` wraps py3langid, whose model ships
inside the package (no download); the model is loaded on first use, once per set of candidate languages.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any


def fix_text(text: str) -> str:
    """Repairs mis-decoded text (mojibake, HTML entities, curly quotes to ASCII, ...) and normalises it to NFC.

    Deterministic and idempotent: fixing a fixed text changes nothing.

    Args:
        text: raw text.

    Returns:
        The repaired text.
    """
    import ftfy

    return ftfy.fix_text(text, normalization="NFC")


@lru_cache(maxsize=8)
def _identifier(languages: tuple[str, ...] | None) -> Any:
    """One py3langid identifier per candidate set (restricting mutates the identifier, so sets don't share one)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    if languages:
        identifier.set_languages(list(languages))
    return identifier


class LanguageDetector:
    """Identifies a text's language: ISO 639-1 code and a probability normalised over the candidates."""

    def __init__(self, *, languages: Sequence[str] | None = None, max_chars: int = 2000) -> None:
        """Args:
        languages: candidate ISO codes (e.g. ["en", "fr", "de"]); None: all 97 the model knows.
        max_chars: only the text's first characters are read, which is enough to decide and bounds the cost.
        """
        self.languages = tuple(sorted(languages)) if languages else None
        self.max_chars = max_chars

    def detect(self, text: str) -> tuple[str, float]:
        """Returns (language code, probability in [0, 1]) for the text's first `max_chars` characters."""
        lang, prob = _identifier(self.languages).classify(text[: self.max_chars])
        return str(lang), float(prob)
