"""Params of the pretrain stage: the training settings (defined once, in ``tasks.training.config``), the DeepSpeed
JSON and the process launch (``pipelines.config.launch``, shared by the training stages)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from pipelines.config.base import Section
from pipelines.config.launch import LaunchParams, launch_files

# the one definition of the training settings (DESIGN: each setting defined once); pure pydantic, no torch
from tasks.training.config import PretrainSettings

__all__ = ["LaunchParams", "PIPELINE_INPUTS", "PretrainParams"]

PIPELINE_INPUTS: tuple[str, ...] = ("data/tokens", "models/tokenizer")
"""What the stage reads from the stages before it."""


class PretrainParams(PretrainSettings, Section):
    """The pretrain stage: a Llama trained from scratch on data/tokens with DeepSpeed. The training settings are
    :class:`tasks.training.config.PretrainSettings`, the very class of the entry point's run config (defined once);
    this section adds where the DeepSpeed JSON is and how the processes are started."""

    deepspeed_config: str | None = Field(None, description="A DeepSpeed JSON (e.g. in infra/deepspeed/) merged "
                                         "over the generated one, for anything the params do not cover; relative "
                                         "to the repo.")
    launch: LaunchParams = Field(default_factory=LaunchParams, description="Process launch.")

    def data_deps(self, root: Path) -> list[str]:
        """The stage's data deps in dvc.yaml: its pipeline inputs, then the DeepSpeed JSON and hostfile when set."""
        return [*PIPELINE_INPUTS, *launch_files(self.launch, self.deepspeed_config)]
