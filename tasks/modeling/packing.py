"""Packed batches for causal-LM fine-tuning: several examples per row, each attending only to itself.

:func:`pack` puts examples into rows by first-fit decreasing (longest first, each into the first row with room; ties
by index, so the same lengths always give the same rows). :func:`collate_packed` lays the rows out as
``(input_ids, position_ids, targets)``: position ids restart at 0 at each example, and the row's padding tail is a
segment of its own. The model is called with ``position_ids`` and no attention mask; transformers (5.x,
``masking_utils.find_packed_sequence_indices``) then reads the restarts as sequence boundaries and builds a
block-diagonal causal mask for its eager, sdpa and flex attention (flash attention uses the same position ids), so no
example sees another, and absolute position embeddings (GPT-2's) see each example from 0 as when it runs alone.

The first token of each example gets no target: in a row it would be predicted from the previous example's last
token, which alone it never is. So a packed batch gives every target token the loss it has when its example runs on
its own (``tests/tasks/modeling/test_packing.py`` checks it to 1e-5 in fp32).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

IGNORE = -100
"""Target of positions without loss (prompts, each example's first token, padding)."""


def pack(lengths: Sequence[int], *, capacity: int) -> list[list[int]]:
    """Rows of example indices, each row's lengths summing to at most ``capacity`` (first-fit decreasing).

    Args:
        lengths: tokens per example.
        capacity: tokens per row.

    Returns:
        The rows, in the order they were opened (the first holds the longest example), each row's indices sorted.

    Raises:
        ValueError: an example is longer than ``capacity`` or empty.
    """
    n = len(lengths)
    if bad := [i for i, length in enumerate(lengths) if not 0 < length <= capacity]:
        raise ValueError(f"example {bad[0]} has {lengths[bad[0]]} tokens: every example needs 1 to {capacity}")
    # a max-tree over rows' free space; rows not yet opened are empty (free = capacity) and come after the opened
    # ones, so the leftmost leaf with room is the first opened row that fits, or else the next new row
    size = 1
    while size < max(n, 1):
        size *= 2
    free = [capacity] * (2 * size)
    rows: list[list[int]] = []
    for i in sorted(range(n), key=lambda k: (-lengths[k], k)):
        node = 1
        while node < size:
            node = 2 * node if free[2 * node] >= lengths[i] else 2 * node + 1
        row = node - size
        if row == len(rows):
            rows.append([])
        rows[row].append(i)
        free[node] -= lengths[i]
        node //= 2
        while node:
            free[node] = max(free[2 * node], free[2 * node + 1])
            node //= 2
    return [sorted(row) for row in rows]


def collate_packed(ids: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], *, pad_id: int,
                   capacity: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A packed batch of causal-LM examples.

    Args:
        ids: token ids per example.
        targets: per-token targets per example (-100: no loss), as long as its ids.
        pad_id: padding id of the rows' tails.
        capacity: tokens per row; None: the longest example's length (rows no wider than a padded batch's).

    Returns:
        ``(input_ids, position_ids, targets)``, each (rows, width) long tensors, width the fullest row's length;
        call the model with ``input_ids`` and ``position_ids`` only (see the module docstring).
    """
    import torch

    lengths = [len(s) for s in ids]
    rows = pack(lengths, capacity=capacity or max(lengths))
    width = max(sum(lengths[i] for i in row) for row in rows)
    x = torch.full((len(rows), width), pad_id, dtype=torch.long)
    y = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            n = lengths[i]
            x[r, at:at + n] = torch.tensor(list(ids[i]))
            y[r, at:at + n] = torch.tensor(list(targets[i]))
            y[r, at] = IGNORE
            pos[r, at:at + n] = torch.arange(n)
            at += n
        pos[r, at:] = torch.arange(width - at)  # the tail: a segment of its own
    return x, pos, y


def packed_forward(model: Any, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """The logits of a causal LM (or a peft model around one) on a packed batch: no attention mask (transformers
    builds the block-diagonal one from the position ids) and no cache (a cache turns the packed detection off)."""
    logits: torch.Tensor = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
    return logits


def fill(lengths: Sequence[int], *, batch_size: int, capacity: int | None = None) -> dict[str, float]:
    """How much of a batch's tokens are real, padded (``batch_size`` examples to the longest in each batch) and
    packed (each batch's examples packed into rows of ``capacity``, None: the batch's longest), over consecutive
    batches of ``lengths``."""
    real = padded = packed = 0
    for at in range(0, len(lengths), batch_size):
        chunk = list(lengths[at:at + batch_size])
        rows = pack(chunk, capacity=capacity or max(chunk))
        real += sum(chunk)
        padded += len(chunk) * max(chunk)
        packed += len(rows) * max(sum(chunk[i] for i in row) for row in rows)
    return {"real_tokens": real, "padded_fill": real / padded, "packed_fill": real / packed}
