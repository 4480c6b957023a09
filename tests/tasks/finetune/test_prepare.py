"""The entry points: output layout and manifest, counters, errors for empty tasks and missing paths, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.examples import load_split, read_manifest
from tasks.finetune.errors import NoExamplesError, TaskPathError, TokenizerMissingError
from tasks.finetune.prepare import check_tasks
from tests.tasks.finetune.conftest import labelled, rows, run, task, write_jsonl


def _sft_records(n: int) -> list[dict[str, str]]:
    return [{"prompt": f"say {i}", "response": f"the cat sat {i} times"} for i in range(n)]


def test_layout_manifest_and_counters(tmp_path: Path, tokenizer_dir: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", labelled({"a": 10, "b": 10}))
    write_jsonl(tmp_path / "sft.jsonl", _sft_records(10))
    tasks = [task(weight=2.0), task("s", "sft", [{"kind": "files", "paths": ["sft.jsonl"]}])]
    counters = run(tmp_path, tasks, tokenizer_dir)
    manifest = read_manifest(tmp_path / "out")
    t = manifest["tasks"]["t"]
    assert t["type"] == "classification" and t["weight"] == 2.0 and t["labels"] == ["a", "b"]
    assert t["splits"] == {"train": 16, "val": 2, "test": 2} and t["quarantined"] == {} and t["augmented"] == 0
    assert t["label_counts"] == {"train": {"a": 8, "b": 8}, "val": {"a": 1, "b": 1}, "test": {"a": 1, "b": 1}}
    s = manifest["tasks"]["s"]
    assert s["labels"] is None and s["label_counts"] is None and sum(s["splits"].values()) == 10
    assert (tmp_path / "out" / "s" / "quarantine.jsonl").read_text() == ""  # written even when empty
    row = load_split(tmp_path / "out", "s", "train")[0]
    assert sorted(row) == ["id", "prompt", "response"] and len(row["id"]) == 16
    line = (tmp_path / "out" / "t" / "train.jsonl").read_text().splitlines()[0]
    assert list(json.loads(line)) == ["id", "label", "text"]  # sorted keys
    assert counters["t.train"] == 16 and counters["t.labels.a.val"] == 1 and counters["s.kept"] == 10
    assert counters["t.quarantined"] == 0 and counters["s.examples_in"] == 10


def test_same_inputs_same_bytes(tmp_path: Path, tokenizer_dir: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", labelled({"a": 9, "b": 7, "c": 5}))
    tasks = [task(augment={"enabled": True, "copies": 2})]
    run(tmp_path, tasks, tokenizer_dir)
    first = {p.relative_to(tmp_path / "out"): p.read_bytes() for p in sorted((tmp_path / "out").rglob("*.*"))}
    run(tmp_path, tasks, tokenizer_dir)
    second = {p.relative_to(tmp_path / "out"): p.read_bytes() for p in sorted((tmp_path / "out").rglob("*.*"))}
    assert first == second and len(first) == 5


def test_one_example_goes_to_train(tmp_path: Path, tokenizer_dir: Path) -> None:
    write_jsonl(tmp_path / "sft.jsonl", _sft_records(1))
    counters = run(tmp_path, [task("s", "sft", [{"kind": "files", "paths": ["sft.jsonl"]}])], tokenizer_dir)
    assert (counters["s.train"], counters["s.val"], counters["s.test"]) == (1, 0, 0)


def test_empty_task_is_an_error(tmp_path: Path, tokenizer_dir: Path) -> None:
    (tmp_path / "data.jsonl").write_text("")
    with pytest.raises(NoExamplesError, match="task 't': no valid example among 0 records"):
        run(tmp_path, [task()], tokenizer_dir)
    write_jsonl(tmp_path / "data.jsonl", [{"text": " ", "label": "a"}])
    with pytest.raises(NoExamplesError, match="empty_field"):
        run(tmp_path, [task()], tokenizer_dir)


def test_all_in_val_is_an_error(tmp_path: Path, tokenizer_dir: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", [{**r, "split": "val"} for r in labelled({"a": 3})])
    data = [{"kind": "files", "paths": ["data.jsonl"], "fields": {"split": "split"}}]
    with pytest.raises(NoExamplesError, match="no training example"):
        run(tmp_path, [task(data=data)], tokenizer_dir)


def test_check_tasks_names_task_and_key_and_writes_nothing(tmp_path: Path, tokenizer_dir: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", labelled({"a": 3}))
    good = task()
    missing = task("m", data=[{"kind": "files", "paths": ["data.jsonl"]}, {"kind": "folders", "path": "nope"}])
    check_tasks(tasks=[good], base_dir=tmp_path)
    with pytest.raises(TaskPathError, match=r"task 'm' data\[1\].path: 'nope' is not a directory"):
        check_tasks(tasks=[good, missing], base_dir=tmp_path)
    with pytest.raises(TaskPathError, match=r"task 'm' data\[1\]"):  # before any work: nothing written
        run(tmp_path, [good, missing], tokenizer_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"]


def test_missing_tokenizer(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", labelled({"a": 3}))
    with pytest.raises(TokenizerMissingError, match="run the tokenizer stage"):
        run(tmp_path, [task()], tmp_path / "no-tokenizer")


def test_data_entries_mix_and_quarantine_rows(tmp_path: Path, tokenizer_dir: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", labelled({"a": 4}) + [{"text": "", "label": "a"}])
    write_jsonl(tmp_path / "b.jsonl", labelled({"b": 4}))
    run(tmp_path, [task(data=[{"kind": "files", "paths": ["a.jsonl"]}, {"kind": "files", "paths": ["b.jsonl"]}])],
        tokenizer_dir)
    assert rows(tmp_path, "t", "quarantine") == [{"where": "a.jsonl:5", "reason": "empty_field",
                                                  "detail": "text field 'text' is empty",
                                                  "record": {"text": "", "label": "a"}}]
    assert read_manifest(tmp_path / "out")["tasks"]["t"]["labels"] == ["a", "b"]


def test_declared_labels_keep_their_order(tmp_path: Path, tokenizer_dir: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", labelled({"a": 4, "b": 4}))
    run(tmp_path, [task(labels=["b", "a"])], tokenizer_dir)
    t = read_manifest(tmp_path / "out")["tasks"]["t"]
    assert t["labels"] == ["b", "a"]  # the order a classification head numbers its classes in
