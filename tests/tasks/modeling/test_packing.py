"""Packed batches: the first-fit-decreasing packer, the row layout, and the proof that a packed batch gives every
target token the loss (and the summed loss the gradient) of its example run alone, on lmforge's own Llama and tiny
GPT-2 and Llama checkpoints, under eager and sdpa attention."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from tasks.modeling.packing import IGNORE, collate_packed, fill, pack, packed_forward


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """The textbook packer, one row scan per example: what :func:`pack`'s tree must reproduce."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        row = next((r for r, free in enumerate(room) if free >= lengths[i]), len(rows))
        if row == len(rows):
            rows.append([])
            room.append(capacity)
        rows[row].append(i)
        room[row] -= lengths[i]
    return [sorted(r) for r in rows]


def test_pack_is_first_fit_decreasing() -> None:
    assert pack([5, 3, 7, 2, 2, 9, 1], capacity=10) == [[5, 6], [1, 2], [0, 3, 4]]
    rng = random.Random(0)
    for n, capacity in ((1, 8), (37, 64), (500, 256), (1000, 33)):
        lengths = [rng.randint(1, capacity) for _ in range(n)]
        rows = pack(lengths, capacity=capacity)
        assert rows == first_fit_decreasing(lengths, capacity)
        assert sorted(i for r in rows for i in r) == list(range(n))
        assert all(sum(lengths[i] for i in r) <= capacity for r in rows)
    with pytest.raises(ValueError, match="example 1 has 11 tokens"):
        pack([3, 11], capacity=10)
    with pytest.raises(ValueError, match="example 0 has 0 tokens"):
        pack([0], capacity=10)


def test_rows_restart_positions_and_drop_each_examples_first_target() -> None:
    ids = [[11, 12, 13], [21, 22], [31, 32, 33, 34, 35]]
    targets = [[IGNORE, 12, 13], [21, 22], [IGNORE, IGNORE, 33, 34, 35]]
    x, pos, y = collate_packed(ids, targets, pad_id=0)  # capacity: the longest example, 5
    assert x.tolist() == [[31, 32, 33, 34, 35], [11, 12, 13, 21, 22]]
    assert pos.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 0, 1]]
    assert y.tolist() == [[IGNORE, IGNORE, 33, 34, 35], [IGNORE, 12, 13, IGNORE, 22]]
    x, pos, y = collate_packed(ids, targets, pad_id=0, capacity=8)
    assert x.tolist() == [[11, 12, 13, 31, 32, 33, 34, 35], [21, 22, 0, 0, 0, 0, 0, 0]]
    assert pos.tolist() == [[0, 1, 2, 0, 1, 2, 3, 4], [0, 1, 0, 1, 2, 3, 4, 5]]  # the tail: a segment of its own
    assert y[1].tolist() == [IGNORE, 22] + [IGNORE] * 6


def test_fill_counts_real_tokens_against_padded_and_packed_ones() -> None:
    stats = fill([10, 2, 2, 2], batch_size=4)
    assert stats == {"real_tokens": 16, "padded_fill": 16 / 40, "packed_fill": 16 / 20}


def model_of(kind: str, root: Path, impl: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    from tasks.modeling.llama import build_llama
    from tests.assets.checkpoints import save_checkpoint

    torch.manual_seed(0)
    if kind == "lmforge":
        model = build_llama(vocab_size=300, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                            intermediate_size=64, max_position_embeddings=64, dtype="float32")
        model.config._attn_implementation = impl
        return model.eval()
    if not (root / kind).is_dir():
        save_checkpoint(kind, root / kind, positions=64)
    return AutoModelForCausalLM.from_pretrained(str(root / kind), attn_implementation=impl,
                                                dtype=torch.float32).eval()


def per_token(logits: Any, targets: Any) -> Any:
    import torch.nn.functional as F

    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets[:, 1:].flatten(), ignore_index=IGNORE,
                           reduction="none").view(targets.shape[0], -1)


@pytest.fixture(scope="module")
def examples() -> tuple[list[int], list[list[int]], list[list[int]]]:
    rng = random.Random(1)
    lengths = [7, 13, 3, 21, 9, 1, 16, 5, 2, 30]
    ids = [[rng.randrange(3, 250) for _ in range(n)] for n in lengths]
    targets = [[IGNORE] * (n // 3) + s[n // 3:] for n, s in zip(lengths, ids, strict=True)]  # a prompt, a reply
    return lengths, ids, targets


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("kind", ["lmforge", "gpt2", "llama"])
def test_a_packed_batch_gives_each_token_the_loss_it_has_alone(tmp_path_factory: pytest.TempPathFactory,
                                                                examples: Any, kind: str, impl: str) -> None:
    import torch

    lengths, ids, targets = examples
    model = model_of(kind, tmp_path_factory.getbasetemp() / "packing", impl)
    x, pos, y = collate_packed(ids, targets, pad_id=0, capacity=40)
    rows = pack(lengths, capacity=40)
    assert len(rows) < len(ids) and any(len(r) > 2 for r in rows)  # rows really hold several examples
    with torch.no_grad():
        packed = per_token(packed_forward(model, x, pos), y)
        unmasked = per_token(model(input_ids=x, use_cache=False).logits, y)  # one causal sequence per row
    worst = leaked = 0.0
    # no loss anywhere else (a row's boundary, the padding tail): each example's first token has no target
    assert int((packed != 0).sum()) == sum(sum(t != IGNORE for t in targets[i][1:]) for i in range(len(ids)))
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            alone_x, alone_y = torch.tensor([ids[i]]), torch.tensor([targets[i]])
            with torch.no_grad():
                alone = per_token(model(input_ids=alone_x, use_cache=False).logits, alone_y)[0]
            scored = alone_y[0, 1:] != IGNORE
            mine = packed[r, at:at + lengths[i] - 1]
            assert torch.equal(mine != 0, scored)  # exactly the example's own target tokens carry loss
            if scored.any():
                worst = max(worst, float((mine[scored] - alone[scored]).abs().max()))
                leaked = max(leaked, float((unmasked[r, at:at + lengths[i] - 1][scored] - alone[scored]).abs().max()))
            at += lengths[i]
    assert worst < 1e-5, f"packed losses differ from the examples' own by {worst}"
    assert leaked > 1e-3  # the control: without the restarts, examples do see each other, and the test notices


@pytest.mark.parametrize("kind", ["lmforge", "gpt2"])
def test_a_packed_batch_gives_the_gradient_of_the_examples_alone(tmp_path_factory: pytest.TempPathFactory,
                                                                 examples: Any, kind: str) -> None:
    import torch

    lengths, ids, targets = examples
    model = model_of(kind, tmp_path_factory.getbasetemp() / "packing", "sdpa")
    x, pos, y = collate_packed(ids, targets, pad_id=0, capacity=40)
    per_token(packed_forward(model, x, pos), y).sum().backward()
    packed = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    for i in range(len(ids)):
        per_token(model(input_ids=torch.tensor([ids[i]]), use_cache=False).logits,
                  torch.tensor([targets[i]])).sum().backward()
    for name, p in model.named_parameters():
        assert torch.allclose(packed[name], p.grad, atol=1e-5, rtol=1e-4), name
