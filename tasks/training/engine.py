"""DeepSpeed: the process group, the engine config and the engine around a model and a torch AdamW.

Every engine function takes keyword arguments, so pretraining, fine-tuning and distillation build their engines the
same way; :func:`setup` and :func:`recipe_main` are the recipes' shared start (process set-up, command line).
torch and deepspeed are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

SHM_COMM_OP = "deepspeed_shm_comm"
"""DeepSpeed's shared-memory all-reduce for CPU processes on one node (inference and AutoTP only); JIT-compiled
(~50 s) on first use."""


def resolve_precision(precision: str) -> str:
    """``auto``: bf16 where the hardware computes it fast (GPUs with bf16; CPUs whose oneDNN has bf16 kernels,
    AVX-512 or AMX), else fp32; an explicit precision is returned unchanged.

    On a CPU with AVX-512 bf16 trained 1.5x faster than fp32; on an AVX2-only CPU (AMD EPYC here) a bf16 matmul
    ran at 0.7 GFLOP/s against 49 for fp32 and the default model trained at 560 instead of ~10k tokens/s.
    """
    if precision != "auto":
        return precision
    import torch

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (AVX-512 BW/VL/DQ or better); without them PyTorch
    falls back to a reference path tens of times slower than fp32."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: go by the vector extension
        return bool(torch.backends.cpu.get_cpu_capability().startswith("AVX512"))


def setup_single_process_env() -> None:
    """Plain ``python`` (no launcher): one rank, rendezvous on a free local port. A launcher's variables win."""
    if "RANK" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))


def skip_shm_build(*, on_cpu: bool, tensor_parallel: bool = False) -> bool:
    """Keep DeepSpeed from compiling its shared-memory all-reduce op where nothing would use it.

    DeepSpeed's CPU backend JIT-builds ``deepspeed_shm_comm`` in ``init_distributed`` whenever the op is marked
    compatible (the install used DS_BUILD_OPS=0, so nothing is prebuilt): about 50 s of C++ compilation on a fresh
    machine before step 0, and a rebuild whenever the cache was built from another checkout's path. Only
    ``inference_all_reduce`` uses it (DeepSpeed inference and AutoTP tensor-parallel layers); training's gradient
    all-reduce goes through torch.distributed (gloo), so unless the DeepSpeed config asks for tensor parallelism the
    op is marked incompatible and never built. On CUDA DeepSpeed has no such op (and probing the ops' compatibility
    would cost seconds). Returns whether the build is skipped.
    """
    if not on_cpu or tensor_parallel:
        return False
    import deepspeed.ops

    # DeepSpeed caches this dict on first access and reads it before building an op (deepspeed/ops/__init__.py)
    deepspeed.ops.__compatible_ops__[SHM_COMM_OP] = False
    return True


def init_distributed(*, tensor_parallel: bool = False) -> tuple[int, int]:
    """Join the process group (NCCL on CUDA, gloo on CPU); returns (rank, world_size).

    Args:
        tensor_parallel: the DeepSpeed config enables AutoTP (``tensor_parallel``), whose layers use the shm op.
    """
    import deepspeed
    import torch

    cuda = torch.cuda.is_available()
    skip_shm_build(on_cpu=not cuda, tensor_parallel=tensor_parallel)
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged recursively into a copy of ``base`` (nested dicts merged, anything else replaced)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def deepspeed_config(*, batch_size: int, grad_accum: int, grad_clip: float, zero_stage: int, precision: str,
                     offload_optimizer: bool = False, offload_params: bool = False,
                     override: Path | None = None) -> dict[str, Any]:
    """The DeepSpeed config of a run.

    Args:
        batch_size: windows per micro-batch per process.
        grad_accum: micro-batches per optimizer step.
        grad_clip: global gradient-norm clip (0: off).
        zero_stage: ZeRO stage 0-3.
        precision: ``bf16`` or ``fp32``.
        offload_optimizer: optimizer states on the CPU.
        offload_params: parameters on the CPU (ZeRO-3).
        override: a DeepSpeed JSON merged over the generated config.
    """
    zero: dict[str, Any] = {"stage": zero_stage}
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    if offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": False}
    ds = {"train_micro_batch_size_per_gpu": batch_size, "gradient_accumulation_steps": grad_accum,
          "gradient_clipping": grad_clip, "zero_optimization": zero, "bf16": {"enabled": precision == "bf16"},
          # we pass our own torch AdamW (no compiled ops needed on CPU); offload then must not swap it for CPUAdam
          "zero_force_ds_cpu_optimizer": False,
          "steps_per_print": 1 << 30, "wall_clock_breakdown": False}
    if override is not None:
        ds = merge(ds, json.loads(Path(override).read_text(encoding="utf-8")))
    return ds


