"""Document views shared by the filters, and the C4 and Gopher quality rules.

C4: Raffel et al. 2020, section 2.2, with the line order of the reference cleaner (TFDS `c4_utils.clean_page`).
Gopher: Rae et al. 2021, appendix A.1.1 (quality filters). A rule whose threshold is None is off.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cached_property

# One pass of one regex splits words the way spaCy's blank English tokenizer does (whitespace dropped) closely enough
# for the thresholds below, checked against datatrove on a mixed corpus. A word runs from a letter or digit to a
# letter or digit and may hold inner punctuation ("a.b", "f(x", "snake_case", "3.5", "1,000", "covid-19"); it splits
# at hyphens, commas and "=:<>" between letters, at "..", and before clitics ("'s", "n't"). Most punctuation marks
# are words of their own, but "-/@\\^|~•" stick to a word's either end and "$%+=§€£" to its end after a letter
# (after a digit spaCy splits them: "56%" is "56" + "%"), and
# "e.g.", "U.S.", "Mr." and single initials keep their final dot.
_CLITICS = r"(?:s|S|m|re|ve|ll|d|t)\b"  # "n't" splits as "n" + "'t": same count and letters as spaCy's "n't"
_STICKY = r"[\-/@\\^|~•]"
_INNER = rf"""[^\s\w,.\-'’…:<>=]|_|(?<!\d)-(?=\d)|,(?![a-zA-Z])|(?<![a-zA-Z]),|\.(?![.A-Z])|(?<![a-z])\.(?!\.)
    |[:<>=](?![a-zA-Z])|(?<![a-zA-Z0-9])[:<>=]|['’](?!{_CLITICS})"""
_FINAL_DOT = r"""\.(?:(?<=\.[A-Za-z]\.)|(?<=[\s(\["'“‘][A-Za-z]\.)|(?<=^[A-Za-z]\.)|(?<=\b(?:Mr|Dr|Ms|St|Jr|Sr|Co|vs)\.)
    |(?<=\b(?:Mrs|Inc|Ltd|Gen|Gov|Rev|Sen|Rep|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\.)|(?<=\b(?:Corp|Prof)\.))"""
# The (?=\S\S) guard makes the usual word end (a space, or one mark then a space) fail at once: a third faster.
_CORE = rf"[^\W_]+(?:(?=\S\S)(?:{_INNER})+[^\W_]+)*(?:{_FINAL_DOT}(?!\w))?(?:(?:{_STICKY}|(?<!\d)[$%+=§€£])+(?!\S))?"
WORD_RE = re.compile(rf"{_CORE}|['’]{_CLITICS}|(?<![^\W_]){_STICKY}+(?:{_CORE})?|\.{{2,}}|\S", re.X)
# Punctuation and symbols; a word made only of these is a "symbol" and does not count as a word for Gopher.
_SYMBOL_RE = re.compile(
    r"[!-/:-@\[-`{-~\x00-\x08\x0b-\x1f\x7f-\xbf\u2010-\u2027\u2030-\u205e\u3000-\u303f\uff01-\uff0f]+"
)


class Doc:
    """One document's text with its lines, paragraphs and words, each computed once and shared by all rules."""

    def __init__(self, text: str) -> None:
        self.text = text

    @cached_property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    @cached_property
    def words(self) -> list[str]:
        return WORD_RE.findall(self.text)


class DocFilter:
    """A rule family: `filter` returns the document to keep (possibly edited) or the name of the rule that drops it.

    Subclasses override `filter` only; `counters` holds their own line-level counts.
    """

    name = "filter"

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}

    def filter(self, doc: Doc) -> Doc | str:
        raise NotImplementedError


_CITATION_RE = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
_END_MARKS = (".", "!", "?", '"', "'", "”", "’")
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
# A sentence ends at . ! ? (a "." after a lowercase letter, digit, quote or bracket, or after two capitals: not
# "e.g." or "Mr.") when more words follow on the same line; each kept line counts one sentence more than that.
_SENTENCE_END_RE = re.compile(r"(?:(?<=[a-z0-9%)\]\"'”’])\.|(?<=[A-Z]{2})\.|[!?])(?=[^\w\s]*[ \t]+[^\w\s]*\w)")


class C4QualityFilter(DocFilter):
    """C4's line edits and page drops; keeps the edited text (kept lines joined by "\\n")."""

    name = "c4"

    def __init__(
        self,
        *,
        remove_citations: bool = True,
        filter_no_terminal_punct: bool = True,
        min_words_per_line: int | None = 3,
        max_word_length: int | None = 1000,
        filter_javascript: bool = True,
        filter_policy: bool = True,
        filter_lorem_ipsum: bool = True,
        filter_curly_bracket: bool = True,
        min_num_sentences: int | None = 5,
    ) -> None:
        """Args: each flag switches its rule; a None threshold switches it off (defaults are the published ones)."""
        super().__init__()
        self.remove_citations, self.filter_no_terminal_punct = remove_citations, filter_no_terminal_punct
        self.min_words_per_line, self.max_word_length = min_words_per_line, max_word_length
        self.filter_javascript, self.filter_policy = filter_javascript, filter_policy
        self.filter_lorem_ipsum, self.filter_curly_bracket = filter_lorem_ipsum, filter_curly_bracket
        self.min_num_sentences = min_num_sentences

    def _drop_line(self, rule: str) -> None:
        key = f"c4.lines_dropped.{rule}"
        self.counters[key] = self.counters.get(key, 0) + 1

    def filter(self, doc: Doc) -> Doc | str:
        text = doc.text
        # what is absent from the whole page is absent from each line: most pages skip most line checks
        lower = text.lower()
        lorem = self.filter_lorem_ipsum and "lorem ipsum" in lower
        javascript = self.filter_javascript and "javascript" in lower
        policies = [p for p in _POLICY if p in lower] if self.filter_policy else []
        curly = self.filter_curly_bracket and "{" in text
        citations = self.remove_citations and "[" in text
        max_len, min_words = self.max_word_length, self.min_words_per_line
        kept: list[str] = []
        for line in doc.lines:
            line = line.strip()
            # a line shorter than the limit cannot hold a longer word: skip the split for nearly every line
            if max_len is not None and len(line) > max_len and any(len(w) > max_len for w in line.split()):
                self._drop_line("too_long_word")
                continue
            if citations and "[" in line:
                line = _CITATION_RE.sub("", line)
            if self.filter_no_terminal_punct and (not line.endswith(_END_MARKS) or line.endswith("...")):
                self._drop_line("no_terminal_punct")
                continue
            if min_words and len(line.split(None, min_words - 1)) < min_words:
                self._drop_line("too_few_words")
                continue
            line_lower = line.lower() if lorem or javascript or policies else ""
            if lorem and "lorem ipsum" in line_lower:
                return "lorem_ipsum"
            if javascript and "javascript" in line_lower:
                self._drop_line("javascript")
                continue
            # the reference checks "{" only on lines that survived the line rules above, as here
            if curly and "{" in line:
                return "curly_bracket"
            if policies and any(p in line_lower for p in policies):
                self._drop_line("policy")
                continue
            kept.append(line)
        edited = "\n".join(kept).strip()
        if self.min_num_sentences is not None:
            sentences = len(kept) + len(_SENTENCE_END_RE.findall(edited))
            if sentences < self.min_num_sentences:
                return "too_few_sentences"
        return doc if edited == text else Doc(edited)


_ALPHA, _OTHER, _SYMBOL, _LONG_SYMBOL = range(4)


class _WordKinds(dict[str, int]):
    """word -> kind, computed on first sight: classifying each distinct word once keeps the per-word work in C."""

    def __missing__(self, word: str) -> int:
        if any(c.isalpha() for c in word):
            kind = _ALPHA
        elif _SYMBOL_RE.fullmatch(word):
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
