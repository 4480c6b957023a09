"""Params of the pretrain stage: the training settings (defined once, in ``tasks.training.config``), the checkpoint a
continued pretraining starts from, the DeepSpeed JSON and the process launch (``pipelines.config.launch``, shared by
the training stages)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from pipelines.config.base import Section
from pipelines.config.checkpoint import CheckpointParams
from pipelines.config.launch import LaunchParams, launch_files

# the one definition of the training settings (DESIGN: each setting defined once); pure pydantic, no torch
from tasks.training.config import PretrainSettings

__all__ = ["LaunchParams", "PIPELINE_INPUTS", "PretrainParams"]

PIPELINE_INPUTS: tuple[str, ...] = ("data/tokens", "models/tokenizer")
"""What the stage reads from the stages before it."""


class PretrainParams(PretrainSettings, Section):
    """The pretrain stage: a Llama trained from scratch on data/tokens with DeepSpeed, or a Hugging Face causal LM
    trained further on them (``checkpoint``). The training settings are
    :class:`tasks.training.config.PretrainSettings`, the very class of the entry point's run config (defined once);
    this section adds the checkpoint, where the DeepSpeed JSON is and how the processes are started."""

    checkpoint: CheckpointParams | None = Field(
        None, description="Continued (domain-adaptive) pretraining: start from this Hugging Face causal-LM checkpoint "
        "(any architecture AutoModelForCausalLM loads: Llama, GPT-2, Qwen2, ...) instead of a fresh Llama (null). "
        "Weights only: the optimizer, the data order and the step count start fresh (resuming a killed run is "
        "separate: checkpoints/pretrain/). The `model` settings are then ignored (the architecture and size are the "
        "checkpoint's), `context` must not exceed its maximum positions, and the tokenizer stage packs the corpus "
        "with the checkpoint's own tokenizer.")
    deepspeed_config: str | None = Field(None, description="A DeepSpeed JSON (e.g. in infra/deepspeed/) merged "
                                         "over the generated one, for anything the params do not cover; relative "
                                         "to the repo.")
    launch: LaunchParams = Field(default_factory=LaunchParams, description="Process launch.")

    def data_deps(self, root: Path) -> list[str]:
        """The stage's data deps in dvc.yaml: its pipeline inputs, the checkpoint's directory when it is local, then the
        DeepSpeed JSON and hostfile when set."""
        local = [] if self.checkpoint is None else self.checkpoint.data_deps(root, "pretrain")
        return [*PIPELINE_INPUTS, *local, *launch_files(self.launch, self.deepspeed_config)]

    def status_notes(self, root: Path) -> list[str]:
        """Lines for `lmforge status`: the checkpoint (local and tracked, or how the hub id is pinned)."""
        return [] if self.checkpoint is None else [self.checkpoint.status_note("pretrain.checkpoint", root)]
