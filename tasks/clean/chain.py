"""The clean stage's document filters: C4 and Gopher rule families run in order, with a funnel of what remains.

Each family decides on a document or drops it with the name of the rule, "<family>.<rule>", e.g.
"c4.lorem_ipsum", "gopher_quality.min_doc_words", "gopher_repetition.top_3_gram". C4 also edits the text
(removes lines), and the families after it see the edited text.

Example:
    chain = build_filter_chain(["gopher_repetition", "gopher_quality", "c4"], c4={"min_num_sentences": 3})
    text, reason = chain(raw_text)
    chain.counters  # {"docs_in": 1, "funnel.gopher_repetition.docs": 1, ..., "kept": 1}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tasks.clean.base import Doc, DocFilter
from tasks.clean.c4 import C4QualityFilter
from tasks.clean.gopher_quality import GopherQualityFilter
from tasks.clean.gopher_repetition import GopherRepetitionFilter

FAMILIES: dict[str, type[DocFilter]] = {
    "c4": C4QualityFilter,
    "gopher_quality": GopherQualityFilter,
    "gopher_repetition": GopherRepetitionFilter,
}
# FineWeb's order: repetition sees the page before C4 removes its boilerplate lines, and C4 edits last.
DEFAULT_ORDER: tuple[str, ...] = ("gopher_repetition", "gopher_quality", "c4")


class FilterChain:
    """Runs a document through rule families in order; keeps datatrove-style counters and a funnel.

    Counters: `docs_in`, `chars_in`; per family `funnel.<family>.docs` / `.chars` (what remains after it);
    `dropped_<family>.<rule>`; `kept`, `chars_kept`; and the families' own line counts (e.g.
    `c4.lines_dropped.policy`).
    """

    def __init__(self, filters: Sequence[DocFilter]) -> None:
        """Args: filters: the enabled rule families, in the order they run."""
        names = [f.name for f in filters]
        if len(set(names)) != len(names):
            raise ValueError(f"each rule family may appear once in a filter chain, got {names}")
        self.filters = list(filters)
        self._counters: dict[str, int] = {"docs_in": 0, "chars_in": 0, "kept": 0, "chars_kept": 0}
        for name in names:
            self._counters[f"funnel.{name}.docs"] = 0
            self._counters[f"funnel.{name}.chars"] = 0

    def __call__(self, text: str) -> tuple[str | None, str | None]:
        """Filters one document.

        Args:
            text: the document's text.

        Returns:
            (kept text, None) when every family keeps it (the text as edited by C4), else (None, reason).
        """
        counters = self._counters
        counters["docs_in"] += 1
        counters["chars_in"] += len(text)
        doc = Doc(text)
        for f in self.filters:
            result = f.filter(doc)
            if isinstance(result, str):
                reason = f"{f.name}.{result}"
                key = f"dropped_{reason}"
                counters[key] = counters.get(key, 0) + 1
                return None, reason
            doc = result
            counters[f"funnel.{f.name}.docs"] += 1
            counters[f"funnel.{f.name}.chars"] += len(doc.text)
        counters["kept"] += 1
        counters["chars_kept"] += len(doc.text)
        return doc.text, None

    @property
    def counters(self) -> dict[str, int]:
        """The chain's counters merged with each family's own, as a new dict."""
        merged = dict(self._counters)
        for f in self.filters:
            merged.update(f.counters)
        return merged


def build_filter_chain(
    order: Sequence[str] = DEFAULT_ORDER,
    *,
    c4: Mapping[str, Any] | None = None,
    gopher_quality: Mapping[str, Any] | None = None,
    gopher_repetition: Mapping[str, Any] | None = None,
) -> FilterChain:
    """Builds a chain of the named rule families.

    Args:
        order: the enabled families, in the order they run: names from `FAMILIES`.
        c4: keyword arguments of `C4QualityFilter` (thresholds and rule switches); None: published defaults.
        gopher_quality: keyword arguments of `GopherQualityFilter`.
        gopher_repetition: keyword arguments of `GopherRepetitionFilter`.

    Returns:
        A fresh chain with zeroed counters.

    Raises:
        ValueError: an unknown family name (the message lists the known ones).
    """
    kwargs = {"c4": c4, "gopher_quality": gopher_quality, "gopher_repetition": gopher_repetition}
    unknown = [name for name in order if name not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown rule families {unknown}: use some of {sorted(FAMILIES)}")
    return FilterChain([FAMILIES[name](**(kwargs[name] or {})) for name in order])
