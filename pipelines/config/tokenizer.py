"""Params of the tokenizer stage: byte-level BPE and the packing of every split."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelines.config.base import Section


class TokenizerParams(Section):
    """The tokenizer stage: byte-level BPE trained on the train split, then every split packed into token files."""

    vocab_size: int = Field(2048, ge=260, le=1_000_000, description="Vocabulary size, special tokens included.")
    min_frequency: int = Field(2, ge=1, description="Fewest occurrences of a pair for a merge.")
    normalization: Literal["none", "nfc", "nfkc"] = Field("none", description="Unicode normalisation before BPE.")
    add_prefix_space: bool = Field(False, description="Treat a document's first word like one after a space.")
    bos_token: str = Field("<|bos|>", min_length=1, description="Beginning-of-sequence token (id 0).")
    eos_token: str = Field("<|eos|>", min_length=1, description="End-of-sequence token (id 1), joins documents.")
    pad_token: str = Field("<|pad|>", min_length=1, description="Padding token (id 2).")
    batch_size: int = Field(1000, ge=1, description="Documents per tokenization batch.")
    workers: int = Field(1, ge=1, le=256, description="Tokenizing processes (1: the library's own threads).")

    @model_validator(mode="after")
    def _distinct_specials(self) -> TokenizerParams:
        if len({self.bos_token, self.eos_token, self.pad_token}) != 3:
            raise ValueError("bos_token, eos_token and pad_token must differ")
        return self

