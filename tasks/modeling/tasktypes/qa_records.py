"""Record checks of an extractive question-answering example: context, question and answers, whatever layout the
data came in, normalised to one shape or quarantined with a reason.

Accepted ``answers``: a list of ``{"text", "answer_start"}`` objects (SQuAD json), a dict of two lists
``{"text": [...], "answer_start": [...]}`` (the Hugging Face ``squad`` datasets), or one ``{"text": str,
"answer_start": int}``; an integral float ``answer_start`` (a parquet column that went through pandas) counts as the
integer. An empty list (or dict of empty lists) is an unanswerable question (SQuAD 2.0), kept only when the task
allows unanswerable questions. The normal shape is the Hugging Face one, ``{"text": [...], "answer_start": [...]}``.

Quarantine reasons, in the order they are checked: ``missing_field``, ``non_string_field``, ``empty_field`` (context
or question), ``missing_field`` (answers), ``invalid_answers`` (a shape other than the above, an answer without text
or with a negative or non-integer start), ``answer_mismatch`` (an answer's text is not at its ``answer_start`` in the
context: the detail says where it does occur, if anywhere), ``unanswerable`` (no answer, the task allowing none).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tasks.modeling.tasktypes.base import Reject

ROLES: tuple[str, ...] = ("context", "question", "answers")
"""The fields of an extractive QA record, in the order they are checked."""
REASONS: tuple[str, ...] = ("missing_field", "non_string_field", "empty_field", "invalid_answers", "answer_mismatch",
                            "unanswerable")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _start(value: Any) -> int | None:
    """An answer_start as an int, or None when it is not a non-negative integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and value >= 0 else None


def parse_answers(value: Any) -> tuple[list[str], list[int]] | str:
    """``(texts, starts)`` of any accepted answers layout (see the module docstring), or what is wrong with it."""
    if isinstance(value, Mapping):
        texts, starts = value.get("text"), value.get("answer_start")
        if isinstance(texts, str) or not isinstance(texts, list | tuple):
            texts, starts = [texts], [starts]
        if not isinstance(starts, list | tuple) or len(starts) != len(texts):
            return (f"answers has {len(texts)} texts but answer_start is {starts!r}: give one start per text"
                    if isinstance(starts, list | tuple) else
                    f"answers' answer_start is a {type(starts).__name__}, not a list")
        pairs = list(zip(texts, starts, strict=True))
    elif isinstance(value, list | tuple):
        if not all(isinstance(a, Mapping) for a in value):
            return "answers must be a list of {text, answer_start} objects"
        pairs = [(a.get("text"), a.get("answer_start")) for a in value]
    else:
        return (f"answers is a {type(value).__name__}: give a list of {{text, answer_start}} objects or "
                "{text: [...], answer_start: [...]}")
    out_texts: list[str] = []
    out_starts: list[int] = []
    for i, (text, start) in enumerate(pairs):
        if not isinstance(text, str) or not text.strip():
            return f"answer {i} has no text (found {text!r})"
        begin = _start(start)
        if begin is None:
            return f"answer {i} ({text!r}) has answer_start {start!r}, not a non-negative integer"
        out_texts.append(text)
        out_starts.append(begin)
    return out_texts, out_starts


def check_qa(values: Mapping[str, Any], *, unanswerable: bool,
             names: Mapping[str, str] | None = None) -> dict[str, Any] | Reject:
    """One record's ``context``, ``question`` and ``answers`` normalised, or why it is quarantined.

    Args:
        values: ``{role: value}`` for :data:`ROLES` (a missing one absent or None).
        unanswerable: whether the task keeps questions without an answer (SQuAD 2.0 style).
        names: each role's field name in the user's data, for the messages (None: the role names).

    Returns:
        ``{"context", "question", "answers": {"text": [...], "answer_start": [...]}}``, or a :class:`Reject`.
    """
    names = {role: (names or {}).get(role, role) for role in ROLES}
    texts: dict[str, str] = {}
    for role in ("context", "question"):
        value = values.get(role)
        if _missing(value):
            hint = " (a SQuAD article? read the file with format squad)" if "paragraphs" in values else ""
            return Reject("missing_field", f"no {role} field {names[role]!r}{hint}")
        if not isinstance(value, str):
            return Reject("non_string_field", f"{role} field {names[role]!r} is {type(value).__name__}, not a string")
        if not value.strip():
            return Reject("empty_field", f"{role} field {names[role]!r} is empty")
        texts[role] = value
    if _missing(values.get("answers")):
        return Reject("missing_field", f"no answers field {names['answers']!r} (an unanswerable question has an empty "
                      "list)")
    parsed = parse_answers(values["answers"])
    if isinstance(parsed, str):
        return Reject("invalid_answers", parsed)
    context = texts["context"]
    for text, start in zip(*parsed, strict=True):
        found = context[start:start + len(text)]
        if found != text:
            elsewhere = context.find(text)
            where = f"; it occurs at {elsewhere}" if elsewhere >= 0 else "; it does not occur in the context"
            return Reject("answer_mismatch", f"answer {text!r} is not at answer_start {start} of the context (found "
                          f"{found!r}){where}")
    if not parsed[0] and not unanswerable:
        return Reject("unanswerable", "no answer (a SQuAD 2.0 style unanswerable question): set the task's "
                      "unanswerable to true to train on such questions")
    return {**texts, "answers": {"text": parsed[0], "answer_start": parsed[1]}}
