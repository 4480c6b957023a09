"""Pretrain a Llama on packed tokens with DeepSpeed: ``python -m tasks.training.pretrain --config run.json``.

Launch with ``torchrun --nproc_per_node N -m tasks.training.pretrain --config run.json`` (or the ``deepspeed``
launcher) for several processes; plain ``python`` runs one process and sets the rendezvous variables itself. On CPU
the processes talk over gloo, on CUDA over NCCL (one GPU per process).

The loop, in the order a reader meets it in :func:`train`:

1. read and check the config, the token manifest, the model shape and the split sizes (no torch yet: a bad config
   exits 2 in a second, before any training);
2. build the model from a seed, hand it with a torch AdamW to ``deepspeed.initialize`` (ZeRO stage, offload, bf16,
   clipping from the config);
3. resume from ``checkpoint_dir/latest`` if present: weights, optimizer, step and RNG states; the training data is a
   function of (seed, step) (:class:`tasks.training.data.RandomWindows`), so a resumed run sees the same batches;
4. per step: set the learning rate (linear warmup, cosine to ``min_lr``), ``grad_accum`` forward/backward passes,
   one optimizer step; every ``log_every`` a line of loss, lr, grad norm, tokens/s and memory (also to MLflow from
   rank 0 when the config names a run); every ``eval_every`` val loss and perplexity; every ``checkpoint_every`` a
   DeepSpeed checkpoint, keeping the latest ``keep_checkpoints``;
5. export the final weights in Hugging Face format (safetensors) with the tokenizer, ``train_summary.json`` and
   sample generations, into a temporary sibling of ``out_dir`` renamed into place; the run's timings go to
   ``checkpoint_dir/run_stats.json``, so the export is the same bytes for the same config and data.

Exit codes: 0 done, 2 bad config (one message, no traceback), 1 any other failure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tasks.tokens import TokenFileError, load_tokens, read_manifest
from tasks.training.data import DataTooSmallError, check_tokens
from tasks.training.model import ModelConfigError, check_model_shape

SUMMARY_FILE = "train_summary.json"  # in out_dir: steps, tokens, val history (no timings: the export is reproducible)
RUN_STATS_FILE = "run_stats.json"  # in checkpoint_dir: this run's speed and where it resumed
RUN_IDENTITY_FILE = "run_identity.json"  # in checkpoint_dir: the settings a resumed run must share
SAMPLES_FILE = "samples.json"
_TAG_PREFIX = "step"


class ConfigError(ValueError):
    """The run config is unreadable or invalid; the message names the key. Exit code 2."""

    exit_code = 2


# ------------------------------------------------------------------------------------------------------ config
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelShape(_Strict):
    """The Llama's shape (see ``tasks.training.model.build_llama``)."""

    vocab_size: int | None = Field(None, description="Embedding rows; None takes the token manifest's vocab_size.")
    hidden_size: int = Field(128, description="Model width.")
    num_layers: int = Field(4, description="Decoder layers.")
    num_heads: int = Field(4, description="Query heads; must divide hidden_size.")
    num_kv_heads: int | None = Field(None, description="Key/value heads; must divide num_heads. None: num_heads.")
    intermediate_size: int = Field(344, description="MLP width.")
    max_position_embeddings: int | None = Field(None, description="Longest sequence; None: the run's context.")
    rope_theta: float = Field(10000.0, gt=0, description="Rotary embedding base.")
    tie_word_embeddings: bool = Field(True, description="Share input embedding and output projection.")


class MlflowTarget(_Strict):
    """Where rank 0 logs metrics: an existing MLflow run (the flow opened it)."""

    tracking_uri: str | None = Field(None, description="Tracking URI; None: MLFLOW_TRACKING_URI or MLflow's default.")
    run_id: str = Field(min_length=1, description="The run to log into.")


