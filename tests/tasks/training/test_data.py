"""Training data order: a function of (seed, step), split over ranks; fixed validation windows."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_random_windows_are_a_function_of_seed_and_step(data: dict[str, Path]) -> None:
    import torch

    from tasks.tokens import load_tokens
    from tasks.training.data import DataTooSmallError, RandomWindows, val_windows

    tokens = load_tokens(data["tokens"], "train")
    run = RandomWindows(tokens, 16, 4, seed=7)
    batches = [next(run) for _ in range(5)]
    resumed = RandomWindows(tokens, 16, 4, seed=7)
    resumed.load_state_dict({"seed": 7, "step": 3})
    assert all(torch.equal(a, b) for a, b in zip(next(resumed), batches[3], strict=True))
    x, y = batches[0]
    assert x.dtype == torch.int64 and x.shape == (4, 16) and torch.equal(x[:, 1:], y[:, :-1])
    # two ranks of batch 2 together see the one-process batch of 4
    halves = [RandomWindows(tokens, 16, 2, seed=7, rank=r, world_size=2).batch(0)[0] for r in (0, 1)]
    assert torch.equal(torch.cat(halves), x)
    first, again = list(val_windows(tokens, 16, 4, 3)), list(val_windows(tokens, 16, 4, 3))
    assert len(first) == 3 and all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    with pytest.raises(DataTooSmallError, match="fewer than context"):
        RandomWindows(tokens[:10], 16, 4, seed=0)
