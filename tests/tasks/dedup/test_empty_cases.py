"""Dedup's task functions on the empty cases (issue 11 item 5): no duplicate at all, one document, one shard.

The inputs are written by hand here (fixed sentences, no generator of ours), so the "no duplicate" corpus is one
no tuning of our generators could have made easy.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.dedup.clusters import REMOVED_DIR, apply_dedup, find_clusters, minhash_dedup
from tasks.dedup.minhash import signature_shard
from tasks.dedup.splits import split_shards

DISTINCT = (
    "Sourdough needs a starter that is fed with flour and water every day for about a week.",
    "The ferry to the island leaves twice a day in summer and once a day in the winter months.",
    "A heat pump moves warmth from the outside air into the house, even when it is cold outside.",
    "Chess openings are learned best by playing them, not by memorising long lists of moves.",
    "The committee postponed the vote on the new cycle lanes until the traffic survey is finished.",
    "Tomatoes ripen faster in a paper bag with a banana, because the banana gives off ethylene gas.",
    "Our library lends telescopes, sewing machines and board games as well as books and films.",
    "Glaciers in the Alps have lost more than half of their volume since the middle of the last century.",
)


def _shards(root: Path, texts: list[str], per_shard: int) -> Path:
    root.mkdir(parents=True)
    for n, lo in enumerate(range(0, len(texts), per_shard)):
        chunk = texts[lo : lo + per_shard]
        ids = [hashlib.blake2b(t.encode(), digest_size=16).hexdigest() for t in chunk]
        pq.write_table(pa.table({"id": ids, "text": chunk, "source": ["hand"] * len(chunk)}),
                       root / f"part-{n:05d}.parquet")
    return root


@pytest.mark.parametrize(("texts", "per_shard"), [(list(DISTINCT), 3), (list(DISTINCT), 100), (DISTINCT[:1], 1)],
                         ids=["no-duplicate", "one-shard", "one-document"])
def test_minhash_dedup_without_any_duplicate_keeps_everything_and_writes_an_empty_removed_dir(
        tmp_path: Path, texts: list[str], per_shard: int) -> None:
    src = _shards(tmp_path / "in", texts, per_shard)
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    stats = minhash_dedup(src, out, work_dir=work)
    assert stats["docs_in"] == stats["kept"] == len(texts)
    assert stats["dropped_exact"] == stats["dropped_minhash"] == stats["clusters"] == 0
    # the removed/ directory is part of the output even when empty: the flow publishes it as is
    assert (out / REMOVED_DIR).is_dir() and not list((out / REMOVED_DIR).iterdir())
    assert pq.read_table(out / REMOVED_DIR).num_rows == 0
    kept = [r for p in sorted(out.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert [r["text"] for r in kept] == list(texts)
    assert pq.read_table(work / "duplicates.parquet").num_rows == 0


def test_find_clusters_and_split_on_one_document(tmp_path: Path) -> None:
    src = _shards(tmp_path / "in", [DISTINCT[0]], 1)
    sigs = tmp_path / "sigs"
    sigs.mkdir()
    signature_shard(src / "part-00000.parquet", sigs, num_perm=128, shingle_size=5, seed=0)
    path, found = find_clusters(sigs, bands=14, rows=8, threshold=0.75)
    assert found["docs_in"] == 1 and found["candidate_pairs"] == found["clusters"] == 0
    kept = tmp_path / "kept"
    kept.mkdir()
    assert apply_dedup(src, path, kept)["kept"] == 1
    split = split_shards(kept, tmp_path / "split", val=0.05, test=0.05)
    assert split["docs_in"] == 1 and split["train"] + split["val"] + split["test"] == 1


def test_exact_copies_only_are_removed_without_near_candidates(tmp_path: Path) -> None:
    texts = [*DISTINCT, DISTINCT[2]]
    src = _shards(tmp_path / "in", texts, 4)
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    stats = minhash_dedup(src, out, work_dir=work)
    assert stats["dropped_exact"] == 1 and stats["dropped_minhash"] == 0 and stats["kept"] == len(DISTINCT)
    assert pq.read_table(out / REMOVED_DIR).num_rows == 1
