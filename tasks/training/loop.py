"""The loop the task recipes share: resume, then per step the learning rate, one optimizer step over ``grad_accum``
micro-batches of one task, logging, validation passes with early stopping, checkpoints.

Finetune and distill differ in what they train and in their loss, not in this loop: a recipe hands :func:`fit` its
engine, its :class:`tasks.modeling.evaluation.Evaluator` and its ``loss_fn(module, task, x, mask, y) -> (loss,
parts)``; finetune also a ``before_step`` hook (gradual unfreezing, idle heads). A step's task and batch are a function
of (seed, step) (``tasks.modeling.encoding.TaskBatches``), so a resumed run sees the same data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.modeling import checkpoint
from tasks.training.schedule import due, lr_factor, set_scaled_lr
from tasks.training.telemetry import seconds_since_launch

LossFn = Callable[[Any, str, Any, Any, Any], tuple[Any, tuple[float, ...]]]
"""``loss_fn(module, task, input_ids, attention_mask, targets) -> (loss tensor, extra parts as floats)``."""


@dataclass
class Progress:
    """Where a run stands: the step, whether it stopped early, and this process's timings."""

    step: int = 0
    stopped_early: bool = False
    resumed_from: int | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def new_evaluator(cfg: Any, ts: Any, *, is_main: bool, checkpoint_dir: Path, record_lr_scale: bool = False) -> Any:
    """A task recipe's :class:`tasks.modeling.evaluation.Evaluator` from its settings: the task set ``ts``, early
    stopping, reduce-on-plateau when the schedule says so (or always tracked, ``record_lr_scale``: each history entry
    then has its ``lr_scale``), MLflow from rank 0, the evaluations file in ``checkpoint_dir``."""
    from tasks.modeling.evaluation import EVALUATIONS_FILE, Evaluator
    from tasks.modeling.metrics import EarlyStopper
    from tasks.training.schedule import Plateau
    from tasks.training.telemetry import MlflowSink

    on_plateau = cfg.schedule == "plateau"
    stop = cfg.early_stopping
    plateau = Plateau(factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_delta=stop.min_delta) \
        if on_plateau or record_lr_scale else None
    return Evaluator(data=ts.data, kinds=ts.kinds, labels=ts.labels, batch_size=cfg.batch_size, pad_id=ts.pad_id,
                     max_examples=cfg.eval_max_examples, zero3=cfg.zero_stage == 3, is_main=is_main,
                     sink=MlflowSink.to(cfg.mlflow, enabled=is_main),
                     stopper=EarlyStopper(patience=stop.patience, min_delta=stop.min_delta, enabled=stop.enabled),
                     plateau=plateau, use_plateau=on_plateau, evaluations_path=Path(checkpoint_dir) / EVALUATIONS_FILE)


def train_step(engine: Any, batches: Any, step: int, *, grad_accum: int, loss_fn: LossFn,
               world_size: int) -> tuple[str, list[float], int]:
    """One optimizer step over ``grad_accum`` micro-batches of data step ``step``.

    Returns:
        (the task, ``[loss, *parts]`` each averaged over the micro-batches, tokens seen by all ranks).
    """
    sums: list[float] = []
    tokens = 0
    task = batches.task(step)
    for micro in range(grad_accum):
        task, (x, mask, y) = batches.batch(step, micro)
        x, mask, y = x.to(engine.device), mask.to(engine.device), y.to(engine.device)
        loss, parts = loss_fn(engine, task, x, mask, y)
        engine.backward(loss)
        engine.step()
        values = (float(loss.detach()), *parts)
        sums = [s + v / grad_accum for s, v in zip(sums or [0.0] * len(values), values, strict=True)]
        tokens += int(mask.sum()) * world_size
    return task, sums, tokens


def resume(engine: Any, evaluator: Any, *, checkpoint_dir: Path, name: str, say: Callable[[str], None]) -> Progress:
    """Continue from ``checkpoint_dir/latest`` if present: weights, optimizer, RNG (DeepSpeed and
    :mod:`tasks.modeling.checkpoint`), the step, the evaluator's state (history, stopping, plateau, best weights)."""
    progress = Progress()
    if (loaded := checkpoint.load(engine, checkpoint_dir=checkpoint_dir)) is not None:
        path, client = loaded
        progress.step = progress.resumed_from = int(client["step"])
        progress.stopped_early = bool(client["stopped_early"])
        evaluator.load_state_dict(client)
        say(f"{name}: resumed from {path} at step {progress.step}")
    return progress


