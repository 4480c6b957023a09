"""Split making: stratified, seeded, independent of reading order; split fields honoured; too few per class."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from tasks.finetune.errors import TooFewExamplesError
from tasks.finetune.items import Example
from tasks.finetune.splits import make_splits, split_sizes
from tests.tasks.finetune.conftest import labelled, rows, run, task, write_jsonl


def _examples(counts: dict[str, int]) -> list[Example]:
    return [Example(f"{label}{i}", {"text": f"{label} {i}", "label": label}, f"f:{i}")
            for label, n in counts.items() for i in range(n)]


def test_sizes() -> None:
    assert split_sizes(100, 0.1, 0.2) == (10, 20)
    assert split_sizes(3, 0.1, 0.1) == (1, 1)  # every class of 3+ gets one val and one test example
    assert split_sizes(4, 0.45, 0.45) == (1, 2)  # and keeps one for training
    assert split_sizes(2, 0.4, 0.4) == (0, 0) and split_sizes(0, 0.1, 0.1) == (0, 0)


def test_stratified_every_class_in_every_split() -> None:
    out = make_splits(_examples({"big": 50, "mid": 10, "small": 3}), stratify=True, val=0.1, test=0.1, seed=0)
    counts = Counter((ex.values["label"], ex.split) for ex in out)
    assert counts == {("big", "train"): 40, ("big", "val"): 5, ("big", "test"): 5, ("mid", "train"): 8,
                      ("mid", "val"): 1, ("mid", "test"): 1, ("small", "train"): 1, ("small", "val"): 1,
                      ("small", "test"): 1}


def test_seeded_and_independent_of_order() -> None:
    examples = _examples({"a": 20, "b": 20})
    one = {ex.id: ex.split for ex in make_splits(examples, stratify=True, val=0.2, test=0.2, seed=1)}
    reversed_ = {ex.id: ex.split for ex in make_splits(examples[::-1], stratify=True, val=0.2, test=0.2, seed=1)}
    other = {ex.id: ex.split for ex in make_splits(examples, stratify=True, val=0.2, test=0.2, seed=2)}
    assert one == reversed_ and one != other


def test_given_splits_are_kept_and_the_rest_made() -> None:
    examples = _examples({"a": 10})
    examples[0] = Example("given", {"text": "g", "label": "a"}, "f", "test")
    out = make_splits(examples, stratify=False, val=0.1, test=0.1, seed=0)
    # a test split the data give is the test split: the others are made into train and val only
    assert out[0].split == "test" and Counter(ex.split for ex in out[1:]) == {"train": 8, "val": 1}
    assert [ex.id for ex in out] == [ex.id for ex in examples]
    examples[1] = Example("given val", {"text": "v", "label": "a"}, "f", "val")
    out = make_splits(examples, stratify=False, val=0.1, test=0.1, seed=0)
    assert [ex.split for ex in out[:2]] == ["test", "val"] and {ex.split for ex in out[2:]} == {"train"}
    # a train split given without val and test: they are made from it; with both given, train stays whole
    trained = [dataclasses.replace(ex, split="train") for ex in _examples({"a": 10})]
    assert Counter(ex.split for ex in make_splits(trained, stratify=False, val=0.1, test=0.1, seed=0)) == {
        "train": 8, "val": 1, "test": 1}
    assert [ex.split for ex in make_splits(trained + out[:2], stratify=False, val=0.1, test=0.1, seed=0)] == [
        "train"] * 10 + ["test", "val"]


def test_grouped_examples_share_a_split_and_the_shares_count_groups() -> None:
    examples = [Example(f"q{i}", {"context": f"passage {i % 20}"}, "f") for i in range(60)]
    out = make_splits(examples, stratify=False, val=0.1, test=0.1, seed=3, group=lambda v: v["context"])
    by_group: dict[str, set[str | None]] = {}
    for ex in out:
        by_group.setdefault(ex.values["context"], set()).add(ex.split)
    assert all(len(s) == 1 for s in by_group.values())
    assert Counter(next(iter(s)) for s in by_group.values()) == {"train": 16, "val": 2, "test": 2}
    ungrouped = make_splits(examples, stratify=False, val=0.1, test=0.1, seed=3, group=lambda v: None)
    assert ungrouped == make_splits(examples, stratify=False, val=0.1, test=0.1, seed=3)  # as before groups came


def test_split_field_honoured_end_to_end(tmp_path: Path, tokenizer_dir: Path) -> None:
    records = [{**r, "part": part} for r, part in zip(labelled({"a": 4, "b": 4}), ["train", "train", "dev", "test"] * 2,
                                                       strict=True)]
    write_jsonl(tmp_path / "data.jsonl", records)
    run(tmp_path, [task(data=[{"kind": "files", "paths": ["data.jsonl"], "fields": {"split": "part"}}])],
        tokenizer_dir)
    assert [r["text"] for r in rows(tmp_path, "t", "val")] == [records[2]["text"], records[6]["text"]]
    assert [r["text"] for r in rows(tmp_path, "t", "test")] == [records[3]["text"], records[7]["text"]]


def test_too_few_per_class_names_task_and_class(tmp_path: Path, tokenizer_dir: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", labelled({"many": 20, "rare": 3}))
    write_jsonl(tmp_path / "ok.jsonl", labelled({"x": 5, "y": 5}))
    fine = task("fine", data=[{"kind": "files", "paths": ["ok.jsonl"]}])
    with pytest.raises(TooFewExamplesError, match=r"task 't': class\(es\) 'rare' \(1\)") as err:
        run(tmp_path, [fine, task()], tokenizer_dir)
    assert err.value.exit_code == 2
    assert not (tmp_path / "out").exists()  # the task before it is not written either
    with pytest.raises(TooFewExamplesError, match=r"'absent' \(0\)"):  # a declared label with no example at all
        run(tmp_path, [task(labels=["many", "rare", "absent"], min_per_class=1)], tokenizer_dir)
