"""Byte-level BPE training: exact round trips, special ids, Hugging Face loading, determinism and metrics."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tasks.tokenizer.bpe import (
    TokenizerError,
    count_docs,
    iter_text_batches,
    load_tokenizer,
    tokenizer_info,
    tokenizer_metrics,
    train_tokenizer,
)
from tests.assets.corpora import prose

REPO = Path(__file__).resolve().parents[3]
HARD_TEXTS = [
    "Plain ASCII, with punctuation: (a + b) * c; 42!",
    "Accents: café, naïve, Ångström, São Paulo, Straße, déjà vu, œuvre.",
    "Emoji 🙂🚀👩‍💻 and flags 🇫🇷, a skin tone 👍🏽.",
    "CJK 東京都は日本の首都です。 한국어 문장입니다. 中文测试",
    "def f(x):\n\tif x:\n\t\treturn {'a': [1, 2]}\r\n    # trailing spaces   \n\n\n",
    "  leading and trailing spaces  ",
    "",
    "\x00control\x1b[0m bytes \u200b zero width \ufeff bom",
    "A combining e\u0301 and a precomposed \u00e9; the ligature \ufb01 and full-width ＡＢＣ.",
]


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    """English-like prose plus a few multilingual and code documents, deterministic for a seed."""
    rng = random.Random(seed)
    texts = [prose(rng, rng.randint(3, 12)) for _ in range(n)]
    return texts + HARD_TEXTS


def write_split(split_dir: Path, texts: list[str], shard_size: int = 128) -> Path:
    """Write ``texts`` as dedup-stage record shards ``part-NNNNN.parquet`` (row groups smaller than a shard)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    split_dir.mkdir(parents=True, exist_ok=True)
    for shard, start in enumerate(range(0, max(len(texts), 1), shard_size)):
        chunk = texts[start:start + shard_size]
        table = pa.table({"id": [f"{start + i:032x}" for i in range(len(chunk))], "text": chunk,
                          "source": ["gen"] * len(chunk), "lang": ["en"] * len(chunk)},
                         schema=pa.schema([("id", pa.string()), ("text", pa.string()), ("source", pa.string()),
                                           ("lang", pa.string())]))
        pq.write_table(table, split_dir / f"part-{shard:05d}.parquet", row_group_size=50)
    return split_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("tok")
    train = write_split(root / "dedup" / "train", corpus(300, seed=0))
    val = write_split(root / "dedup" / "val", corpus(60, seed=1)[:60])
    stats = train_tokenizer(train_dir=train, out_dir=root / "tokenizer", vocab_size=512, min_frequency=2,
                            normalization="none", add_prefix_space=False, batch_size=64)
    return {"root": root, "train": train, "val": val, "dir": root / "tokenizer", "stats": stats}


def test_reading_is_batched_and_counts_bytes(trained: dict[str, Any]) -> None:
    batches = list(iter_text_batches(trained["train"], 40))
    assert max(len(texts) for texts, _ in batches) <= 40
    texts = [t for batch, _ in batches for t in batch]
    assert texts == corpus(300, seed=0) and count_docs(trained["train"]) == len(texts)
    assert sum(n for _, n in batches) == sum(len(t.encode()) for t in texts)


def test_counters(trained: dict[str, Any]) -> None:
    stats = trained["stats"]
    texts = corpus(300, seed=0)
    assert stats["docs"] == len(texts) and stats["bytes"] == sum(len(t.encode()) for t in texts)
    assert stats["vocab_size"] == 512
    assert stats["merges"] == 512 - 256 - 3  # every token beyond the bytes and specials is one merge
    assert (stats["bos_id"], stats["eos_id"], stats["pad_id"]) == (0, 1, 2)


def test_round_trip_is_exact(trained: dict[str, Any]) -> None:
    tokenizer = load_tokenizer(trained["dir"])
    for text in HARD_TEXTS + ["<|eos|> quoted in a document", "ﬁ½²"]:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert tokenizer.decode(ids, skip_special_tokens=False) == text
        assert all(0 <= i < 512 for i in ids)


def test_special_tokens_are_single_tokens(trained: dict[str, Any]) -> None:
    plain = load_tokenizer(trained["dir"], literal_specials=False)
    for token, expected in (("<|bos|>", 0), ("<|eos|>", 1), ("<|pad|>", 2)):
        assert plain.token_to_id(token) == expected
        assert plain.encode(token, add_special_tokens=False).ids == [expected]
    # in documents the same spelling is plain text: no control id can be injected by the data
    literal = load_tokenizer(trained["dir"]).encode("<|eos|>", add_special_tokens=False).ids
    assert len(literal) > 1 and not set(literal) & {0, 1, 2}
    assert tokenizer_info(trained["dir"]) == {"vocab_size": 512, "bos_id": 0, "eos_id": 1, "pad_id": 2,
                                              "unk_id": None}


def test_auto_tokenizer_loads_it(trained: dict[str, Any]) -> None:
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(str(trained["dir"]))
    assert (auto.bos_token_id, auto.eos_token_id, auto.pad_token_id) == (0, 1, 2)
    assert len(auto) == 512
    raw = load_tokenizer(trained["dir"])
    for text in HARD_TEXTS:
        ids = auto(text, add_special_tokens=True)["input_ids"]
        assert ids == raw.encode(text).ids  # no post-processor: nothing is added around a text
        assert auto.decode(ids) == text


