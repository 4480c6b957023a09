"""SQuAD json files (1.1 and 2.0 layouts, one-line, pretty-printed, gzipped) read as flat question records, with
every structural fault quarantined at its place and the good questions around it kept."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from tasks.readers.errors import ReadError
from tasks.readers.files import read_file
from tasks.readers.items import At, Quarantined, Record
from tasks.readers.squad import flatten

CONTEXT_1 = "The cat sat on the mat. It was warm."
CONTEXT_2 = "Paris is the capital of France."


def squad(version: str = "v2.0") -> dict[str, Any]:
    """A small SQuAD 2.0 file: two articles, three paragraphs, five questions (one unanswerable)."""
    return {"version": version, "data": [
        {"title": "Cats", "paragraphs": [
            {"context": CONTEXT_1, "qas": [
                {"id": "q1", "question": "Where did the cat sit?", "is_impossible": False,
                 "answers": [{"text": "on the mat", "answer_start": 12}, {"text": "the mat", "answer_start": 15}]},
                {"id": "q2", "question": "Who owns the cat?", "answers": [], "is_impossible": True,
                 "plausible_answers": [{"text": "The cat", "answer_start": 0}]},
            ]},
            {"context": "It was warm.", "qas": [
                {"id": "q3", "question": "How was it?", "answers": [{"text": "warm", "answer_start": 7}]}]},
        ]},
        {"title": "Paris", "paragraphs": [
            {"context": CONTEXT_2, "qas": [
                {"id": "q4", "question": "What is the capital of France?",
                 "answers": [{"text": "Paris", "answer_start": 0}]},
                {"id": "q5", "question": "Of what is Paris the capital?",
                 "answers": [{"text": "France", "answer_start": 24}]}]}]},
    ]}


def read(path: Path) -> list[Record | Quarantined]:
    return list(read_file(path, "squad"))


@pytest.mark.parametrize("layout", ["one_line", "pretty", "gzip", "bare_list"])
def test_every_question_becomes_a_flat_record_with_its_position(tmp_path: Path, layout: str) -> None:
    data = squad()
    if layout == "one_line":
        path = tmp_path / "train.json"
        path.write_text(json.dumps(data), encoding="utf-8")
    elif layout == "pretty":
        path = tmp_path / "train.json"
        path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    elif layout == "gzip":
        path = tmp_path / "train.json.gz"
        path.write_bytes(gzip.compress(json.dumps(data).encode()))
    else:
        path = tmp_path / "train.json"
        path.write_text(json.dumps(data["data"]), encoding="utf-8")
    items = read(path)
    assert all(isinstance(i, Record) for i in items)
    assert [i.at for i in items] == [At("question", n) for n in range(5)]
    assert [i.value["id"] for i in items] == ["q1", "q2", "q3", "q4", "q5"]
    first = items[0].value
    assert first == {"id": "q1", "title": "Cats", "context": CONTEXT_1, "question": "Where did the cat sit?",
                     "answers": [{"text": "on the mat", "answer_start": 12}, {"text": "the mat", "answer_start": 15}]}
    assert items[1].value["answers"] == []  # is_impossible: plausible answers are not answers
    assert items[3].value["title"] == "Paris" and items[3].value["context"] == CONTEXT_2
    assert json.loads(items[0].raw())["id"] == "q1"  # type: ignore[misc]


def test_structural_faults_are_quarantined_where_they_are(tmp_path: Path) -> None:
    data = squad()
    cats = data["data"][0]["paragraphs"]
    cats[0]["qas"].insert(1, "not a question")                 # a question that is no object
    cats[1]["qas"][0]["is_impossible"] = True                   # impossible, yet it lists an answer
    del cats[0]["qas"][0]["question"]                           # left to the task's checks (missing_field there)
    data["data"][1]["paragraphs"].insert(0, {"context": "no questions here"})   # a paragraph without qas
    data["data"].append({"title": "broken", "paragraphs": "oops"})              # paragraphs not a list
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    items = read(path)
    outcome = [(type(i).__name__, i.reason if isinstance(i, Quarantined) else i.value["id"], i.at) for i in items]
    assert outcome == [
        ("Record", "q1", At("question", 0)),
        ("Quarantined", "not_an_object", At("question", 1)),
        ("Record", "q2", At("question", 2)),
        ("Quarantined", "invalid_answers", At("question", 3)),
        ("Quarantined", "missing_field", At("item", 1)),
        ("Record", "q4", At("question", 4)),
        ("Record", "q5", At("question", 5)),
        ("Quarantined", "missing_field", At("item", 2)),
    ]
    assert "question" not in items[0].value  # type: ignore[union-attr]
    details = [i.detail for i in items if isinstance(i, Quarantined)]
    assert details[0].startswith("data[0].paragraphs[0].qas[1] is a str")
    assert "data[0].paragraphs[1].qas[0] (id 'q3') is_impossible but lists answers" in details[1]
    assert details[2] == "data[1].paragraphs[0] has no qas list (found NoneType)"
    assert details[3] == "data[2].paragraphs is a str, not a list of paragraphs"


def test_flat_records_and_reader_quarantines_pass_through() -> None:
    flat = Record(At("line", 1), {"context": "c", "question": "q", "answers": {"text": [], "answer_start": []}})
    bad = Quarantined(At("line", 2), "invalid_json", "x", "{")
    assert list(flatten([flat, bad])) == [flat, bad]


def test_a_file_that_stops_parsing_is_a_read_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    path.write_text(json.dumps(squad(), indent=1)[:-40], encoding="utf-8")
    with pytest.raises(ReadError):
        read(path)


def test_finetune_reads_the_squad_format_with_each_question_placed(tmp_path: Path) -> None:
    from tasks.finetune.files import iter_files
    from tasks.finetune.items import Bad, Raw

    data = squad()
    data["data"][0]["paragraphs"][0]["qas"].insert(1, 7)
    (tmp_path / "dev.json.gz").write_bytes(gzip.compress(json.dumps(data).encode()))
    items = list(iter_files(paths=["*.json.gz"], base_dir=tmp_path, fmt="squad",
                            fields={"context": "context", "question": "question", "answers": "answers"},
                            what="task 'qa' data[0].paths"))
    assert [(type(i).__name__, i.where) for i in items] == [
        ("Raw", "dev.json.gz#0"), ("Bad", "dev.json.gz#1"), ("Raw", "dev.json.gz#2"), ("Raw", "dev.json.gz#3"),
        ("Raw", "dev.json.gz#4"), ("Raw", "dev.json.gz#5")]
    assert isinstance(items[0], Raw) and items[0].record["id"] == "q1"
    assert isinstance(items[1], Bad) and items[1].reason == "not_an_object" and items[1].record == 7
