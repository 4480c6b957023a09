"""Hugging Face datasets reader on local data only: data files, a parquet folder, save_to_disk folders."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.collect.hub import iter_hf_dataset
from tasks.collect.items import Document, Rejection, SourceConfigError, SourceNotFoundError

TEXTS = ["alpha doc", "", None, "delta doc", "   "]
EXPECTED = [("R0", "alpha doc"), ("R1", "empty_text"), ("R2", "missing_text"), ("R3", "delta doc"),
            ("R4", "empty_text")]


@pytest.fixture(autouse=True)
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the datasets cache (lock files, Arrow caches) inside the test's directory, never in ~/.cache."""
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def summary(items: list[Document | Rejection]) -> list[tuple[str, str]]:
    return [(i.location.rpartition("#")[2], i.text if isinstance(i, Document) else i.reason) for i in items]


def test_json_builder_with_data_files_relative_to_base_dir(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    rows = [{"text": t, "id": i} for i, t in enumerate(TEXTS)]
    (tmp_path / "data" / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    (tmp_path / "data" / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[3:]))
    items = list(iter_hf_dataset(path="json", data_files=["data/*.jsonl"], split="validation", base_dir=tmp_path))
    assert summary(items) == EXPECTED
    assert items[0].location == "hf:json/validation#R0"
    assert items[0].metadata == {"format": "hf", "split": "validation"}  # type: ignore[union-attr]


def test_parquet_directory_streaming_and_not(tmp_path: Path) -> None:
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table({"text": TEXTS, "n": list(range(5))}), tmp_path / "pq" / "train.parquet")
    streamed = list(iter_hf_dataset(path="pq", base_dir=tmp_path))
    built = list(iter_hf_dataset(path="pq", base_dir=tmp_path, streaming=False))
    assert summary(streamed) == summary(built) == EXPECTED
    assert streamed[0].location == "hf:pq/train#R0"
    ints = list(iter_hf_dataset(path="pq", base_dir=tmp_path, text_field="n"))
    assert [i.reason for i in ints] == ["non_string_text"] * 5  # type: ignore[union-attr]


def test_save_to_disk_dataset_and_dataset_dict(tmp_path: Path) -> None:
    import datasets

    ds = datasets.Dataset.from_dict({"text": TEXTS, "n": list(range(5))})
    ds.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": ds, "test": ds.select([3, 0])}).save_to_disk(str(tmp_path / "saved_dict"))
    assert summary(list(iter_hf_dataset(path="saved", base_dir=tmp_path))) == EXPECTED
    test_split = list(iter_hf_dataset(path="./saved_dict", split="test", base_dir=tmp_path))
    assert summary(test_split) == [("R0", "delta doc"), ("R1", "alpha doc")]
    assert test_split[0].location == "hf:./saved_dict/test#R0"
    with pytest.raises(SourceConfigError, match="no split 'dev'.*'test', 'train'"):
        iter_hf_dataset(path="saved_dict", split="dev", base_dir=tmp_path)
    [missing] = list(iter_hf_dataset(path="saved", text_field="body", base_dir=tmp_path))
    assert isinstance(missing, Rejection) and (missing.location, missing.reason) == ("hf:saved/train", "missing_text")


def test_missing_local_sources_raise_before_reading(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match="'./nowhere' does not exist"):
        iter_hf_dataset(path="./nowhere", base_dir=tmp_path)
    with pytest.raises(SourceNotFoundError, match="'/no/such/dir'"):
        iter_hf_dataset(path="/no/such/dir", base_dir=tmp_path)
    with pytest.raises(SourceNotFoundError, match="'data/\\*.jsonl'"):
        iter_hf_dataset(path="json", data_files=["data/*.jsonl"], base_dir=tmp_path)


def test_unknown_split_and_unbuildable_data(tmp_path: Path) -> None:
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table({"text": ["a"]}), tmp_path / "pq" / "train.parquet")
    with pytest.raises(SourceConfigError, match="split 'validation'"):
        iter_hf_dataset(path="pq", split="validation", base_dir=tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    [item] = list(iter_hf_dataset(path="json", data_files=["bad.jsonl"], streaming=False, base_dir=tmp_path))
    assert isinstance(item, Rejection) and (item.location, item.reason) == ("hf:json/train", "unreadable")
    streamed = list(iter_hf_dataset(path="json", data_files=["bad.jsonl"], base_dir=tmp_path))
    # the json builder parses a block at a time, so the bad block's good rows go with it
    assert summary(streamed) == [("R0", "unreadable")] and "ArrowInvalid" in streamed[0].detail  # type: ignore[union-attr]
