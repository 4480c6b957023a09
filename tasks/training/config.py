"""The training settings, defined once: params.yaml's ``pretrain`` section and the recipes' run configs use them.

Pure pydantic, no torch: the params schema (``pipelines/config/pretrain.py``) subclasses :class:`PretrainSettings`
and adds the process launch; the recipe (``tasks/training/pretrain.py``) subclasses it and adds the paths the flow
fills in. So a default, a bound or a cross-field check exists in one place, and params validation gives the same
answer as the entry point. :func:`load_config` reads a recipe's JSON config and names every bad key.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tasks.modeling.errors import ConfigError as ConfigError  # the recipes' error family, re-exported


class Settings(BaseModel):
    """A settings block: unknown keys are rejected, values are frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelShape(Settings):
    """A Llama-architecture decoder (transformers LlamaConfig; see ``tasks.modeling.llama.build_llama``)."""

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
        if not (Path(self.tokenizer_dir) / "tokenizer.json").is_file():
            raise ConfigError(f"no tokenizer.json in tokenizer_dir {self.tokenizer_dir}: run the tokenizer stage "
                              "first")
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


class PretrainSettings(TrainingSettings):
    """What one pretraining run does: model shape, optimisation, DeepSpeed, logging, evaluation, checkpoints."""

    model: ModelShape = Field(default_factory=ModelShape, description="Model shape.")
    context: int = Field(256, ge=8, description="Tokens per training window.")
    min_lr: float = Field(1e-4, ge=0, description="Learning rate at the last step (cosine decay).")
    offload_optimizer: bool = Field(False, description="Keep optimizer states on the CPU (ZeRO stage >= 1).")
    offload_params: bool = Field(False, description="Keep parameters on the CPU (ZeRO stage 3).")
    activation_checkpointing: bool = Field(False, description="Recompute activations in backward: less memory.")
    eval_batches: int = Field(8, ge=1, description="Validation batches per pass (fixed windows).")
    sample_prompts: list[str] = Field(["def ", "The "], description="Prompts completed (greedy) after training.")

    @model_validator(mode="after")
    def _consistent(self) -> PretrainSettings:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) is above lr ({self.lr})")
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage 3")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage 1, 2 or 3")
        return self


class LoraSettings(Settings):
    """Low-rank adapters (peft ``LoraConfig``) on the backbone's linear layers; the base weights stay frozen."""

    rank: int = Field(8, ge=1, description="Rank r of each adapter's A (r x in) and B (out x r) matrices.")
    alpha: float = Field(16.0, gt=0, description="Scale: the update is (alpha / rank) * B @ A.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter's input.")
    target_modules: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1,
                                      description="Names of the Linear modules that get adapters (Llama: q_proj, "
                                      "k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj).")


