"""Extractive QA record checks: every answers layout normalised to one, every bad record quarantined with its reason."""

from __future__ import annotations

from typing import Any

import pytest

from tasks.modeling.tasktypes.base import Reject
from tasks.modeling.tasktypes.qa_records import check_qa

CONTEXT = "The cat sat on the mat."
NORMAL = {"context": CONTEXT, "question": "Where?", "answers": {"text": ["on the mat", "the mat"],
                                                                  "answer_start": [12, 15]}}


@pytest.mark.parametrize("answers", [
    [{"text": "on the mat", "answer_start": 12}, {"text": "the mat", "answer_start": 15}],   # SQuAD json
    {"text": ["on the mat", "the mat"], "answer_start": [12, 15]},                           # Hugging Face squad
    ({"text": "on the mat", "answer_start": 12.0}, {"text": "the mat", "answer_start": 15}),  # float start (pandas)
])
def test_every_answers_layout_becomes_the_hugging_face_one(answers: Any) -> None:
    assert check_qa({"context": CONTEXT, "question": "Where?", "answers": answers}, unanswerable=False) == NORMAL


def test_one_answer_object_counts_as_a_list_of_one() -> None:
    out = check_qa({"context": CONTEXT, "question": "Who?", "answers": {"text": "The cat", "answer_start": 0}},
                   unanswerable=False)
    assert out == {"context": CONTEXT, "question": "Who?", "answers": {"text": ["The cat"], "answer_start": [0]}}


@pytest.mark.parametrize("empty", [[], {"text": [], "answer_start": []}])
def test_unanswerable_questions_only_where_the_task_allows_them(empty: Any) -> None:
    record = {"context": CONTEXT, "question": "Why?", "answers": empty}
    assert check_qa(record, unanswerable=True)["answers"] == {"text": [], "answer_start": []}  # type: ignore[index]
    rejected = check_qa(record, unanswerable=False)
    assert isinstance(rejected, Reject) and rejected.reason == "unanswerable"
    assert "unanswerable to true" in rejected.detail


@pytest.mark.parametrize(("change", "reason", "detail"), [
    ({"context": None}, "missing_field", "no context field"),
    ({"question": float("nan")}, "missing_field", "no question field"),
    ({"answers": None}, "missing_field", "no answers field"),
    ({"context": 3}, "non_string_field", "context field 'context' is int"),
    ({"question": "  "}, "empty_field", "question field 'question' is empty"),
    ({"answers": "on the mat"}, "invalid_answers", "answers is a str"),
    ({"answers": [{"text": "mat", "answer_start": 19}, "mat"]}, "invalid_answers", "list of {text, answer_start}"),
    ({"answers": {"text": ["mat", "cat"], "answer_start": [19]}}, "invalid_answers", "2 texts but answer_start"),
    ({"answers": {"text": ["mat"], "answer_start": 19}}, "invalid_answers", "answer_start is a int"),
    ({"answers": [{"text": "", "answer_start": 0}]}, "invalid_answers", "answer 0 has no text"),
    ({"answers": [{"text": "mat", "answer_start": -1}]}, "invalid_answers", "not a non-negative integer"),
    ({"answers": [{"text": "mat", "answer_start": True}]}, "invalid_answers", "not a non-negative integer"),
    ({"answers": [{"text": "mat", "answer_start": 19.5}]}, "invalid_answers", "not a non-negative integer"),
    ({"answers": [{"text": "mat", "answer_start": 18}]}, "answer_mismatch",
     "answer 'mat' is not at answer_start 18 of the context (found ' ma'); it occurs at 19"),
    ({"answers": [{"text": "dog", "answer_start": 4}]}, "answer_mismatch", "it does not occur in the context"),
    ({"answers": [{"text": "mat.", "answer_start": 19}, {"text": "Mat", "answer_start": 19}]}, "answer_mismatch",
     "answer 'Mat' is not at answer_start 19"),
    ({"answers": [{"text": "mat", "answer_start": 400}]}, "answer_mismatch", "found ''"),
])
def test_bad_records_are_rejected_with_their_reason(change: dict[str, Any], reason: str, detail: str) -> None:
    record = {"context": CONTEXT, "question": "Where?", "answers": [{"text": "mat", "answer_start": 19}]} | change
    rejected = check_qa(record, unanswerable=True)
    assert isinstance(rejected, Reject) and rejected.reason == reason
    assert detail in rejected.detail


def test_a_squad_article_read_as_plain_json_gets_a_hint() -> None:
    rejected = check_qa({"title": "x", "paragraphs": []}, unanswerable=False)
    assert isinstance(rejected, Reject) and "format squad" in rejected.detail


def test_messages_name_the_user_field() -> None:
    rejected = check_qa({"context": "", "question": "q", "answers": []}, unanswerable=True,
                        names={"context": "passage", "question": "q", "answers": "a"})
    assert isinstance(rejected, Reject) and rejected.detail == "context field 'passage' is empty"
