"""Next-token loss and the validation loss over fixed windows."""

from __future__ import annotations

import math

import pytest


def test_next_token_loss_is_the_mean_cross_entropy() -> None:
    import torch

    from tasks.training.losses import next_token_loss

    logits = torch.zeros(2, 3, 5)  # uniform over 5 tokens
    targets = torch.tensor([[0, 1, 2], [3, 4, 0]])
    assert float(next_token_loss(logits, targets)) == pytest.approx(math.log(5))
    assert float(next_token_loss(logits, targets, reduction="sum")) == pytest.approx(6 * math.log(5))
    assert next_token_loss(logits.bfloat16(), targets).dtype == torch.float32  # computed in fp32


def test_val_loss_without_a_process_group_averages_every_token() -> None:
    import torch

    from tasks.modeling.llama import build_llama
    from tasks.training.losses import val_loss

    torch.manual_seed(0)
    model = build_llama(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=2,
                        intermediate_size=32, max_position_embeddings=8)
    batches = [(torch.randint(0, 50, (2, 8)), torch.randint(0, 50, (2, 8))) for _ in range(3)]
    loss = val_loss(model, batches)
    assert model.training and 3.0 < loss < 5.0  # back in train mode; about log(50) = 3.9 at init
