"""Dedup's signature cache: each document's MinHash signature and exact hash, kept from one run to the next.

A document's signature and exact hash are functions of its text, the MinHash settings and the code that computes
them (``tasks.dedup.minhash``, ``tasks.fingerprints``), nothing else. So a shard's arrays are stored under a key of
the shard's bytes within a directory keyed by the settings and the code; an unchanged shard takes them from there
as they are, and a changed one looks its documents up by id (a record id is a digest of the text) among every stored
shard, signing only the documents found nowhere. The clusters are then found over all signatures as in a run from
scratch (``tasks.dedup.clusters.find_clusters``: a sort over compact arrays, seconds for millions of documents), so the
duplicates removed, the copy kept in each cluster (its smallest id) and the splits are those of a full run.

An entry is one ``(docs, num_perm + 8)`` uint32 ``.npy`` matrix, read memory-mapped: the signature, then the exact
hash, the id (two 64-bit halves), the document's shingle count and its UTF-8 bytes, as little-endian 32-bit words.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tasks.incremental import EntryStore, file_digest, key_of

log = logging.getLogger(__name__)


def pack(sig: Any, exact: Any, ids: Any, counts: Any) -> Any:
    """One entry matrix from a shard's arrays (``counts``: per document its shingles and UTF-8 bytes)."""
    import numpy as np

    n = sig.shape[0]
    return np.concatenate((sig.astype(np.uint32), np.ascontiguousarray(exact, dtype="<u8").view("<u4").reshape(n, 2),
                           np.ascontiguousarray(ids, dtype="<u8").view("<u4").reshape(n, 4),
                           np.minimum(counts, 2**32 - 1).astype(np.uint32).reshape(n, 2)), axis=1)


def unpack(matrix: Any, num_perm: int) -> tuple[Any, Any, Any, Any]:
    """``(sig, exact, ids, counts)`` of an entry matrix (or of some of its rows)."""
    import numpy as np

    m = np.ascontiguousarray(matrix, dtype="<u4")
    n = m.shape[0]
    sig = m[:, :num_perm].astype(np.uint32)
    exact = np.ascontiguousarray(m[:, num_perm:num_perm + 2]).view("<u8").reshape(n).astype(np.uint64)
    ids = np.ascontiguousarray(m[:, num_perm + 2:num_perm + 6]).view("<u8").reshape(n, 2).astype(np.uint64)
    return sig, exact, ids, m[:, num_perm + 6:num_perm + 8].astype(np.int64)


class SignatureCache:
    """The signatures stored for one setting of ``num_perm``, ``shingle_size`` and ``seed``, by shard key.

    Args:
        directory: the stage's cache directory.
        num_perm, shingle_size, seed: the MinHash settings the signatures were computed with.
        code: the digest of the code that computes them (``tasks.incremental.code_digest`` of the MinHash modules,
            given by the caller: this module imports none of them).
    """

    def __init__(self, directory: Path, *, num_perm: int, shingle_size: int, seed: int, code: str) -> None:
        key = key_of("dedup-signatures", code, num_perm, shingle_size, seed)
        self.store = EntryStore(Path(directory) / key, suffix=".npy")
        self.num_perm = num_perm
        self._index: tuple[Any, Any, list[Any], Any] | None = None
        self._keys: list[str] = []

    def key(self, shard: Path) -> str:
        """The key of a shard's arrays: a digest of its bytes."""
        return file_digest(shard)

    def shard(self, key: str) -> tuple[Any, Any, Any, Any] | None:
        """The arrays of an unchanged shard, or None."""
        import numpy as np

        entry = self.store.get(key)
        return None if entry is None else unpack(np.load(entry), self.num_perm)

    def lookup(self, ids: Any) -> tuple[Any, Any]:
        """For ``(n, 2)`` uint64 ids: a bool mask of those stored in any entry, and their entry rows (packed)."""
        import numpy as np

        hi, lo, mats, where = self._load_index()
        found = np.zeros(len(ids), dtype=bool)
        rows = np.zeros((len(ids), self.num_perm + 8), dtype=np.uint32)
        if hi.size and len(ids):
            pos = np.minimum(np.searchsorted(hi, ids[:, 0]), hi.size - 1)
            found = (hi[pos] == ids[:, 0]) & (lo[pos] == ids[:, 1])
            for i in np.flatnonzero(found):
                entry, row = where[pos[i]]
                self.store.used.add(self._keys[entry])
                rows[i] = mats[entry][row]
        return found, rows

    def save(self, key: str, sig: Any, exact: Any, ids: Any, counts: Any) -> None:
        """Store a shard's arrays under ``key``; a failure is logged, never the run's error."""
        import numpy as np

        try:
            with self.store.put(key) as tmp, open(tmp, "wb") as fh:
                np.save(fh, pack(sig, exact, ids, counts))
        except OSError as exc:
            log.warning("dedup cache: could not store a shard's signatures (%s)", exc)

    def _load_index(self) -> tuple[Any, Any, list[Any], Any]:
        """Every stored id, sorted by its high half, with where its row is; built once."""
        import numpy as np

        if self._index is None:
            mats, keys, his, los, entries, rows = [], [], [], [], [], []
            for key in self.store.keys():
                try:
                    m = np.load(self.store.path(key), mmap_mode="r")
                except (OSError, ValueError):  # pruned meanwhile or unreadable: its documents are signed again
                    continue
                ids = np.ascontiguousarray(m[:, self.num_perm + 2:self.num_perm + 6], dtype="<u4").view("<u8")
                mats.append(m)
                keys.append(key)
                his.append(ids[:, 0])
                los.append(ids[:, 1])
                entries.append(np.full(len(ids), len(mats) - 1))
                rows.append(np.arange(len(ids)))
            hi = np.concatenate(his) if his else np.empty(0, np.uint64)
            order = np.argsort(hi, kind="stable")
            self._keys = keys
            where = np.stack((np.concatenate(entries), np.concatenate(rows)), axis=1)[order] if his else None
            self._index = (hi[order], (np.concatenate(los) if los else np.empty(0, np.uint64))[order], mats, where)
        return self._index
