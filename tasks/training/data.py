"""Language-model batches over a packed token file: seeded random training windows and fixed validation windows.

A training batch is a pure function of ``(seed, index)``: :class:`RandomWindows` draws the starts of batch ``index``
from ``numpy.random.default_rng([seed, index])``, so the only state worth saving is the index, and a run resumed at
index k sees exactly the batches an uninterrupted run saw at k. Every rank draws the same global batch of
``batch_size * world_size`` windows and keeps its own slice, so the data seen per step does not depend on how the
global batch is split over processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch


class DataTooSmallError(ValueError):
    """A split holds fewer tokens than one window needs; the message says what to change."""

    exit_code = 2


def check_tokens(tokens: np.ndarray, context: int, split: str = "train") -> None:
    """Raise :class:`DataTooSmallError` unless ``tokens`` holds at least one window of ``context + 1`` tokens."""
    if context < 1:
        raise DataTooSmallError(f"context must be at least 1, got {context}")
    if len(tokens) < context + 1:
        raise DataTooSmallError(f"the {split} split has {len(tokens)} tokens, fewer than context + 1 = {context + 1}: "
                                "lower context or give the tokenizer stage more text")


def _windows(tokens: np.ndarray, starts: np.ndarray, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``tokens[s : s + context]`` and next-token targets ``tokens[s + 1 : s + context + 1]`` per start."""
    import numpy as np
    import torch

    block = np.stack([np.asarray(tokens[s:s + context + 1], dtype=np.int64) for s in starts.tolist()])
    block_t = torch.from_numpy(block)
    return block_t[:, :-1].contiguous(), block_t[:, 1:].contiguous()


class RandomWindows:
    """Seeded random training windows; iterate for ``(x, y)`` int64 tensors of shape ``(batch_size, context)``.

    Args:
        tokens: the split's token ids (a memmap from ``tasks.tokens.load_tokens``).
        context: tokens per window (``y`` is ``x`` shifted by one, so a window reads ``context + 1`` tokens).
        batch_size: windows per batch on this rank.
        seed: the data seed.
        rank: this process's rank.
        world_size: processes sharing each global batch.
        step: the index of the next batch to draw (the number of batches drawn so far).
    """

    def __init__(self, tokens: np.ndarray, context: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, step: int = 0) -> None:
        check_tokens(tokens, context, "train")
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need batch_size >= 1 and 0 <= rank < world_size, got {batch_size}, {rank}, "
                             f"{world_size}")
        self.tokens, self.context, self.batch_size = tokens, context, batch_size
        self.seed, self.rank, self.world_size, self.step = seed, rank, world_size, step

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number ``index`` for this rank (independent of what was drawn before)."""
        import numpy as np

        rng = np.random.default_rng([self.seed, index])
        starts = rng.integers(0, len(self.tokens) - self.context, size=self.batch_size * self.world_size)
        mine = starts[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        return _windows(self.tokens, mine, self.context)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.batch(self.step)
        self.step += 1
        return out

    def state_dict(self) -> dict[str, int]:
        """All the sampler's state: the seed and the index of the next batch."""
        return {"seed": self.seed, "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved :meth:`state_dict` (the seed must match: another seed is another data order)."""
        if int(state["seed"]) != self.seed:
            raise ValueError(f"saved data seed {state['seed']} differs from this run's seed {self.seed}")
        self.step = int(state["step"])


def val_windows(tokens: np.ndarray, context: int, batch_size: int, num_batches: int, rank: int = 0,
                world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The same ``num_batches`` validation batches every time: windows at evenly spaced starts over the split.

    Evenly spaced rather than random so that every evaluation of every run measures the same tokens, and so that
    the whole split is covered however small ``num_batches`` is. Rank ``r`` gets its slice of each global batch.
    """
    import numpy as np

    check_tokens(tokens, context, "val")
    total = num_batches * batch_size * world_size
    starts = np.linspace(0, len(tokens) - context - 1, num=total).astype(np.int64)
    for b in range(num_batches):
        global_batch = starts[b * batch_size * world_size:(b + 1) * batch_size * world_size]
        yield _windows(tokens, global_batch[rank * batch_size:(rank + 1) * batch_size], context)


def unigram_perplexity(train: Any, val: Any, vocab_size: int) -> float:
    """Perplexity on ``val`` of a unigram model fitted on ``train`` (add-one smoothing): the floor an LM must beat.

    Args:
        train: token ids (a memmap is read in one vectorised pass).
        val: token ids.
        vocab_size: number of ids.
    """
    import numpy as np

    counts = np.bincount(np.asarray(train, dtype=np.int64), minlength=vocab_size).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(np.exp(-log_p[np.asarray(val, dtype=np.int64)].mean()))
