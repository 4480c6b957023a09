"""Fixtures of the training tests: a real tokenizer and packed tokens made by the tokenizer stage's own tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tasks.training.corpus import documents, write_split


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tokenizer trained by ``tasks.tokenizer.bpe`` and token files packed by ``tasks.tokenizer.packing``, as the
    stages do; ``small`` is a copy whose val split is one 5-token document (too small for context 64)."""
    from tasks.tokenizer.bpe import train_tokenizer
    from tasks.tokenizer.packing import pack_splits
    from tasks.tokens import token_file

    root = tmp_path_factory.mktemp("lm")
    splits = {"train": documents(400, 0), "val": documents(40, 1), "tiny": ["the cat sat."]}
    dirs = {name: write_split(root / "dedup" / name, texts) for name, texts in splits.items()}
    tok = root / "tokenizer"
    train_tokenizer(train_dir=dirs["train"], out_dir=tok, vocab_size=300, min_frequency=2)
    tokens = root / "tokens"
    pack_splits(split_dirs=dirs, tokenizer_dir=tok, out_dir=tokens)
    small = root / "tokens-small"
    small.mkdir()
    for name in ("train", "tiny"):
        (small / f"{name}.bin").write_bytes(token_file(tokens, name).read_bytes())
    manifest = json.loads((tokens / "manifest.json").read_text())
    manifest["splits"] = {"train": manifest["splits"]["train"], "val": {**manifest["splits"]["tiny"],
                                                                         "file": "tiny.bin"}}
    (small / "manifest.json").write_text(json.dumps(manifest))
    return {"root": root, "tokens": tokens, "small": small, "tokenizer": tok}