class PretrainConfig(_Strict):
    """Every setting of one pretraining run; the flow writes it as JSON."""

    tokens_dir: Path = Field(description="Packed tokens: {train,val}.bin and manifest.json (tasks.tokens).")
    tokenizer_dir: Path = Field(description="The Hugging Face tokenizer, copied into out_dir.")
    out_dir: Path = Field(description="Final model in Hugging Face format; replaced atomically at the end.")
    checkpoint_dir: Path = Field(description="DeepSpeed checkpoints; a run resumes from its `latest`.")
    model: ModelShape = Field(default_factory=ModelShape, description="Model shape.")
    context: int = Field(256, ge=1, description="Tokens per training window.")
    seed: int = Field(0, ge=0, description="Seed of the initial weights and of the data order.")
    steps: int = Field(ge=1, description="Optimizer steps in all (a resumed run continues up to it).")
    batch_size: int = Field(8, ge=1, description="Windows per micro-batch per process.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate, reached after warmup.")
    min_lr: float = Field(1e-4, ge=0, description="Learning rate at the last step (cosine decay).")
    warmup_steps: int = Field(0, ge=0, description="Linear warmup steps.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW decay of matrices (norms and biases get none).")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    grad_clip: float = Field(1.0, ge=0, description="Clip the global gradient norm to this; 0 turns it off.")
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage.")
    offload_optimizer: bool = Field(False, description="Keep optimizer states on the CPU (ZeRO stage >= 1).")
    offload_params: bool = Field(False, description="Keep parameters on the CPU (ZeRO stage 3).")
    precision: Literal["fp32", "bf16"] = Field("bf16", description="bf16: bf16 weights and activations, fp32 "
                                               "master weights (measured faster on CPU); fp32: exact resume.")
    activation_checkpointing: bool = Field(False, description="Recompute activations in backward: less memory.")
    threads: int | None = Field(None, ge=1, description="torch threads per process; None: torch's default.")
    log_every: int = Field(10, ge=1, description="Steps between log lines (and MLflow metrics).")
    eval_every: int = Field(100, ge=1, description="Steps between validation passes (and one at the end).")
    eval_batches: int = Field(8, ge=1, description="Validation batches per pass (fixed windows).")
    checkpoint_every: int = Field(100, ge=1, description="Steps between checkpoints (and one at the end).")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept; older ones are deleted.")
    sample_prompts: list[str] = Field(default_factory=list, description="Prompts to complete after training.")
    sample_max_new_tokens: int = Field(32, ge=1, description="Tokens generated per sample prompt (greedy).")
    mlflow: MlflowTarget | None = Field(None, description="MLflow run for metrics; None: MLFLOW_RUN_ID if set, "
                                        "else no MLflow at all.")
    deepspeed_config: Path | None = Field(None, description="A DeepSpeed JSON merged over the generated config.")

    @model_validator(mode="after")
    def _consistent(self) -> PretrainConfig:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr {self.min_lr} exceeds lr {self.lr}")
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} exceeds steps {self.steps}")
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage 3")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage 1, 2 or 3")
        return self


