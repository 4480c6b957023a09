"""Checkpoint bookkeeping: the run identity a resume must share, run stats written atomically, pruning, RNG states."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.modeling.checkpoint import (
    RUN_IDENTITY_FILE,
    RUN_STATS_FILE,
    check_resume,
    prune,
    record_identity,
    rng_state,
    set_rng_state,
    write_run_stats,
)
from tasks.modeling.errors import ConfigError

IDENTITY = {"lr": 0.003, "seed": 3, "steps": 40, "world_size": 1}


def test_resume_under_other_settings_is_refused_and_steps_only_warn(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    check_resume(checkpoint_dir=tmp_path, identity=IDENTITY)  # nothing to resume: nothing to check
    record_identity(checkpoint_dir=tmp_path, identity=IDENTITY)
    assert json.loads((tmp_path / RUN_IDENTITY_FILE).read_text()) == IDENTITY
    (tmp_path / "latest").write_text("step10")
    check_resume(checkpoint_dir=tmp_path, identity=IDENTITY)
    with pytest.raises(ConfigError, match=r"other settings \(lr: 0.003 -> 0.002, seed: 3 -> 4\)") as err:
        check_resume(checkpoint_dir=tmp_path, identity={**IDENTITY, "lr": 0.002, "seed": 4})
    assert err.value.exit_code == 2
    check_resume(checkpoint_dir=tmp_path, identity={**IDENTITY, "steps": 60}, name="finetune")
    assert "finetune: warning: steps changed from 40 to 60" in capsys.readouterr().err


def test_identity_and_stats_are_written_atomically_and_sweep_leftovers(tmp_path: Path) -> None:
    # a writer killed earlier left its temporary file; the next write removes it
    (tmp_path / f".{RUN_STATS_FILE}.tmp-99999").write_text("half")
    write_run_stats(checkpoint_dir=tmp_path, stats={"tokens_per_second": 1.5, "launch_to_first_step_seconds": 2.0})
    record_identity(checkpoint_dir=tmp_path, identity=IDENTITY)
    assert sorted(p.name for p in tmp_path.iterdir()) == [RUN_IDENTITY_FILE, RUN_STATS_FILE]
    assert json.loads((tmp_path / RUN_STATS_FILE).read_text())["launch_to_first_step_seconds"] == 2.0


def test_prune_keeps_the_newest_tags(tmp_path: Path) -> None:
    for n in (5, 10, 40, 100):
        (tmp_path / f"step{n}").mkdir()
    (tmp_path / "stepping").mkdir()  # not a tag
    prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step100", "step40", "stepping"]


def test_rng_state_round_trips() -> None:
    import random

    import numpy as np
    import torch

    state = rng_state()
    draws = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(draws[0], again[0]) and (draws[1] == again[1]).all() and draws[2] == again[2]


def test_a_latest_caught_half_rewritten_resumes_the_newest_step(tmp_path: Path) -> None:
    # DeepSpeed truncates `latest` and then writes the new tag: a SIGKILL in between left it empty, and the run
    # could not resume at all
    from tasks.modeling.checkpoint import latest_tag

    for step in (8, 16):
        (tmp_path / f"step{step}").mkdir()
    (tmp_path / "latest").write_text("step8")
    assert latest_tag(tmp_path) == "step8"
    (tmp_path / "latest").write_text("")
    assert latest_tag(tmp_path) == "step16"
    (tmp_path / "latest").write_text("step99")  # names a directory that is gone
    assert latest_tag(tmp_path) == "step16"
