"""What readers yield, and the record-level rules every stage shares.

A reader yields a ``Record`` (one parsed input record) or a ``Quarantined`` one (with a reason from ``REASONS``) in
input order, and never raises for one bad record. The rules are the same for every stage: a line that is not UTF-8 is
``undecodable``, one that does not parse is ``invalid_json``, a JSON record that is not an object is
``not_an_object``, and a line longer than the stage's bound is ``too_long`` (skipped without being held in memory).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

REASONS: tuple[str, ...] = ("invalid_json", "not_an_object", "undecodable", "too_long")
"""The quarantine reasons of the readers themselves; a stage adds its own field checks."""
_RAW_CHARS = 1000


class At(NamedTuple):
    """A record's position in its file or dataset: ``line`` (1-based physical line), ``item`` (0-based index in a
    JSON list) or ``row`` (0-based table row). A stage spells it in its own location format."""

    unit: str
    number: int


@dataclass(frozen=True, slots=True)
class Record:
    """One parsed record: a JSON object or table row (a dict), or a text (a str).

    ``at`` is None for a file that is one record; ``raw`` gives the input as read (called only to quarantine it),
    None for a table row, whose values are the input.
    """

    at: At | None
    value: Any
    raw: Callable[[], bytes | str] | None = None


@dataclass(frozen=True, slots=True)
class Quarantined:
    """One input record that could not be parsed, and why. ``raw``: an excerpt of the input; ``value``: the parsed
    value, for ``not_an_object``."""

    at: At | None
    reason: str
    detail: str
    raw: str
    value: Any = None


def raw_excerpt(data: bytes | str) -> str:
    """Returns at most 1000 characters of ``data``, undecodable bytes backslash-escaped."""
    if isinstance(data, bytes):
        data = data[: _RAW_CHARS * 4].decode("utf-8", "backslashreplace")
    return data[:_RAW_CHARS]


def as_object(value: Any, at: At | None, raw: Callable[[], bytes | str]) -> Record | Quarantined:
    """A parsed JSON value as a record: it must be an object."""
    if not isinstance(value, dict):
        return Quarantined(at, "not_an_object", f"a record must be a JSON object, found {type(value).__name__}",
                           raw_excerpt(raw()), value)
    return Record(at, value, raw)


def parse_json(data: bytes, at: At | None) -> Record | Quarantined:
    """One JSON record (a line, or a whole file holding one value), checked to be an object."""
    try:
        value = json.loads(data.decode("utf-8").removeprefix("\ufeff"))
    except UnicodeDecodeError as exc:
        return Quarantined(at, "undecodable", str(exc), raw_excerpt(data))
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting is bad JSON too
        return Quarantined(at, "invalid_json", str(exc)[:200], raw_excerpt(data))
    return as_object(value, at, lambda: data)
