"""What the readers hand to the checks: a raw record with where it came from, or a quarantined one with why.

Readers yield :class:`Raw` and :class:`Bad` items in a deterministic order and never raise for one bad record;
the checks turn each :class:`Raw` into an :class:`Example` or a :class:`Bad`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REASONS: tuple[str, ...] = ("invalid_json", "not_an_object", "undecodable", "malformed_line", "missing_field",
                            "non_string_field", "empty_field", "length_mismatch", "invalid_tag", "unknown_label",
                            "unknown_split", "too_long", "invalid_tag_sequence", "duplicate", "too_long_tokens")
"""Every quarantine reason, in the order the checks apply them (``malformed_line``: a CoNLL line without a tag;
``length_mismatch``, ``invalid_tag``, ``invalid_tag_sequence``: token_classification's tags)."""

SPLIT_NAMES: dict[str, str] = {"train": "train", "validation": "val", "val": "val", "valid": "val", "dev": "val",
                               "test": "test"}
"""Split names found in data (split fields, Hugging Face split names), mapped to ours."""

DEFAULT_FIELDS: dict[str, str | None] = {"text": "text", "label": "label", "prompt": "prompt",
                                         "response": "response", "tokens": "tokens", "tags": "tags",
                                         "messages": "messages", "split": None}


@dataclass(frozen=True, slots=True)
class Raw:
    """One record as read. ``where``: ``file:line``, ``file#row`` or ``hf path/split#index``; ``split``: the split
    the source itself gives (a Hugging Face split name), overridden by the record's split field if any."""

    where: str
    record: Any
    fields: Mapping[str, str | None]
    split: str | None = None


@dataclass(frozen=True, slots=True)
class Bad:
    """A record that cannot become an example, and why (one of :data:`REASONS`)."""

    where: str
    reason: str
    detail: str
    record: Any = None

    def row(self) -> dict[str, Any]:
        """The quarantine row (``tasks.examples`` format)."""
        return {"where": self.where, "reason": self.reason, "detail": self.detail, "record": self.record}


@dataclass(frozen=True, slots=True)
class Example:
    """A checked example: ``values`` holds its task type's values (text/label, prompt/response...); ``split`` is None
    until made."""

    id: str
    values: dict[str, Any]
    where: str
    split: str | None = None

    def row(self) -> dict[str, Any]:
        """The output row (``tasks.examples`` format; a task type may lay it out otherwise: its ``row``)."""
        return {"id": self.id, **self.values}


def split_name(value: Any) -> str | None:
    """Our split for a split name found in data (case-insensitive), None when it names none of them."""
    return SPLIT_NAMES.get(value.strip().lower()) if isinstance(value, str) else None
