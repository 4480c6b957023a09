"""Checks of one record's text fields shared by the task types that read strings (the same reasons and messages for
every type, so quarantine counters mean one thing)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasks.modeling.tasktypes.base import Reject


def text_fields(values: Mapping[str, Any], roles: tuple[str, ...], names: Mapping[str, str], *,
                label: str | None = None) -> dict[str, str] | Reject:
    """``roles`` of ``values`` as non-blank strings (an integer ``label`` role becomes its string), or the first
    problem: ``non_string_field`` or ``empty_field``."""
    out: dict[str, str] = {}
    for role in roles:
        value = values[role]
        if role == label and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # integer class ids are labels too; strings keep one label type throughout
        if not isinstance(value, str):
            return Reject("non_string_field", f"{role} field {names[role]!r} is {type(value).__name__}, not a string"
                          + (" or integer" if role == label else ""))
        if not value.strip():
            return Reject("empty_field", f"{role} field {names[role]!r} is empty")
        out[role] = value
    return out


def token_count(tokenizer: Any, text: str) -> int:
    """Tokens of ``text`` for a ``tokenizers.Tokenizer`` (no special tokens added)."""
    return len(tokenizer.encode(text, add_special_tokens=False).ids)
