"""Train/validation/test splits by id hash: deterministic, independent of shard order, no random state.

A document's split depends only on its id and the seed: ``h = BLAKE2b-64(f"{seed}:{id}")`` read as an unsigned
integer, then ``test`` when ``h < test * 2**64``, ``val`` when ``h < (test + val) * 2**64``, else ``train``. So a
document keeps its split when the corpus grows, and the split fractions hold up to binomial noise.

Tiny corpora: with at least 3 documents, a split whose fraction is positive but which drew no document takes one
from the currently largest split (train on ties), the donor's document with the largest hash; ``test`` is served
before ``val``. Three documents or more means the donor always has two, so no split is emptied. These moves are
counted as ``moved``; they can change when the corpus changes, the hash rule itself never does.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tasks.records import ROW_GROUP_ROWS

SPLITS: tuple[str, ...] = ("train", "val", "test")


class SplitError(Exception):
    """Split fractions or inputs are unusable; the message says what to change."""


def id_hashes(ids: list[str], *, seed: int) -> Any:
    """uint64 BLAKE2b hash of ``f"{seed}:{id}"`` per id (one C call per id, no random state)."""
    import numpy as np

    return np.fromiter((int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest(), "big")
                        for i in ids), dtype=np.uint64, count=len(ids))


def assign_splits(hashes: Any, *, val: float, test: float) -> tuple[Any, int]:
    """Split index per document (0 train, 1 val, 2 test) from its id hash, with the tiny-corpus guarantee.

    Args:
        hashes: uint64 id hashes of the whole corpus (:func:`id_hashes`), in any fixed order.
        val: fraction for validation, in ``[0, 1)``.
        test: fraction for test, in ``[0, 1)``; ``val + test`` must be below 1.

    Returns:
        ``(split, moved)``: int8 split index per document and how many documents the guarantee moved.
    """
    import numpy as np

    if not (0.0 <= val < 1.0 and 0.0 <= test < 1.0 and val + test < 1.0):
        raise SplitError(f"val={val} and test={test} must each lie in [0, 1) and sum to less than 1")
    # thresholds as integers: comparing in uint64 avoids float rounding of hashes near 2**64
    t_cut, v_cut = np.uint64(min(int(test * 2**64), 2**64 - 1)), np.uint64(min(int((test + val) * 2**64), 2**64 - 1))
    split = np.where(hashes < t_cut, 2, np.where(hashes < v_cut, 1, 0)).astype(np.int8)
    moved = 0
    if split.size >= 3:
        for target, fraction in ((2, test), (1, val)):
            if fraction > 0 and not (split == target).any():
                counts = np.bincount(split, minlength=3)
                donor = int(np.argmax(counts))  # argmax takes the first maximum: train on ties
                members = np.flatnonzero(split == donor)
                split[members[np.argmax(hashes[members])]] = target
                moved += 1
    return split, moved


def split_shards(in_dir: Path, out_dir: Path, *, val: float = 0.01, test: float = 0.01, seed: int = 0
                 ) -> dict[str, int]:
    """Write the record shards of ``in_dir`` into ``out_dir/{train,val,test}/``, one shard at a time.

    The first pass reads only the ``id`` column (8 bytes per document kept: the hashes); the second writes each
    input shard's rows to the same-named shard of every split that gets rows from it, every column unchanged.

    Args:
        in_dir: record shards ``part-NNNNN.parquet`` (for example the dedup stage's kept shards).
        out_dir: an existing directory; ``train/``, ``val/`` and ``test/`` are created in it.
        val: validation fraction.
        test: test fraction.
        seed: seed of the id hash; another seed gives another split.

    Returns:
        Counters: ``docs_in``, ``train``, ``val``, ``test``, ``moved`` (tiny-corpus guarantee) and
        ``shards.<split>`` (shard files written per split).
    """
    import numpy as np
    import pyarrow.parquet as pq

    shards = sorted(Path(in_dir).glob("part-*.parquet"))
    hashes = [id_hashes(pq.read_table(s, columns=["id"]).column("id").to_pylist(), seed=seed) for s in shards]
    sizes = [h.size for h in hashes]
    split, moved = assign_splits(np.concatenate(hashes) if hashes else np.empty(0, np.uint64), val=val, test=test)
    del hashes
    stats = {"docs_in": int(split.size), "moved": moved, **{name: 0 for name in SPLITS},
             **{f"shards.{name}": 0 for name in SPLITS}}
    for name in SPLITS:
        (Path(out_dir) / name).mkdir(parents=True, exist_ok=True)
    start = 0
    for shard, n in zip(shards, sizes, strict=True):
        table, mine = pq.read_table(shard), split[start : start + n]
        start += n
        for index, name in enumerate(SPLITS):
            rows = np.flatnonzero(mine == index)
            if rows.size:
                pq.write_table(table.take(rows), Path(out_dir) / name / shard.name, compression="zstd",
                               row_group_size=ROW_GROUP_ROWS)
                stats[name] += int(rows.size)
                stats[f"shards.{name}"] += 1
    return stats
