"""SQuAD-format files (SQuAD 1.1 and 2.0 json) read as flat question records.

A SQuAD file is ``{"version": ..., "data": [article, ...]}``, an article ``{"title", "paragraphs": [{"context",
"qas": [{"id", "question", "answers": [{"text", "answer_start"}], "is_impossible"}]}]}`` (``is_impossible`` and
``plausible_answers`` in 2.0 only). :func:`tasks.readers.files.read_file` (format ``squad``) reads it through the
``json`` reader (plain or compressed, a one-line or pretty-printed file, or a bare list of articles) and yields one
record per question::

    {"id", "title", "context", "question", "answers": [{"text", "answer_start"}, ...]}

positioned ``At("question", n)``: the question's 0-based index in the file, counted over every article and
paragraph in file order (a quarantined record also carries the question's ``id``). A question marked
``is_impossible`` has no answers (its ``plausible_answers`` are not answers); one marked so that still lists answers
is quarantined as ``invalid_answers``, the data contradicting itself. A paragraph without a ``qas`` list, or an
article without a ``paragraphs`` list, is one ``missing_field`` record at the article (``At("item", i)``); a question
that is not an object is ``not_an_object``. What the fields hold (answer at its ``answer_start``, strings, an
unanswerable question where the task allows none) is for the task's record checks: every record shape goes through
the same ones. A record of the file that has no ``paragraphs`` key is already flat (a list of question records in the
Hugging Face ``squad`` layout) and passes through unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from tasks.readers.items import At, Quarantined, Record, raw_excerpt

REASONS: tuple[str, ...] = ("missing_field", "not_an_object", "invalid_answers")
"""The quarantine reasons of the SQuAD layout itself (beside the json reader's)."""

Item = Record | Quarantined


def _excerpt(value: Any) -> str:
    return raw_excerpt(json.dumps(value, default=str, ensure_ascii=False))


def flatten(items: Iterable[Item]) -> Iterator[Item]:
    """SQuAD articles as flat question records; records without ``paragraphs`` and quarantined ones pass through."""
    question = 0
    for item in items:
        if isinstance(item, Quarantined) or not isinstance(item.value, dict) or "paragraphs" not in item.value:
            yield item
            continue
        article, index = item.value, item.at.number if item.at else 0
        paragraphs = article["paragraphs"]
        if not isinstance(paragraphs, list):
            yield Quarantined(item.at, "missing_field", f"data[{index}].paragraphs is a {type(paragraphs).__name__}"
                              ", not a list of paragraphs", _excerpt(article))
            continue
        for p, paragraph in enumerate(paragraphs):
            where = f"data[{index}].paragraphs[{p}]"
            qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
            if not isinstance(qas, list):
                found = type(paragraph).__name__ if not isinstance(paragraph, dict) else type(qas).__name__
                yield Quarantined(item.at, "missing_field", f"{where} has no qas list (found {found})",
                                  _excerpt(paragraph))
                continue
            for q, qa in enumerate(qas):
                at = At("question", question)
                question += 1
                yield _question(qa, paragraph, article, at, f"{where}.qas[{q}]")


def _question(qa: Any, paragraph: dict[str, Any], article: dict[str, Any], at: At, where: str) -> Item:
    """One question of a paragraph as a flat record (a missing field stays missing: the checks name it)."""
    if not isinstance(qa, dict):
        return Quarantined(at, "not_an_object", f"{where} is a {type(qa).__name__}, not a question object",
                           _excerpt(qa), qa)
    record: dict[str, Any] = {"id": qa.get("id"), "title": article.get("title")}
    if "context" in paragraph:
        record["context"] = paragraph["context"]
    for key in ("question", "answers"):
        if key in qa:
            record[key] = qa[key]
    if qa.get("is_impossible") is True:
        if qa.get("answers"):
            return Quarantined(at, "invalid_answers", f"{where} (id {qa.get('id')!r}) is_impossible but lists "
                               "answers: fix either", _excerpt(record))
        record["answers"] = []  # plausible_answers are distractors, not answers
    return Record(at, record, lambda: json.dumps(record, ensure_ascii=False))
