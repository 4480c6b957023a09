"""Params of the distill stage: the distillation settings (defined once, in ``tasks.training.config``), the DeepSpeed
JSON and the process launch (``pipelines.config.launch``, shared by the training stages)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from pipelines.config.base import Section
from pipelines.config.launch import LaunchParams, launch_files

# the one definition of the training settings (DESIGN: each setting defined once); pure pydantic, no torch
from tasks.training.config import DistillSettings

__all__ = ["DistillParams", "TEACHER_INPUTS"]

TEACHER_INPUTS: dict[str, tuple[str, ...]] = {
    "finetuned": ("data/finetune", "models/finetuned"),
    "base": ("data/tokens", "models/base"),
}
"""What the stage reads from the stages before it, by teacher: the task data and the fine-tuned models, or the packed
tokens and the pretrained model (so `teacher: base` does not wait for, nor re-run after, finetune). The tokenizer is
the teacher's own, saved in its directory (a checkpoint's when finetune or pretrain started from one), not
models/tokenizer."""


class DistillParams(DistillSettings, Section):
    """The distill stage: a smaller student of the teacher's architecture (Llama, GPT-2, BERT...) trained on the
    teacher's soft targets (models/finetuned per task, or models/base over the corpus), then pruned and quantized;
    every model measured the same way. The training
    settings are :class:`tasks.training.config.DistillSettings`, the very class of the entry point's run config
    (defined once); this section adds where the DeepSpeed JSON is and how the processes are started."""

    deepspeed_config: str | None = Field(None, description="A DeepSpeed JSON merged over the generated one; "
                                         "relative to the repo.")
    launch: LaunchParams = Field(default_factory=LaunchParams, description="Process launch.")

    def data_deps(self, root: Path) -> list[str]:
        """The stage's data deps in dvc.yaml: the teacher's model and the data it is distilled on, then the DeepSpeed
        JSON and hostfile when set."""
        return [*TEACHER_INPUTS[self.teacher], *launch_files(self.launch, self.deepspeed_config)]

