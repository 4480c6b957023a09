"""Command lines for the training entry points: one process, torchrun, or the deepspeed launcher (hostfile)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from pipelines.config import LaunchParams


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for the rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def training_command(module: str, config: Path, launch: LaunchParams, root: Path) -> list[str]:
    """The argv that runs ``python -m MODULE --config CONFIG`` under the configured launcher.

    Args:
        module: the entry point, e.g. ``tasks.training.pretrain``.
        config: the run's JSON config.
        launch: launcher, processes, hostfile, port.
        root: the repository (a relative hostfile is under it).
    """
    entry = ["-m", module, "--config", str(config)]
    if launch.launcher == "python":
        return [sys.executable, *entry]
    port = str(launch.master_port or free_port())
    if launch.launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node",
                str(launch.nproc), "--master_addr", "127.0.0.1", "--master_port", port, *entry]
    cmd = [str(Path(sys.executable).parent / "deepspeed"), "--master_port", port]
    if launch.hostfile:
        cmd += ["--hostfile", str(root / launch.hostfile)]
    else:
        cmd += ["--num_nodes", "1", "--num_gpus", str(launch.nproc)]
    return [*cmd, "--module", module, "--config", str(config)]
