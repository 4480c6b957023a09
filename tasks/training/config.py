"""The training settings, defined once: params.yaml's ``pretrain``, ``finetune`` and ``distill`` sections and the
recipes' run configs use them.

Pure pydantic, no torch: each is composed from the shared blocks of :mod:`tasks.training.blocks`. The params schema
(``pipelines/config/STAGE.py``) subclasses a recipe's settings and adds the process launch; the recipe subclasses
them and adds the paths the flow fills in. So a default, a bound or a cross-field check exists in one place, and
params validation gives the same answer as the entry point.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tasks.modeling.errors import ConfigError as ConfigError  # the recipes' error family, re-exported
from tasks.training.blocks import (
    CadenceBlock,
    EngineBlock,
    OptimizerBlock,
    RunBlock,
    Settings,
    TaskTrainingSettings,
    TrainingSettings,
    WarmupBlock,
    default,
)


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
        if self.hidden_size is not None and self.num_heads is not None and self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")
        if self.num_kv_heads is not None and self.num_heads is not None and self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads ({self.num_kv_heads}) must divide num_heads ({self.num_heads})")
        return self


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
    target_modules: list[str] | None = Field(None, min_length=1,
                                             description="Names of the linear modules that get adapters (Llama: "
                                             "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj; BERT: "
                                             "query, key, value, dense; GPT-2: c_attn, c_proj, c_fc); null: every "
                                             "linear layer but the output layer (peft's all-linear).")


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
    """The distilled student: the teacher's architecture with fewer layers (any architecture: Llama, GPT-2, BERT...),
    built fresh or from a subset of the teacher's layers; Llama students may also be narrower or have other heads."""

    num_layers: int | None = Field(None, ge=1, description="Transformer layers (null: half the teacher's, at least 1, "
                                   "DistilBERT's; as many as `layers` lists when given). The default teacher has 4; "
                                   "docs/measurements.md says what 1 and 2 layers kept.")
    hidden_size: int | None = Field(None, ge=8, description="Model width (null: the teacher's). Llama only (another "
                                    "architecture: null or the teacher's); equal to the teacher's, the embeddings, "
                                    "final norm, layers and classification heads can be copied from it.")
    num_heads: int | None = Field(None, ge=1, description="Query heads; must divide hidden_size (null: the "
                                  "teacher's). Llama only (another architecture: null or the teacher's).")
    num_kv_heads: int | None = Field(None, ge=1, description="Key/value heads (null: the teacher's when num_heads "
                                     "equals the teacher's, else num_heads). Llama only.")
    intermediate_size: int | None = Field(None, ge=8, description="MLP width (null: the teacher's; GPT-2's n_inner). "
                                          "A narrower MLP than the teacher's starts from the teacher layer's "
                                          "strongest neurons (Llama gate/up/down, BERT intermediate/output, GPT-2 "
                                          "c_fc/c_proj).")
    mlp_fraction: float | None = Field(None, gt=0, le=1, description="MLP width as a fraction of the teacher's "
                                       "(rounded; instead of intermediate_size): the same cut for any teacher, e.g. "
                                       "0.5 keeps half of each layer's strongest neurons.")
    init: Literal["scratch", "teacher_layers"] = Field(
        "teacher_layers", description="scratch: random weights; teacher_layers (DistilBERT's recipe): copy the "
        "embeddings, final norm (BERT's pooler) and the chosen teacher layers into the student wherever the shapes "
        "allow.")
    layers: list[int] | None = Field(None, description="teacher_layers: the teacher layer copied into each student "
                                     "layer, in order (null: every other layer, 0, 2, 4..., as DistilBERT).")

    @model_validator(mode="after")
    def _shape(self) -> StudentShape:
        if self.hidden_size is not None and self.num_heads is not None and self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")
        if self.num_kv_heads is not None and self.num_heads is not None and self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads ({self.num_kv_heads}) must divide num_heads ({self.num_heads})")
        if self.intermediate_size is not None and self.mlp_fraction is not None:
            raise ValueError("give intermediate_size or mlp_fraction, not both")
        if self.layers is not None and self.num_layers is not None and len(self.layers) != self.num_layers:
            raise ValueError(f"layers lists {len(self.layers)} teacher layers for {self.num_layers} student layers: "
                             "give one per student layer (or null)")
        if self.layers is not None and min(self.layers) < 0:
            raise ValueError(f"layers {self.layers} holds a negative index")
        return self


class MagnitudeVariant(Settings):
    """Unstructured magnitude pruning of the student's layer projections (global over the layers; nn.Linear or
    GPT-2's Conv1D), then KD recovery with the masks held."""

    enabled: bool = Field(True, description="Make this variant.")
    sparsity: float = Field(0.5, gt=0, lt=1, description="Fraction of the prunable weights set to zero.")
    recovery_steps: int = Field(10, ge=0, description="KD steps after pruning (masks re-applied after each).")


class StructuredVariant(Settings):
    """Structured pruning: whole attention heads and MLP neurons removed, the config shrunk, then KD recovery. Heads
    go for the Llama attention layout only: a BERT or GPT-2 student prunes MLP neurons and records the skip."""

    enabled: bool = Field(True, description="Make this variant.")
    heads_fraction: float = Field(0.5, ge=0, lt=1, description="Fraction of attention heads (key/value groups) "
                                  "removed per layer; the kept count must divide hidden_size (4 heads: 0, 0.5, 0.75). "
                                  "Llama only: other architectures skip it (summary's skipped).")
    neurons_fraction: float = Field(0.25, ge=0, lt=1, description="Fraction of MLP neurons removed per layer.")
    recovery_steps: int = Field(10, ge=0, description="KD steps after pruning.")


class Int8Variant(Settings):
    """int8 quantization of the final student for CPU inference: torchao weight-only int8 (per-row scales) of the
    layers' linear projections and the embedding tables, saved as safetensors (``tasks.modeling.quantize``);
    weight-only gives the size saving at float speed on CPUs, where dynamic int8 activations were slower than
    float32. GPT-2's Conv1D layers stay float (torchao cannot multiply them; the skip is recorded)."""

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
        "finetuned", description="finetuned: one fine-tuned model per task (models/finetuned/<task>, of whatever "
        "architecture finetune trained: Llama, GPT-2, BERT...) over the task data, a student per task sharing one "
        "backbone of the same architecture and tokenizer; base: the pretrained causal LM (models/base, any decoder) "
        "over the packed tokens, plain causal-LM distillation, the student exported as lm/.")
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
