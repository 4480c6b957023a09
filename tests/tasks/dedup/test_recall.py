"""Recall of dedup at the params.yaml defaults on a fresh corpus, against datatrove 0.10.1's measured curve.

datatrove does not run here: its recall per true-Jaccard bucket was measured once by ``benchmarks.dedup_recall``
(default run: 2000 pairs, base ``zipf``, seed 0, ``MinhashConfig()``: 14 buckets x 8 hashes, no check). This test
generates another corpus (base ``prose``, seed 3: another generator and seed than the measurement), weighs
datatrove's bucket recalls by this corpus's pairs per bucket, and asks that lmforge's defaults find at least as many.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.dedup_recall import BUCKETS, make_corpus
from pipelines.config.dedup import MinHashParams
from tasks.dedup.clusters import minhash_dedup

# datatrove 0.10.1 defaults, recall per bucket of benchmarks.dedup_recall.BUCKETS (python -m benchmarks.dedup_recall)
DATATROVE_RECALL = (0.019, 0.109, 0.290, 0.432, 0.693, 0.899, 0.951, 0.994, 1.0, 1.0, 1.0)
TOLERANCE = 0.02


def test_recall_at_the_defaults_is_at_least_datatrove_s_on_a_fresh_corpus(tmp_path: Path) -> None:
    corpus = make_corpus(300, seed=3, base="prose")
    texts = corpus["texts"]
    ids = [hashlib.blake2b(f"doc{i}".encode(), digest_size=16).hexdigest() for i in range(len(texts))]
    src, out, work = tmp_path / "in", tmp_path / "out", tmp_path / "work"
    for d in (src, out, work):
        d.mkdir()
    for n, lo in enumerate(range(0, len(texts), 400)):
        pq.write_table(pa.table({"id": ids[lo:lo + 400], "text": texts[lo:lo + 400]}), src / f"part-{n:05d}.parquet")
    d = MinHashParams()
    minhash_dedup(src, out, work_dir=work, num_perm=d.num_perm, shingle_size=d.shingle_size, threshold=d.threshold,
                  bands=d.bands, rows=d.rows, verify=d.verify, verify_margin=d.verify_margin, seed=d.seed)
    removed = set(pq.read_table(out / "removed").column("id").to_pylist())
    pairs = [(ids[a], ids[b], j) for a, b, j in corpus["pairs"]]
    found = [(a in removed or b in removed, j) for a, b, j in pairs]
    expected_dt = ours = 0.0
    for (lo, hi), dt in zip(BUCKETS, DATATROVE_RECALL, strict=True):
        mine = [f for f, j in found if lo <= j < hi]
        expected_dt += dt * len(mine)
        ours += sum(mine)
        if lo >= 0.7 and mine:  # from the threshold up, bucket by bucket too
            assert sum(mine) / len(mine) >= dt - 0.05, (lo, hi)
    assert ours / len(pairs) >= expected_dt / len(pairs) - TOLERANCE
    # precision: every removal is one document of a generated pair, at most one per pair
    in_pair = {x for a, b, _ in pairs for x in (a, b)}
    assert removed <= in_pair and all(not (a in removed and b in removed) for a, b, _ in pairs)
