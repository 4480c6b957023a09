"""Pretrain a Llama on packed tokens with DeepSpeed, or continue pretraining a Hugging Face causal LM (any
architecture) from its checkpoint: ``python -m tasks.training.pretrain --config run.json``.

Launch with ``torchrun --nproc_per_node N -m tasks.training.pretrain --config run.json`` (or the ``deepspeed``
launcher) for several processes; plain ``python`` runs one process and sets the rendezvous variables itself. On CPU
the processes talk over gloo, on CUDA over NCCL (one GPU per process).

This recipe is its config, its preflight and its loop; the components (``tasks.training.{model, data, engine,
schedule, losses, checkpoint, telemetry, export}``) take keyword arguments. In the order a reader meets it:

1. read and check the config, the token manifest, the model shape and the split sizes (no torch yet: a bad config
   exits 2 in a second, before any training);
2. build the model from a seed (or, with ``base_checkpoint``, load the checkpoint's weights only:
   :mod:`tasks.training.continued`), hand it with a fresh torch AdamW to ``deepspeed.initialize``;
3. resume from ``checkpoint_dir/latest`` if present: weights, optimizer, step and RNG states; the training data is a
   function of (seed, step) (:class:`tasks.training.data.RandomWindows`), so a resumed run sees the same batches;
4. per step: set the learning rate (linear warmup, cosine to ``min_lr``), ``grad_accum`` forward/backward passes,
   one optimizer step; every ``log_every`` a line of loss, lr, grad norm, tokens/s and memory (also to MLflow from
   rank 0); every ``eval_every`` val loss and perplexity; every ``checkpoint_every`` a DeepSpeed checkpoint;
5. export the final weights in Hugging Face format (a checkpoint's run: in its architecture, with
   ``base_checkpoint.json``) with the tokenizer, ``train_summary.json`` and sample generations, atomically; the
   run's timings (tokens/s, launch-to-first-step seconds) go to ``checkpoint_dir/run_stats.json`` and MLflow, so
   the export is the same bytes for the same config and data.

Exit codes: 0 done, 2 bad config (one message, no traceback), 1 any other failure.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from tasks.modeling import checkpoint
from tasks.modeling.llama import resolve_shape
from tasks.tokens import load_tokens, read_manifest
from tasks.training import continued
from tasks.training.blocks import RecipePaths, Settings
from tasks.training.config import PretrainSettings
from tasks.training.data import check_tokens

NAME = "pretrain"


class BaseCheckpoint(Settings):
    """The Hugging Face causal LM a continued pretraining starts from (weights only)."""

    dir: Path = Field(description="Its local directory (config.json, weights).")
    provenance: dict[str, Any] = Field(description="What it is (tasks.modeling.source.Checkpoint.provenance(): "
                                       "source, revision, digest, license...), exported as base_checkpoint.json.")


class PretrainConfig(PretrainSettings, RecipePaths):
    """Every setting of one pretraining run: the shared settings plus the paths the flow fills in."""

    tokens_dir: Path = Field(description="Packed tokens: {train,val}.bin and manifest.json (tasks.tokens).")
    base_checkpoint: BaseCheckpoint | None = Field(None, description="Start from this checkpoint's weights instead "
                                                   "of a fresh Llama (`model` is then ignored); null: from scratch.")


# what a checkpoint's weights, optimizer state and data order depend on: resuming under other values would silently
# train a different run (or fail deep inside DeepSpeed); logging, evaluation and paths may change freely
RUN_IDENTITY = ("model", "context", "seed", "batch_size", "grad_accum", "lr", "min_lr", "warmup_steps",
                "weight_decay", "betas", "grad_clip", "zero_stage", "precision", "offload_optimizer", "offload_params")


def run_identity(cfg: PretrainConfig) -> dict[str, Any]:
    """:data:`RUN_IDENTITY`'s values, and the base checkpoint's digest for a run that starts from one."""
    identity = checkpoint.identity(cfg, RUN_IDENTITY)
    if cfg.base_checkpoint is not None:
        identity["base_checkpoint"] = cfg.base_checkpoint.provenance.get("digest")
    return identity


def preflight(cfg: PretrainConfig) -> dict[str, Any]:
    """Check what can be checked without torch: manifest, model shape (or the base checkpoint), split sizes, resume.
    Returns the model kwargs (a base checkpoint's run: its ``num_layers``, ``hidden_size`` and ``model_type``).

    ``cfg.precision`` is already resolved (``main`` turns ``auto`` into bf16 or fp32), as the run identity records it.

    Raises:
        ConfigError, ModelConfigError, DataTooSmallError, TokenFileError.
    """
    manifest = read_manifest(cfg.tokens_dir)
    if cfg.base_checkpoint is None:
        model_kwargs = resolve_shape(context=cfg.context, manifest=manifest, **cfg.model.model_dump())
    else:
        model_kwargs = continued.check(directory=cfg.base_checkpoint.dir, context=cfg.context, manifest=manifest,
                                       digest=str(cfg.base_checkpoint.provenance.get("digest")),
                                       tokenizer_dir=cfg.tokenizer_dir)
    for split in ("train", "val"):
        check_tokens(load_tokens(cfg.tokens_dir, split), cfg.context, split)
    cfg.check_paths()
    checkpoint.check_resume(checkpoint_dir=cfg.checkpoint_dir, identity=run_identity(cfg), name=NAME)
    return model_kwargs


def train(cfg: PretrainConfig, model_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Run (or resume) the training described by ``cfg`` and export the model; returns the summary on rank 0."""

    import torch

    from tasks.modeling import export
    from tasks.modeling.llama import build_llama, count_params
    from tasks.training import engine as ds
    from tasks.training import telemetry
    from tasks.training.data import RandomWindows, val_windows
    from tasks.training.losses import next_token_loss, val_loss
    from tasks.training.schedule import due, lr_at, set_lr

    ds_config, rank, world_size = ds.setup(cfg)
    is_main = rank == 0
    say = ds.printer(is_main)

    # model and engine: the same seed on every rank gives the same initial weights
    torch.manual_seed(cfg.seed)
    base = cfg.base_checkpoint
    if base is None:
        model = build_llama(**model_kwargs)
    else:  # weights only: the optimizer, data order and step count below start fresh
        model = continued.load_model(base.dir, precision=cfg.precision, ds_config=ds_config)
        partitioned = " (ZeRO-3: each process loaded its partition)" if hasattr(next(model.parameters()), "ds_id") \
            else ""
        say(f"pretrain: continued pretraining from {base.provenance.get('source')} ({model_kwargs['model_type']}, "
            f"{model_kwargs['num_layers']} layers, hidden {model_kwargs['hidden_size']}){partitioned}; the model "
            "settings (pretrain.model) are ignored: the architecture is the checkpoint's")
    if cfg.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    n_params, peak_flops = count_params(model), telemetry.peak_flops()
    engine, optimizer = ds.build_engine(model, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                                        ds_config=ds_config)
    say(f"pretrain: {n_params / 1e6:.2f}M params, world_size {world_size}, ZeRO-{cfg.zero_stage}, {cfg.precision}, "
        f"{cfg.steps} steps x {cfg.batch_size * cfg.grad_accum * world_size} windows x {cfg.context} tokens")

    # resume: weights, optimizer, step, RNG; the data order follows from (seed, step)
    step, history, resumed_from = 0, [], None
    ckpt_dir = Path(cfg.checkpoint_dir)
    if (loaded := checkpoint.load(engine, checkpoint_dir=ckpt_dir)) is not None:
        path, client = loaded
        step, history, resumed_from = int(client["step"]), list(client["history"]), int(client["step"])
        say(f"pretrain: resumed from {path} at step {step}")
    if is_main:
        checkpoint.record_identity(checkpoint_dir=ckpt_dir, identity=run_identity(cfg))
    train_tokens, val_tokens = load_tokens(cfg.tokens_dir, "train"), load_tokens(cfg.tokens_dir, "val")
    windows = RandomWindows(train_tokens, cfg.context, cfg.batch_size, cfg.seed, rank, world_size,
                            step=step * cfg.grad_accum)
    sink = telemetry.MlflowSink.to(cfg.mlflow, enabled=is_main)
    tokens_per_step = cfg.batch_size * cfg.grad_accum * world_size * cfg.context

    def evaluate() -> None:
        loss = val_loss(engine, val_windows(val_tokens, cfg.context, cfg.batch_size, cfg.eval_batches, rank,
                                            world_size))
        history.append({"step": step, "val_loss": loss})
        say(f"step {step:>6} | val_loss {loss:.4f} | val_ppl {math.exp(min(loss, 50)):.2f}")
        sink.log({"val_loss": loss, "val_perplexity": math.exp(min(loss, 50))}, step)

    if step == 0:
        evaluate()  # the starting point, so a run's improvement is on record
    # everything before the first step (imports, process group, engine, resume, first eval): what a user waits for
    launch_to_first_step = telemetry.seconds_since_launch()
    say(f"pretrain: first step {launch_to_first_step:.1f} s after launch")
    sink.log({"launch_to_first_step_seconds": launch_to_first_step}, step)
    device = engine.device
    # the loss is summed on the device and read at log steps only: reading it every step would sync a GPU
    train_seconds, window_loss, window_steps, window_seconds = 0.0, torch.zeros((), device=device), 0, 0.0
    start_step, own_norm, plain_fp32 = step, float("nan"), cfg.zero_stage == 0 and cfg.precision == "fp32"
    while step < cfg.steps:
        t0 = time.perf_counter()
        lr = lr_at(step, lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=cfg.warmup_steps, steps=cfg.steps)
        set_lr(optimizer, lr)  # the torch optimizer inside the engine: its groups drive the update
        for _ in range(cfg.grad_accum):
            x, y = (t.to(device, non_blocking=True) for t in next(windows))
            loss = next_token_loss(engine(input_ids=x).logits, y)
            engine.backward(loss)  # divides by grad_accum itself
            if plain_fp32 and engine.is_gradient_accumulation_boundary():
                own_norm = ds.grad_norm(engine.module)  # DeepSpeed's plain fp32 path clips but keeps no norm
            engine.step()  # steps the optimizer only at the accumulation boundary
            window_loss += loss.detach().float() / cfg.grad_accum
        step += 1
        log_now = due(step, every=cfg.log_every, last=cfg.steps)
        if device.type == "cuda" and log_now:
            torch.cuda.synchronize()  # the window's time must include its queued kernels
        elapsed = time.perf_counter() - t0
        train_seconds, window_seconds, window_steps = train_seconds + elapsed, window_seconds + elapsed, \
            window_steps + 1

        if log_now:
            mean = (window_loss / window_steps).double().reshape(1)
            torch.distributed.all_reduce(mean)
            norm = engine.get_global_grad_norm()
            norm = float(norm) if norm is not None else own_norm
            metrics = {"train_loss": float(mean) / world_size, "lr": lr, "grad_norm": norm,
                       "tokens_per_second": tokens_per_step * window_steps / window_seconds,
                       "rss_mb": telemetry.rss_mb()}
            if peak_flops:  # on a GPU: utilisation and device memory too
                metrics["mfu"] = telemetry.mfu(metrics["tokens_per_second"], params=n_params,  # tokens/s is global
                                               layers=model_kwargs["num_layers"], hidden=model_kwargs["hidden_size"],
                                               context=cfg.context, peak_flops=peak_flops * world_size)
                metrics["gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
            say(f"step {step:>6} | loss {metrics['train_loss']:.4f} | lr {lr:.2e} | grad_norm {norm:.3f} | "
                f"tok/s {metrics['tokens_per_second']:.0f} | rss {metrics['rss_mb']:.0f} MB"
                + (f" | mfu {metrics['mfu']:.1%}" if "mfu" in metrics else ""))
            sink.log(metrics, step)
            window_loss, window_steps, window_seconds = torch.zeros((), device=device), 0, 0.0
        if due(step, every=cfg.eval_every, last=cfg.steps):
            evaluate()
        if due(step, every=cfg.checkpoint_every, last=cfg.steps):
            checkpoint.save(engine, checkpoint_dir=ckpt_dir, step=step, keep=cfg.keep_checkpoints, is_main=is_main,
                            client_state={"step": step, "data": windows.state_dict(), "history": history})

    if not history or history[-1]["step"] != step:
        evaluate()  # resumed at the very end: measure the final model again
    trained, final = step - start_step, history[-1]["val_loss"]
    # what the model is: a function of config and data, exported with it (same inputs, same bytes)
    summary = {"steps": step, "tokens": step * tokens_per_step, "params": n_params, "final_val_loss": final,
               "final_val_perplexity": math.exp(min(final, 50)), "val_history": history, "world_size": world_size,
               "precision": cfg.precision, "zero_stage": cfg.zero_stage, "context": cfg.context,
               "global_batch": cfg.batch_size * cfg.grad_accum * world_size}
    # how this run went: timings and resumption, kept beside the checkpoints, outside the versioned model
    run_stats = {"resumed_from_step": resumed_from, "tokens_this_run": trained * tokens_per_step,
                 "tokens_per_second": round(trained * tokens_per_step / train_seconds, 1) if train_seconds else None,
                 "train_seconds": round(train_seconds, 3), "launch_to_first_step_seconds": launch_to_first_step}
    state = export.gather_state(engine, zero3=cfg.zero_stage == 3, is_main=is_main)
    if state is not None:  # rank 0
        dtype = "bfloat16" if cfg.precision == "bf16" else "float32"
        if base is None:
            export.export_model(state, out_dir=cfg.out_dir, tokenizer_dir=cfg.tokenizer_dir, model_kwargs=model_kwargs,
                                dtype=dtype, summary=summary, sample_prompts=cfg.sample_prompts,
                                sample_max_new_tokens=cfg.sample_max_new_tokens)
        else:  # in the checkpoint's own architecture, with base_checkpoint.json
            continued.export_model(state, config=model.config, out_dir=cfg.out_dir, tokenizer_dir=cfg.tokenizer_dir,
                                   dtype=dtype, summary=summary, provenance=base.provenance,
                                   sample_prompts=cfg.sample_prompts, sample_max_new_tokens=cfg.sample_max_new_tokens)
        say(f"pretrain: exported to {cfg.out_dir} (val_loss {final:.4f})")
        checkpoint.write_run_stats(checkpoint_dir=ckpt_dir, stats=run_stats)
        sink.log({"final_val_loss": final, "final_val_perplexity": summary["final_val_perplexity"]}, step)
    torch.distributed.barrier()
    return {**summary, **run_stats}


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--config run.json``; returns the exit code."""
    from tasks.modeling.llama import ModelConfigError
    from tasks.tokens import TokenFileError
    from tasks.training.data import DataTooSmallError
    from tasks.training.engine import recipe_main

    return recipe_main(NAME, __doc__, PretrainConfig, preflight, train, argv, preflight_exit=None,
                       user_errors=(ModelConfigError, DataTooSmallError, TokenFileError))


if __name__ == "__main__":
    sys.exit(main())