class FinetuneSettings(TaskTrainingSettings):
    """What one fine-tuning run does: strategy (full, frozen layers, gradual unfreezing, LoRA), optimisation with a
    separate head learning rate, schedule, regularisation, early stopping, DeepSpeed, logging."""

    strategy: Literal["full", "lora"] = Field("full", description="full: train the backbone's weights (minus what "
                                              "freeze_* hold still); lora: train low-rank adapters only, export "
                                              "both the adapter and the merged model.")
    freeze_embeddings: bool = Field(False, description="Keep the token embeddings (and the tied LM head) fixed.")
    freeze_layers: int = Field(0, ge=0, description="Keep the first N decoder layers fixed for the whole run.")
    unfreeze_every: int | None = Field(None, ge=1, description="Gradual unfreezing (ULMFiT): start with the heads "
                                       "and final norm only, then every this many steps unfreeze one more decoder "
                                       "layer from the top down, the embeddings last; null: off.")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA settings (strategy: lora).")
    class_weights: Literal["none", "balanced"] = Field("none", description="balanced: weight each class's loss by "
                                                       "n / (classes x count) of the training split.")
    sampling: Literal["natural", "balanced"] = Field("natural", description="balanced: draw training examples so "
                                                     "every class is equally frequent.")
    steps: int = default(RunBlock, "steps", 150)
    batch_size: int = default(RunBlock, "batch_size", 16)
    lr: float = default(OptimizerBlock, "lr", 3e-4)
    weight_decay: float = default(OptimizerBlock, "weight_decay", 0.01)
    betas: tuple[float, float] = default(OptimizerBlock, "betas", (0.9, 0.999))
    warmup_steps: int = default(WarmupBlock, "warmup_steps", 20)
    zero_stage: Literal[0, 1, 2, 3] = default(EngineBlock, "zero_stage", 0)
    eval_every: int = default(CadenceBlock, "eval_every", 25)
    checkpoint_every: int = default(CadenceBlock, "checkpoint_every", 50)
    sample_max_new_tokens: int = default(CadenceBlock, "sample_max_new_tokens", 48)

    @model_validator(mode="after")
    def _consistent(self) -> FinetuneSettings:
        if self.unfreeze_every is not None and self.zero_stage != 0:
            raise ValueError("unfreeze_every needs zero_stage 0: ZeRO 1-3 fix the trainable parameters at the start")
        if self.unfreeze_every is not None and self.strategy == "lora":
            raise ValueError("unfreeze_every and strategy lora exclude each other (LoRA keeps the backbone frozen)")
        if self.strategy == "lora" and (self.freeze_layers or self.freeze_embeddings):
            raise ValueError("freeze_layers/freeze_embeddings apply to strategy full; LoRA freezes the backbone")
        return self


class StudentShape(Settings):
    """The distilled student: a smaller Llama, built fresh or from a subset of the teacher's layers."""

    num_layers: int = Field(2, ge=1, description="Decoder layers (fewer than the teacher's: the default teacher "
                            "has 4; docs/measurements.md says what 1 and 2 layers kept).")
    hidden_size: int = Field(128, ge=8, description="Model width; equal to the teacher's, the embeddings, final norm, "
                             "layers and classification heads can be copied from it.")
    num_heads: int = Field(4, ge=1, description="Query heads; must divide hidden_size.")
    num_kv_heads: int | None = Field(None, ge=1, description="Key/value heads (null: the teacher's when num_heads "
                                     "equals the teacher's, else num_heads).")
    intermediate_size: int = Field(172, ge=8, description="MLP width (a narrower MLP than the teacher's starts from "
                                   "the teacher layer's strongest neurons).")
    init: Literal["scratch", "teacher_layers"] = Field(
        "teacher_layers", description="scratch: random weights; teacher_layers (DistilBERT's recipe): copy the "
        "embeddings, final norm and the chosen teacher layers into the student wherever the shapes allow.")
    layers: list[int] | None = Field(None, description="teacher_layers: the teacher layer copied into each student "
                                     "layer, in order (null: every other layer, 0, 2, 4...).")

    @model_validator(mode="after")
    def _shape(self) -> StudentShape:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")
        if self.num_kv_heads is not None and self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads ({self.num_kv_heads}) must divide num_heads ({self.num_heads})")
        if self.layers is not None and len(self.layers) != self.num_layers:
            raise ValueError(f"layers lists {len(self.layers)} teacher layers for {self.num_layers} student layers: "
                             "give one per student layer (or null)")
        if self.layers is not None and min(self.layers) < 0:
            raise ValueError(f"layers {self.layers} holds a negative index")
        return self


class MagnitudeVariant(Settings):
    """Unstructured magnitude pruning of the student (global), then KD recovery with the masks held."""

    enabled: bool = Field(True, description="Make this variant.")
    sparsity: float = Field(0.5, gt=0, lt=1, description="Fraction of the prunable weights set to zero.")
    recovery_steps: int = Field(10, ge=0, description="KD steps after pruning (masks re-applied after each).")


class StructuredVariant(Settings):
    """Structured pruning: whole attention heads and MLP neurons removed, the config shrunk, then KD recovery."""

    enabled: bool = Field(True, description="Make this variant.")
    heads_fraction: float = Field(0.5, ge=0, lt=1, description="Fraction of attention heads (key/value groups) "
                                  "removed per layer; the kept count must divide hidden_size (4 heads: 0, 0.5, 0.75).")
    neurons_fraction: float = Field(0.25, ge=0, lt=1, description="Fraction of MLP neurons removed per layer.")
    recovery_steps: int = Field(10, ge=0, description="KD steps after pruning.")


