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


def lr_factor(step: int, *, warmup_steps: int, steps: int, decay: str, min_ratio: float) -> float:
    """The learning rate of 0-based ``step`` as a fraction of the peak: linear warmup, then ``decay``.

    Args:
        step: the optimizer step about to run (0-based).
        warmup_steps: steps of linear warmup (``(step + 1) / (warmup_steps + 1)``).
        steps: optimizer steps in all.
        decay: ``cosine`` or ``linear`` decay to ``min_ratio`` at the last step; ``plateau``: constant 1 after warmup
            (:class:`Plateau` scales it on its own).
        min_ratio: the last step's fraction (cosine, linear).
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if decay == "plateau":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, steps - 1 - warmup_steps))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if decay == "cosine" else 1.0 - progress
    return min_ratio + shape * (1.0 - min_ratio)


def set_scaled_lr(optimizer: Any, factor: float) -> None:
    """Set every group's rate to ``factor`` times its own peak (the group's ``peak_lr``; groups may differ, e.g. a
    new head learning faster than the pretrained weights)."""
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * factor


class Plateau:
    """Reduce-on-plateau: multiply the rate by ``factor`` after ``patience`` evaluations without an improvement of
    the (higher-is-better) score by more than ``min_delta``. Its state is a small dict saved in checkpoints.

    Args:
        factor: multiplier of each reduction, in (0, 1).
        patience: evaluations without improvement before a reduction.
        min_delta: smallest score change that counts as an improvement.
    """

    def __init__(self, *, factor: float, patience: int, min_delta: float = 0.0) -> None:
        self.factor, self.patience, self.min_delta = factor, patience, min_delta
        self.scale, self.best, self.bad = 1.0, -math.inf, 0

    def update(self, score: float) -> float:
        """Record one evaluation's score; returns the current scale of the rate."""
        if score > self.best + self.min_delta:
            self.best, self.bad = score, 0
        else:
            self.bad += 1
            if self.bad >= self.patience:
                self.scale, self.bad = self.scale * self.factor, 0
        return self.scale

    def state_dict(self) -> dict[str, float]:
        """Scale, best score and evaluations without improvement."""
        return {"scale": self.scale, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Continue from :meth:`state_dict`."""
        self.scale, self.best, self.bad = float(state["scale"]), float(state["best"]), int(state["bad"])
