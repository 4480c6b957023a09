"""The learning-rate schedule and the periodic-work rule."""

from __future__ import annotations

import pytest

from tasks.training.schedule import due, lr_at, set_lr


def test_lr_schedule_warms_up_then_decays_to_min_lr() -> None:
    lrs = [lr_at(s, lr=1.0, min_lr=0.1, warmup_steps=4, steps=20) for s in range(20)]
    assert lrs[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8]) and lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False)) and lrs[-1] == pytest.approx(0.1)
    assert lr_at(0, lr=1.0, min_lr=0.1, warmup_steps=0, steps=1) == pytest.approx(1.0)  # one step: no division by 0


def test_periodic_work_is_due_every_n_steps_and_at_the_last() -> None:
    assert [s for s in range(1, 24) if due(s, every=10, last=23)] == [10, 20, 23]


def test_set_lr_sets_every_group() -> None:
    class Opt:
        param_groups = [{"lr": 0.0}, {"lr": 0.0, "weight_decay": 0.0}]

    opt = Opt()
    set_lr(opt, 0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.5]
