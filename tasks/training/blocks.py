"""The settings blocks every training recipe composes, each field defined once: how long a run is and what it sees
per step, the optimizer, the warmup and schedule, DeepSpeed and precision, the cadence of logs, evaluations and
checkpoints, and (task recipes) evaluation with early stopping; plus the paths a recipe's run config adds and
:func:`load_config`, which reads a run config and names every bad key.

Pure pydantic, no torch. A recipe's settings (``tasks.training.config``) inherit the blocks; where its sensible
starting point differs it changes a default with :func:`default`, never a field's type, bounds or description.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tasks.modeling.errors import ConfigError


class Settings(BaseModel):
    """A settings block: unknown keys are rejected, values are frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MlflowTarget(Settings):
    """Where rank 0 logs metrics: an existing MLflow run (the flow opened it)."""

    tracking_uri: str | None = Field(None, description="Tracking URI; None: MLFLOW_TRACKING_URI or MLflow's default.")
    run_id: str = Field(min_length=1, description="The run to log into.")


class RecipePaths(Settings):
    """What every recipe's run config adds to its settings: the paths the flow fills in and where MLflow is."""

    tokenizer_dir: Path = Field(description="The Hugging Face tokenizer, copied into every exported model.")
    out_dir: Path = Field(description="Exported model(s) and summary; replaced atomically at the end.")
    checkpoint_dir: Path = Field(description="DeepSpeed checkpoints (a run resumes from its `latest`), run stats and "
                                 "evaluations.jsonl.")
    mlflow: MlflowTarget | None = Field(None, description="MLflow run for metrics; None: MLFLOW_RUN_ID if set, "
                                        "else no MLflow at all.")
    deepspeed_config: Path | None = Field(None, description="A DeepSpeed JSON merged over the generated config.")

    def check_paths(self) -> None:
        """ConfigError unless the tokenizer and the DeepSpeed JSON (when given) are there."""
        from tasks.modeling.source import TOKENIZER_FILES

        if not any((Path(self.tokenizer_dir) / name).is_file() for name in TOKENIZER_FILES):
            raise ConfigError(f"no tokenizer (tokenizer.json, vocab.txt, ...) in tokenizer_dir {self.tokenizer_dir}: "
                              "run the tokenizer stage first, or save the checkpoint's tokenizer with it")
        if self.deepspeed_config is not None and not Path(self.deepspeed_config).is_file():
            raise ConfigError(f"deepspeed_config {self.deepspeed_config} does not exist: fix the path or remove it")


class TaskPaths(RecipePaths):
    """The task recipes' paths: also where the learning curves go."""

    plots_dir: Path = Field(description="Where learning_curves.png is written.")


def default(block: type[BaseModel], name: str, value: Any) -> Any:
    """``block``'s field ``name`` with another default: its type, bounds and description stay defined once, in the
    block, while a recipe whose sensible starting point differs (finetune's ``lr`` is not pretrain's) says so."""
    info = copy.copy(block.model_fields[name])
    info.default, info.default_factory = value, None
    return info


class RunBlock(Settings):
    """How long a run is and what it sees per step."""

    seed: int = Field(0, ge=0, description="Seed of fresh weights, dropout and the data order.")
    steps: int = Field(1000, ge=1, description="Optimizer steps at most (a resumed run continues up to it; early "
                       "stopping may end a task run sooner).")
    batch_size: int = Field(8, ge=1, description="Examples (pretrain: token windows) per micro-batch per process.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")


class OptimizerBlock(Settings):
    """AdamW (norms and biases get no weight decay) with global gradient-norm clipping."""

    lr: float = Field(1e-3, gt=0, description="Peak learning rate, reached after warmup (task recipes: of the "
                      "backbone or the adapters).")
    weight_decay: float = Field(0.1, ge=0, description="AdamW decay of matrices (norms and biases get none).")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    grad_clip: float = Field(1.0, ge=0, description="Clip the global gradient norm to this; 0 turns it off.")


class WarmupBlock(Settings):
    """The learning rate's linear warmup."""

    warmup_steps: int = Field(100, ge=0, description="Linear warmup steps; fewer than steps.")


