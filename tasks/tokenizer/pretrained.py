"""A pretrained checkpoint's own tokenizer in place of the trained BPE (continued pretraining), and what it costs.

A checkpoint's weights only make sense with its own token ids, so continued pretraining packs the corpus with the
checkpoint's tokenizer: :func:`check_tokenizer` says before any work whether it can (a fast tokenizer, so that packing
reads its ``tokenizer.json``; an EOS to join documents; no id beyond the model's embedding), :func:`adopt_tokenizer`
saves it where the BPE would go (``save_pretrained``; a GPT-2-style tokenizer without a pad token gets pad = EOS), and
:func:`compare_with_bpe` trains lmforge's BPE on the same train split in a temporary directory and measures it on the
val split, so the stage reports what the checkpoint's vocabulary costs on this corpus (bytes per token of both).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from tasks.modeling.source import CheckpointError, write_provenance
from tasks.tokenizer.bpe import TOKENIZER_FILE, tokenizer_metrics, train_tokenizer

log = logging.getLogger(__name__)

COMPARED = ("bytes_per_token", "tokens_per_word", "tokens")
"""What the BPE's val measurement reports next to the checkpoint tokenizer's."""


def _load(directory: Path, setting: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except Exception as err:  # transformers raises many kinds (OSError, ValueError, import errors of a backend)
        raise CheckpointError(f"{setting}: the tokenizer in {directory} does not load ({type(err).__name__}: "
                              f"{str(err)[:300]})") from err


def check_tokenizer(directory: Path, *, config: dict[str, Any], setting: str) -> None:
    """Check that the checkpoint's tokenizer can pack the corpus for its model, before any work.

    Args:
        directory: the resolved checkpoint (``tasks.modeling.source.resolve``).
        config: its ``config.json`` (``tasks.modeling.source.check``).
        setting: the params key, for messages.

    Raises:
        CheckpointError: the tokenizer does not load, has no ``tokenizer.json`` form (a slow-only tokenizer), no EOS
            token, or ids beyond the model's embedding rows.
    """
    tokenizer = _load(directory, setting)
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise CheckpointError(f"{setting}: the tokenizer in {directory} ({type(tokenizer).__name__}) has no fast "
                              "(tokenizers) form: packing needs a tokenizer.json; convert it (AutoTokenizer with the "
                              "sentencepiece and protobuf packages installed) and save it with the checkpoint")
    if tokenizer.eos_token is None:
        raise CheckpointError(f"{setting}: the tokenizer in {directory} has no eos_token: packing joins documents "
                              "with it; set one (tokenizer.eos_token = ...) and save the tokenizer again")
    rows = config.get("vocab_size")
    if isinstance(rows, int) and len(tokenizer) > rows:
        raise CheckpointError(f"{setting}: the tokenizer in {directory} has {len(tokenizer)} tokens but the model "
                              f"has {rows} embedding rows (config.json vocab_size): the vocabulary does not match "
                              "the model; give the tokenizer the checkpoint was trained with")


def adopt_tokenizer(*, checkpoint_dir: Path, out_dir: Path, provenance: dict[str, Any],
                    setting: str) -> dict[str, Any]:
    """Save the checkpoint's tokenizer to ``out_dir`` (``save_pretrained``), pad = EOS where it has no pad token,
    with ``base_checkpoint.json`` (``provenance``: which checkpoint it came from, checked by the pretrain recipe).

    Returns:
        ``vocab_size``, ``merges`` (BPE tokenizers only), ``seconds``, ``pad_from_eos``.
    """
    start = time.perf_counter()
    tokenizer = _load(checkpoint_dir, setting)
    pad_from_eos = tokenizer.pad_token is None
    if pad_from_eos:  # GPT-2 and many causal LMs have none; padding never reaches the loss
        tokenizer.pad_token = tokenizer.eos_token
        log.info("the checkpoint's tokenizer has no pad token: pad = eos (%r)", tokenizer.eos_token)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    if not (out_dir / TOKENIZER_FILE).is_file():
        raise CheckpointError(f"{setting}: the tokenizer in {checkpoint_dir} did not save a {TOKENIZER_FILE}; "
                              "packing needs a fast (tokenizers) tokenizer")
    write_provenance(out_dir, provenance)
    model = json.loads((out_dir / TOKENIZER_FILE).read_text(encoding="utf-8"))["model"]
    stats: dict[str, Any] = {"vocab_size": len(tokenizer), "seconds": round(time.perf_counter() - start, 3),
                             "pad_from_eos": pad_from_eos}
    if model.get("type") == "BPE":
        stats["merges"] = len(model.get("merges") or [])
    return stats


def compare_with_bpe(*, val_dir: Path, checkpoint_val_tokens: int, **bpe: Any) -> dict[str, float | int]:
    """Train lmforge's BPE as the stage would without a checkpoint, in a temporary directory, and measure it on
    the val split next to the checkpoint's tokenizer.

    Args:
        val_dir: the val split's record shards.
        checkpoint_val_tokens: tokens of the val split with the checkpoint's tokenizer (its ``val.tokens``).
        **bpe: :func:`tasks.tokenizer.bpe.train_tokenizer`'s arguments but ``out_dir``.

    Returns:
        ``bpe.vocab_size``, ``bpe.merges``, ``bpe.val.{bytes_per_token, tokens_per_word, tokens}``, ``train_seconds``
        (the BPE's) and ``val.tokens_vs_bpe``: the checkpoint's val tokens over the BPE's (1.25: its vocabulary needs
        25% more tokens, so 25% more compute per document, on this corpus).
    """
    with tempfile.TemporaryDirectory(prefix="lmforge-bpe-") as tmp:
        trained = train_tokenizer(out_dir=Path(tmp), **bpe)
        quality = tokenizer_metrics(val_dir=val_dir, tokenizer_dir=Path(tmp), batch_size=bpe.get("batch_size", 1000))
    stats: dict[str, float | int] = {"bpe.vocab_size": trained["vocab_size"], "bpe.merges": trained["merges"],
                                     "train_seconds": round(trained["seconds"], 3)}
    stats.update({f"bpe.val.{k}": quality[k] for k in COMPARED})
    if quality["tokens"]:
        stats["val.tokens_vs_bpe"] = round(checkpoint_val_tokens / int(quality["tokens"]), 4)
    return stats
