"""The collect stage's record schema: the items every source yields, the errors that stop a whole source, and the
text check that makes a record a document.

Every source streams its input (files and datasets through ``tasks.readers``) and yields `Document`s and `Rejection`s
in a deterministic order. A bad record never raises: it becomes a `Rejection` with a reason from `REASONS` (the
readers' own reasons, the text checks', and a file that stops: `truncated`, `unreadable`). Only a source that cannot
be read at all (nothing matches, wrong configuration) raises, and it does so before the first item.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.readers.errors import NotFoundError, SettingsError
from tasks.readers.files import expand_globs
from tasks.readers.items import At, raw_excerpt

REASONS: tuple[str, ...] = ("invalid_json", "not_an_object", "undecodable", "missing_text", "non_string_text",
                            "empty_text", "too_long", "truncated", "unreadable", "no_text_extracted")
_UNITS = {"line": "L", "item": "I", "row": "R"}


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
    """Expands globs (``**`` recursive; relative ones under ``base_dir``) to a sorted, de-duplicated list of files
    (``tasks.readers.files.expand_globs``).

    Raises:
        SourceNotFoundError: naming every pattern that matches no file.
    """
    with source_errors():
        return [path for path, _ in expand_globs(patterns, base_dir)]


@contextmanager
def source_errors() -> Iterator[None]:
    """Turns the readers' settings errors into this stage's: a source that names nothing, or cannot work."""
    try:
        yield
    except NotFoundError as exc:
        raise SourceNotFoundError(str(exc)) from None
    except SettingsError as exc:
        raise SourceConfigError(str(exc)) from None


def location(base: str, at: At | None) -> str:
    """A record's location: ``base`` (the file, or ``hf:path/split``) then ``#L<line>``, ``#I<item>`` or
    ``#R<row>``."""
    return base if at is None else f"{base}#{_UNITS[at.unit]}{at.number}"
