"""Deduplication: exact and MinHash-LSH near-duplicate clusters over record shards, then kept and removed shards.

Three steps, each restartable on its own and each shard-parallel where it can be:

1. ``tasks.dedup.minhash.signature_shard`` per shard: signatures, exact hashes and ids as ``.npy`` files.
2. :func:`find_clusters`, global: groups equal exact hashes and equal LSH band hashes by sorting numpy arrays
   (one band at a time, so memory is a few arrays of ``docs`` integers), joins each bucket's members to its
   smallest-id member, optionally checks those candidate pairs by estimated Jaccard, and finds connected
   components by vectorised min-label propagation. Each cluster keeps its smallest id; the others are written
   to ``duplicates.parquet``.
3. :func:`apply_dedup` per shard: the kept rows (every column unchanged) and ``removed/`` rows saying what each
   removed document duplicates.

Methods, "exact first": a removed document is ``exact`` when its normalised text equals that of a document with a
smaller id (what an exact pass alone would have removed), otherwise ``minhash``. ``duplicate_of`` is always the
cluster's kept representative.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.dedup.minhash import EXACT_SUFFIX, IDS_SUFFIX, META_SUFFIX, SIGNATURE_SUFFIX, SignatureError, format_ids
from tasks.records import ROW_GROUP_ROWS

DUPLICATES_FILE = "duplicates.parquet"
REMOVED_DIR = "removed"
SIZE_BUCKETS: tuple[tuple[str, int, int], ...] = (("2", 2, 2), ("3-5", 3, 5), ("6-10", 6, 10), ("11+", 11, 2**62))
_PAIR_CHUNK = 1 << 16  # candidate pairs verified per step: bounds the gathered signature rows


def _bucket_pairs(keys: Any, id_hi: Any) -> tuple[Any, Any]:
    """Pairs over docs with equal ``keys`` (sorting, no dicts): each member with its bucket's smallest id and with
    the member just before it in id order, so a pair rejected by verification rarely cuts a bucket apart."""
    import numpy as np

    order = np.lexsort((np.arange(keys.size), id_hi, keys))  # within a bucket: by id, so the head is the smallest
    k = keys[order]
    head = np.concatenate(([True], k[1:] != k[:-1]))
    run_head = order[np.flatnonzero(head)][np.cumsum(head) - 1]
    prev = np.concatenate(([0], order[:-1]))
    second = ~head & (prev != run_head)
    return np.concatenate((run_head[~head], prev[second])), np.concatenate((order[~head], order[second]))


def _band_keys(sig: Any, band: int, rows: int) -> Any:
    """64-bit hash of one band's ``rows`` signature values per doc (column loop, vectorised over docs)."""
    import numpy as np

    from tasks.dedup.minhash import splitmix64

    h = np.full(sig.shape[0], band, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(band * rows, (band + 1) * rows):
            h = splitmix64(h * np.uint64(0x9E3779B97F4A7C15) + sig[:, j].astype(np.uint64))
    return h


def _gather(arrays: list[Any], offsets: Any, index: Any) -> Any:
    """Rows ``index`` (global doc numbers) of per-shard arrays, one fancy index per shard touched."""
    import numpy as np

    shard = np.searchsorted(offsets, index, side="right") - 1
    out = np.empty((index.size, *arrays[0].shape[1:]), dtype=arrays[0].dtype)
    for s in np.unique(shard):
        mask = shard == s
        out[mask] = arrays[s][index[mask] - offsets[s]]
    return out


def _components(a: Any, b: Any, n: int) -> Any:
    """Per node the smallest node of its connected component (min-label propagation with pointer jumping)."""
    import numpy as np

    label = np.arange(n)
    while True:
        before = label.copy()
        low = np.minimum(label[a], label[b])
        np.minimum.at(label, a, low)
        np.minimum.at(label, b, low)
        while not np.array_equal(label, label[label]):  # a label is a smaller node of the same component
            label = label[label]
        if np.array_equal(label, before):
            return label


def _load(signature_dir: Path) -> tuple[list[str], list[Any], list[Any], list[Any], Any]:
    import numpy as np

    metas = sorted(Path(signature_dir).glob("*" + META_SUFFIX))
    if not metas:
        raise SignatureError(f"no signed shards in {signature_dir}: run tasks.dedup.minhash.signature_shard on each "
                             "shard")
    stems = [json.loads(m.read_text(encoding="utf-8"))["shard"] for m in metas]
    sigs = [np.load(Path(signature_dir) / (s + SIGNATURE_SUFFIX), mmap_mode="r") for s in stems]
    exact = [np.load(Path(signature_dir) / (s + EXACT_SUFFIX)) for s in stems]
    ids = [np.load(Path(signature_dir) / (s + IDS_SUFFIX)) for s in stems]
    if len({s.shape[1] for s in sigs}) != 1:
        raise SignatureError(f"shards in {signature_dir} were signed with different num_perm: sign them again")
    offsets = np.concatenate(([0], np.cumsum([len(e) for e in exact]))).astype(np.int64)
    return stems, sigs, exact, ids, offsets


def find_clusters(signature_dir: Path, *, bands: int, rows: int, threshold: float | None = None
                  ) -> tuple[Path, dict[str, int]]:
    """Cluster exact and near duplicates over every signed shard in ``signature_dir``.

    Args:
        signature_dir: output directory of ``tasks.dedup.minhash.signature_shard`` for all shards.
        bands: LSH bands; docs equal on all ``rows`` values of any band become candidates.
        rows: signature values per band; ``bands * rows`` must not exceed ``num_perm``.
        threshold: if given, a MinHash candidate pair is kept only when its estimated Jaccard (share of equal
            signature values) is at least this; exact duplicates are never checked.

    Returns:
        The path of ``duplicates.parquet`` in ``signature_dir`` (one row per removed doc: shard, row, id,
        duplicate_of, cluster_id, method; ordered by shard and row) and counters ``docs_in``, ``exact_pairs``,
        ``candidate_pairs``, ``rejected_pairs``, ``clusters``, ``dropped_exact``, ``dropped_minhash``.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    stems, sigs, exact, ids, offsets = _load(signature_dir)
    if bands * rows > sigs[0].shape[1] or bands < 1 or rows < 1:
        raise SignatureError(f"bands*rows = {bands}*{rows} must be positive and at most num_perm={sigs[0].shape[1]}")
    all_exact = np.concatenate(exact)
    id_hi = np.concatenate([i[:, 0] for i in ids])
    ea, eb = _bucket_pairs(all_exact, id_hi)
    cand: list[Any] = []
    for band in range(bands):
        keys = np.concatenate([_band_keys(s, band, rows) for s in sigs])
        pa_, pb_ = _bucket_pairs(keys, id_hi)
        cand.append(pa_ * offsets[-1] + pb_)
    pairs = np.unique(np.concatenate(cand)) if cand else np.empty(0, np.int64)
    ca, cb = pairs // max(int(offsets[-1]), 1), pairs % max(int(offsets[-1]), 1)
    rejected = 0
    if threshold is not None and ca.size:
        keep = np.zeros(ca.size, dtype=bool)
        for lo in range(0, ca.size, _PAIR_CHUNK):
            sl = slice(lo, lo + _PAIR_CHUNK)
            keep[sl] = (_gather(sigs, offsets, ca[sl]) == _gather(sigs, offsets, cb[sl])).mean(axis=1) >= threshold
        rejected = int((~keep).sum())
        ca, cb = ca[keep], cb[keep]
    a, b = np.concatenate((ea, ca)), np.concatenate((eb, cb))
    nodes = np.unique(np.concatenate((a, b)))
    node_ids = _gather(ids, offsets, nodes)
    by_id = np.lexsort((node_ids[:, 1], node_ids[:, 0]))  # relabel nodes in id order: smallest label = smallest id
    nodes, node_ids = nodes[by_id], node_ids[by_id]
    label = _components(_local(nodes, a), _local(nodes, b), nodes.size)
    node_exact = _gather(exact, offsets, nodes)
    # exact first: in id order, a node whose normalised text appeared at a smaller id is an exact duplicate
    order = np.lexsort((np.arange(nodes.size), node_exact))
    repeat = np.zeros(nodes.size, dtype=bool)
    repeat[order[1:]] = node_exact[order[1:]] == node_exact[order[:-1]]
    removed = label != np.arange(nodes.size)
    reps, cluster_of = np.unique(label, return_inverse=True)
    shard_of = np.searchsorted(offsets, nodes, side="right") - 1
    out = np.flatnonzero(removed)
    out = out[np.lexsort((nodes[out], shard_of[out]))]
    table = pa.table({
        "shard": pa.array([stems[s] for s in shard_of[out]], pa.string()),
        "row": pa.array(nodes[out] - offsets[shard_of[out]], pa.int64()),
        "id": pa.array(format_ids(node_ids[out]), pa.string()),
        "duplicate_of": pa.array(format_ids(node_ids[label[out]]), pa.string()),
        "cluster_id": pa.array(cluster_of[out], pa.int64()),
        "method": pa.array(np.where(repeat[out], "exact", "minhash").tolist(), pa.string()),
    })
    path = Path(signature_dir) / DUPLICATES_FILE
    pq.write_table(table, path, compression="zstd")
    stats = {"docs_in": int(offsets[-1]), "exact_pairs": int(ea.size), "candidate_pairs": int(pairs.size),
             "rejected_pairs": rejected, "clusters": int(reps.size), "dropped_exact": int(repeat[removed].sum()),
             "dropped_minhash": int((removed & ~repeat).sum())}
    return path, stats


def _local(nodes_in_id_order: Any, index: Any) -> Any:
    """Positions of global doc numbers ``index`` in ``nodes_in_id_order`` (a permutation of sorted nodes)."""
    import numpy as np

    order = np.argsort(nodes_in_id_order)
    return order[np.searchsorted(nodes_in_id_order, index, sorter=order)]


def apply_dedup(shard_dir: Path, duplicates_path: Path, out_dir: Path) -> dict[str, int]:
    """Write each shard's kept rows to ``out_dir`` and its removed rows to ``out_dir/removed/``, shard by shard.

    Args:
        shard_dir: the record shards that were signed (``part-NNNNN.parquet``).
        duplicates_path: the file :func:`find_clusters` wrote for them.
        out_dir: an existing directory; kept shards keep their names and every column, removed rows get
            ``removed/part-NNNNN.parquet`` (only where a shard lost rows; the directory always exists) with id,
            duplicate_of, cluster_id, method.

    Returns:
        Counters: ``docs_in``, ``kept``, ``dropped_exact``, ``dropped_minhash``, ``clusters`` (clusters of two or more
        docs) and ``cluster_size.{2,3-5,6-10,11+}`` (clusters by size, the kept doc included).
    """
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    dups = pq.read_table(duplicates_path)
    out_dir = Path(out_dir)
    stats = {"docs_in": 0, "kept": 0, "dropped_exact": 0, "dropped_minhash": 0}
    # always there, empty when nothing was removed: the stage publishes it as part of its output
    (out_dir / REMOVED_DIR).mkdir(exist_ok=True)
    for shard in sorted(Path(shard_dir).glob("part-*.parquet")):
        stem = shard.name.removesuffix(".parquet")
        table = pq.read_table(shard)
        mine = dups.filter(pc.equal(dups.column("shard"), stem))
        rows = mine.column("row").to_numpy()
        if rows.size and (rows.max() >= table.num_rows or table.column("id").take(rows).to_pylist()
                          != mine.column("id").to_pylist()):
            raise SignatureError(f"{duplicates_path} does not match {shard}: sign the current shards again")
        keep = np.ones(table.num_rows, dtype=bool)
        keep[rows] = False
        pq.write_table(table.filter(keep), out_dir / shard.name, compression="zstd", row_group_size=ROW_GROUP_ROWS)
        if rows.size:
            removed = mine.select(["id", "duplicate_of", "cluster_id", "method"])
            pq.write_table(removed, out_dir / REMOVED_DIR / shard.name, compression="zstd")
        methods = mine.column("method").to_pylist()
        stats["docs_in"] += table.num_rows
        stats["kept"] += int(keep.sum())
        stats["dropped_exact"] += methods.count("exact")
        stats["dropped_minhash"] += methods.count("minhash")
    sizes = np.unique(dups.column("cluster_id").to_numpy(), return_counts=True)[1] + 1
    stats["clusters"] = int(sizes.size)
    for name, lo, hi in SIZE_BUCKETS:
        stats[f"cluster_size.{name}"] = int(((sizes >= lo) & (sizes <= hi)).sum())
    return stats


def choose_bands_rows(threshold: float, num_perm: int, *, bands: int | None = None, rows: int | None = None,
                      verify: bool = True, verify_margin: float = 0.0) -> tuple[int, int]:
    """The LSH banding: ``bands`` x ``rows`` when both are given, else chosen where pairs start to count.

    With verification that is the verification bar, ``threshold - verify_margin``: every pair the check would accept
    should first become a candidate, and the check removes the LSH false positives for the price of one signature
    comparison each, so the choice weighs a missed pair 9x a false candidate (0.65 -> 25 x 5 at 128 permutations:
    a pair at 0.65 is a candidate with probability 0.95, at 0.7 with 0.99). Without verification the banding is the
    whole decision: chosen at ``threshold`` with datasketch's equal weights.
    """
    from tasks.dedup.minhash import optimal_bands_rows

    if (bands is None) != (rows is None):
        raise SignatureError("give both bands and rows, or neither (then threshold chooses them)")
    if bands is not None and rows is not None:
        return bands, rows
    if verify:
        return optimal_bands_rows(threshold - verify_margin, num_perm, 0.1, 0.9)
    return optimal_bands_rows(threshold, num_perm, 0.5, 0.5)


def minhash_dedup(in_dir: Path, out_dir: Path, *, work_dir: Path, num_perm: int = 128, shingle_size: int = 5,
                  threshold: float = 0.7, bands: int | None = None, rows: int | None = None, verify: bool = True,
                  verify_margin: float = 0.05, seed: int = 0) -> dict[str, int]:
    """Exact + MinHash-LSH dedup of the record shards in ``in_dir`` into ``out_dir`` (kept) and ``out_dir/removed``.

    Args:
        in_dir: record shards ``part-NNNNN.parquet``.
        out_dir: an existing, empty directory.
        work_dir: an existing directory for the signature files and ``duplicates.parquet`` (kept for inspection).
        num_perm: MinHash permutations.
        shingle_size: words per shingle.
        threshold: Jaccard similarity of word-shingle sets from which documents are near duplicates (found with
            probability ~0.95 at the threshold, ~1 above it); with ``verify_margin`` it places the banding
            (:func:`choose_bands_rows`) unless both ``bands`` and ``rows`` are given, and the verification bar.
        bands: LSH bands (with ``rows``), overriding the choice from ``threshold``.
        rows: signature values per band.
        verify: drop candidate pairs whose estimated Jaccard is below ``threshold - verify_margin`` (fewer false
            positives).
        verify_margin: how far below the threshold an estimate may be and still count (estimation noise).
        seed: seed of the shingle hashes and permutations.

    Returns:
        :func:`apply_dedup`'s counters plus ``bands``, ``rows``, ``bytes_in``, ``candidate_pairs``,
        ``rejected_pairs`` and ``exact_pairs``.
    """
    from tasks.dedup.minhash import signature_shard

    bands, rows = choose_bands_rows(threshold, num_perm, bands=bands, rows=rows, verify=verify,
                                    verify_margin=verify_margin)
    bytes_in = 0
    for shard in sorted(Path(in_dir).glob("part-*.parquet")):
        bytes_in += signature_shard(shard, work_dir, num_perm=num_perm, shingle_size=shingle_size, seed=seed)["bytes"]
    dup_path, found = find_clusters(work_dir, bands=bands, rows=rows,
                                    threshold=threshold - verify_margin if verify else None)
    stats = apply_dedup(in_dir, dup_path, out_dir)
    stats.update({"bands": bands, "rows": rows, "bytes_in": bytes_in, "candidate_pairs": found["candidate_pairs"],
                  "rejected_pairs": found["rejected_pairs"], "exact_pairs": found["exact_pairs"]})
    return dict(sorted(stats.items()))
