"""The item types every source reader yields, the errors that stop a whole source, and the shared checks.

Every reader streams its input and yields `Document`s and `Rejection`s in a deterministic order. A bad record never
raises: it becomes a `Rejection` with a reason from `REASONS`. Only a source that cannot be read at all (nothing
matches, wrong configuration) raises, and it does so before the first item.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REASONS: tuple[str, ...] = ("invalid_json", "not_an_object", "undecodable", "missing_text", "non_string_text",
                            "empty_text", "too_long", "truncated", "unreadable", "no_text_extracted")
_RAW_CHARS = 1000


class SourceError(Exception):
    """Base of the errors that stop a whole source. Exit code 1."""

    exit_code = 1


class SourceNotFoundError(SourceError):
    """A path, glob or directory names nothing that exists. Exit code 2: the params point at nothing."""

    exit_code = 2


class SourceConfigError(SourceError):
    """The source's settings cannot work (unknown format, compressed parquet, ...). Exit code 2."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class Document:
    """One text read from a source, exactly as read (decoded, never normalised).

    `location` is unique within the source (file and line, row or record); `url` is the page a web record was
    fetched from, when there is one.
    """

    text: str
    location: str
    metadata: dict[str, Any]
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """One input record that could not become a `Document`, and why (`url`: the page, for a web record)."""

    location: str
    reason: str
    detail: str
    raw: str
    url: str | None = None


SourceItem = Document | Rejection


def raw_excerpt(data: bytes | str) -> str:
    """Returns at most 1000 characters of `data`, undecodable bytes backslash-escaped."""
    if isinstance(data, bytes):
        data = data[: _RAW_CHARS * 4].decode("utf-8", "backslashreplace")
    return data[:_RAW_CHARS]


def check_text(value: Any, location: str, field: str, max_doc_bytes: int, raw: Callable[[], bytes | str],
               metadata: dict[str, Any]) -> SourceItem:
    """Turns one record's text value into a `Document`, or a `Rejection` saying what is wrong with it.

    Args:
        value: The value found under the text field (None when absent).
        location: Where the record came from.
        field: The text field's name, for the rejection detail.
        max_doc_bytes: Largest accepted text, in UTF-8 bytes.
        raw: Called only on rejection, to get the offending input.
        metadata: Extras for the `Document`.
    """
    if value is None:
        return Rejection(location, "missing_text", f"no value for field {field!r}", raw_excerpt(raw()))
    if not isinstance(value, str):
        return Rejection(location, "non_string_text", f"field {field!r} is {type(value).__name__}, not str",
                         raw_excerpt(raw()))
    if not value.strip():
        return Rejection(location, "empty_text", f"field {field!r} is empty or whitespace", raw_excerpt(raw()))
    try:  # JSON may escape lone surrogates, which no UTF-8 writer downstream could store
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        return Rejection(location, "undecodable", str(exc), raw_excerpt(raw()))
    if size > max_doc_bytes:
        return Rejection(location, "too_long", f"text is {size} bytes, over {max_doc_bytes}", raw_excerpt(value))
    return Document(value, location, metadata)


def expand_paths(patterns: Sequence[str], base_dir: Path) -> list[Path]:
    """Expands globs (`**` recursive; relative ones under `base_dir`) to a sorted, de-duplicated list of files.

    Raises:
        SourceNotFoundError: naming every pattern that matches no file.
    """
    found: set[Path] = set()
    missing: list[str] = []
    for pattern in patterns:
        full = str(Path(base_dir) / os.path.expanduser(pattern))
        files = [Path(m) for m in glob.glob(full, recursive=True) if os.path.isfile(m)]
        if not files:
            missing.append(pattern)
        found.update(files)
    if missing:
        # say what a relative pattern was relative to; an absolute one speaks for itself
        named = [repr(p) if os.path.isabs(os.path.expanduser(p)) else f"{p!r} (relative to {base_dir})"
                 for p in missing]
        hints = [f"{p!r} is a directory: use a glob such as '{p.rstrip('/')}/**/*.jsonl'"
                 for p in missing if (Path(base_dir) / os.path.expanduser(p)).is_dir()]
        raise SourceNotFoundError(f"no files match {', '.join(named)}; "
                                  "fix the paths in the source's params or create the files" +
                                  "".join(f"; {h}" for h in hints))
    return sorted(found)
