"""Collect's local-file source: jsonl/json/parquet/txt/md globs, plain or .gz/.zst compressed, read by
``tasks.readers`` and mapped to `Document`s and `Rejection`s (tasks.collect.items) in file order.

A file that stops being readable (cut short, corrupt, a JSON document that stops parsing) gives one `Rejection` at
that point, after the documents before it, and reading goes on with the next file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tasks.collect.cache import ItemCache
from tasks.collect.items import (
    Rejection,
    SourceConfigError,
    SourceItem,
    check_text,
    expand_paths,
    location,
    source_errors,
)
from tasks.readers.compression import CHUNK
from tasks.readers.errors import MissingColumnsError, ReadError
from tasks.readers.files import check_format, file_format, read_file
from tasks.readers.items import Quarantined, Record

OFFERED: tuple[str, ...] = ("jsonl", "json", "parquet", "txt", "md")
"""The formats a files source reads (its params' ``format``)."""


def iter_files(*, paths: Sequence[str], base_dir: Path, fmt: str = "auto", text_field: str = "text",
               text_unit: str = "file", max_doc_bytes: int = 10_000_000,
               cache: ItemCache | None = None) -> Iterator[SourceItem]:
    """Streams documents from local files matched by globs, in sorted path order.

    Settings are checked when called, so a bad source fails before any item is read.

    Args:
        paths: Globs, relative to `base_dir` unless absolute; `**` is recursive.
        base_dir: Directory relative globs start from.
        fmt: "auto" (by suffix, after a `.gz`/`.zst`/`.zstd` compression suffix), "jsonl", "ndjson", "json",
            "parquet", "txt" or "md".
        text_field: Field (json) or column (parquet) holding the text.
        text_unit: For txt/md: "file" (one document per file) or "line" (one per non-blank line).
        max_doc_bytes: Longer texts are rejected as `too_long`, and never read whole into memory.
        cache: Where an unchanged file's items come from instead of parsing it again (None: every file is read).

    Returns:
        An iterator of `Document` and `Rejection` items.

    Raises:
        SourceNotFoundError: A glob matches no file.
        SourceConfigError: Unknown format or text unit, or a compressed parquet file.
    """
    if text_unit not in ("file", "line"):
        raise SourceConfigError(f"unknown text_unit {text_unit!r}; use 'file' or 'line'")
    with source_errors():
        check_format(fmt, OFFERED)  # an unknown fmt fails even before the globs are looked at
        plan = [(path, file_format(path, fmt, OFFERED)) for path in expand_paths(paths, base_dir)]
    return _iter_plan(plan, text_field, text_unit, max_doc_bytes, cache)


def _iter_plan(plan: list[tuple[Path, str]], field: str, unit: str, limit: int, cache: ItemCache | None
               ) -> Iterator[SourceItem]:
    for path, fmt in plan:
        if cache is None:
            yield from _iter_file(path, fmt, field, unit, limit)
        else:
            yield from cache.items(path, ("files", fmt, field, unit, limit),
                                   lambda p=path, f=fmt: _iter_file(p, f, field, unit, limit))


def _iter_file(path: Path, fmt: str, field: str, unit: str, limit: int) -> Iterator[SourceItem]:
    # a JSON line may escape its text to twice its size and carry other fields; no valid record is longer
    bound = limit if fmt in ("txt", "md") else 2 * limit + CHUNK
    try:
        for item in read_file(path, fmt, limit=bound, columns=(field,), text_unit=unit):
            yield _document(item, str(path), fmt, field, limit)
    except ReadError as exc:  # what came before was yielded; say the rest is lost
        yield Rejection(location(str(path), exc.at), exc.reason, exc.detail, exc.raw)
    except MissingColumnsError as exc:  # one rejection for the file, not one per row
        yield Rejection(str(path), "missing_text", f"no column {field!r}; columns: {exc.columns}", "")


def _document(item: Record | Quarantined, base: str, fmt: str, field: str, limit: int) -> SourceItem:
    """A record as a document (its text field checked), or a quarantined one as a rejection."""
    where = location(base, item.at)
    if isinstance(item, Quarantined):
        return Rejection(where, item.reason, item.detail, item.raw)
    value: Any = item.value
    text = value if isinstance(value, str) else value.get(field)
    raw = item.raw or (lambda: repr(text))  # a table row: its text value is the input
    return check_text(text, where, "text" if isinstance(value, str) else field, limit, raw, {"format": fmt})
