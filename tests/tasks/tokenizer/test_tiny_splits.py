"""The tokenizer on the smallest splits the dedup stage can publish (issue 11 item 5): one document each.

An empty split directory (what dedup's split step leaves when a corpus is too small for it) gets an error saying
so, never a traceback from inside tokenizers or numpy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.tokenizer.bpe import TokenizerError, tokenizer_metrics, train_tokenizer
from tasks.tokenizer.packing import pack_splits
from tasks.tokens import load_tokens
from tests.tasks.tokenizer.test_bpe import write_split

ONE = {"train": "Rain fell on the old harbour all night, and by morning the boats had drifted apart.",
       "val": "A single lamp burned in the window of the lighthouse keeper's cottage.",
       "test": "Nobody remembered who had planted the pear tree behind the school."}


def _train(tmp_path: Path) -> Path:
    tok = tmp_path / "tok"
    train_tokenizer(train_dir=tmp_path / "train", out_dir=tok, vocab_size=300, min_frequency=1,
                    special_tokens=("<|bos|>", "<|eos|>", "<|pad|>"), bos_token="<|bos|>", eos_token="<|eos|>",
                    pad_token="<|pad|>")
    return tok


def test_one_document_per_split_trains_packs_and_measures(tmp_path: Path) -> None:
    for split, text in ONE.items():
        write_split(tmp_path / split, [text])
    tok = _train(tmp_path)
    packed = pack_splits(split_dirs={s: tmp_path / s for s in ONE}, tokenizer_dir=tok, out_dir=tmp_path / "tokens")
    assert all(packed[s]["docs"] == 1 and packed[s]["tokens"] > 1 for s in ONE)
    assert len(load_tokens(tmp_path / "tokens", "val")) == packed["val"]["tokens"]
    quality = tokenizer_metrics(val_dir=tmp_path / "val", tokenizer_dir=tok)
    assert quality["docs"] == 1 and quality["bytes_per_token"] > 1 and quality["roundtrip_errors"] == 0


def test_an_empty_split_directory_is_a_clear_error(tmp_path: Path) -> None:
    write_split(tmp_path / "train", [ONE["train"]])
    (tmp_path / "val").mkdir()  # the split exists but drew no document
    tok = _train(tmp_path)
    with pytest.raises(TokenizerError, match="no documents.*add documents"):
        tokenizer_metrics(val_dir=tmp_path / "val", tokenizer_dir=tok)
    with pytest.raises(TokenizerError, match="no documents.*add documents"):
        pack_splits(split_dirs={"val": tmp_path / "val"}, tokenizer_dir=tok, out_dir=tmp_path / "tokens")
