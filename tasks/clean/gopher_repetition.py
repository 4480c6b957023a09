"""Gopher's repetition rules (Rae et al. 2021, appendix A.1.1, table A1) over lines, paragraphs and word n-grams.

Fractions are of the document's characters. A duplicate is a later occurrence of a line, paragraph or n-gram
already seen; the first occurrence is the original. For n-grams of 5 and more, the scan skips past a counted
duplicate so that overlapping occurrences are not counted twice. A None threshold switches its rule off.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from tasks.clean.base import Doc, DocFilter

TOP_N_GRAMS: Mapping[int, float] = {2: 0.20, 3: 0.18, 4: 0.16}
DUP_N_GRAMS: Mapping[int, float] = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
_PARAGRAPH_RE = re.compile(r"\n{2,}")
_LINE_RE = re.compile(r"\n+")
_MULTIPLIER = 0x9E3779B97F4A7C15  # odd 64-bit constant of the rolling n-gram hash


def _duplicates(parts: Sequence[str]) -> tuple[int, int]:
    """(number, characters) of the parts that repeat an earlier part."""
    seen: set[str] = set()
    count = chars = 0
    for part in parts:
        if part in seen:
            count += 1
            chars += len(part)
        else:
            seen.add(part)
    return count, chars


class GopherRepetitionFilter(DocFilter):
    """Drops documents whose lines, paragraphs or word n-grams repeat more than the published fractions."""

    name = "gopher_repetition"

    def __init__(
        self,
        *,
        dup_line_frac: float | None = 0.30,
        dup_para_frac: float | None = 0.30,
        dup_line_char_frac: float | None = 0.20,
        dup_para_char_frac: float | None = 0.20,
        top_n_grams: Mapping[int, float] | None = TOP_N_GRAMS,
        dup_n_grams: Mapping[int, float] | None = DUP_N_GRAMS,
        seed: int = 0,
    ) -> None:
        """Args: the table A1 thresholds; n-gram maps give n -> maximum character fraction (None: all off).

        `seed` fixes the random 64-bit word codes of the n-gram hash, so decisions are the same on every run.
        """
        super().__init__()
        self.dup_line_frac, self.dup_para_frac = dup_line_frac, dup_para_frac
        self.dup_line_char_frac, self.dup_para_char_frac = dup_line_char_frac, dup_para_char_frac
        self.top_n_grams = dict(sorted((top_n_grams or {}).items()))
        self.dup_n_grams = dict(sorted((dup_n_grams or {}).items()))
        self.seed = seed
        self._codes: Any = None  # numpy array, grown on demand (numpy is imported only when n-grams are needed)

    def _word_codes(self, n: int) -> Any:
        import numpy as np

        if self._codes is None or len(self._codes) < n:
            size = max(1024, 1 << (n - 1).bit_length())
            self._codes = np.random.default_rng(self.seed).integers(0, 2**64, size, dtype=np.uint64, endpoint=False)
        return self._codes

    def filter(self, doc: Doc) -> Doc | str:
        text = doc.text
        if not text:
            return "empty"
        size = len(text)
        lines = _LINE_RE.split(text)
        count, chars = _duplicates(lines)
        if self.dup_line_frac is not None and count / len(lines) > self.dup_line_frac:
            return "dup_line_frac"
        if self.dup_line_char_frac is not None and chars / size > self.dup_line_char_frac:
            return "dup_line_char_frac"
        paragraphs = _PARAGRAPH_RE.split(text.strip())
        count, chars = _duplicates(paragraphs)
        if self.dup_para_frac is not None and count / len(paragraphs) > self.dup_para_frac:
            return "dup_para_frac"
        if self.dup_para_char_frac is not None and chars / size > self.dup_para_char_frac:
            return "dup_para_char_frac"
        if self.top_n_grams or self.dup_n_grams:
            return self._ngram_rules(doc.words, size) or doc
        return doc

    def _ngram_rules(self, words: list[str], size: int) -> str | None:
        """Checks the n-gram fractions on 64-bit rolling hashes of the word sequence (numpy, no n-gram strings).

        Two facts spare most of the work on ordinary prose: an n-gram occurs at most as often as the most
        frequent (n-1)-gram (so a small top count rules out the next n at once), and an n-gram can only repeat
        where its (n-1)-gram prefix repeats (so once nothing repeats, no longer n-gram does either).
        """
        import numpy as np

        n_words = len(words)
        if n_words < 2:
            return None
        first: dict[str, int] = {}
        # a word's id is the position of its first occurrence: equal words, equal ids, and no id reaches n_words
        ids = np.fromiter(map(first.setdefault, words, range(n_words)), dtype=np.int64, count=n_words)
        cum = np.zeros(n_words + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, words), dtype=np.int64, count=n_words), out=cum[1:])
        codes = self._word_codes(n_words)[ids]
        mult = np.uint64(_MULTIPLIER)
        hashes, top_bound, repeats = codes, n_words, len(first) < n_words
        first_dup_check, dups_cleared = True, False
        min_dup_limit = min(self.dup_n_grams.values(), default=0.0) * size
        for n in range(2, max([*self.top_n_grams, *self.dup_n_grams]) + 1):
            if n > n_words:
                break
            window = cum[n:] - cum[:-n]  # characters of each n-gram's words
            if not repeats:
                # every n-gram occurs once: nothing is duplicated, and the most frequent one is the first (ties go
                # to the first), which still weighs much in a short page
                if n in self.top_n_grams and int(window[0]) + n - 1 > self.top_n_grams[n] * size:
                    return f"top_{n}_gram"
                continue
            hashes = hashes[:-1] * mult + codes[n - 1 :]  # wraps modulo 2**64, as intended
            if n in self.top_n_grams:
                limit = self.top_n_grams[n] * size
                if top_bound * (int(window.max()) + n - 1) > limit:
                    _, first_at, counts = np.unique(hashes, return_index=True, return_counts=True)
                    top = int(counts.max())
                    at = int(first_at[counts == top].min())  # ties: the n-gram that appeared first
                    # characters of the n-gram written with single spaces between its words, times its count
                    if top * (int(window[at]) + n - 1) > limit:
                        return f"top_{n}_gram"
                    top_bound, repeats = top, top > 1
            if n in self.dup_n_grams and not dups_cleared:
                limit = self.dup_n_grams[n] * size
                later = _later_occurrences(hashes)
                repeats = bool(later.size)
                if not repeats:
                    continue
                if first_dup_check:  # words in repeated n-grams of this size cover those of every longer size
                    first_dup_check = False
                    if self._covered_chars(later, cum, max(self.dup_n_grams)) <= min_dup_limit:
                        dups_cleared = True
                        continue
                if self._covered_chars(later, cum, n) > limit and self._dup_chars(hashes, window, n, later) > limit:
                    return f"dup_{n}_gram"
        return None

    @staticmethod
    def _covered_chars(later: Any, cum: Any, n: int) -> int:
        """Characters of the words covered by the n-grams starting at `later` (sorted), each word counted once.

        The skipping scan counts non-overlapping repeated n-grams only, and n-grams repeat only where shorter
        ones do, so this bounds its count from above for this n and, from the positions of a shorter n, too.
        """
        import numpy as np

        ends = np.minimum(later + n, len(cum) - 1)
        # starts ascend, so ends do too: a new run of overlapping windows begins where a start passes the last end
        new_run = np.empty(len(later), dtype=bool)
        new_run[0] = True
        np.greater_equal(later[1:], ends[:-1], out=new_run[1:])
        run_starts = later[new_run]
        run_ends = ends[np.append(np.flatnonzero(new_run)[1:] - 1, len(later) - 1)]
        return int((cum[run_ends] - cum[run_starts]).sum())

    @staticmethod
    def _dup_chars(hashes: Any, window: Any, n: int, later: Any) -> int:
        """Characters (the words' own, no spaces) in duplicate n-grams, skipping n words past each one counted.

        `later` holds the positions whose n-gram repeats an earlier one: all before the first are first sightings.
        """
        start = int(later[0])
        keys, window_list = hashes.tolist(), window.tolist()
        seen, chars, i = set(keys[:start]), 0, start
        while i < len(keys):
            if keys[i] in seen:
                chars += window_list[i]
                i += n
            else:
                seen.add(keys[i])
                i += 1
        return chars


def _later_occurrences(hashes: Any) -> Any:
    """Sorted positions whose value occurred at an earlier position (one stable sort, no unique/inverse)."""
    import numpy as np

    order = np.argsort(hashes, kind="stable")
    ranked = hashes[order]
    # in a stable sort equal values keep their order, so every one but the first of a run is a later occurrence
    return np.sort(order[1:][ranked[1:] == ranked[:-1]])
