"""Hugging Face datasets read from local data only: save_to_disk directories and builder names with data files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.finetune.errors import TaskFormatError, TaskPathError, UnreadableFileError
from tasks.finetune.hub import iter_hf
from tasks.finetune.items import DEFAULT_FIELDS
from tests.tasks.finetune.conftest import labelled, rows, run, task, write_jsonl


def _read(tmp_path: Path, path: str, splits: list[str], data_files: list[str] | None = None,
          fields: dict | None = None) -> list:
    return list(iter_hf(path=path, config=None, splits=splits, data_files=data_files, revision=None,
                        fields=fields or DEFAULT_FIELDS, base_dir=tmp_path, what="task 'h' data[0]"))


def _saved(tmp_path: Path) -> Path:
    import datasets

    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_list(labelled({"a": 4, "b": 4})),
        "validation": datasets.Dataset.from_dict({"text": ["val a", "val b"], "label": [0, 1]}),
        "test": datasets.Dataset.from_dict({"text": ["test a", "test b"], "label": ["a", "b"]}),
    })
    dd.save_to_disk(str(tmp_path / "saved"))
    return tmp_path / "saved"


def test_save_to_disk_splits_and_integer_labels(tmp_path: Path) -> None:
    _saved(tmp_path)
    items = _read(tmp_path, "saved", ["train", "validation"])
    assert [i.split for i in items] == ["train"] * 8 + ["val"] * 2
    assert items[8].where == "saved/validation#0" and items[8].record == {"text": "val a", "label": 0}
    with pytest.raises(TaskFormatError, match=r"data\[0\].splits: 'saved' has no split 'dev'"):
        _read(tmp_path, "saved", ["dev"])


def test_single_saved_dataset(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_dict({"prompt": ["p"], "response": ["r"], "other": [1]}).save_to_disk(str(tmp_path / "one"))
    items = _read(tmp_path, "one", ["train"])
    assert [(i.record, i.split) for i in items] == [({"prompt": "p", "response": "r"}, "train")]


def test_builder_with_data_files(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "files" / "a.jsonl", labelled({"a": 2}))
    items = _read(tmp_path, "json", ["train"], ["files/*.jsonl"])
    assert [i.record["text"] for i in items] == [r["text"] for r in labelled({"a": 2})]
    with pytest.raises(TaskPathError, match=r"task 'h' data\[0\].data_files: 'files/\*.csv' matches no file"):
        _read(tmp_path, "json", ["train"], ["files/*.csv"])


def test_builder_build_error_names_the_dataset(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": "x"}\n{oops\n')
    with pytest.raises(UnreadableFileError, match=r"data\[0\].path: dataset 'json' cannot be built"):
        _read(tmp_path, "json", ["train"], ["bad.jsonl"])


def test_missing_local_directory(tmp_path: Path) -> None:
    with pytest.raises(TaskPathError, match=r"task 'h' data\[0\].path: dataset directory './gone' does not exist"):
        _read(tmp_path, "./gone", ["train"])


def test_missing_columns_are_quarantined(tmp_path: Path, tokenizer_dir: Path) -> None:
    import datasets

    datasets.Dataset.from_dict({"body": ["x"], "y": ["a"]}).save_to_disk(str(tmp_path / "cols"))
    items = _read(tmp_path, "cols", ["train"])
    assert [(i.where, i.record) for i in items] == [("cols/train#0", {})]


def test_end_to_end_hf_splits_and_field_names(tmp_path: Path, tokenizer_dir: Path) -> None:
    _saved(tmp_path)
    data = [{"kind": "hf", "path": "saved", "splits": ["train", "validation", "test"]}]
    counters = run(tmp_path, [task("h", data=data, labels=["a", "b"])], tokenizer_dir)
    # the test split is the dataset's; its validation split was all quarantined, so val is made from train (one
    # example of each class's four)
    assert (counters["h.train"], counters["h.val"], counters["h.test"]) == (6, 2, 2)
    assert counters["h.quarantined.unknown_label"] == 2  # the integer labels 0, 1 of validation became "0", "1"
    assert [q["where"] for q in rows(tmp_path, "h", "quarantine")] == ["saved/validation#0", "saved/validation#1"]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["tasks"]["h"]["labels"] == ["a", "b"]


def test_class_label_ids_are_read_as_the_names_the_dataset_declares(tmp_path: Path) -> None:
    """A dataset built with ClassLabel features (GLUE, IMDB, CoNLL-2003 on the hub) stores ids; rows carry the
    names, so labels, id2label and the NER scheme are the dataset's own; -1 ("no label") is a missing label."""
    import datasets

    features = datasets.Features({
        "tokens": datasets.Sequence(datasets.Value("string")),
        "ner_tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER"])),
        "text": datasets.Value("string"),
        "label": datasets.ClassLabel(names=["negative", "positive"]),
    })
    datasets.Dataset.from_dict({"tokens": [["Ann", "Lee", "ran"], ["x"]], "ner_tags": [[1, 2, 0], [0]],
                                "text": ["good", "unlabelled"], "label": [1, -1]},
                               features=features).save_to_disk(str(tmp_path / "cl"))
    items = _read(tmp_path, "cl", ["train"], fields={"text": "text", "label": "label", "tokens": "tokens",
                                                     "tags": "ner_tags"})
    assert [i.record for i in items] == [
        {"tokens": ["Ann", "Lee", "ran"], "ner_tags": ["B-PER", "I-PER", "O"], "text": "good", "label": "positive"},
        {"tokens": ["x"], "ner_tags": ["O"], "text": "unlabelled", "label": None}]


def test_a_dataset_with_a_train_split_alone_gets_val_and_test_made_from_it(tmp_path: Path,
                                                                           tokenizer_dir: Path) -> None:
    import datasets

    datasets.Dataset.from_list(labelled({"a": 20, "b": 20})).save_to_disk(str(tmp_path / "only_train"))
    counters = run(tmp_path, [task("h", data=[{"kind": "hf", "path": "only_train"}])], tokenizer_dir)
    assert (counters["h.train"], counters["h.val"], counters["h.test"]) == (32, 4, 4)  # 10% each, by class
