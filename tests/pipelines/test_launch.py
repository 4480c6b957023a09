"""Training command lines: one process, torchrun, the deepspeed launcher with a hostfile."""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines.config import LaunchParams
from pipelines.launch import training_command


def test_python_torchrun_and_deepspeed_commands(tmp_path: Path) -> None:
    cfg = tmp_path / "run.json"
    assert training_command("tasks.training.pretrain", cfg, LaunchParams(), tmp_path) == [
        sys.executable, "-m", "tasks.training.pretrain", "--config", str(cfg)]
    tr = training_command("tasks.training.pretrain", cfg, LaunchParams(launcher="torchrun", nproc=2,
                                                                        master_port=29511), tmp_path)
    assert tr == [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                  "--master_addr", "127.0.0.1", "--master_port", "29511", "-m", "tasks.training.pretrain",
                  "--config", str(cfg)]
    ds = training_command("tasks.training.pretrain", cfg, LaunchParams(launcher="deepspeed", nproc=8,
                                                                         hostfile="infra/deepspeed/hostfile",
                                                                         master_port=29512), tmp_path)
    assert ds[0].endswith("/deepspeed") and ds[1:5] == ["--master_port", "29512", "--hostfile",
                                                         str(tmp_path / "infra/deepspeed/hostfile")]
    assert ds[-4:] == ["--module", "tasks.training.pretrain", "--config", str(cfg)]
    port = training_command("m", cfg, LaunchParams(launcher="torchrun"), tmp_path)[10]
    assert 1024 <= int(port) <= 65535  # a free port was picked
