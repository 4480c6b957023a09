"""The training settings, defined once: params.yaml's ``pretrain`` section and the recipes' run configs use them.

Pure pydantic, no torch: the params schema (``pipelines/config/pretrain.py``) subclasses :class:`PretrainSettings`
and adds the process launch; the recipe (``tasks/training/pretrain.py``) subclasses it and adds the paths the flow
fills in. So a default, a bound or a cross-field check exists in one place, and params validation gives the same
answer as the entry point. :func:`load_config` reads a recipe's JSON config and names every bad key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A run config is unreadable or invalid; the message names the key to fix. Exit code 2."""

    exit_code = 2


class Settings(BaseModel):
    """A settings block: unknown keys are rejected, values are frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelShape(Settings):
    """A Llama-architecture decoder (transformers LlamaConfig; see ``tasks.training.model.build_llama``)."""

    vocab_size: int | None = Field(None, ge=1, description="Embedding rows; null takes the tokenizer's vocabulary.")
    hidden_size: int = Field(128, ge=8, description="Model width.")
    num_layers: int = Field(4, ge=1, description="Decoder layers.")
    num_heads: int = Field(4, ge=1, description="Query heads; must divide hidden_size.")
    num_kv_heads: int | None = Field(None, ge=1, description="Key/value heads; must divide num_heads (null: same).")
    intermediate_size: int = Field(344, ge=8, description="MLP width.")
    max_position_embeddings: int | None = Field(None, ge=1, description="Longest sequence (null: context).")
    rope_theta: float = Field(10000.0, gt=0, description="Rotary embedding base.")
    tie_word_embeddings: bool = Field(True, description="Share input embedding and output projection.")

    @model_validator(mode="after")
    def _heads(self) -> ModelShape:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")
        if self.num_kv_heads is not None and self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads ({self.num_kv_heads}) must divide num_heads ({self.num_heads})")
        return self


class MlflowTarget(Settings):
    """Where rank 0 logs metrics: an existing MLflow run (the flow opened it)."""

    tracking_uri: str | None = Field(None, description="Tracking URI; None: MLFLOW_TRACKING_URI or MLflow's default.")
    run_id: str = Field(min_length=1, description="The run to log into.")


class PretrainSettings(Settings):
    """What one pretraining run does: model shape, optimisation, DeepSpeed, logging, evaluation, checkpoints."""

    model: ModelShape = Field(default_factory=ModelShape, description="Model shape.")
    context: int = Field(256, ge=8, description="Tokens per training window.")
    seed: int = Field(0, ge=0, description="Seed of the initial weights and of the data order.")
    steps: int = Field(1000, ge=1, description="Optimizer steps in all (a resumed run continues up to it).")
    batch_size: int = Field(8, ge=1, description="Windows per micro-batch per process.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate, reached after warmup.")
    min_lr: float = Field(1e-4, ge=0, description="Learning rate at the last step (cosine decay).")
    warmup_steps: int = Field(100, ge=0, description="Linear warmup steps; fewer than steps.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW decay of matrices (norms and biases get none).")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    grad_clip: float = Field(1.0, ge=0, description="Clip the global gradient norm to this; 0 turns it off.")
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage.")
    offload_optimizer: bool = Field(False, description="Keep optimizer states on the CPU (ZeRO stage >= 1).")
    offload_params: bool = Field(False, description="Keep parameters on the CPU (ZeRO stage 3).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="bf16: bf16 weights and activations, fp32 master weights (1.5x fp32 on an AVX-512 CPU, "
        "tens of times slower on an AVX2-only one); fp32: exact resume; auto: bf16 on GPUs that support it and on "
        "CPUs with oneDNN bf16 kernels (AVX-512/AMX), else fp32.")
    activation_checkpointing: bool = Field(False, description="Recompute activations in backward: less memory.")
    threads: int | None = Field(None, ge=1, description="torch threads per process (null: torch's default).")
    log_every: int = Field(10, ge=1, description="Steps between log lines and MLflow metrics.")
    eval_every: int = Field(250, ge=1, description="Steps between validation passes (and one at the end).")
    eval_batches: int = Field(8, ge=1, description="Validation batches per pass (fixed windows).")
    checkpoint_every: int = Field(250, ge=1, description="Steps between DeepSpeed checkpoints (and one at the end).")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept; older ones are deleted.")
    sample_prompts: list[str] = Field(["def ", "The "], description="Prompts completed (greedy) after training.")
    sample_max_new_tokens: int = Field(32, ge=1, description="Tokens generated per sample prompt.")

    @model_validator(mode="after")
    def _consistent(self) -> PretrainSettings:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) is above lr ({self.lr})")
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below steps ({self.steps})")
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage 3")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage 1, 2 or 3")
        return self


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
