"""Params of the tokenizer stage: byte-level BPE and the packing of every split.

With ``pretrain.checkpoint`` set, the stage packs the corpus with that checkpoint's own tokenizer instead (the BPE is
still trained, to compare the two): :class:`~pipelines.config.Params` hands the setting to this section, so that the
stage's DVC deps and `lmforge status` name the checkpoint too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, model_validator

from pipelines.config.base import Section
from pipelines.config.checkpoint import CheckpointParams

INPUTS: tuple[str, ...] = ("data/dedup",)
"""What the stage reads from the stages before it."""


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
    _checkpoint: CheckpointParams | None = PrivateAttr(None)  # pretrain.checkpoint, set by Params

    @model_validator(mode="after")
    def _distinct_specials(self) -> TokenizerParams:
        if len({self.bos_token, self.eos_token, self.pad_token}) != 3:
            raise ValueError("bos_token, eos_token and pad_token must differ")
        return self


    @property
    def checkpoint(self) -> CheckpointParams | None:
        """``pretrain.checkpoint``: its tokenizer replaces the BPE (set by :class:`~pipelines.config.Params`;
        params.yaml names it once, in the pretrain section)."""
        return self._checkpoint

    def use_checkpoint(self, checkpoint: CheckpointParams | None) -> None:
        """Read ``checkpoint`` (``pretrain.checkpoint``) as this stage's too."""
        self._checkpoint = checkpoint

    def data_deps(self, root: Path) -> list[str]:
        """The stage's data deps in dvc.yaml: the dedup splits, and the checkpoint's directory when it is local."""
        return [*INPUTS, *([] if self._checkpoint is None else self._checkpoint.data_deps(root, "tokenizer"))]

    def status_notes(self, root: Path) -> list[str]:
        """Lines for `lmforge status`: the checkpoint whose tokenizer the stage uses, if any."""
        return [] if self._checkpoint is None else [self._checkpoint.status_note("pretrain.checkpoint", root)]
