"""Padding shared by the task types' collate functions."""

from __future__ import annotations

from typing import Any

IGNORE = -100
"""Label of positions that carry no loss (a prompt, padding, the sub-words after a word's first)."""


def pad(ids: list[list[int]], *, pad_id: int) -> tuple[Any, Any]:
    """Right-padded ``(input_ids, attention_mask)`` of ``ids``."""
    import torch

    width = max(len(s) for s in ids)
    x = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, seq in enumerate(ids):
        x[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, :len(seq)] = 1
    return x, mask


def collate_per_token(ids: list[list[int]], targets: list[list[int]], *, pad_id: int) -> tuple[Any, Any, Any]:
    """A right-padded batch of per-token targets: ``(input_ids, attention_mask, targets)`` (the collate of every
    type whose targets are a list per token: sft, chat, token_classification)."""
    x, mask = pad(ids, pad_id=pad_id)
    return x, mask, pad_targets(targets, width=x.shape[1])


def pad_targets(targets: list[list[int]], *, width: int) -> Any:
    """Per-token targets right-padded with :data:`IGNORE` to ``width``."""
    import torch

    y = torch.full((len(targets), width), IGNORE, dtype=torch.long)
    for i, seq in enumerate(targets):
        y[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
    return y