def load_config(path: Path) -> PretrainConfig:
    """Read and validate a run config; :class:`ConfigError` names every bad key."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from None
    try:
        return PretrainConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"invalid config {path}: {problems}") from None


def preflight(cfg: PretrainConfig) -> dict[str, Any]:
    """Check what can be checked without torch: manifest, model shape, split sizes. Returns the model kwargs.

    Raises:
        ConfigError, ModelConfigError, DataTooSmallError, TokenFileError.
    """
    manifest = read_manifest(cfg.tokens_dir)
    shape = cfg.model
    max_pos = shape.max_position_embeddings or cfg.context
    if cfg.context > max_pos:
        raise ModelConfigError(f"context {cfg.context} exceeds model.max_position_embeddings {max_pos}: "
                               "lower context or raise max_position_embeddings")
    kwargs = {"vocab_size": shape.vocab_size or int(manifest["vocab_size"]), "hidden_size": shape.hidden_size,
              "num_layers": shape.num_layers, "num_heads": shape.num_heads,
              "num_kv_heads": shape.num_kv_heads or shape.num_heads, "intermediate_size": shape.intermediate_size,
              "max_position_embeddings": max_pos, "rope_theta": shape.rope_theta,
              "tie_word_embeddings": shape.tie_word_embeddings, "bos_token_id": manifest.get("bos_id"),
              "eos_token_id": manifest.get("eos_id"), "pad_token_id": manifest.get("pad_id")}
    check_model_shape(**{k: v for k, v in kwargs.items() if k not in ("rope_theta", "tie_word_embeddings")})
    if kwargs["vocab_size"] < int(manifest["vocab_size"]):
        raise ModelConfigError(f"model.vocab_size {kwargs['vocab_size']} is below the tokens' vocabulary of "
                               f"{manifest['vocab_size']}: leave it unset to take the manifest's")
    for split in ("train", "val"):
        check_tokens(load_tokens(cfg.tokens_dir, split), cfg.context, split)
    if not (Path(cfg.tokenizer_dir) / "tokenizer.json").is_file():
        raise ConfigError(f"no tokenizer.json in tokenizer_dir {cfg.tokenizer_dir}: run the tokenizer stage first")
    if cfg.deepspeed_config is not None and not Path(cfg.deepspeed_config).is_file():
        raise ConfigError(f"deepspeed_config {cfg.deepspeed_config} does not exist")
    check_resume(cfg)
    return kwargs


# what a checkpoint's weights, optimizer state and data order depend on: resuming under other values would silently
# train a different run (or fail deep inside DeepSpeed); logging, evaluation and paths may change freely
_RUN_IDENTITY = ("model", "context", "seed", "batch_size", "grad_accum", "lr", "min_lr", "warmup_steps",
                 "weight_decay", "betas", "grad_clip", "zero_stage", "precision", "offload_optimizer", "offload_params")


def _identity(cfg: PretrainConfig) -> dict[str, Any]:
    return {**cfg.model_dump(mode="json", include=set(_RUN_IDENTITY)), "steps": cfg.steps,
            "world_size": int(os.environ.get("WORLD_SIZE", "1"))}


def check_resume(cfg: PretrainConfig) -> None:
    """Refuse to resume a checkpoint written under other training settings; warn when only ``steps`` changed.

    The settings of the run that started ``checkpoint_dir`` are kept there (RUN_IDENTITY_FILE).

    Raises:
        ConfigError: a setting that shapes the weights, the optimizer or the data order differs.
    """
    path = Path(cfg.checkpoint_dir) / RUN_IDENTITY_FILE
    if not (Path(cfg.checkpoint_dir) / "latest").is_file() or not path.is_file():
        return
    before, now = json.loads(path.read_text(encoding="utf-8")), _identity(cfg)
    changed = sorted(k for k in now if k != "steps" and before.get(k) != now[k])
    if changed:
        detail = ", ".join(f"{k}: {before.get(k)!r} -> {now[k]!r}" for k in changed)
        raise ConfigError(f"checkpoint_dir {cfg.checkpoint_dir} holds a run with other settings ({detail}); "
                          "resuming it would not continue that run: restore them, or use another checkpoint_dir "
                          "(or delete this one) to start over")
    if before.get("steps") != now["steps"]:
        print(f"pretrain: warning: steps changed from {before.get('steps')} to {now['steps']} since this run started; "
              "the learning-rate schedule follows the new value from here on", file=sys.stderr, flush=True)


def record_identity(cfg: PretrainConfig) -> None:
    """Keep the settings of a run starting in ``checkpoint_dir`` (rank 0), for :func:`check_resume`."""
    path = Path(cfg.checkpoint_dir) / RUN_IDENTITY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_identity(cfg), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


# ------------------------------------------------------------------------------------------------- components
def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, steps: int) -> float:
    """Learning rate of 0-based ``step``: linear warmup to ``lr``, then cosine decay to ``min_lr`` at the end."""
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    span = max(1, steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def deepspeed_config(cfg: PretrainConfig) -> dict[str, Any]:
    """The DeepSpeed config for ``cfg``, with ``cfg.deepspeed_config``'s JSON merged over it."""
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    if cfg.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": False}
    ds = {"train_micro_batch_size_per_gpu": cfg.batch_size, "gradient_accumulation_steps": cfg.grad_accum,
          "gradient_clipping": cfg.grad_clip, "zero_optimization": zero, "bf16": {"enabled": cfg.precision == "bf16"},
          # we pass our own torch AdamW (no compiled ops needed on CPU); offload then must not swap it for CPUAdam
          "zero_force_ds_cpu_optimizer": False,
          "steps_per_print": 1 << 30, "wall_clock_breakdown": False}
    if cfg.deepspeed_config is not None:
        ds = _merge(ds, json.loads(Path(cfg.deepspeed_config).read_text(encoding="utf-8")))
    return ds


