"""scikit-learn's load_files layout: a folder or a .txt file per class, an example per file or per line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.finetune.errors import TaskPathError
from tasks.finetune.folders import iter_folders
from tasks.finetune.items import Bad, Raw
from tests.tasks.finetune.conftest import rows, run, task


def _tree(root: Path) -> Path:
    for label, texts in {"neg": ["bad day\n", "awful\n\nfilm"], "pos": ["good day"]}.items():
        (root / "reviews" / label).mkdir(parents=True)
        for i, text in enumerate(texts):
            (root / "reviews" / label / f"{i}.txt").write_text(text)
    (root / "reviews" / "pos" / ".hidden").write_text("skipped")
    (root / "reviews" / "neutral.txt").write_text("so so\n\n  \nit was fine\n")
    return root


def test_per_file_and_class_files(tmp_path: Path) -> None:
    items = list(iter_folders(path="reviews", unit="file", base_dir=_tree(tmp_path), what="k"))
    assert [(i.where, i.record["label"], i.record["text"]) for i in items] == [
        ("reviews/neg/0.txt", "neg", "bad day\n"), ("reviews/neg/1.txt", "neg", "awful\n\nfilm"),
        ("reviews/neutral.txt", "neutral", "so so\n\n  \nit was fine\n"), ("reviews/pos/0.txt", "pos", "good day")]


def test_per_line(tmp_path: Path) -> None:
    items = list(iter_folders(path="reviews", unit="line", base_dir=_tree(tmp_path), what="k"))
    assert [(i.where, i.record["label"], i.record["text"]) for i in items] == [
        ("reviews/neg/0.txt:1", "neg", "bad day"), ("reviews/neg/1.txt:1", "neg", "awful"),
        ("reviews/neg/1.txt:3", "neg", "film"), ("reviews/neutral.txt:1", "neutral", "so so"),
        ("reviews/neutral.txt:4", "neutral", "it was fine"), ("reviews/pos/0.txt:1", "pos", "good day")]


def test_undecodable_file_is_quarantined(tmp_path: Path) -> None:
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "a" / "x.txt").write_bytes(b"\xff\xfe bad")
    (tmp_path / "d" / "a" / "y.txt").write_text("fine")
    items = list(iter_folders(path="d", unit="file", base_dir=tmp_path, what="k"))
    assert isinstance(items[0], Bad) and items[0].reason == "undecodable" and isinstance(items[1], Raw)


def test_missing_or_empty_layout(tmp_path: Path) -> None:
    with pytest.raises(TaskPathError, match="'nope' is not a directory"):
        iter_folders(path="nope", unit="file", base_dir=tmp_path, what="k")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("x")
    with pytest.raises(TaskPathError, match="no class folder"):
        iter_folders(path="empty", unit="file", base_dir=tmp_path, what="k")


def test_end_to_end_labels_from_names(tmp_path: Path, tokenizer_dir: Path) -> None:
    for label in ("spam", "ham"):
        (tmp_path / "mail" / label).mkdir(parents=True)
        (tmp_path / "mail" / label / "all.txt").write_text("".join(f"{label} message {i}\n" for i in range(5)))
    counters = run(tmp_path, [task(data=[{"kind": "folders", "path": "mail", "unit": "line"}])], tokenizer_dir)
    assert counters["t.kept"] == 10 and counters["t.labels.spam.test"] == 1
    assert {r["label"] for r in rows(tmp_path, "t", "train")} == {"spam", "ham"}
