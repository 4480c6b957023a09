"""The record schema and its Parquet shards, shared by every data stage.

A records directory holds ``part-NNNNN.parquet`` shards of rows with :data:`COLUMNS` (the clean stage adds
:data:`EXTRA_COLUMNS`); shards are written row group by row group under a temporary name, so memory stays bounded
and a half-written file never carries its final name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.atomic import publish_file, tmp_sibling

COLUMNS: tuple[str, ...] = ("id", "text", "source", "url", "path", "metadata")
"""Record schema: id (32 hex chars), text, source name, url (web records) or path (everything else), metadata
(a JSON object as a string)."""
EXTRA_COLUMNS: tuple[str, ...] = ("lang", "lang_score")
"""Columns the clean stage adds: the identified language and its score."""
SHARD_PATTERN = "part-{:05d}.parquet"
ROW_GROUP_ROWS = 1024
"""Rows per Parquet row group: readers stream a row group at a time."""


class ParquetRows:
    """Buffered writer of one Parquet file: rows in, row groups of 1024 out, under a temporary name that is
    renamed into place on ``close`` (so a half-written file never carries its final name)."""

    def __init__(self, path: Path, schema: Any, **writer_options: Any) -> None:
        import pyarrow.parquet as pq

        self.path, self.tmp, self.schema = path, tmp_sibling(path), schema
        self.writer = pq.ParquetWriter(self.tmp, schema, compression="zstd", **writer_options)
        self.rows: dict[str, list[Any]] = {name: [] for name in schema.names}

    def add(self, row: Mapping[str, Any]) -> None:
        for name, values in self.rows.items():
            values.append(row.get(name))
        if len(self.rows[self.schema.names[0]]) >= ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.rows[self.schema.names[0]]:
            self.writer.write_table(pa.table(self.rows, schema=self.schema))
            self.rows = {name: [] for name in self.schema.names}

    def close(self) -> None:
        self.flush()
        self.writer.close()
        publish_file(self.tmp, self.path)


def iter_shards(shard_dir: Path) -> list[Path]:
    """The shard files of a records directory, in order."""
    return sorted(shard_dir.glob("part-*.parquet"))
