"""EDA augmentation: changes the text with words of the example, seeded, training split only, deterministic."""

from __future__ import annotations

import random
from pathlib import Path

from tasks.finetune.augment import augment, eda
from tasks.finetune.items import Example
from tests.tasks.finetune.conftest import labelled, rows, run, task, write_jsonl

TEXT = "the quick brown fox jumps over the lazy dog near the river bank today"


def _copies(seed: int, split: str = "train", copies: int = 2) -> list[Example]:
    ex = Example("abc", {"text": TEXT, "label": "x"}, "f:1", split)
    return [c for _, c in augment([ex], copies=copies, p_delete=0.2, p_swap=0.2, p_insert=0.2, seed=seed)]


def test_copies_change_text_with_the_example_words_only() -> None:
    copies = _copies(0)
    assert [c.id for c in copies] == ["abc-aug1", "abc-aug2"] and all(c.split == "train" for c in copies)
    assert len({c.values["text"] for c in copies} | {TEXT}) == 3
    assert all(set(c.values["text"].split()) <= set(TEXT.split()) for c in copies)
    assert all(c.values["label"] == "x" for c in copies)


def test_seeded() -> None:
    assert _copies(0) == _copies(0) and _copies(0) != _copies(1)


def test_only_train_is_augmented() -> None:
    assert _copies(0, "val") == [] and _copies(0, "test") == []


def test_operations() -> None:
    words = TEXT.split()
    assert eda(words, random.Random(0), p_delete=0, p_swap=0, p_insert=0) == words
    assert len(eda(words, random.Random(0), p_delete=1, p_swap=0, p_insert=0)) == 1  # one word always stays
    assert len(eda(words, random.Random(0), p_delete=0, p_swap=0, p_insert=0.5)) == len(words) + 7
    swapped = eda(words, random.Random(0), p_delete=0, p_swap=0.2, p_insert=0)
    assert sorted(swapped) == sorted(words) and swapped != words


def test_identical_copies_are_left_out() -> None:
    ex = Example("one", {"text": "word", "label": "x"}, "f:1", "train")
    assert list(augment([ex], copies=3, p_delete=0.5, p_swap=0.5, p_insert=0, seed=0)) == []


def test_end_to_end_rows(tmp_path: Path, tokenizer_dir: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", labelled({"a": 10, "b": 10}))
    counters = run(tmp_path, [task(augment={"enabled": True, "copies": 2, "p_delete": 0.3})], tokenizer_dir)
    train = rows(tmp_path, "t", "train")
    augmented = [r for r in train if r.get("augmented")]
    originals = {r["id"]: r for r in train if "augmented" not in r}
    assert counters["t.augmented"] == len(augmented) > 0 and counters["t.train"] == len(train)
    assert all(r["id"].rsplit("-aug", 1)[0] in originals for r in augmented)
    assert all(r["label"] == originals[r["id"].rsplit("-aug", 1)[0]]["label"] for r in augmented)
    assert not any(r.get("augmented") for s in ("val", "test") for r in rows(tmp_path, "t", s))
