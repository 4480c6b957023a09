"""Packed token files: exact equality with per-document tokenization, dtype choice, manifest and determinism."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.tokenizer.bpe import load_tokenizer, tokenizer_info, tokenizer_metrics, train_tokenizer
from tasks.tokenizer.packing import pack_split, write_manifest
from tasks.tokens import TokenFileError, load_tokens, read_manifest, token_dtype, token_file
from tests.tasks.tokenizer.test_bpe import corpus, write_split

SPLIT_TEXTS = {"train": corpus(300, seed=0), "val": corpus(40, seed=1)[:40] + ["doc quoting <|eos|> inline"],
               "test": corpus(30, seed=2)}


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("pack")
    dirs = {split: write_split(root / "dedup" / split, texts, shard_size=100) for split, texts in SPLIT_TEXTS.items()}
    tok_dir = root / "tokenizer"
    train_tokenizer(train_dir=dirs["train"], out_dir=tok_dir, vocab_size=400, min_frequency=2)
    out = root / "tokens"
    stats = {split: pack_split(split_dir=d, tokenizer_dir=tok_dir, out_path=token_file(out, split), batch_size=32)
             for split, d in dirs.items()}
    info = tokenizer_info(tok_dir)
    write_manifest(out, splits=stats, dtype=token_dtype(400), vocab_size=400, eos_id=info["eos_id"],
                   bos_id=info["bos_id"], pad_id=info["pad_id"], tokenizer_dir=tok_dir)
    return {"root": root, "dirs": dirs, "tok": tok_dir, "out": out, "stats": stats}


def expected_ids(tokenizer_dir: Path, texts: list[str]) -> np.ndarray:
    """Every document tokenized alone with the saved tokenizer, each followed by EOS."""
    tokenizer = load_tokenizer(tokenizer_dir)
    eos = tokenizer.token_to_id("<|eos|>")
    ids: list[int] = []
    for text in texts:
        ids += tokenizer.encode(text, add_special_tokens=False).ids + [eos]
    return np.array(ids, dtype=np.int64)


def test_packed_file_equals_per_document_tokenization(packed: dict[str, Any]) -> None:
    for split, texts in SPLIT_TEXTS.items():
        tokens = load_tokens(packed["out"], split)
        assert tokens.dtype == np.uint16 and isinstance(tokens, np.memmap)
        np.testing.assert_array_equal(np.asarray(tokens, dtype=np.int64), expected_ids(packed["tok"], texts))
        assert int((tokens == 1).sum()) == len(texts)  # one EOS per document: the quoted <|eos|> is plain text


def test_auto_tokenizer_agrees_with_manifest_and_packed_ids(packed: dict[str, Any]) -> None:
    from transformers import AutoTokenizer

    manifest = read_manifest(packed["out"])
    auto = AutoTokenizer.from_pretrained(str(packed["tok"]))
    assert (auto.bos_token_id, auto.eos_token_id, auto.pad_token_id) == (
        manifest["bos_id"], manifest["eos_id"], manifest["pad_id"])
    assert manifest["vocab_size"] == len(auto) == 400
    ids: list[int] = []
    for text in SPLIT_TEXTS["test"]:
        ids += auto(text)["input_ids"] + [auto.eos_token_id]
    np.testing.assert_array_equal(load_tokens(packed["out"], "test"), ids)
    assert auto.decode(load_tokens(packed["out"], "test")[: len(ids)].tolist()).split("<|eos|>")[:-1] == \
        SPLIT_TEXTS["test"]


def test_counters_and_manifest(packed: dict[str, Any]) -> None:
    for split, texts in SPLIT_TEXTS.items():
        stats = packed["stats"][split]
        assert stats["docs"] == len(texts)
        assert stats["bytes"] == sum(len(t.encode()) for t in texts)
        assert stats["words"] == sum(len(t.split()) for t in texts)
        assert stats["tokens"] == token_file(packed["out"], split).stat().st_size // 2
        assert stats["tokens_per_second"] > 0
    manifest = json.loads((packed["out"] / "manifest.json").read_text())
    assert manifest["dtype"] == "uint16" and manifest["splits"]["val"]["file"] == "val.bin"
    assert manifest["splits"]["train"]["tokens"] == packed["stats"]["train"]["tokens"]
    assert "seconds" not in manifest["splits"]["train"]  # timings would make the manifest irreproducible
    assert len(manifest["tokenizer_sha256"]) == 64


def test_packing_is_deterministic_for_any_batching_and_workers(packed: dict[str, Any], tmp_path: Path) -> None:
    reference = token_file(packed["out"], "train").read_bytes()
    pack_split(split_dir=packed["dirs"]["train"], tokenizer_dir=packed["tok"], out_path=tmp_path / "a.bin",
               batch_size=32)
    pack_split(split_dir=packed["dirs"]["train"], tokenizer_dir=packed["tok"], out_path=tmp_path / "b.bin",
               batch_size=7, workers=2)
    assert (tmp_path / "a.bin").read_bytes() == reference
    assert (tmp_path / "b.bin").read_bytes() == reference


def test_without_eos(packed: dict[str, Any], tmp_path: Path) -> None:
    stats = pack_split(split_dir=packed["dirs"]["test"], tokenizer_dir=packed["tok"], out_path=tmp_path / "t.bin",
                       append_eos=False)
    assert stats["tokens"] == packed["stats"]["test"]["tokens"] - len(SPLIT_TEXTS["test"])
    assert 1 not in np.fromfile(tmp_path / "t.bin", dtype=np.uint16)


def test_dtype_choice() -> None:
    assert token_dtype(400) == "uint16" and token_dtype(65536) == "uint16"
    assert token_dtype(65537) == "uint32" and token_dtype(200_000) == "uint32"


def test_large_vocabulary_packs_as_uint32(packed: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    big = tmp_path / "big"
    shutil.copytree(packed["tok"], big)
    tokenizer = load_tokenizer(big, literal_specials=False)
    tokenizer.add_tokens([f"zzq{i}" for i in range(66_000)])  # ids past 65535 that real text can produce
    tokenizer.save(str(big / "tokenizer.json"))
    split = write_split(tmp_path / "split", ["one zzq65999 two", "zzq0 three"])
    stats = pack_split(split_dir=split, tokenizer_dir=big, out_path=token_file(tmp_path / "out", "val"))
    info = tokenizer_info(big)
    assert info["vocab_size"] == 66_400 and token_dtype(int(info["vocab_size"])) == "uint32"
    write_manifest(tmp_path / "out", splits={"val": stats}, dtype="uint32", vocab_size=66_400, eos_id=1, bos_id=0,
                   pad_id=2, tokenizer_dir=big)
    tokens = load_tokens(tmp_path / "out", "val")
    assert tokens.dtype == np.uint32 and 66_399 in tokens.tolist()
    np.testing.assert_array_equal(tokens, expected_ids(big, ["one zzq65999 two", "zzq0 three"]))
    with pytest.raises(TokenFileError, match="cannot hold"):
        write_manifest(tmp_path / "out", splits={"val": stats}, dtype="uint16", vocab_size=66_400, eos_id=1,
                       bos_id=0, pad_id=2, tokenizer_dir=big)


def test_manifest_rejects_a_file_of_the_wrong_size(packed: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "train.bin").write_bytes(b"\x00" * 6)
    with pytest.raises(TokenFileError, match="expected 8 bytes"):
        write_manifest(tmp_path, splits={"train": {"tokens": 4}}, dtype="uint16", vocab_size=400, eos_id=1,
                       bos_id=0, pad_id=2, tokenizer_dir=packed["tok"])
    with pytest.raises(TokenFileError, match="no manifest.json"):
        load_tokens(tmp_path, "train")
    with pytest.raises(TokenFileError, match="not in"):
        load_tokens(packed["out"], "holdout")


def test_empty_split(packed: dict[str, Any], tmp_path: Path) -> None:
    empty = write_split(tmp_path / "empty", [])
    stats = pack_split(split_dir=empty, tokenizer_dir=packed["tok"], out_path=token_file(tmp_path, "test"))
    assert stats["docs"] == stats["tokens"] == 0
    write_manifest(tmp_path, splits={"test": stats}, dtype="uint16", vocab_size=400, eos_id=1, bos_id=0, pad_id=2,
                   tokenizer_dir=packed["tok"])
    assert load_tokens(tmp_path, "test").size == 0


def test_vocabulary_use_in_train_from_packed_tokens(packed: dict[str, Any]) -> None:
    train = load_tokens(packed["out"], "train")
    metrics = tokenizer_metrics(val_dir=packed["dirs"]["val"], tokenizer_dir=packed["tok"], train_tokens=train)
    assert metrics["vocab_used_train"] == round(len(np.unique(train)) / 400, 4)
    assert metrics["vocab_used_val"] <= metrics["vocab_used_train"] <= 1.0
