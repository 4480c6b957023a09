"""Collect's per-file cache: the items (documents and rejections) one source file gave, keyed by its content.

A file is read once: its items are stored under a key of the file's bytes (BLAKE2b), the path it was read under
(its records' locations name it), the reader settings and the source code of the readers; a later run finds an
unchanged file's items there and does not parse it again. A new or changed file has no entry and is read (and
stored); a deleted one is never asked for, so its records leave the output. The items come back exactly as the reader
gave them, so the shard writer sees the same stream either way and writes the same bytes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tasks.collect.items import Document, Rejection, SourceItem
from tasks.incremental import EntryStore, code_digest, file_digest, key_of

log = logging.getLogger(__name__)

_COLUMNS = ("kind", "text", "location", "metadata", "url", "reason", "detail", "raw")


class ItemCache:
    """Source files' items by content. ``counts`` says how many files were ``reused`` and ``read``.

    Args:
        directory: the cache's directory (outside the stage's outputs; made on first use).
    """

    def __init__(self, directory: Path) -> None:
        import tasks.collect
        import tasks.readers

        self.store = EntryStore(directory)
        self.code = code_digest(tasks.collect, tasks.readers)
        self.counts = {"reused": 0, "read": 0}
        self.digests: dict[str, str] = {}
        """Path -> content digest of every file asked for."""

    def items(self, path: Path, settings: tuple[Any, ...], read: Callable[[], Iterator[SourceItem]]
              ) -> Iterator[SourceItem]:
        """The items of the file ``path``: from the cache when its content was read before under the same
        ``settings`` (whatever else its items depend on), else from ``read()``, stored as they stream by.

        An entry is stored only when the file was read to its end (a reader stopped early, e.g. by ``max_docs``,
        leaves none); a failure to store it is logged and ignored, never the run's error.
        """
        self.digests[str(path)] = digest = file_digest(path)
        key = key_of("collect-items", self.code, str(path), settings, digest)
        entry = self.store.get(key)
        if entry is not None:
            self.counts["reused"] += 1
            yield from _load(entry)
            return
        self.counts["read"] += 1
        yield from self._store(key, read())

    def _store(self, key: str, items: Iterator[SourceItem]) -> Iterator[SourceItem]:
        import pyarrow as pa

        from tasks.records import ParquetRows

        try:
            self.store.path(key).parent.mkdir(parents=True, exist_ok=True)
            schema = pa.schema([(c, pa.string()) for c in _COLUMNS])
            rows: ParquetRows | None = ParquetRows(self.store.path(key), schema)
        except OSError as exc:  # a full or read-only disk: read the file all the same
            log.warning("collect cache: cannot store entries (%s); the file is read every time", exc)
            rows = None
        complete = False
        try:
            for item in items:
                if rows is not None:
                    rows.add(_row(item))
                yield item
            complete = True
        finally:  # the entry takes its name only when the whole file went by (its temporary file is dropped else)
            if rows is not None:
                if complete:
                    rows.close()
                    self.store.used.add(key)
                else:
                    rows.writer.close()
                    rows.tmp.unlink(missing_ok=True)


def _row(item: SourceItem) -> dict[str, Any]:
    if isinstance(item, Document):
        return {"kind": "d", "text": item.text, "location": item.location, "url": item.url,
                "metadata": json.dumps(item.metadata, sort_keys=True, ensure_ascii=False, default=str)}
    return {"kind": "r", "location": item.location, "url": item.url, "reason": item.reason, "detail": item.detail,
            "raw": item.raw}


def _load(entry: Path) -> Iterator[SourceItem]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(entry)
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            if row["kind"] == "d":
                yield Document(row["text"], row["location"], json.loads(row["metadata"]), row["url"])
            else:
                yield Rejection(row["location"], row["reason"], row["detail"], row["raw"], row["url"])
