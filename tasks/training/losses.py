"""Losses: next-token cross-entropy for training and the validation loss over fixed windows.

A distillation recipe adds its teacher-student loss here; the loop around it stays the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def next_token_loss(logits: Any, targets: Any, *, reduction: str = "mean") -> Any:
    """Cross-entropy of ``logits`` (batch, time, vocab) against ``targets`` (batch, time), computed in fp32."""
    import torch.nn.functional as F

    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction=reduction)


def val_loss(engine: Any, batches: Iterable[tuple[Any, Any]]) -> float:
    """Mean next-token loss of ``engine`` over ``batches``, averaged over all ranks (every rank must call it).

    Args:
        engine: the DeepSpeed engine (or any module on ``engine.device`` returning ``.logits``).
        batches: this rank's (inputs, targets) windows, e.g. :func:`tasks.training.data.val_windows`.
    """
    import torch
    import torch.distributed as dist

    engine.eval()
    total = torch.zeros(2, dtype=torch.float64, device=engine.device)
    with torch.no_grad():
        for x, y in batches:
            x, y = x.to(engine.device), y.to(engine.device)
            total[0] += next_token_loss(engine(input_ids=x).logits, y, reduction="sum").double()
            total[1] += y.numel()
    engine.train()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
    return float(total[0] / total[1])
