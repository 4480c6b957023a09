"""The learning-rate schedule and when periodic work (logging, evaluation, checkpoints) is due.

A schedule is a pure function of the step, so a resumed run continues it exactly; the recipe writes the value into
the torch optimizer's groups, which drive DeepSpeed's update.
"""

from __future__ import annotations

import math
from typing import Any


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, steps: int) -> float:
    """Learning rate of 0-based ``step``: linear warmup to ``lr``, then cosine decay to ``min_lr`` at the end.

    Args:
        step: the optimizer step about to run (0-based).
        lr: peak learning rate, reached at the end of warmup.
        min_lr: learning rate of the last step.
        warmup_steps: steps of linear warmup (``lr * (step + 1) / (warmup_steps + 1)``).
        steps: optimizer steps in all.
    """
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    span = max(1, steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def set_lr(optimizer: Any, lr: float) -> None:
    """Set ``lr`` on every parameter group of a torch optimizer (the one inside the DeepSpeed engine)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def due(step: int, *, every: int, last: int) -> bool:
    """Whether periodic work runs after ``step`` (1-based count of steps done): every ``every`` steps and at the
    ``last`` one, so a run always ends with a log line, a validation pass and a checkpoint."""
    return step % every == 0 or step == last
