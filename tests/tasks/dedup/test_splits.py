"""Splits: deterministic by id hash, fractions on 10k ids, the tiny-corpus guarantee, shard files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.dedup.splits import SplitError, assign_splits, id_hashes, split_shards


def _ids(n: int, salt: str = "") -> list[str]:
    return [hashlib.blake2b(f"{salt}{i}".encode(), digest_size=16).hexdigest() for i in range(n)]


def test_split_is_deterministic_and_fractions_hold_on_10k_ids() -> None:
    ids = _ids(10_000)
    split, moved = assign_splits(id_hashes(ids, seed=3), val=0.1, test=0.05)
    again, _ = assign_splits(id_hashes(ids, seed=3), val=0.1, test=0.05)
    assert np.array_equal(split, again) and moved == 0
    counts = np.bincount(split, minlength=3) / len(ids)
    # binomial standard deviations are 0.003 (val) and 0.002 (test): 0.01 is over 3 of them
    assert abs(counts[1] - 0.1) < 0.01 and abs(counts[2] - 0.05) < 0.01, counts
    other, _ = assign_splits(id_hashes(ids, seed=4), val=0.1, test=0.05)
    assert (other != split).mean() > 0.1


def test_a_documents_split_does_not_depend_on_the_rest_of_the_corpus() -> None:
    ids = _ids(10_000)
    whole, _ = assign_splits(id_hashes(ids, seed=0), val=0.01, test=0.01)
    part, _ = assign_splits(id_hashes(ids[5000:][::-1], seed=0), val=0.01, test=0.01)
    assert np.array_equal(whole[5000:][::-1], part)


@pytest.mark.parametrize("n", [3, 4, 5, 10, 50])
def test_tiny_corpora_get_at_least_one_val_and_test_doc(n: int) -> None:
    split, moved = assign_splits(id_hashes(_ids(n, "tiny"), seed=0), val=0.01, test=0.01)
    counts = np.bincount(split, minlength=3)
    assert (counts >= 1).all() and counts.sum() == n
    if n == 3:  # hashes below 0.01 * 2**64 are rare: with three docs both val and test had to be filled by moves
        assert moved == 2 and counts.tolist() == [1, 1, 1]


def test_tiny_corpus_guarantee_respects_zero_fractions_and_two_docs() -> None:
    split, moved = assign_splits(id_hashes(_ids(5), seed=0), val=0.01, test=0.0)
    assert np.bincount(split, minlength=3).tolist() == [4, 1, 0]
    split, moved = assign_splits(id_hashes(_ids(2), seed=0), val=0.01, test=0.01)
    assert moved == 0 and split.size == 2
    with pytest.raises(SplitError):
        assign_splits(id_hashes(_ids(2), seed=0), val=0.6, test=0.5)


def test_split_shards_writes_every_row_once_with_its_columns(tmp_path: Path) -> None:
    ids = _ids(1000)
    (tmp_path / "in").mkdir()
    for s in range(3):
        chunk = ids[s * 400 : (s + 1) * 400]
        pq.write_table(pa.table({"id": chunk, "text": [f"text {i}" for i in chunk], "extra": ["e"] * len(chunk)}),
                       tmp_path / "in" / f"part-{s:05d}.parquet")

    def run(name: str) -> tuple[dict[str, int], dict[str, list[str]], dict[str, str]]:
        out = tmp_path / name
        out.mkdir()
        stats = split_shards(tmp_path / "in", out, val=0.1, test=0.1, seed=5)
        rows = {sp: [r["id"] for f in sorted((out / sp).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
                for sp in ("train", "val", "test")}
        digests = {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*.parquet")}
        return stats, rows, digests

    stats, rows, digests = run("a")
    assert sorted(sum(rows.values(), [])) == sorted(ids)
    assert {k: stats[k] for k in ("docs_in", "train", "val", "test")} == {
        "docs_in": 1000, "train": len(rows["train"]), "val": len(rows["val"]), "test": len(rows["test"])}
    assert 60 <= stats["val"] <= 140 and 60 <= stats["test"] <= 140 and stats["shards.val"] == 3
    expected, _ = assign_splits(id_hashes(ids, seed=5), val=0.1, test=0.1)
    assert sorted(rows["test"]) == sorted(i for i, s in zip(ids, expected, strict=True) if s == 2)
    assert pq.read_table(tmp_path / "a" / "val" / "part-00000.parquet").column_names == ["id", "text", "extra"]
    assert run("b")[2] == digests
