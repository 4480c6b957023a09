"""Byte-level BPE tokenizer: training on the train split, saving in Hugging Face format, and its quality metrics.

The tokenizer is GPT-2 style: a ByteLevel pre-tokenizer maps every byte to one of 256 visible characters and the
BPE trainer starts from all of them (``initial_alphabet``), so any text encodes without an unknown token and
``decode(encode(text)) == text`` holds for every string (with ``normalization="none"`` and
``add_prefix_space=False``). Special tokens take the first ids, in the order given. No post-processor is set:
encoding adds no BOS/EOS, so ``AutoTokenizer(text).input_ids`` equals the ids that packing writes per document.

Determinism: tokenizers' BPE trainer breaks count ties by the pair itself, not by hash or thread order; trainings of
the same texts gave byte-identical ``tokenizer.json`` with RAYON_NUM_THREADS 1, 2, 8 and 16 and different hash
seeds (tokenizers 0.23.3), and the tests check it across processes. No seed is needed: there is no sampling.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SPECIAL_TOKENS: tuple[str, ...] = ("<|bos|>", "<|eos|>", "<|pad|>")
"""Default special tokens, ids 0, 1, 2. No unknown token: byte-level BPE never needs one."""
NORMALIZATIONS: tuple[str, ...] = ("none", "nfc", "nfkc")
TOKENIZER_FILE = "tokenizer.json"


class TokenizerError(Exception):
    """The tokenizer's inputs or settings are unusable; the message says what to change."""

    exit_code = 1


def _shards(split_dir: Path) -> list[Path]:
    """The record shards of one split, in name order; an error if there are none."""
    from tasks.records import iter_shards

    shards = iter_shards(Path(split_dir))
    if not shards and Path(split_dir).is_dir():  # dedup ran, but the corpus was too small to give this split one
        raise TokenizerError(f"the split {split_dir} has no documents: add documents to the corpus, or lower the "
                             "dedup.splits fraction that is too small for it")
    if not shards:
        raise TokenizerError(f"no part-*.parquet shards in {split_dir}: run the dedup stage first")
    return shards


def count_docs(split_dir: Path) -> int:
    """Documents in a split, from the Parquet footers (reads no text)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(s).metadata.num_rows for s in _shards(split_dir))


def iter_text_batches(split_dir: Path, batch_size: int) -> Iterator[tuple[list[str], int]]:
    """Yield ``(texts, utf8_bytes)`` per batch of at most ``batch_size`` documents, shard by shard, in order.

    Only one Parquet batch is decoded at a time, so memory is bounded by the batch, never by the split.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if batch_size < 1:
        raise TokenizerError(f"batch_size must be at least 1, got {batch_size}")
    for shard in _shards(split_dir):
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=batch_size, columns=["text"]):
            column = batch.column(0)
            if column.null_count:
                raise TokenizerError(f"{shard} has {column.null_count} null texts: it is not a dedup-stage shard")
            yield column.to_pylist(), int(pc.sum(pc.binary_length(column)).as_py() or 0)


def _normalizer(normalization: str) -> Any:
    from tokenizers import normalizers

    choices = {"none": None, "nfc": normalizers.NFC, "nfkc": normalizers.NFKC}
    if normalization not in choices:
        raise TokenizerError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    make = choices[normalization]
    return make() if make is not None else None


