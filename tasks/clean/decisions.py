"""Clean's decision cache: what the filters decided for each document of a shard, keyed by what decided it.

A decision is a function of the document's text, the clean settings and the filter code, nothing else: the kept text
(when the filters edited it), the language and its score, the rejection reason, and the document's own share of the
stage counters. So a shard's decisions are stored under a key of the shard's bytes, the settings and the code
(:func:`settings_key`, :func:`shard_key`); an unchanged shard takes them all from there. A shard that changed (the
collect stage cut it at another place, or new documents came into it) looks its documents up by id among every entry
of the same settings: a record id is a digest of the document's text, so an id seen before has the same decision.
Only the documents found nowhere go through the filters. Either way the shard job writes its output from the
decisions in row order, with the same code, so a cached decision gives the same bytes as a fresh one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.incremental import EntryStore, code_digest, file_digest, key_of

log = logging.getLogger(__name__)
_COLUMNS = ("id", "text", "lang", "lang_score", "reason", "counts")


@dataclass(frozen=True, slots=True)
class Decision:
    """What clean does with one document: ``text`` the kept (possibly edited) text, None when rejected with
    ``reason``; ``counts`` its own counters (``docs_in``, the funnel, ``dropped_<reason>``, ``pii.<kind>``...)."""

    text: str | None
    lang: str | None
    lang_score: float | None
    reason: str | None
    counts: dict[str, int]

    def without_text(self, original: str | None) -> Decision:
        """This decision as stored: the kept text dropped when it is the original (the common case)."""
        if self.text is not None and self.text == original:
            return Decision(None, self.lang, self.lang_score, self.reason, self.counts)
        return self


SETTINGS: tuple[str, ...] = ("fix_unicode", "languages", "min_language_score", "language_max_chars", "order", "c4",
                              "gopher_quality", "gopher_repetition", "pii")
"""The shard job's keyword arguments that decide (the others say where to read and write)."""


def settings_key(job: Mapping[str, Any]) -> str:
    """Key of the clean settings in a shard job's keyword arguments and of the filter code (``tasks.clean``)."""
    import tasks.clean

    settings = {name: job[name] for name in SETTINGS}
    return key_of("clean-decisions", code_digest(tasks.clean), json.dumps(settings, sort_keys=True, default=list))


def shard_key(shard: Path) -> str:
    """Key of one input shard's bytes."""
    return file_digest(shard)


class DecisionCache:
    """The decisions stored under one settings key (``<directory>/<settings key>/``), by shard key.

    Args:
        directory: the stage's cache directory.
        job: a shard job's keyword arguments (those in :data:`SETTINGS` are read).
    """

    def __init__(self, directory: Path, job: Mapping[str, Any]) -> None:
        self.store = EntryStore(Path(directory) / settings_key(job))
        self._index: dict[str, tuple[str, int]] | None = None
        self._tables: dict[str, list[dict[str, Any]]] = {}

    def shard(self, key: str, ids: list[str]) -> list[Decision | None]:
        """The decision of each of ``ids`` (a shard's rows, in order) where one is known, else None."""
        entry = self.store.get(key)
        if entry is not None:
            rows = self._rows(key)
            if [r["id"] for r in rows] == ids:
                return [_decision(r) for r in rows]
        index = self._load_index()
        return [self._lookup(index.get(i)) for i in ids]

    def save(self, key: str, decisions: Iterable[tuple[str, Decision, str | None]]) -> None:
        """Store a shard's decisions, ``(id, decision, original text)`` in row order, under ``key``; a failure to
        store is logged, never the run's error (the shard is only filtered again next time)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows: dict[str, list[Any]] = {c: [] for c in _COLUMNS}
        for i, d, _ in decisions:
            rows["id"].append(i)
            rows["text"].append(d.text)
            rows["lang"].append(d.lang)
            rows["lang_score"].append(d.lang_score)
            rows["reason"].append(d.reason)
            rows["counts"].append(json.dumps(d.counts, sort_keys=True))
        schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("lang", pa.string()),
                            ("lang_score", pa.float64()), ("reason", pa.string()), ("counts", pa.string())])
        try:
            with self.store.put(key) as tmp:
                pq.write_table(pa.table(rows, schema=schema), tmp, compression="zstd")
        except OSError as exc:
            log.warning("clean cache: could not store a shard's decisions (%s)", exc)

    def _rows(self, key: str) -> list[dict[str, Any]]:
        import pyarrow.parquet as pq

        if key not in self._tables:
            self._tables[key] = pq.read_table(self.store.path(key)).to_pylist()
        return self._tables[key]

    def _load_index(self) -> dict[str, tuple[str, int]]:
        """id -> (entry, row) over every entry of these settings, built once (only the id column is read)."""
        import pyarrow.parquet as pq

        if self._index is None:
            self._index = {}
            for key in self.store.keys():
                try:
                    ids = pq.read_table(self.store.path(key), columns=["id"]).column("id").to_pylist()
                except (OSError, ValueError):  # an entry pruned meanwhile or unreadable: its documents are refiltered
                    continue
                self._index.update((i, (key, n)) for n, i in enumerate(ids))
        return self._index

    def _lookup(self, where: tuple[str, int] | None) -> Decision | None:
        if where is None:
            return None
        self.store.used.add(where[0])
        return _decision(self._rows(where[0])[where[1]])


def _decision(row: Mapping[str, Any]) -> Decision:
    # a kept document whose text the filters did not change stores None: the caller keeps its original text
    return Decision(row["text"], row["lang"], row["lang_score"], row["reason"], json.loads(row["counts"]))