def param_groups(model: Any, *, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only (nanoGPT): decaying norms' gains and biases only hurts. A parameter already partitioned
    by ZeRO-3 (a model loaded under ``deepspeed.zero.Init``) is judged by its full shape, ``ds_shape``."""
    decay: list[Any] = []
    no_decay: list[Any] = []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if len(getattr(p, "ds_shape", p.shape)) >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_engine(model: Any, *, lr: float, betas: tuple[float, float], weight_decay: float,
                 ds_config: dict[str, Any], groups: list[dict[str, Any]] | None = None) -> tuple[Any, Any]:
    """Wrap ``model`` and a torch AdamW in a DeepSpeed engine; returns (engine, optimizer).

    The torch optimizer is returned too: its ``param_groups`` drive the update, so the recipe sets the learning rate
    there (:func:`tasks.training.schedule.set_lr`).

    Args:
        model: the module to train.
        lr: the default learning rate of the groups.
        betas: AdamW betas.
        weight_decay: decay of matrices (see :func:`param_groups`).
        ds_config: :func:`deepspeed_config`'s result.
        groups: explicit parameter groups (their own ``lr``/``weight_decay`` keys win); None: :func:`param_groups`.
    """
    import deepspeed
    import torch

    groups = groups if groups is not None else param_groups(model, weight_decay=weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    return engine, optimizer


def grad_norm(model: Any) -> float:
    """Global 2-norm of the (already all-reduced) gradients; DeepSpeed's plain fp32 path keeps none itself."""
    import torch

    norms = [p.grad.detach().float().norm() for p in model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else float("nan")


def run_entry(name: str, train: Callable[[], Any], *, user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """The common tail of every recipe's ``main``: one rank's rendezvous when no launcher set it, ``train()``, the
    process group torn down (:func:`_leave_process_group`); returns the exit code (0 done, 2 one of ``user_errors``
    found during training, printed as one line, 1 anything else, with its traceback)."""
    import sys
    import traceback

    setup_single_process_env()
    if "DS_ACCELERATOR" not in os.environ:
        import torch

        # DeepSpeed probes for an accelerator on import and, finding none, warns "Setting accelerator to CPU. If you
        # have GPU or other accelerator, we were unable to detect it" in every process: on a CPU machine, say so
        if not torch.cuda.is_available():
            os.environ["DS_ACCELERATOR"] = "cpu"
    ok = False
    try:
        train()
        ok = True
    except user_errors as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        _leave_process_group(ok)
    return 0


def _leave_process_group(ok: bool) -> None:
    """Tear the process group down before the interpreter does. After a finished run every rank first waits for the
    others (rank 0 may still be exporting): a rank that tore its gloo connections down and exited while a peer was
    still at work died of SIGABRT at exit ("terminate called without an active exception") once in CI. After an
    error nobody waits (the others may never get there)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if ok and dist.get_world_size() > 1:
        dist.barrier()
    dist.destroy_process_group()


def setup(cfg: Any) -> tuple[dict[str, Any], int, int]:
    """A recipe's process set-up from its engine settings: quiet DeepSpeed and transformers' progress bars, torch
    threads, the DeepSpeed config, the process group. Returns ``(ds_config, rank, world_size)``."""
    import logging

    import torch
    import transformers

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)  # its INFO lines would drown ours
    transformers.utils.logging.disable_progress_bar()  # a bar per model load would drown the log
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ds_config = deepspeed_config(batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, grad_clip=cfg.grad_clip,
                                 zero_stage=cfg.zero_stage, precision=cfg.precision,
                                 offload_optimizer=getattr(cfg, "offload_optimizer", False),
                                 offload_params=getattr(cfg, "offload_params", False), override=cfg.deepspeed_config)
    rank, world_size = init_distributed(tensor_parallel="tensor_parallel" in ds_config)
    return ds_config, rank, world_size


def printer(is_main: bool) -> Callable[[str], None]:
    """``say(msg)``: a flushed line on rank 0, nothing elsewhere."""

    def say(msg: str) -> None:
        if is_main:
            print(msg, flush=True)

    return say


def recipe_main(name: str, doc: str | None, schema: type[Any], preflight: Callable[[Any], Any],
                train: Callable[[Any, Any], Any], argv: list[str] | None, *,
                user_errors: tuple[type[BaseException], ...], fp32_when: Callable[[Any], bool] | None = None,
                preflight_exit: int | None = 2) -> int:
    """Every recipe's command line: ``--config run.json`` read into ``schema``, ``precision: auto`` resolved (fp32
    where ``fp32_when(cfg)``), ``preflight(cfg)`` (no torch: a bad config or bad data exits in a second with one
    line), then ``train(cfg, preflight's result)`` under :func:`run_entry`. Returns the exit code.

    Args:
        user_errors: what a bad config or bad data raises in ``preflight`` (one line, no traceback);
            :class:`~tasks.modeling.errors.ConfigError` is one during training too.
        preflight_exit: the exit code of a preflight error; None: the error's own ``exit_code`` (else 2).
    """
    import argparse
    import sys

    from tasks.modeling.errors import ConfigError
    from tasks.training.blocks import load_config

    parser = argparse.ArgumentParser(prog=f"python -m tasks.training.{name}", description=(doc or "").split("\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="the run's JSON config")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # the deepspeed launcher
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, schema)
        if cfg.precision == "auto":  # the only check that needs torch (is there fast bf16 here?)
            precision = "fp32" if fp32_when is not None and fp32_when(cfg) else resolve_precision(cfg.precision)
            cfg = cfg.model_copy(update={"precision": precision})
        info = preflight(cfg)
    except (ConfigError, *user_errors) as e:  # type: ignore[misc]  # mypy cannot see a starred tuple of classes
        print(f"{name}: error: {e}", file=sys.stderr)
        return preflight_exit if preflight_exit is not None else int(getattr(e, "exit_code", 2))
    return run_entry(name, lambda: train(cfg, info), user_errors=(ConfigError,))
