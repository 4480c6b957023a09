"""The packed-token format shared by the tokenizer stage (which writes it) and the training recipes (which read it).

A split is ``{split}.bin``: token ids as raw little-endian ``uint16`` (vocabulary up to 65,536) or ``uint32``,
documents joined by EOS, the nanoGPT layout that ``np.memmap`` reads without parsing; ``manifest.json`` beside the
files records the dtype, vocabulary size, special ids, the tokenizer's digest and the tokens per split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "lmforge-tokens/1"


class TokenFileError(Exception):
    """A packed token file or its manifest is missing or inconsistent; the message says what to redo."""

    exit_code = 1


def token_dtype(vocab_size: int) -> str:
    """``"uint16"`` when every id fits (vocab_size <= 65536), else ``"uint32"`` (uint16 halves the disk)."""
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def token_file(out_dir: Path, split: str) -> Path:
    """Where a split's packed tokens live: ``out_dir/{split}.bin``."""
    return Path(out_dir) / f"{split}.bin"


def read_manifest(out_dir: Path) -> dict[str, Any]:
    """The manifest of a packed-tokens directory."""
    path = Path(out_dir) / MANIFEST_FILE
    if not path.is_file():
        raise TokenFileError(f"no {MANIFEST_FILE} in {out_dir}: run the tokenizer stage first")
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != MANIFEST_FORMAT:
        raise TokenFileError(f"{path} has format {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}: "
                             "re-run the tokenizer stage")
    return manifest


def load_tokens(out_dir: Path, split: str) -> np.ndarray:
    """A split's token ids, memory-mapped read-only with the manifest's dtype (an empty array for no tokens)."""
    import numpy as np

    manifest = read_manifest(out_dir)
    if split not in manifest["splits"]:
        raise TokenFileError(f"split {split!r} not in {Path(out_dir) / MANIFEST_FILE} "
                             f"(has {sorted(manifest['splits'])})")
    entry, dtype = manifest["splits"][split], np.dtype(manifest["dtype"]).newbyteorder("<")
    tokens: np.ndarray
    if int(entry["tokens"]) == 0:
        tokens = np.zeros(0, dtype=dtype)  # mmap cannot map an empty file
    else:
        tokens = np.memmap(Path(out_dir) / entry["file"], dtype=dtype, mode="r", shape=(int(entry["tokens"]),))
    return tokens
