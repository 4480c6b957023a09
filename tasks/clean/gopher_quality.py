"""Gopher quality rules: Rae et al. 2021, appendix A.1.1. A rule whose threshold is None is off."""

from __future__ import annotations

from collections.abc import Iterable

from tasks.clean.base import SYMBOL_RE, Doc, DocFilter

_ALPHA, _OTHER, _SYMBOL, _LONG_SYMBOL = range(4)


class _WordKinds(dict[str, int]):
    """word -> kind, computed on first sight: classifying each distinct word once keeps the per-word work in C."""

    def __missing__(self, word: str) -> int:
        if any(c.isalpha() for c in word):
            kind = _ALPHA
        elif SYMBOL_RE.fullmatch(word):
            kind = _SYMBOL if len(word) == 1 else _LONG_SYMBOL
        else:
            kind = _OTHER
        self[word] = kind
        return kind


STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
BULLETS = ("•", "-")


class GopherQualityFilter(DocFilter):
    """Gopher's quality heuristics over words (symbol-only words excluded from the word count), lines and text."""

    name = "gopher_quality"

    def __init__(
        self,
        *,
        min_doc_words: int | None = 50,
        max_doc_words: int | None = 100_000,
        min_avg_word_length: float | None = 3,
        max_avg_word_length: float | None = 10,
        max_symbol_word_ratio: float | None = 0.1,
        max_bullet_lines_ratio: float | None = 0.9,
        max_ellipsis_lines_ratio: float | None = 0.3,
        min_alpha_words_ratio: float | None = 0.8,
        min_stop_words: int | None = 2,
        stop_words: Iterable[str] = STOP_WORDS,
        bullets: tuple[str, ...] = BULLETS,
    ) -> None:
        """Args: thresholds of appendix A (a None switches its rule off); stop words are matched case-sensitively."""
        super().__init__()
        self.min_doc_words, self.max_doc_words = min_doc_words, max_doc_words
        self.min_avg_word_length, self.max_avg_word_length = min_avg_word_length, max_avg_word_length
        self.max_symbol_word_ratio = max_symbol_word_ratio
        self.max_bullet_lines_ratio, self.max_ellipsis_lines_ratio = max_bullet_lines_ratio, max_ellipsis_lines_ratio
        self.min_alpha_words_ratio, self.min_stop_words = min_alpha_words_ratio, min_stop_words
        self.stop_words, self.bullets = frozenset(stop_words), bullets
        self._kinds = _WordKinds()

    def _classify(self, words: list[str]) -> tuple[int, int, int]:
        """(symbol words, characters in symbol words, words with a letter), from each word's cached kind."""
        kinds = self._kinds
        if len(kinds) > 1_000_000:  # bounds memory on long runs; the cache only saves time
            kinds.clear()
        codes = list(map(kinds.__getitem__, words))
        long_symbols = codes.count(_LONG_SYMBOL)
        n_symbols = codes.count(_SYMBOL) + long_symbols
        symbol_chars = n_symbols - long_symbols
        if long_symbols:
            symbol_chars += sum(len(w) for w in words if kinds[w] == _LONG_SYMBOL)
        return n_symbols, symbol_chars, codes.count(_ALPHA)

    def filter(self, doc: Doc) -> Doc | str:
        text, words = doc.text, doc.words
        n_words = len(words)
        n_symbols, symbol_chars, n_alpha = self._classify(words)
        n_real = n_words - n_symbols
        if self.min_doc_words is not None and n_real < self.min_doc_words:
            return "min_doc_words"
        if self.max_doc_words is not None and n_real > self.max_doc_words:
            return "max_doc_words"
        if n_real == 0:  # every ratio below divides by the word count
            return "min_doc_words"
        mean_len = (len("".join(words)) - symbol_chars) / n_real
        if self.min_avg_word_length is not None and mean_len < self.min_avg_word_length:
            return "min_avg_word_length"
        if self.max_avg_word_length is not None and mean_len > self.max_avg_word_length:
            return "max_avg_word_length"
        if self.max_symbol_word_ratio is not None:
            if text.count("#") / n_words > self.max_symbol_word_ratio:
                return "hash_word_ratio"
            if (text.count("...") + text.count("…")) / n_words > self.max_symbol_word_ratio:
                return "ellipsis_word_ratio"
        lines = doc.lines
        if lines and self.max_bullet_lines_ratio is not None:
            bullets = sum(1 for s in lines if s.lstrip().startswith(self.bullets))
            if bullets / len(lines) > self.max_bullet_lines_ratio:
                return "bullet_lines_ratio"
        if lines and self.max_ellipsis_lines_ratio is not None:
            ellipsis = sum(1 for s in lines if s.rstrip().endswith(("...", "…")))
            if ellipsis / len(lines) > self.max_ellipsis_lines_ratio:
                return "ellipsis_lines_ratio"
        if self.min_alpha_words_ratio is not None and n_alpha / n_words < self.min_alpha_words_ratio:
            return "alpha_words_ratio"
        if self.min_stop_words is not None and len(self.stop_words.intersection(words)) < self.min_stop_words:
            return "min_stop_words"
        return doc