def _setup_single_process_env() -> None:
    """Plain ``python`` (no launcher): one rank, rendezvous on a free local port."""
    if "RANK" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))


# Dense bf16 peak FLOP/s by device name (vendor datasheets); MFU is reported only for devices listed here.
_PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def mfu(tokens_per_second: float, *, params: int, layers: int, hidden: int, context: int, peak_flops: float) -> float:
    """Model FLOPs utilisation: (6 N + 12 L H T) FLOPs per token (PaLM appendix B) x tokens/s over the peak."""
    return (6 * params + 12 * layers * hidden * context) * tokens_per_second / peak_flops


def _peak_flops() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in _PEAK_BF16_FLOPS.items() if k in name), None)


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


class _MlflowSink:
    """Rank 0's metrics to an existing MLflow run; a no-op without one. Logging errors warn once, never stop."""

    def __init__(self, target: MlflowTarget | None) -> None:
        run_id = target.run_id if target else os.environ.get("MLFLOW_RUN_ID")
        self.client, self.run_id, self.failed = None, run_id, False
        if run_id:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=target.tracking_uri if target else None)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.client is None or self.failed:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        try:
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])
        except Exception as e:  # metrics are worth less than the run: keep training
            self.failed = True
            print(f"warning: MLflow logging to run {self.run_id} failed, no more attempts: {e}", file=sys.stderr)


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only (nanoGPT): decaying norms' gains and biases only hurts."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _grad_norm(model: Any) -> float:
    """Global 2-norm of the (already all-reduced) gradients."""
    import torch

    norms = [p.grad.detach().float().norm() for p in model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else float("nan")


def _evaluate(engine: Any, tokens: Any, cfg: PretrainConfig, rank: int, world_size: int) -> float:
    """Mean next-token loss over the fixed validation windows, averaged over all ranks."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from tasks.training.data import val_windows

    engine.eval()
    total = torch.zeros(2, dtype=torch.float64, device=engine.device)
    with torch.no_grad():
        for x, y in val_windows(tokens, cfg.context, cfg.batch_size, cfg.eval_batches, rank, world_size):
            x, y = x.to(engine.device), y.to(engine.device)
            logits = engine(input_ids=x).logits
            total[0] += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").double()
            total[1] += y.numel()
    engine.train()
    dist.all_reduce(total)
    return float(total[0] / total[1])


def _rng_state() -> dict[str, Any]:
    import random

    import numpy as np
    import torch

    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _prune_checkpoints(checkpoint_dir: Path, keep: int) -> None:
    tags = sorted((p for p in checkpoint_dir.glob(f"{_TAG_PREFIX}*") if p.is_dir() and p.name[4:].isdigit()),
                  key=lambda p: int(p.name[4:]))
    for old in tags[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------- train
def train(cfg: PretrainConfig, model_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Run (or resume) the training described by ``cfg`` and export the model; returns the summary on rank 0."""
    import logging

    import deepspeed
    import torch
    import torch.nn.functional as F

    from tasks.training.data import RandomWindows
    from tasks.training.model import build_llama, count_params

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)  # its INFO lines would drown ours
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    is_main = rank == 0

    def say(msg: str) -> None:
        if is_main:
            print(msg, flush=True)

    # model and engine: the same seed on every rank gives the same initial weights
    torch.manual_seed(cfg.seed)
    model = build_llama(**model_kwargs)
    if cfg.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    n_params = count_params(model)
    peak_flops = _peak_flops()
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(cfg))
    say(f"pretrain: {n_params / 1e6:.2f}M params, world_size {world_size}, ZeRO-{cfg.zero_stage}, {cfg.precision}, "
        f"{cfg.steps} steps x {cfg.batch_size * cfg.grad_accum * world_size} windows x {cfg.context} tokens")

    # resume: weights, optimizer, step, RNG; the data order follows from (seed, step)
    step, history, resumed_from = 0, [], None
    ckpt_dir = Path(cfg.checkpoint_dir)
    if (ckpt_dir / "latest").is_file():
        path, client = engine.load_checkpoint(str(ckpt_dir))
        if path is None:
            raise RuntimeError(f"could not load the checkpoint named by {ckpt_dir / 'latest'}: delete {ckpt_dir} "
                               "to start over")
        step, history, resumed_from = int(client["step"]), list(client["history"]), int(client["step"])
        _set_rng_state(client["rng"])
        say(f"pretrain: resumed from {path} at step {step}")
    if is_main:
        record_identity(cfg)  # the settings this checkpoint_dir's run goes on with
    train_tokens, val_tokens = load_tokens(cfg.tokens_dir, "train"), load_tokens(cfg.tokens_dir, "val")
    windows = RandomWindows(train_tokens, cfg.context, cfg.batch_size, cfg.seed, rank, world_size,
                            step=step * cfg.grad_accum)
    sink = _MlflowSink(cfg.mlflow) if is_main else _MlflowSink(None)
    tokens_per_step = cfg.batch_size * cfg.grad_accum * world_size * cfg.context

    def checkpoint() -> None:
        engine.save_checkpoint(str(ckpt_dir), tag=f"{_TAG_PREFIX}{step}",
                               client_state={"step": step, "data": windows.state_dict(), "history": history,
                                             "rng": _rng_state()})
        torch.distributed.barrier()
        if is_main:
            _prune_checkpoints(ckpt_dir, cfg.keep_checkpoints)

    def evaluate() -> float:
        loss = _evaluate(engine, val_tokens, cfg, rank, world_size)
        history.append({"step": step, "val_loss": loss})
        say(f"step {step:>6} | val_loss {loss:.4f} | val_ppl {math.exp(min(loss, 50)):.2f}")
        sink.log({"val_loss": loss, "val_perplexity": math.exp(min(loss, 50))}, step)
        return loss

    if step == 0:
        evaluate()  # the starting point, so a run's improvement is on record
    device = engine.device
    # the loss is summed on the device and read at log steps only: reading it every step would sync a GPU
    train_seconds, window_loss, window_steps, window_seconds = 0.0, torch.zeros((), device=device), 0, 0.0
    start_step, own_norm, plain_fp32 = step, float("nan"), cfg.zero_stage == 0 and cfg.precision == "fp32"
    while step < cfg.steps:
        t0 = time.perf_counter()
        lr = lr_at(step, lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=cfg.warmup_steps, steps=cfg.steps)
        for group in optimizer.param_groups:  # the torch optimizer inside the engine: its groups drive the update
            group["lr"] = lr
        for _ in range(cfg.grad_accum):
            x, y = (t.to(device, non_blocking=True) for t in next(windows))
            logits = engine(input_ids=x).logits
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            engine.backward(loss)  # divides by grad_accum itself
            if plain_fp32 and engine.is_gradient_accumulation_boundary():
                own_norm = _grad_norm(engine.module)  # DeepSpeed's plain fp32 path clips but keeps no norm
            engine.step()  # steps the optimizer only at the accumulation boundary
            window_loss += loss.detach().float() / cfg.grad_accum
        step += 1
        if device.type == "cuda" and (step % cfg.log_every == 0 or step == cfg.steps):
            torch.cuda.synchronize()  # the window's time must include its queued kernels
        elapsed = time.perf_counter() - t0
        train_seconds, window_seconds, window_steps = train_seconds + elapsed, window_seconds + elapsed, \
            window_steps + 1

        if step % cfg.log_every == 0 or step == cfg.steps:
            mean = (window_loss / window_steps).double().reshape(1)
            torch.distributed.all_reduce(mean)
            norm = engine.get_global_grad_norm()
            norm = float(norm) if norm is not None else own_norm
            metrics = {"train_loss": float(mean) / world_size, "lr": lr, "grad_norm": norm,
                       "tokens_per_second": tokens_per_step * window_steps / window_seconds, "rss_mb": _rss_mb()}
            if peak_flops:  # on a GPU: utilisation and device memory too
                metrics["mfu"] = mfu(metrics["tokens_per_second"], params=n_params,  # tokens/s is global
                                     layers=model_kwargs["num_layers"], hidden=model_kwargs["hidden_size"],
                                     context=cfg.context, peak_flops=peak_flops * world_size)
                metrics["gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
            say(f"step {step:>6} | loss {metrics['train_loss']:.4f} | lr {lr:.2e} | grad_norm {norm:.3f} | "
                f"tok/s {metrics['tokens_per_second']:.0f} | rss {metrics['rss_mb']:.0f} MB"
                + (f" | mfu {metrics['mfu']:.1%}" if "mfu" in metrics else ""))
            sink.log(metrics, step)
            window_loss, window_steps, window_seconds = torch.zeros((), device=device), 0, 0.0
        if step % cfg.eval_every == 0 or step == cfg.steps:
            evaluate()
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint()

    if not history or history[-1]["step"] != step:
        evaluate()  # resumed at the very end: measure the final model again
    trained = step - start_step
    final = history[-1]["val_loss"]
    # what the model is: a function of config and data, exported with it (same inputs, same bytes)
    summary = {"steps": step, "tokens": step * tokens_per_step, "params": n_params, "final_val_loss": final,
               "final_val_perplexity": math.exp(min(final, 50)), "val_history": history, "world_size": world_size,
               "precision": cfg.precision, "zero_stage": cfg.zero_stage, "context": cfg.context,
               "global_batch": cfg.batch_size * cfg.grad_accum * world_size}
    # how this run went: timings and resumption, kept beside the checkpoints, outside the versioned model
    run_stats = {"resumed_from_step": resumed_from, "tokens_this_run": trained * tokens_per_step,
                 "tokens_per_second": round(trained * tokens_per_step / train_seconds, 1) if train_seconds else None,
                 "train_seconds": round(train_seconds, 3)}
    export(engine, cfg, model_kwargs, summary, is_main=is_main)
    if is_main:
        tmp = ckpt_dir / f".{RUN_STATS_FILE}.tmp"
        tmp.write_text(json.dumps(run_stats, indent=2) + "\n", encoding="utf-8")
        tmp.replace(ckpt_dir / RUN_STATS_FILE)
        sink.log({"final_val_loss": final, "final_val_perplexity": summary["final_val_perplexity"]}, step)
    torch.distributed.barrier()
    return {**summary, **run_stats}


# ------------------------------------------------------------------------------------------------------ export
def export(engine: Any, cfg: PretrainConfig, model_kwargs: dict[str, Any], summary: dict[str, Any], *,
           is_main: bool) -> None:
    """Write the model (safetensors), tokenizer, samples and summary to ``cfg.out_dir``, atomically (rank 0).

    Every rank must call it: under ZeRO-3 the parameters are gathered collectively first.
    """
    import deepspeed
    import torch

    from tasks.training.model import build_llama

    module = engine.module
    params = list(module.parameters())
    # ZeRO-3 keeps only a shard of each parameter here; gathering is a no-op for the other stages
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=cfg.zero_stage == 3):
        state = {k: v.detach().clone() for k, v in module.state_dict().items()} if is_main else None
    if not is_main:
        return
    dtype = "bfloat16" if cfg.precision == "bf16" else "float32"
    model = build_llama(**model_kwargs, dtype=dtype)
    model.load_state_dict(state)
    model.config.use_cache = True
    out_dir = Path(cfg.out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(str(tmp))
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(cfg.tokenizer_dir))
        tokenizer.save_pretrained(str(tmp))
        # samples come from the exported files, so they also prove the export loads
        exported = AutoModelForCausalLM.from_pretrained(str(tmp)).eval()
        samples = []
        for prompt in cfg.sample_prompts:
            ids = tokenizer(prompt, return_tensors="pt").input_ids
            with torch.no_grad():
                out = exported.generate(ids, max_new_tokens=cfg.sample_max_new_tokens, do_sample=False,
                                        pad_token_id=tokenizer.pad_token_id)
            samples.append({"prompt": prompt, "completion": tokenizer.decode(out[0, ids.shape[1]:])})
            print(f"sample: {prompt!r} -> {samples[-1]['completion']!r}", flush=True)
        (tmp / SAMPLES_FILE).write_text(json.dumps(samples, indent=2) + "\n", encoding="utf-8")
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"pretrain: exported to {out_dir} (val_loss {summary['final_val_loss']:.4f})", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--config run.json``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m tasks.training.pretrain", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="the run's JSON config")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # the deepspeed launcher
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
        model_kwargs = preflight(cfg)
    except (ConfigError, ModelConfigError, DataTooSmallError, TokenFileError) as e:
        print(f"pretrain: error: {e}", file=sys.stderr)
        return int(getattr(e, "exit_code", 2))
    _setup_single_process_env()
    try:
        train(cfg, model_kwargs)
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
