"""The data step of a token_classification task: CoNLL files and jsonl records become rows with their scheme, the
scheme is found over the whole task (IOB1 as CoNLL-2003 was released), and every bad sentence is quarantined with its
file, line and reason, counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tasks.finetune.conftest import WORDS, rows, run, task


def sentences(n: int, *, iob1: bool) -> str:
    """``n`` distinct CoNLL sentences (word POS tag), entities opening with I- (IOB1) or B- (IOB2)."""
    start = "I" if iob1 else "B"
    out = []
    for i in range(n):
        words = [WORDS[(i + k) % len(WORDS)] for k in range(4)] + [f"w{i}"]
        tags = ["O", f"{start}-PER", "I-PER", "O", f"{start}-LOC"]
        out.append("".join(f"{w} NN {t}\n" for w, t in zip(words, tags, strict=True)))
    return "-DOCSTART- -X- O\n\n" + "\n".join(out)


def quarantine(tmp_path: Path, name: str = "ner") -> list[dict[str, object]]:
    path = tmp_path / "out" / name / "quarantine.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_an_iob1_conll_file_becomes_rows_with_its_scheme(tmp_path: Path, tokenizer_dir: Path) -> None:
    (tmp_path / "train.conll").write_text(sentences(30, iob1=True), encoding="utf-8")
    data = [{"kind": "files", "paths": ["*.conll"]}]
    stats = run(tmp_path, [task("ner", type="token_classification", data=data)], tokenizer_dir)
    assert stats["ner.kept"] == 30 and stats["ner.quarantined"] == 0
    row = rows(tmp_path, "ner", "train")[0]
    assert set(row) == {"id", "tokens", "tags", "scheme"} and row["scheme"] == "IOB1"
    assert row["tags"] == ["O", "I-PER", "I-PER", "O", "I-LOC"]  # kept as the data gave them
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))["tasks"]["ner"]
    assert manifest["labels"] == ["B-LOC", "B-PER", "I-PER", "O"]  # the head's IOB2 tags found in the data
    assert stats["ner.labels.B-PER.train"] == stats["ner.train"]  # one PER entity per sentence


def test_bad_sentences_are_quarantined_with_file_line_and_reason(tmp_path: Path, tokenizer_dir: Path) -> None:
    good = sentences(20, iob1=False)
    bad = ("stray NN I-PER\nhere NN O\n\n"  # an I- that follows nothing: IOB2 is the task's scheme
           "no_tag\n\n"  # a line without a tag
           "odd NN PERSON\n\n")  # not a tag of any scheme
    (tmp_path / "a.conll").write_text(good + "\n" + bad, encoding="utf-8")
    lines = (good + "\n").count("\n")
    records = [{"tokens": ["a", "b"], "tags": ["O"]}, {"tokens": [], "tags": []},
               {"tokens": ["x", "y"], "tags": ["B-ORG", "O"]}, {"tokens": ["ok", "fine"], "tags": ["B-PER", "O"]}]
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    data = [{"kind": "files", "paths": ["*.conll", "*.jsonl"]}]
    stats = run(tmp_path, [task("ner", type="token_classification", data=data, labels=["PER", "LOC"])], tokenizer_dir)
    got = {(q["where"], q["reason"]) for q in quarantine(tmp_path)}
    assert got == {(f"a.conll:{lines + 1}", "invalid_tag_sequence"), (f"a.conll:{lines + 4}", "malformed_line"),
                   (f"a.conll:{lines + 6}", "invalid_tag"), ("b.jsonl:1", "length_mismatch"),
                   ("b.jsonl:2", "empty_field"), ("b.jsonl:3", "unknown_label")}
    assert stats["ner.quarantined"] == 6 and stats["ner.quarantined.invalid_tag_sequence"] == 1
    assert stats["ner.kept"] == 21
    detail = next(q["detail"] for q in quarantine(tmp_path) if q["reason"] == "invalid_tag_sequence")
    assert "I-PER follows nothing" in str(detail) and "scheme is IOB2" in str(detail)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))["tasks"]["ner"]
    assert manifest["labels"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]  # the given types, as the head's tags


def test_a_declared_scheme_holds_the_data_to_it(tmp_path: Path, tokenizer_dir: Path) -> None:
    (tmp_path / "train.conll").write_text(sentences(12, iob1=True), encoding="utf-8")
    data = [{"kind": "files", "paths": ["*.conll"]}]
    with pytest.raises(Exception, match="no valid example"):  # every sentence opens an entity with I-
        run(tmp_path, [task("ner", type="token_classification", data=data, scheme="IOB2")], tokenizer_dir)


def test_a_hub_style_dataset_with_class_label_tags_becomes_rows_of_tag_names(tmp_path: Path,
                                                                             tokenizer_dir: Path) -> None:
    """CoNLL-2003 as the hub serves it: ``ner_tags`` are ClassLabel ids; the rows carry the dataset's tag names and
    the scheme is found from them, with no `labels` to write."""
    import datasets

    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    words = [[WORDS[(i + k) % len(WORDS)] for k in range(4)] + [f"w{i}"] for i in range(30)]
    datasets.Dataset.from_dict({"tokens": words, "ner_tags": [[0, 1, 2, 0, 3]] * 30},
                               features=features).save_to_disk(str(tmp_path / "conll2003"))
    data = [{"kind": "hf", "path": "conll2003", "splits": ["train"], "fields": {"tags": "ner_tags"}}]
    stats = run(tmp_path, [task("ner", type="token_classification", data=data)], tokenizer_dir)
    assert stats["ner.kept"] == 30 and stats["ner.quarantined"] == 0
    row = rows(tmp_path, "ner", "train")[0]
    assert row["tags"] == ["O", "B-PER", "I-PER", "O", "B-LOC"] and row["scheme"] == "IOB2"
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))["tasks"]["ner"]
    assert manifest["labels"] == ["B-LOC", "B-PER", "I-PER", "O"]
