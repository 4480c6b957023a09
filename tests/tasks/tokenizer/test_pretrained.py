"""A checkpoint's own tokenizer in place of the BPE: checked before any work, saved with pad = EOS where it has none
and its provenance, packed in a dtype that holds its ids, compared with the BPE on val."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.modeling.source import CheckpointError, check, describe
from tasks.tokenizer.bpe import tokenizer_info
from tasks.tokenizer.packing import pack_splits
from tasks.tokenizer.pretrained import adopt_tokenizer, check_tokenizer, compare_with_bpe
from tasks.tokens import load_tokens, read_manifest
from tests.assets.checkpoints import save_checkpoint
from tests.tasks.training.corpus import documents, write_split

SETTING = "pretrain.checkpoint"


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint("gpt2", tmp_path_factory.mktemp("ckpt") / "gpt2")


def _provenance(directory: Path) -> dict[str, Any]:
    return describe(directory, source=str(directory), revision=None,
                    config=check(directory, setting=SETTING, needs_decoder=True)).provenance()


def test_a_gpt2_tokenizer_gets_pad_from_eos_and_its_provenance(gpt2: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    config = json.loads((gpt2 / "config.json").read_text())
    check_tokenizer(gpt2, config=config, setting=SETTING)
    provenance = _provenance(gpt2)
    stats = adopt_tokenizer(checkpoint_dir=gpt2, out_dir=tmp_path / "tok", provenance=provenance, setting=SETTING)
    own = AutoTokenizer.from_pretrained(str(gpt2))
    assert own.pad_token is None and stats["pad_from_eos"] is True
    assert stats["vocab_size"] == len(own) and stats["merges"] > 0
    saved = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert saved.pad_token == saved.eos_token == own.eos_token and saved.get_vocab() == own.get_vocab()
    info = tokenizer_info(tmp_path / "tok")  # what packing reads: EOS joins documents, pad = EOS
    assert info["eos_id"] == info["pad_id"] == own.eos_token_id and info["vocab_size"] == len(own)
    assert json.loads((tmp_path / "tok" / "base_checkpoint.json").read_text()) == provenance
    assert "dir" not in provenance and provenance["digest"].startswith("sha256:")


def test_a_tokenizer_the_model_cannot_embed_is_refused(gpt2: Path) -> None:
    config = {**json.loads((gpt2 / "config.json").read_text()), "vocab_size": 100}
    with pytest.raises(CheckpointError, match=r"pretrain\.checkpoint: .* has 295 tokens but the model has 100 "
                                              "embedding rows"):
        check_tokenizer(gpt2, config=config, setting=SETTING)


def test_a_tokenizer_without_eos_is_refused(tmp_path: Path) -> None:
    llama = save_checkpoint("llama", tmp_path / "llama")
    tok_config = json.loads((llama / "tokenizer_config.json").read_text())
    del tok_config["eos_token"]
    (llama / "tokenizer_config.json").write_text(json.dumps(tok_config))
    with pytest.raises(CheckpointError, match="has no eos_token: packing joins documents with it"):
        check_tokenizer(llama, config=json.loads((llama / "config.json").read_text()), setting=SETTING)


def _wide_tokenizer(out: Path) -> Path:
    """A byte-level BPE whose word "cat" is id 70,000: beyond what uint16 holds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(alphabet))}
    vocab.update({f"<filler{i}>": len(vocab) + i for i in range(70_000 - len(vocab) - 1)})
    vocab["ca"] = len(vocab)
    vocab["cat"] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[("c", "a"), ("ca", "t")]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>")
    fast.save_pretrained(str(out))
    return out


def test_a_vocabulary_beyond_65536_ids_packs_as_uint32(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = adopt_tokenizer(checkpoint_dir=_wide_tokenizer(tmp_path / "wide"), out_dir=tmp_path / "tok",
                          provenance={"digest": "sha256:x"}, setting=SETTING)
    assert tok["vocab_size"] == 70_002
    split = write_split(tmp_path / "dedup" / "val", ["cat cat", "a cat"])
    pack_splits(split_dirs={"val": split}, tokenizer_dir=tmp_path / "tok", out_dir=tmp_path / "tokens")
    manifest = read_manifest(tmp_path / "tokens")
    ids = load_tokens(tmp_path / "tokens", "val")
    assert manifest["dtype"] == "uint32" and ids.dtype == np.dtype("<u4")
    wide = AutoTokenizer.from_pretrained(str(tmp_path / "wide"))
    assert ids.tolist() == [*wide("cat cat").input_ids, 70_001, *wide("a cat").input_ids, 70_001]
    assert ids.tolist().count(70_000) == 3  # "cat", beyond uint16, three times


def test_the_bpe_is_measured_next_to_the_checkpoint_tokenizer(tmp_path: Path) -> None:
    train = write_split(tmp_path / "dedup" / "train", documents(200, 0))
    val = write_split(tmp_path / "dedup" / "val", documents(20, 1))
    stats = compare_with_bpe(val_dir=val, checkpoint_val_tokens=1000, train_dir=train, vocab_size=300,
                             min_frequency=2, batch_size=50)
    assert 256 < stats["bpe.vocab_size"] <= 300 and stats["bpe.merges"] > 0
    assert stats["bpe.val.bytes_per_token"] > 1 and stats["bpe.val.tokens"] > 0
    assert stats["val.tokens_vs_bpe"] == round(1000 / stats["bpe.val.tokens"], 4)
    assert not list(tmp_path.glob("**/tokenizer.json"))  # trained in a temporary directory, gone