class ScheduleBlock(WarmupBlock):
    """Task recipes: after warmup, a decay to a fraction of the peak, or reduce-on-plateau."""

    schedule: Literal["cosine", "linear", "plateau"] = Field(
        "cosine", description="After warmup: cosine or linear decay to min_lr_ratio, or reduce-on-plateau (multiply "
        "by plateau_factor after plateau_patience evaluations without improvement).")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine/linear: the last step's rate as a fraction of "
                                "the peak.")
    plateau_factor: float = Field(0.5, gt=0, lt=1, description="schedule plateau: factor of each reduction.")
    plateau_patience: int = Field(1, ge=1, description="schedule plateau: evaluations without improvement before "
                                  "a reduction.")


class EngineBlock(Settings):
    """DeepSpeed and the numeric format."""

    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="bf16: bf16 weights and activations, fp32 master weights (fast on GPUs and on CPUs with "
        "oneDNN bf16 kernels, AVX-512/AMX; very slow elsewhere); fp32: exact resume; auto: bf16 where the hardware "
        "has fast bf16, else fp32.")
    threads: int | None = Field(None, ge=1, description="torch threads per process (null: torch's default).")


class CadenceBlock(Settings):
    """How often a run logs, evaluates and checkpoints."""

    log_every: int = Field(10, ge=1, description="Steps between log lines and MLflow metrics.")
    eval_every: int = Field(250, ge=1, description="Steps between validation passes (and one at the end).")
    checkpoint_every: int = Field(250, ge=1, description="Steps between DeepSpeed checkpoints (and one at the end).")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept; older ones are deleted.")
    sample_max_new_tokens: int = Field(32, ge=1, description="Tokens generated per sample prompt (task recipes: per "
                                       "sft test prompt) at the end.")


class TrainingSettings(RunBlock, OptimizerBlock, WarmupBlock, EngineBlock, CadenceBlock):
    """The blocks every training recipe shares."""

    @model_validator(mode="after")
    def _warmup_below_steps(self) -> TrainingSettings:
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below steps ({self.steps})")
        return self


class EarlyStopping(Settings):
    """Stop when the validation metric stops improving; the best evaluation's weights are exported, not the last."""

    enabled: bool = Field(True, description="Stop early; off: train all steps (the best weights are still kept).")
    patience: int = Field(3, ge=1, description="Evaluations without an improvement of more than min_delta before "
                          "training stops.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change of the validation metric that counts as an "
                             "improvement.")


class EvaluationBlock(Settings):
    """Task recipes: what each validation pass scores, and when training stops."""

    eval_max_examples: int | None = Field(None, ge=1, description="Validation examples per task and pass at most "
                                          "(the first ones; null: the whole split).")
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping, description="Early stopping on val_score.")


class TaskTrainingSettings(TrainingSettings, ScheduleBlock, EvaluationBlock):
    """The blocks the task recipes (finetune, distill) share: examples, heads, schedule, evaluation."""

    max_length: int = Field(256, ge=8, description="Tokens per example at most; longer examples are quarantined by "
                            "the data step (reason too_long), never cut (distill from base: the window length).")
    head_lr: float = Field(1e-3, gt=0, description="Peak learning rate of the classification heads (usually higher "
                           "than lr when they start from random).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on attention weights and on the pooled features "
                           "before each classification head.")
    packing: bool = Field(True, description="Pack the training batches of the task types that pack (sft, chat): "
                          "several examples per row, each attending only to itself (position ids restart per "
                          "example); the same per-token losses in fewer padded positions. distill: the teacher runs "
                          "on the same packed rows (with cache_teacher nothing is packed: the cache is keyed by "
                          "whole examples).")


ConfigT = TypeVar("ConfigT", bound=BaseModel)


def load_config(path: Path, schema: type[ConfigT]) -> ConfigT:
    """Read and validate a recipe's JSON run config.

    Args:
        path: the JSON file the flow (or a user) wrote.
        schema: the recipe's config class.

    Raises:
        ConfigError: unreadable JSON, or every invalid key with its path (``model.num_heads: ...``).
    """
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read config {path}: {e}; write it as JSON (the flow does)") from None
    try:
        return schema.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"invalid config {path}: {problems}") from None
