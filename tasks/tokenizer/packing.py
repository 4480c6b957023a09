"""Packed token files: every document of a split tokenized, joined with EOS, in one flat binary array per split.

A split becomes ``{split}.bin``: the token ids of its documents in shard and row order, each document followed by
EOS, as raw little-endian ``uint16`` (vocabulary up to 65,536) or ``uint32``, the nanoGPT layout that
``np.memmap`` reads without parsing. ``manifest.json`` beside the files records the dtype, vocabulary size, special
ids, the tokenizer's digest and the tokens per split; :func:`load_tokens` reads a split back through it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.tokenizer.bpe import TOKENIZER_FILE, count_docs, iter_text_batches, load_tokenizer, tokenizer_info
from tasks.tokens import MANIFEST_FILE, MANIFEST_FORMAT, TokenFileError, token_dtype, token_file

if TYPE_CHECKING:
    import numpy as np

_TIMINGS = ("seconds", "tokens_per_second")


# Worker processes (workers > 1): one single-threaded tokenizer each, loaded once by the initializer.
_worker: dict[str, Any] = {}


def _init_worker(tokenizer_dir: str, eos_id: int | None, dtype: str) -> None:
    # before tokenizers starts its thread pool: N workers x all cores would oversubscribe the machine
    os.environ["RAYON_NUM_THREADS"] = "1"
    _worker.update(tokenizer=load_tokenizer(Path(tokenizer_dir)), eos_id=eos_id, dtype=dtype)


def _encode(tokenizer: Any, texts: list[str], eos_id: int | None, dtype: str) -> np.ndarray:
    """Ids of ``texts`` in order, each followed by ``eos_id`` unless it is None, as one ``dtype`` array."""
    import numpy as np

    ids: list[int] = []
    for encoding in tokenizer.encode_batch_fast(texts, add_special_tokens=False):
        ids.extend(encoding.ids)
        if eos_id is not None:
            ids.append(eos_id)
    return np.array(ids, dtype=dtype)  # numpy raises OverflowError if an id does not fit the dtype


def _encode_in_worker(texts: list[str]) -> np.ndarray:
    return _encode(_worker["tokenizer"], texts, _worker["eos_id"], _worker["dtype"])


def _encoded_batches(batches: Iterator[tuple[list[str], int]], *, tokenizer_dir: Path, eos_id: int | None,
                     dtype: str, workers: int) -> Iterator[tuple[np.ndarray, list[str], int]]:
    """``(ids, texts, utf8_bytes)`` per batch in input order, encoded here or by ``workers`` processes."""
    if workers <= 1:
        tokenizer = load_tokenizer(tokenizer_dir)
        for texts, nbytes in batches:
            yield _encode(tokenizer, texts, eos_id, dtype), texts, nbytes
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the calling process may run threads (Prefect, tokenizers' pool) that fork would copy broken
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                             initargs=(str(tokenizer_dir), eos_id, dtype)) as pool:
        pending: deque[tuple[Any, list[str], int]] = deque()
        for texts, nbytes in batches:
            pending.append((pool.submit(_encode_in_worker, texts), texts, nbytes))
            if len(pending) >= 2 * workers:  # a bounded window keeps memory flat and the output in order
                future, done_texts, done_bytes = pending.popleft()
                yield future.result(), done_texts, done_bytes
        while pending:
            future, done_texts, done_bytes = pending.popleft()
            yield future.result(), done_texts, done_bytes


def pack_split(*, split_dir: Path, tokenizer_dir: Path, out_path: Path, batch_size: int = 1000,
               append_eos: bool = True, workers: int = 1) -> dict[str, Any]:
    """Tokenize every document of a split and append the ids, EOS-joined, to one flat binary file.

    Streaming: one batch of texts and its ids are in memory at a time (a few per worker with ``workers > 1``).
    The output is identical for any ``workers`` and ``batch_size``.

    Args:
        split_dir: the split's record shards ``part-NNNNN.parquet``.
        tokenizer_dir: the tokenizer saved by ``train_tokenizer``.
        out_path: the ``.bin`` file to write (replaced if present); see :func:`token_file`.
        batch_size: documents per ``encode_batch`` call.
        append_eos: follow every document, the last one included, with EOS.
        workers: 1 encodes in this process (tokenizers' own thread pool, capped by RAYON_NUM_THREADS); more starts
            that many single-threaded spawned processes (about 0.5 s each to start, so it pays only on many cores
            and large splits; a calling script needs the ``if __name__ == "__main__":`` guard).

    Returns:
        Counters: ``docs``, ``tokens`` (EOS included), ``bytes`` (UTF-8 of the texts), ``words`` (whitespace-split),
        ``seconds``, ``tokens_per_second``.
    """
    info = tokenizer_info(tokenizer_dir)
    eos_id = info["eos_id"] if append_eos else None
    if append_eos and eos_id is None:
        raise TokenFileError(f"the tokenizer in {tokenizer_dir} has no eos_token: retrain it with one")
    dtype = token_dtype(int(info["vocab_size"] or 0))
    total = count_docs(split_dir)
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"pack {Path(split_dir).name}", unit=" docs", mininterval=0.5)
    stats = {"docs": 0, "tokens": 0, "bytes": 0, "words": 0}
    start = time.perf_counter()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(out_path, "wb") as out:
            for ids, texts, nbytes in _encoded_batches(iter_text_batches(split_dir, batch_size),
                                                       tokenizer_dir=tokenizer_dir, eos_id=eos_id, dtype=dtype,
                                                       workers=workers):
                ids.astype(ids.dtype.newbyteorder("<"), copy=False).tofile(out)
                stats["docs"] += len(texts)
                stats["tokens"] += int(ids.size)
                stats["bytes"] += nbytes
                stats["words"] += sum(len(t.split()) for t in texts)
                if bar is not None:
                    bar.update(len(texts))
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    return {**stats, "seconds": round(seconds, 3),
            "tokens_per_second": round(stats["tokens"] / seconds, 1) if seconds > 0 else 0.0}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(out_dir: Path, *, splits: dict[str, dict[str, Any]], dtype: str, vocab_size: int,
                   eos_id: int | None, bos_id: int | None, pad_id: int | None, tokenizer_dir: Path,
                   tokenizer_ref: str | None = None) -> Path:
    """Write ``out_dir/manifest.json`` for the packed files ``{split}.bin`` already in ``out_dir``.

    Args:
        out_dir: the directory holding the ``.bin`` files.
        splits: per split name, the counters :func:`pack_split` returned (``tokens`` at least).
        dtype: the files' dtype, ``"uint16"`` or ``"uint32"`` (see :func:`token_dtype`).
        vocab_size: the tokenizer's vocabulary size.
        eos_id: EOS id (the document separator).
        bos_id: BOS id.
        pad_id: padding id.
        tokenizer_dir: the tokenizer used; the digest of its ``tokenizer.json`` is recorded.
        tokenizer_ref: how the manifest names the tokenizer (default: ``tokenizer_dir`` as given). A stage that
            writes the tokenizer to a staging directory passes its final repo-relative path here.

    Returns:
        The manifest's path.

    Raises:
        TokenFileError: a file is missing or its size disagrees with its token count and dtype.
    """
    import numpy as np

    if dtype not in ("uint16", "uint32") or vocab_size > np.iinfo(dtype).max + 1:
        raise TokenFileError(f"dtype {dtype!r} cannot hold ids of a {vocab_size}-token vocabulary: use "
                             f"{token_dtype(vocab_size)!r}")
    entries = {}
    for split, counters in splits.items():
        path, tokens = token_file(out_dir, split), int(counters["tokens"])
        expected = tokens * np.dtype(dtype).itemsize
        if not path.is_file() or path.stat().st_size != expected:
            found = path.stat().st_size if path.is_file() else "no file"
            raise TokenFileError(f"{path}: expected {expected} bytes ({tokens} {dtype} tokens), found {found}; "
                                 "pack the split again")
        # timings vary run to run: leaving them out keeps the manifest identical for identical inputs
        entries[split] = {"file": path.name, **{k: v for k, v in counters.items() if k not in _TIMINGS}}
    manifest = {"format": MANIFEST_FORMAT, "dtype": dtype, "byteorder": "little", "vocab_size": vocab_size,
                "bos_id": bos_id, "eos_id": eos_id, "pad_id": pad_id,
                "tokenizer_dir": tokenizer_ref or str(tokenizer_dir),
                "tokenizer_sha256": _sha256(Path(tokenizer_dir) / TOKENIZER_FILE), "splits": entries}
    path = Path(out_dir) / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def pack_splits(*, split_dirs: dict[str, Path], tokenizer_dir: Path, out_dir: Path, batch_size: int = 1000,
                workers: int = 1, tokenizer_ref: str | None = None) -> dict[str, dict[str, Any]]:
    """Pack every split with :func:`pack_split` into ``out_dir/{split}.bin`` and write the manifest.

    Args:
        split_dirs: split name -> its record shards directory.
        tokenizer_dir: the tokenizer saved by ``train_tokenizer`` (vocabulary and special ids come from it).
        out_dir: the packed-tokens directory.
        batch_size: documents per ``encode_batch`` call.
        workers: see :func:`pack_split`.
        tokenizer_ref: see :func:`write_manifest`.

    Returns:
        Per split, the counters of :func:`pack_split`.
    """
    info = tokenizer_info(tokenizer_dir)
    vocab = int(info["vocab_size"] or 0)
    packed = {split: pack_split(split_dir=d, tokenizer_dir=tokenizer_dir, out_path=token_file(out_dir, split),
                                batch_size=batch_size, workers=workers) for split, d in split_dirs.items()}
    write_manifest(out_dir, splits=packed, dtype=token_dtype(vocab), vocab_size=vocab, eos_id=info["eos_id"],
                   bos_id=info["bos_id"], pad_id=info["pad_id"], tokenizer_dir=tokenizer_dir,
                   tokenizer_ref=tokenizer_ref)
    return packed