def test_training_is_deterministic_across_processes_and_threads(trained: dict[str, Any], tmp_path: Path) -> None:
    again = train_tokenizer(train_dir=trained["train"], out_dir=tmp_path / "a", vocab_size=512, min_frequency=2,
                            batch_size=7)
    assert again["vocab_size"] == 512
    code = ("import sys; from pathlib import Path; from tasks.tokenizer.bpe import train_tokenizer; "
            "train_tokenizer(train_dir=Path(sys.argv[1]), out_dir=Path(sys.argv[2]), vocab_size=512, "
            "min_frequency=2, batch_size=1000)")
    env = {**os.environ, "RAYON_NUM_THREADS": "3", "PYTHONHASHSEED": "123", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code, str(trained["train"]), str(tmp_path / "b")], env=env, check=True,
                   cwd=REPO)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        expected = (trained["dir"] / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() == expected
        assert (tmp_path / "b" / name).read_bytes() == expected


def test_normalization_and_prefix_space(trained: dict[str, Any], tmp_path: Path) -> None:
    train_tokenizer(train_dir=trained["train"], out_dir=tmp_path / "nfkc", vocab_size=300, min_frequency=2,
                    normalization="nfkc", add_prefix_space=True)
    tokenizer = load_tokenizer(tmp_path / "nfkc")
    assert tokenizer.decode(tokenizer.encode("ﬁne ＡＢＣ").ids) == " fine ABC"
    config = json.loads((tmp_path / "nfkc" / "tokenizer.json").read_text())
    assert config["normalizer"]["type"] == "NFKC" and config["pre_tokenizer"]["add_prefix_space"] is True


def test_fewer_merges_than_asked_is_reported(tmp_path: Path) -> None:
    train = write_split(tmp_path / "train", ["abab abab"] * 20)
    stats = train_tokenizer(train_dir=train, out_dir=tmp_path / "tok", vocab_size=1000, min_frequency=2)
    assert 259 < stats["vocab_size"] < 1000 and stats["merges"] == stats["vocab_size"] - 259


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"vocab_size": 200}, "below 256"),
    ({"special_tokens": ["<|bos|>", "<|pad|>"]}, "eos_token"),
    ({"special_tokens": ["<|bos|>", "<|eos|>", "<|pad|>", "<|eos|>"]}, "duplicates"),
    ({"unk_token": "<unk>"}, "unk_token"),
    ({"normalization": "nfd"}, "normalization"),
    ({"batch_size": 0}, "batch_size"),
])
def test_bad_settings_are_rejected(trained: dict[str, Any], tmp_path: Path, kwargs: dict[str, Any],
                                   message: str) -> None:
    args: dict[str, Any] = {"train_dir": trained["train"], "out_dir": tmp_path / "t", "vocab_size": 300,
                            "min_frequency": 2, **kwargs}
    with pytest.raises(TokenizerError, match=message):
        train_tokenizer(**args)


def test_missing_or_empty_train_split(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="dedup stage"):
        train_tokenizer(train_dir=tmp_path / "nothing", out_dir=tmp_path / "t", vocab_size=300)
    empty = write_split(tmp_path / "empty", [])
    with pytest.raises(TokenizerError, match="no documents"):
        train_tokenizer(train_dir=empty, out_dir=tmp_path / "t", vocab_size=300)


def test_unk_token_is_optional_and_never_emitted(trained: dict[str, Any], tmp_path: Path) -> None:
    stats = train_tokenizer(train_dir=trained["train"], out_dir=tmp_path / "u", vocab_size=300,
                            special_tokens=["<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>"], unk_token="<|unk|>")
    assert stats["unk_id"] == 3
    metrics = tokenizer_metrics(val_dir=trained["val"], tokenizer_dir=tmp_path / "u")
    assert metrics["unk_rate"] == 0.0 and metrics["roundtrip_errors"] == 0


def test_metrics_on_prose(trained: dict[str, Any]) -> None:
    texts = corpus(60, seed=1)[:60]
    metrics = tokenizer_metrics(val_dir=trained["val"], tokenizer_dir=trained["dir"], batch_size=16)
    tokenizer = load_tokenizer(trained["dir"])
    tokens = sum(len(tokenizer.encode(t).ids) for t in texts)
    assert metrics["docs"] == 60 and metrics["tokens"] == tokens
    assert metrics["bytes"] == sum(len(t.encode()) for t in texts)
    assert metrics["words"] == sum(len(t.split()) for t in texts)
    assert metrics["bytes_per_token"] == round(metrics["bytes"] / tokens, 4)
    assert 2.0 < metrics["bytes_per_token"] < 8.0  # repetitive prose compresses well even with 512 tokens
    assert 1.0 <= metrics["tokens_per_word"] < 2.0
    assert 0.0 < metrics["vocab_used_val"] < 1.0
    assert metrics["unk_rate"] == 0.0 and metrics["roundtrip_errors"] == 0
    assert "vocab_used_train" not in metrics
