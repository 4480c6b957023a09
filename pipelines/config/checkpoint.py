"""A Hugging Face checkpoint named in params as a stage's starting point (``pretrain.checkpoint``,
``finetune.checkpoint``): a local directory (a DVC dep of the stage) or a hub id pinned by ``revision``.

The stage resolves, checks and describes it with ``tasks.modeling.source`` (digest, architecture, license); here are
only the setting and what DVC and ``lmforge status`` see.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from pipelines.config.base import Section
from pipelines.config.sources import Written, hf_local, repo_dep


class CheckpointParams(Section):
    """A pretrained Hugging Face checkpoint to start from (weights and tokenizer; any architecture transformers'
    Auto classes load without remote code)."""

    path: str = Field(min_length=1, description="A local checkpoint directory (config.json, weights, tokenizer; "
                      "relative to the repo) or a hub id such as `gpt2` or `google-bert/bert-base-uncased`.")
    revision: str | None = Field(None, min_length=1, description="Hub id only: the revision (commit, tag or branch) "
                                 "to pin; null takes the newest, which can change without notice.")

    @model_validator(mode="after")
    def _no_url(self) -> CheckpointParams:
        if "://" in self.path:
            raise ValueError(f"path {self.path!r} is a URL: give a local directory or a hub id (org/name)")
        return self

    def data_deps(self, root: Path, stage: str) -> list[str]:
        """A local directory is the stage's DVC dep (a changed checkpoint makes the stage stale); a hub id is not a
        file: it is pinned by ``revision`` instead.

        Raises:
            OutputOverlapError: the directory is inside what ``stage`` or a stage after it writes.
        """
        local = hf_local(self.path, root)
        if local is None:
            return []
        Written.after(root, stage).check_tree(self.path, local)
        return [repo_dep(local, root)]

    def status_note(self, what: str, root: Path) -> str:
        """The `lmforge status` line: a local directory (tracked by its content), or how the hub id is pinned."""
        if hf_local(self.path, root) is not None:
            return f"{what}: local checkpoint {self.path} (a DVC dep: its content is tracked)"
        pin = (f"pinned at revision {self.revision}" if self.revision else
               "unpinned: the hub checkpoint can change without notice (set `revision` to pin it)")
        return f"{what}: hub checkpoint {self.path}: {pin}"