def train_tokenizer(*, train_dir: Path, out_dir: Path, vocab_size: int, min_frequency: int = 2,
                    special_tokens: Sequence[str] = SPECIAL_TOKENS, bos_token: str = "<|bos|>",
                    eos_token: str = "<|eos|>", pad_token: str = "<|pad|>", unk_token: str | None = None,
                    normalization: str = "none", add_prefix_space: bool = False, batch_size: int = 1000
                    ) -> dict[str, Any]:
    """Train a byte-level BPE on the texts of ``train_dir`` and save it where ``AutoTokenizer`` loads it.

    Args:
        train_dir: the train split's record shards ``part-NNNNN.parquet`` (a string ``text`` column).
        out_dir: directory for ``tokenizer.json`` and ``tokenizer_config.json`` (created if missing).
        vocab_size: target vocabulary size, special tokens and the 256 byte symbols included; the result can be
            smaller when the corpus offers fewer merges than asked (the returned ``vocab_size`` is the real one).
        min_frequency: a pair must occur at least this often to be merged.
        special_tokens: all special tokens, in id order (ids 0, 1, ...); must contain the role tokens below.
        bos_token: the beginning-of-sequence token.
        eos_token: the end-of-sequence token; packing joins documents with it.
        pad_token: the padding token.
        unk_token: an unknown token for tools that want one; byte-level BPE never emits it. None: no such token.
        normalization: "none" (exact round trip), "nfc" or "nfkc" Unicode normalization before tokenizing.
        add_prefix_space: add a space before the text so a first word tokenizes like a later one; decoding then
            keeps that leading space.
        batch_size: documents per batch read from Parquet.

    Returns:
        Counters: ``vocab_size`` (actual), ``merges``, ``docs``, ``bytes`` (UTF-8), ``seconds``, and the special ids
        ``bos_id``, ``eos_id``, ``pad_id``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special_tokens = list(special_tokens)
    roles = {"bos_token": bos_token, "eos_token": eos_token, "pad_token": pad_token}
    if unk_token is not None:
        roles["unk_token"] = unk_token
    missing = [f"{role}={token!r}" for role, token in roles.items() if token not in special_tokens]
    if missing:
        raise TokenizerError(f"{', '.join(missing)} not in special_tokens {special_tokens}: add them to the list")
    if len(set(special_tokens)) != len(special_tokens):
        raise TokenizerError(f"special_tokens has duplicates: {special_tokens}")
    if vocab_size < 256 + len(special_tokens):
        raise TokenizerError(f"vocab_size {vocab_size} is below 256 byte symbols + {len(special_tokens)} special "
                             "tokens: raise it")
    normalizer = _normalizer(normalization)

    start = time.perf_counter()
    tokenizer = Tokenizer(models.BPE(unk_token=unk_token))
    if normalizer is not None:
        tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=sys.stderr.isatty())
    seen = {"docs": 0, "bytes": 0}

    def texts() -> Iterator[list[str]]:
        for batch, nbytes in iter_text_batches(train_dir, batch_size):
            seen["docs"] += len(batch)
            seen["bytes"] += nbytes
            yield batch

    tokenizer.train_from_iterator(texts(), trainer, length=count_docs(train_dir))
    if seen["docs"] == 0:
        raise TokenizerError(f"the train split {train_dir} has no documents: a tokenizer needs text to learn from")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **roles)
    fast.save_pretrained(str(out_dir))
    ids = {f"{role[:-6]}_id": tokenizer.token_to_id(token) for role, token in roles.items()}
    stats = {"vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
             "merges": len(_merges(out_dir)), **seen,
             "seconds": round(time.perf_counter() - start, 3), **ids}
    if stats["vocab_size"] < vocab_size:
        log.warning("tokenizer has %d tokens, fewer than the %d asked: the corpus offers no more merges with "
                    "min_frequency=%d", stats["vocab_size"], vocab_size, min_frequency)
    return stats


def _merges(tokenizer_dir: Path) -> list[Any]:
    import json

    return json.loads((Path(tokenizer_dir) / TOKENIZER_FILE).read_text(encoding="utf-8"))["model"]["merges"]


def load_tokenizer(tokenizer_dir: Path, *, literal_specials: bool = True) -> Any:
    """The raw ``tokenizers.Tokenizer`` saved by :func:`train_tokenizer` (faster than the transformers wrapper).

    Args:
        tokenizer_dir: the directory holding ``tokenizer.json``.
        literal_specials: encode text that spells a special token (a document quoting ``<|eos|>``) as ordinary
            bytes, so that documents can never inject control ids; False matches ``AutoTokenizer``'s behaviour.
    """
    from tokenizers import Tokenizer

    path = Path(tokenizer_dir) / TOKENIZER_FILE
    if not path.is_file():
        raise TokenizerError(f"no {TOKENIZER_FILE} in {tokenizer_dir}: run the tokenizer training first")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.encode_special_tokens = literal_specials
    return tokenizer


def tokenizer_info(tokenizer_dir: Path) -> dict[str, int | None]:
    """Vocabulary size and special ids (``bos_id``, ``eos_id``, ``pad_id``, ``unk_id``; None where absent)."""
    import json

    config = json.loads((Path(tokenizer_dir) / "tokenizer_config.json").read_text(encoding="utf-8"))
    tokenizer = load_tokenizer(tokenizer_dir)

    def token_id(role: str) -> int | None:
        token = config.get(role)
        token = token.get("content") if isinstance(token, dict) else token
        return tokenizer.token_to_id(token) if token else None

    return {"vocab_size": tokenizer.get_vocab_size(with_added_tokens=True), "bos_id": token_id("bos_token"),
            "eos_id": token_id("eos_token"), "pad_id": token_id("pad_token"), "unk_id": token_id("unk_token")}


def tokenizer_metrics(*, val_dir: Path, tokenizer_dir: Path, batch_size: int = 1000,
                      train_tokens: Any | None = None) -> dict[str, float | int]:
    """Compression and vocabulary use of the tokenizer on the validation split.

    Args:
        val_dir: the val split's record shards.
        tokenizer_dir: the saved tokenizer.
        batch_size: documents per batch.
        train_tokens: optionally the packed train token ids (an array, e.g. a memmap from ``load_tokens``): adds
            ``vocab_used_train``, counted in chunks so any size fits in memory.

    Returns:
        ``docs``, ``tokens``, ``bytes``, ``words`` (whitespace-split), ``bytes_per_token``, ``tokens_per_word``,
        ``vocab_used_val`` (fraction of the vocabulary seen in val), ``unk_rate`` (0 for byte-level BPE),
        ``roundtrip_errors`` (val documents whose decode(encode(text)) differs from the text; 0 unless a
        normalization or prefix space is on) and ``vocab_used_train`` when ``train_tokens`` is given.
    """
    import numpy as np

    tokenizer, info = load_tokenizer(tokenizer_dir), tokenizer_info(tokenizer_dir)
    vocab = int(info["vocab_size"] or 0)
    counts = np.zeros(vocab, dtype=np.int64)
    docs = tokens = nbytes = words = roundtrip_errors = 0
    for texts, batch_bytes in iter_text_batches(val_dir, batch_size):
        ids = [e.ids for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
        flat = np.fromiter((i for row in ids for i in row), dtype=np.int64)
        counts += np.bincount(flat, minlength=vocab)[:vocab]
        decoded = tokenizer.decode_batch(ids, skip_special_tokens=False)
        roundtrip_errors += sum(a != b for a, b in zip(decoded, texts, strict=True))
        docs, nbytes = docs + len(texts), nbytes + batch_bytes
        tokens += int(flat.size)
        words += sum(len(t.split()) for t in texts)
    unk = int(counts[info["unk_id"]]) if info["unk_id"] is not None else 0
    stats: dict[str, float | int] = {
        "docs": docs, "tokens": tokens, "bytes": nbytes, "words": words,
        "bytes_per_token": round(nbytes / tokens, 4) if tokens else 0.0,
        "tokens_per_word": round(tokens / words, 4) if words else 0.0,
        "vocab_used_val": round(int((counts > 0).sum()) / vocab, 4) if vocab else 0.0,
        "unk_rate": round(unk / tokens, 6) if tokens else 0.0, "roundtrip_errors": roundtrip_errors}
    if train_tokens is not None:
        seen = np.zeros(vocab, dtype=bool)
        step = 1 << 24  # 16M ids per chunk: bounded memory for a memmap of any length
        for i in range(0, len(train_tokens), step):
            seen |= np.bincount(np.asarray(train_tokens[i:i + step], dtype=np.int64), minlength=vocab)[:vocab] > 0
        stats["vocab_used_train"] = round(int(seen.sum()) / vocab, 4) if vocab else 0.0
    return stats