def fit(engine: Any, optimizer: Any, *, cfg: Any, progress: Progress, batches: Any, evaluator: Any, loss_fn: LossFn,
        parts: tuple[str, ...], checkpoint_dir: Path, say: Callable[[str], None], name: str,
        world_size: int, is_main: bool, before_step: Callable[[int], None] | None = None) -> Progress:
    """Train up to ``cfg.steps`` (or an early stop), evaluating at the start, every ``cfg.eval_every`` steps and at
    the end, checkpointing every ``cfg.checkpoint_every``; returns ``progress`` with this run's timings in ``stats``.

    Args:
        cfg: the recipe's settings (the blocks of ``tasks.training.config.TaskTrainingSettings``).
        parts: the names of ``loss_fn``'s loss and extra parts, logged per task (``train_loss_<task>``...).
        before_step: called with the step before its learning rate is set (finetune: what trains now).
    """
    import torch

    names, sink = evaluator.names, evaluator.sink  # one MLflow sink for the run: the evaluator's
    if progress.step == 0:
        evaluator(engine, 0)  # the starting point
    launch_to_first_step = seconds_since_launch()
    say(f"{name}: first step {launch_to_first_step:.1f} s after launch")
    sink.log({"launch_to_first_step_seconds": launch_to_first_step}, progress.step)
    start_step, train_seconds, log_tokens, log_seconds, run_tokens = progress.step, 0.0, 0, 0.0, 0
    log_loss = torch.zeros(len(names), len(parts) + 1, dtype=torch.float64)  # per task: parts..., steps
    while progress.step < cfg.steps and not progress.stopped_early:
        t0 = time.perf_counter()
        step = progress.step
        if before_step is not None:
            before_step(step)
        factor = lr_factor(step, warmup_steps=cfg.warmup_steps, steps=cfg.steps, decay=cfg.schedule,
                           min_ratio=cfg.min_lr_ratio) * (evaluator.plateau.scale if evaluator.plateau else 1.0)
        set_scaled_lr(optimizer, factor)
        task, sums, tokens = train_step(engine, batches, step, grad_accum=cfg.grad_accum, loss_fn=loss_fn,
                                        world_size=world_size)
        evaluator.record(task, sums[0] * cfg.grad_accum, cfg.grad_accum)
        log_loss[names.index(task)] += torch.tensor([*sums, 1.0], dtype=torch.float64)
        log_tokens += tokens
        progress.step = step = step + 1
        elapsed = time.perf_counter() - t0
        train_seconds, log_seconds = train_seconds + elapsed, log_seconds + elapsed
        if due(step, every=cfg.log_every, last=cfg.steps):
            metrics = {"lr": cfg.lr * factor, "head_lr": cfg.head_lr * factor,
                       "tokens_per_second": log_tokens / log_seconds}
            for j, t in enumerate(names):
                if log_loss[j, -1]:
                    metrics.update({f"{k}_{t}": float(log_loss[j, c] / log_loss[j, -1]) for c, k in enumerate(parts)})
            say(f"step {step:>6} | " + " | ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
            sink.log(metrics, step)
            run_tokens += log_tokens
            log_tokens, log_seconds = 0, 0.0
            log_loss = torch.zeros(len(names), len(parts) + 1, dtype=torch.float64)
        if due(step, every=cfg.eval_every, last=cfg.steps) and evaluator(engine, step):
            progress.stopped_early = step < cfg.steps
            say(f"{name}: early stop at step {step}: no val_score gain above {cfg.early_stopping.min_delta} in "
                f"{cfg.early_stopping.patience} evaluations; best step {evaluator.stopper.best_step}")
        if due(step, every=cfg.checkpoint_every, last=cfg.steps) or progress.stopped_early:
            checkpoint.save(engine, checkpoint_dir=checkpoint_dir, step=step, keep=cfg.keep_checkpoints,
                            is_main=is_main, client_state={"step": step, "stopped_early": progress.stopped_early,
                                                           **evaluator.state_dict()})
    run_tokens += log_tokens
    if not evaluator.history or evaluator.history[-1]["step"] != progress.step:
        evaluator(engine, progress.step)
    progress.stats = {"resumed_from_step": progress.resumed_from, "steps_this_run": progress.step - start_step,
                      "tokens_per_second": round(run_tokens / train_seconds, 1) if train_seconds else None,
                      "train_seconds": round(train_seconds, 3), "launch_to_first_step_seconds": launch_to_first_step}
    return progress
