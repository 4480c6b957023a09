"""The collect stage's shard writer: stable ids, deterministic sampling, bounded shards and the quarantine.

Every source streams through :func:`write_records`: good documents become rows of ``part-NNNNN.parquet`` shards
(closed at a record or byte bound, so memory stays bounded for any input size), bad ones become lines of
``quarantine.jsonl`` with the reason. Counters come back datatrove-style.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.collect.items import Document, Rejection, SourceError, SourceItem
from tasks.records import COLUMNS, SHARD_PATTERN, ParquetRows

log = logging.getLogger(__name__)

QUARANTINE_FILE = "quarantine.jsonl"


def record_id(source: str, location: str, text: str) -> str:
    """Stable, content-derived id: a 128-bit BLAKE2b of source name, location and text.

    The location makes ids unique even for identical texts (exact duplicates are the dedup stage's job).
    """
    return _record_id(source, location, text.encode("utf-8", "surrogatepass"))


def _record_id(source: str, location: str, text: bytes) -> str:
    head = f"{source}\x00{location}\x00".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(head + text + b"\x00", digest_size=16).hexdigest()


def keep_sample(rid: str, weight: float, seed: int) -> bool:
    """Deterministic Bernoulli(weight) decision from the record id and the seed."""
    if weight >= 1.0:
        return True
    u = int.from_bytes(hashlib.blake2b(f"{seed}:{rid}".encode(), digest_size=8).digest(), "big") / 2**64
    return u < weight


@dataclass(frozen=True)
class SourcePlan:
    """One source as the writer sees it: a name, a reader, and how much of it to keep."""

    name: str
    read: Callable[[], Iterator[SourceItem]]
    weight: float = 1.0
    max_docs: int | None = None


class _ShardWriter:
    """Writes rows into size-bounded shards ``part-NNNNN.parquet``."""

    def __init__(self, out_dir: Path, max_records: int, max_bytes: int) -> None:
        import pyarrow as pa

        self.out_dir, self.max_records, self.max_bytes = out_dir, max_records, max_bytes
        self.schema = pa.schema([(c, pa.string()) for c in COLUMNS])
        self.current: ParquetRows | None = None
        self.shards = 0
        self.shard_records = 0
        self.shard_bytes = 0

    def add(self, row: dict[str, Any], nbytes: int) -> None:
        if self.current is None:
            path = self.out_dir / SHARD_PATTERN.format(self.shards)
            self.current = ParquetRows(path, self.schema, use_dictionary=["source"])
            self.shards += 1
        self.current.add(row)
        self.shard_records += 1
        self.shard_bytes += nbytes
        if self.shard_records >= self.max_records or self.shard_bytes >= self.max_bytes:
            self.close()

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None
            self.shard_records = self.shard_bytes = 0


class _Progress:
    """Progress on the console: a tqdm bar on a terminal, otherwise a log line every 10 s."""

    def __init__(self, name: str) -> None:
        self.name, self.docs, self.bytes = name, 0, 0
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(desc=f"collect {name}", unit=" docs", mininterval=0.5, file=sys.stderr)
        self.next_log = time.monotonic() + 10.0

    def update(self, nbytes: int) -> None:
        self.docs += 1
        self.bytes += nbytes
        if self.bar is not None:
            self.bar.update(1)
        elif time.monotonic() >= self.next_log:
            log.info("collect %s: %d docs, %.1f MB so far", self.name, self.docs, self.bytes / 1e6)
            self.next_log = time.monotonic() + 10.0

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _row(source: str, doc: Document) -> tuple[dict[str, Any], int]:
    encoded = doc.text.encode("utf-8", "surrogatepass")
    url = doc.url or (doc.location if doc.location.startswith(("http://", "https://")) else None)
    row = {
        "id": _record_id(source, doc.location, encoded),
        "text": doc.text,
        "source": source,
        "url": url,
        "path": None if url else doc.location,
        "metadata": json.dumps(doc.metadata, sort_keys=True, ensure_ascii=False, default=str),
    }
    return row, len(encoded)


def _open(plan: SourcePlan) -> Iterator[SourceItem]:
    try:
        return plan.read()
    except SourceError as err:
        raise type(err)(f"source '{plan.name}': {err}") from None


def write_records(
    plans: Iterable[SourcePlan],
    out_dir: Path,
    *,
    seed: int,
    shard_max_records: int,
    shard_max_bytes: int,
    max_doc_bytes: int,
) -> dict[str, int]:
    """Stream every source into Parquet shards under ``out_dir`` and bad records into the quarantine file.

    Args:
        plans: sources in the order to read them.
        out_dir: an existing, empty directory.
        seed: seed of the per-source sampling.
        shard_max_records: a shard is closed after this many records.
        shard_max_bytes: a shard is closed once its text reaches this many UTF-8 bytes.
        max_doc_bytes: larger documents are quarantined as ``too_long``.

    Returns:
        Counters: ``docs_in``, ``kept``, ``sampled_out``, ``quarantined``, ``quarantined_<reason>``,
        ``bytes_kept``, ``shards``, and per source ``source.<name>.{docs_in,kept,quarantined,bytes_kept}``.
    """
    stats: Counter[str] = Counter()
    # open every source first: a missing or misconfigured one fails before anything is written
    opened = [(plan, _open(plan)) for plan in plans]
    shards = _ShardWriter(out_dir, shard_max_records, shard_max_bytes)
    with open(out_dir / QUARANTINE_FILE, "w", encoding="utf-8") as quarantine:

        def reject(source: str, item: Rejection) -> None:
            rec = {"source": source, "location": item.location, "url": item.url, "reason": item.reason,
                   "detail": item.detail, "raw": item.raw}
            quarantine.write(json.dumps(rec, ensure_ascii=False) + "\n")
            stats["quarantined"] += 1
            stats[f"quarantined_{item.reason}"] += 1
            stats[f"source.{source}.quarantined"] += 1

        for plan, items in opened:
            progress = _Progress(plan.name)
            kept = 0
            stats[f"source.{plan.name}.kept"] += 0
            for item in items:
                stats["docs_in"] += 1
                stats[f"source.{plan.name}.docs_in"] += 1
                if isinstance(item, Rejection):
                    reject(plan.name, item)
                    continue
                row, nbytes = _row(plan.name, item)
                if nbytes > max_doc_bytes:
                    reject(plan.name, Rejection(item.location, "too_long", f"{nbytes} bytes > {max_doc_bytes}",
                                                item.text[:1000]))
                    continue
                if not keep_sample(row["id"], plan.weight, seed):
                    stats["sampled_out"] += 1
                    continue
                shards.add(row, nbytes)
                progress.update(nbytes)
                kept += 1
                stats["kept"] += 1
                stats["bytes_kept"] += nbytes
                stats[f"source.{plan.name}.kept"] += 1
                stats[f"source.{plan.name}.bytes_kept"] += nbytes
                if plan.max_docs is not None and kept >= plan.max_docs:
                    break
            progress.close()
            if hasattr(items, "close"):  # a source stopped by max_docs: let its reader (and its cache) finish now
                items.close()
            log.info("collect %s: %d kept, %d quarantined", plan.name, kept,
                     stats[f"source.{plan.name}.quarantined"])
        shards.close()
    stats["shards"] = shards.shards
    for key in ("docs_in", "kept", "sampled_out", "quarantined", "bytes_kept"):
        stats[key] += 0
    return dict(sorted(stats.items()))
