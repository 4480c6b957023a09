"""CoNLL-style files: one token per line with its tag in the last column, a blank line between sentences.

The shape of CoNLL-2002/2003 and most NER corpora since (``word POS chunk NER`` in CoNLL-2003, ``word<TAB>tag`` in
WNUT): the first column is the token, the last the tag, any columns between are ignored. Columns are split on tabs
when the line has one (a token may then hold spaces), else on runs of white space. ``-DOCSTART-`` lines (document
boundaries) are skipped and end the sentence before them; a sentence ends at a blank line or at the end of the file.

Each sentence is one record ``{"tokens": [...], "tags": [...]}``, ``at`` its first line. A sentence with a line of a
single column (a token without a tag) is quarantined ``malformed_line`` at that line; one with a line that is not
UTF-8 is ``undecodable``; one over ``limit`` bytes is ``too_long``. The sentences around a bad one are kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tasks.readers.compression import open_binary
from tasks.readers.formats import Item, _lines
from tasks.readers.items import At, Quarantined, Record, raw_excerpt

REASONS: tuple[str, ...] = ("malformed_line",)
"""The quarantine reason of this format beyond the readers' own (``undecodable``, ``too_long``)."""
DOCSTART = "-DOCSTART-"


@dataclass
class _Sentence:
    """The lines of the sentence being read: where it starts, its raw bytes, and the first fault found in it."""

    start: int = 0
    raw: list[bytes] = field(default_factory=list)
    size: int = 0
    tokens: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    fault: Quarantined | None = None

    def add(self, number: int, line: bytes) -> None:
        if not self.raw:
            self.start = number
        self.size += len(line) + 1
        if len(self.raw) < 200:  # enough to show in a quarantine row; the rest is never held
            self.raw.append(line)

    def item(self, limit: int | None) -> Item | None:
        """The sentence as a record or a quarantined one; None for no lines at all."""
        if not self.raw:
            return None
        raw = b"\n".join(self.raw)
        if self.fault is not None:
            return Quarantined(self.fault.at, self.fault.reason, self.fault.detail, raw_excerpt(raw))
        if limit is not None and self.size > limit:
            return Quarantined(At("line", self.start), "too_long", f"sentence is over {limit} bytes",
                               raw_excerpt(raw))
        return Record(At("line", self.start), {"tokens": self.tokens, "tags": self.tags}, lambda: raw)


def columns(text: str) -> list[str]:
    """A line's columns: split on tabs when it has one (fields may hold spaces), else on runs of white space."""
    if "\t" in text:
        return [c.strip() for c in text.strip("\r\n").split("\t") if c.strip()]
    return text.split()


def iter_conll(path: Path, limit: int | None) -> Iterator[Item]:
    """The sentences of a CoNLL-style file, in file order (see the module docstring for the rules).

    Args:
        path: the file (plain, .gz or .zst).
        limit: the longest sentence in bytes (None: no bound); a single line over it is ``too_long`` too.
    """
    sentence = _Sentence()
    with open_binary(path) as fh:
        for number, line, fits in _lines(fh, limit):
            if fits and not line.strip():  # a blank line ends the sentence
                if (item := sentence.item(limit)) is not None:
                    yield item
                sentence = _Sentence()
                continue
            at = At("line", number)
            if not fits:
                sentence.add(number, line[:1000])
                sentence.fault = sentence.fault or Quarantined(at, "too_long", f"line is over {limit} bytes", "")
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                sentence.add(number, line)
                sentence.fault = sentence.fault or Quarantined(at, "undecodable", str(exc), "")
                continue
            text = text.removeprefix("\ufeff") if number == 1 else text
            cols = columns(text)
            if cols and cols[0] == DOCSTART:  # a document boundary is no token and ends the sentence before it
                if (item := sentence.item(limit)) is not None:
                    yield item
                sentence = _Sentence()
                continue
            sentence.add(number, line)
            if len(cols) < 2:
                sentence.fault = sentence.fault or Quarantined(
                    at, "malformed_line", f"line {number} has {len(cols)} column: a CoNLL line is 'token ... tag' "
                    "(the tag in the last column, separated by white space or a tab)", "")
                continue
            sentence.tokens.append(cols[0])
            sentence.tags.append(cols[-1])
    if (item := sentence.item(limit)) is not None:
        yield item
