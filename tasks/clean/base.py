"""The document view every filter shares, and the base class of a rule family.

Words are split the way spaCy's blank English tokenizer (which datatrove's filters use) splits them, by one
precompiled regex; lines and words are computed once per document and shared by all rules.
"""

from __future__ import annotations

import re
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
SYMBOL_RE = re.compile(
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