class Int8Variant(Settings):
    """int8 quantization of the final student for CPU inference: torchao weight-only int8 (per-row scales) of the
    decoder's linear layers and the embedding table, saved as safetensors (``tasks.modeling.quantize``); weight-only
    gives the size saving at float speed on CPUs, where dynamic int8 activations were slower than float32."""

    enabled: bool = Field(True, description="Make this variant.")


class Variants(Settings):
    """The compressed variants made from the distilled student; each is measured against the teacher."""

    magnitude: MagnitudeVariant = Field(default_factory=MagnitudeVariant, description="Magnitude pruning.")
    structured: StructuredVariant = Field(default_factory=StructuredVariant, description="Structured pruning.")
    int8: Int8Variant = Field(default_factory=Int8Variant, description="int8 (weight-only).")


class DistillSettings(TaskTrainingSettings):
    """What one distillation run does: the teacher, the student's shape and initialisation, the KD loss
    (``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * hard-label loss``), an optional teacher-logits cache,
    the shared optimisation, schedule, evaluation and DeepSpeed blocks, and the compressed variants."""

    teacher: Literal["finetuned", "base"] = Field(
        "finetuned", description="finetuned: one fine-tuned model per task (models/finetuned/<task>) over the task "
        "data, a student per task sharing one backbone; base: the pretrained LM over the packed tokens, plain "
        "causal-LM distillation, the student exported as lm/.")
    student: StudentShape = Field(default_factory=StudentShape, description="Student shape and initialisation.")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature T of both distributions in the KL term "
                               "(the term is scaled by T^2 so its gradients keep their size as T changes).")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the KD term; 1 - alpha weighs the hard-label loss "
                         "(0: hard labels only, no teacher).")
    cache_teacher: bool = Field(False, description="Compute the teacher's logits once over the training split and "
                                "store them under checkpoint_dir (classification: all logits; sft/lm: the top "
                                "cache_top_k per response token) instead of running the teacher every step. It pays "
                                "for long and resumed runs (the summary gives break_even_steps).")
    cache_top_k: int = Field(512, ge=1, description="cache_teacher, sft/lm: teacher logits kept per token (the KD "
                             "term is then over the teacher's top k renormalised; k = vocabulary gives the exact "
                             "loss; a smaller k is smaller on disk and less exact).")
    cache_probe_steps: int = Field(5, ge=1, description="cache_teacher: steps' teacher work timed live and from the "
                                   "cache, for the summary's saving.")
    variants: Variants = Field(default_factory=Variants, description="Compressed variants of the student.")
    latency_examples: int = Field(32, ge=1, description="Test examples timed one at a time (batch 1) per model.")
    latency_warmup: int = Field(3, ge=0, description="Untimed forward passes before the latency measurement.")
    steps: int = default(RunBlock, "steps", 60)
    batch_size: int = default(RunBlock, "batch_size", 16)
    weight_decay: float = default(OptimizerBlock, "weight_decay", 0.01)
    betas: tuple[float, float] = default(OptimizerBlock, "betas", (0.9, 0.999))
    warmup_steps: int = default(WarmupBlock, "warmup_steps", 6)
    dropout: float = default(TaskTrainingSettings, "dropout", 0.0)
    zero_stage: Literal[0, 1, 2, 3] = default(EngineBlock, "zero_stage", 0)
    precision: Literal["auto", "fp32", "bf16"] = default(EngineBlock, "precision", "fp32")
    eval_every: int = default(CadenceBlock, "eval_every", 20)
    checkpoint_every: int = default(CadenceBlock, "checkpoint_every", 50)

    @model_validator(mode="after")
    def _consistent(self) -> DistillSettings:
        if self.cache_teacher and self.alpha == 0:
            raise ValueError("cache_teacher with alpha 0 caches a teacher that is never used: set alpha > 0 or "
                             "cache_teacher false")
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
