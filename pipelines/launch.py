"""Command lines for the training entry points: one process, torchrun, or the deepspeed launcher (hostfile)."""

from __future__ import annotations

import re
import socket
import sys
from pathlib import Path

from pipelines.config.pretrain import LaunchParams

_HOST_LINE = re.compile(r"^(\S+)\s+slots=(\d+)\s*$")  # DeepSpeed's hostfile grammar: "HOST slots=N"
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


class LaunchConfigError(ValueError):
    """The launch settings cannot start the processes (missing or malformed hostfile). Exit code 2."""

    exit_code = 2


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for the rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_hostfile(path: Path) -> dict[str, int]:
    """Hosts and their slots from a DeepSpeed hostfile, checked here rather than by the launcher, which falls
    back to local resources when the file is missing.

    Raises:
        LaunchConfigError: missing file, a line that is not ``HOST slots=N``, a repeated host, no hosts.
    """
    if not path.is_file():
        raise LaunchConfigError(f"pretrain.launch.hostfile: {path} does not exist; write one line per node, "
                                "'HOST slots=N' (see infra/deepspeed/hostfile)")
    hosts: dict[str, int] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _HOST_LINE.match(line)
        if not match or int(match.group(2)) < 1:
            raise LaunchConfigError(f"{path}:{number}: {raw.strip()!r} is not 'HOST slots=N' with N >= 1")
        if match.group(1) in hosts:
            raise LaunchConfigError(f"{path}:{number}: host {match.group(1)} is listed twice")
        hosts[match.group(1)] = int(match.group(2))
    if not hosts:
        raise LaunchConfigError(f"{path} lists no host; write one line per node, 'HOST slots=N'")
    return hosts


def is_local(hosts: dict[str, int]) -> bool:
    """Whether a hostfile names this machine alone (so no ssh is needed to start its processes)."""
    return len(hosts) == 1 and set(hosts) <= _LOCAL_HOSTS | {socket.gethostname()}


def training_command(module: str, config: Path, launch: LaunchParams, root: Path) -> list[str]:
    """The argv that runs ``python -m MODULE --config CONFIG`` under the configured launcher.

    Args:
        module: the entry point, e.g. ``tasks.training.pretrain``.
        config: the run's JSON config.
        launch: launcher, processes, hostfile, rendezvous address and port.
        root: the repository (a relative hostfile is under it).

    Raises:
        LaunchConfigError: the hostfile is missing or malformed.
    """
    entry = ["-m", module, "--config", str(config)]
    if launch.launcher == "python":
        return [sys.executable, *entry]
    port = str(launch.master_port or free_port())
    if launch.launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node",
                str(launch.nproc), "--master_addr", launch.master_addr or "127.0.0.1", "--master_port", port, *entry]
    cmd = [str(Path(sys.executable).parent / "deepspeed"), "--master_port", port]
    if not launch.hostfile:
        cmd += ["--master_addr", launch.master_addr or "127.0.0.1", "--num_nodes", "1", "--num_gpus",
                str(launch.nproc)]
        return [*cmd, "--module", module, "--config", str(config)]
    hostfile = root / launch.hostfile
    hosts = read_hostfile(hostfile)
    cmd += ["--hostfile", str(hostfile)]
    if launch.node_rank is not None and launch.node_rank >= len(hosts):
        raise LaunchConfigError(f"pretrain.launch.node_rank {launch.node_rank} is not the index of a host in "
                                f"{hostfile} ({len(hosts)} hosts: 0 to {len(hosts) - 1})")
    if launch.node_rank is not None:  # each node starts its own processes; nobody logs in anywhere
        cmd += ["--no_ssh", "--node_rank", str(launch.node_rank), "--master_addr", str(launch.master_addr)]
    elif is_local(hosts):  # one local host: DeepSpeed starts its slots here, but would still probe ssh first
        cmd += ["--no_ssh_check", "--master_addr", launch.master_addr or "127.0.0.1"]
    elif launch.master_addr:
        cmd += ["--master_addr", launch.master_addr]
    return [*cmd, "--module", module, "--config", str(config)]
