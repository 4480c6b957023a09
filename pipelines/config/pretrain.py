"""Params of the pretrain stage: model shape, optimisation, DeepSpeed and the process launch."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelines.config.base import Section


class ModelShapeParams(Section):
    """A Llama-architecture decoder (transformers LlamaConfig)."""

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
    def _heads(self) -> ModelShapeParams:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")
        if self.num_kv_heads is not None and self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads ({self.num_kv_heads}) must divide num_heads ({self.num_heads})")
        return self


class LaunchParams(Section):
    """How the training processes are started (the command is printed before it runs)."""

    launcher: Literal["python", "torchrun", "deepspeed"] = Field(
        "python", description="python: one process; torchrun: nproc local processes; deepspeed: its launcher, "
        "with a hostfile for several nodes.")
    nproc: int = Field(1, ge=1, le=1024, description="Processes (torchrun / deepspeed without a hostfile; with a "
                       "hostfile, each host's slots= decide).")
    hostfile: str | None = Field(None, description="DeepSpeed hostfile (e.g. infra/deepspeed/hostfile), lines "
                                 "'HOST slots=N', for multi-node runs; relative to the repo. DeepSpeed reaches the "
                                 "hosts by passwordless ssh, unless node_rank is set.")
    master_addr: str | None = Field(None, description="Address of rank 0 (null: 127.0.0.1 for local runs, else "
                                    "DeepSpeed asks the hostfile's first host over ssh).")
    master_port: int | None = Field(None, ge=1024, le=65535, description="Rendezvous port (null: a free one).")
    node_rank: int | None = Field(None, ge=0, description="deepspeed with a hostfile, without ssh: this node's "
                                  "index in the hostfile; every node runs the stage itself (SLURM, Kubernetes). "
                                  "Needs master_addr and master_port.")

    @model_validator(mode="after")
    def _consistent(self) -> LaunchParams:
        if self.node_rank is not None:
            if self.launcher != "deepspeed" or not self.hostfile:
                raise ValueError("node_rank needs launcher: deepspeed and a hostfile")
            if not self.master_addr or not self.master_port:
                raise ValueError("node_rank needs master_addr and master_port: every node must meet rank 0 there")
        if self.hostfile and self.launcher != "deepspeed":
            raise ValueError(f"hostfile is read by the deepspeed launcher only, not by {self.launcher!r}")
        return self


class PretrainParams(Section):
    """The pretrain stage: a Llama trained from scratch on data/tokens with DeepSpeed. Field names are those of
    the training entry point's run config (tasks/training/pretrain.py), which the flow writes from them."""

    model: ModelShapeParams = Field(default_factory=ModelShapeParams, description="Model shape.")
    context: int = Field(256, ge=8, description="Tokens per training window.")
    seed: int = Field(0, ge=0, description="Seed of the initial weights and of the data order.")
    steps: int = Field(1000, ge=1, description="Optimizer steps.")
    batch_size: int = Field(8, ge=1, description="Windows per micro-batch per process.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate after warmup.")
    min_lr: float = Field(1e-4, ge=0, description="Learning rate at the last step (cosine decay).")
    warmup_steps: int = Field(100, ge=0, description="Linear warmup steps.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay (matrices only).")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    grad_clip: float = Field(1.0, ge=0, description="Global gradient-norm clip (0: off).")
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage.")
    offload_optimizer: bool = Field(False, description="Optimizer states on the CPU (ZeRO >= 1).")
    offload_params: bool = Field(False, description="Parameters on the CPU (ZeRO 3).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 on CPU (measured 1.5x fp32 here) and on GPUs that support it, else fp32.")
    activation_checkpointing: bool = Field(False, description="Recompute activations in backward (less memory).")
    threads: int | None = Field(None, ge=1, description="torch threads per process (null: torch's default).")
    log_every: int = Field(10, ge=1, description="Steps between log lines and MLflow metrics.")
    eval_every: int = Field(250, ge=1, description="Steps between validation passes.")
    eval_batches: int = Field(8, ge=1, description="Validation batches per pass.")
    checkpoint_every: int = Field(250, ge=1, description="Steps between DeepSpeed checkpoints.")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept.")
    sample_prompts: list[str] = Field(["def ", "The "], description="Prompts completed after training.")
    sample_max_new_tokens: int = Field(32, ge=1, description="Tokens generated per prompt.")
    deepspeed_config: str | None = Field(None, description="A DeepSpeed JSON (e.g. in infra/deepspeed/) merged "
                                         "over the generated one, for anything the params do not cover.")
    launch: LaunchParams = Field(default_factory=LaunchParams, description="Process launch.")

    @model_validator(mode="after")
    def _consistent(self) -> PretrainParams:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) is above lr ({self.lr})")
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below steps ({self.steps})")
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage 3")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage 1, 2 or 3")
        return self


SCHEMA = PretrainParams
"""The ``pretrain`` section of params.yaml."""
