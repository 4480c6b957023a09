"""Launching the training entry points, for every training stage: the run config, the command line (one process,
torchrun, or the deepspeed launcher with a hostfile), the output streamed into the flow's log, the exit code mapped
to an error."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.artifacts import atomic_write_text
from pipelines.config.launch import LaunchParams
from pipelines.net import free_port

LAUNCH_TIME_ENV = "LMFORGE_LAUNCH_TIME"
"""The launch's wall-clock time, read by the entry point (``tasks.training.telemetry``, same name)."""

_HOST_LINE = re.compile(r"^(\S+)\s+slots=(\d+)\s*$")  # DeepSpeed's hostfile grammar: "HOST slots=N"
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


class LaunchConfigError(ValueError):
    """The launch settings cannot start the processes (missing or malformed hostfile). Exit code 2."""

    exit_code = 2


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


# ----------------------------------------------------------------------------------------------- running it
class TrainingError(Exception):
    """The training process failed; its output above says why. Exit code 1 (2 for a config it rejected)."""

    exit_code = 1


class TrainingConfigError(TrainingError):
    """The training entry point rejected its config (model shape, data size...): fix the params it names. Exit
    code 2."""

    exit_code = 2


def write_run_config(path: Path, config: dict[str, Any]) -> Path:
    """Write a training run's JSON config atomically (sorted keys, so the same settings give the same file)."""
    atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


def run_streaming(cmd: list[str], cwd: Path, env: dict[str, str], log: logging.Logger,
                  on_line: Callable[[str], bool] | None = None) -> tuple[int, list[str]]:
    """Run ``cmd``, logging each output line as it comes; returns the exit code and the last 20 lines.

    ``on_line`` sees every line; when it returns True the processes are stopped (SIGTERM to the launcher's process
    group, SIGKILL after 30 s) and the exit code is the one they ended with.
    """
    tail: list[str] = []
    # its own process group, stopped as a whole: a launcher's ranks must not outlive a pruned trial, Ctrl-C or
    # SIGTERM of the flow (they would keep training, and writing checkpoints, with nobody reading their output)
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1, start_new_session=True) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                line = line.rstrip()
                log.info("%s", line)
                tail = (tail + [line])[-20:]
                if on_line is not None and on_line(line):
                    stop_group(proc)
                    break
        except BaseException:
            stop_group(proc, timeout=10)
            raise
        return proc.wait(), tail


def stop_group(proc: subprocess.Popen[str] | subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM the process group ``proc`` leads (a launcher and its ranks), SIGKILL it after ``timeout`` s."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def check_exit(code: int, tail: list[str]) -> None:
    """Map a training process's exit code to an error naming its last output line.

    Raises:
        TrainingConfigError: exit code 2, the entry point rejected its config before training.
        TrainingError: any other non-zero exit code.
    """
    if code == 0:
        return
    last = next((t for t in reversed(tail) if t.strip()), "")
    error = TrainingConfigError if code == 2 else TrainingError
    raise error(f"training exited with code {code}: {last}")


def launch_training(module: str, config_path: Path, launch: LaunchParams, root: Path, *, log: logging.Logger,
                    on_command: Callable[[list[str]], None] | None = None,
                    on_line: Callable[[str], bool] | None = None) -> int:
    """Start ``python -m MODULE --config CONFIG_PATH`` under the configured launcher and stream its output.

    The launch time goes to the processes in ``LMFORGE_LAUNCH_TIME`` (their launch-to-first-step time counts from
    it, launcher and imports included); ``PYTHONUNBUFFERED`` makes their lines arrive as they are printed.

    Args:
        module: the entry point, e.g. ``tasks.training.pretrain``.
        config_path: its JSON run config (:func:`write_run_config`).
        launch: launcher, processes, hostfile, rendezvous.
        root: the repository, the processes' working directory.
        log: where each output line goes.
        on_command: called with the argv before it runs (e.g. to tag the MLflow run with it).
        on_line: sees each output line; True stops the processes (a pruned search trial). Then no error is raised
            for their exit code, which is returned.

    Raises:
        LaunchConfigError: the hostfile is missing or malformed.
        TrainingConfigError, TrainingError: the processes exited with code 2, or another non-zero code.
    """
    stopped = False

    def watch(line: str) -> bool:
        nonlocal stopped
        stopped = stopped or bool(on_line(line))  # type: ignore[misc]
        return stopped

    # a port lmforge chose (here, or in a single process: tasks.training.engine) can be taken between its choice and
    # the rendezvous server's bind, by any process on the machine: that launch fails before training starts, and is
    # retried on another port. A port the user set is theirs to free.
    attempts = 1 if launch.master_port else PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        cmd = training_command(module, config_path, launch, root)
        log.info("launching: %s", shlex.join(cmd))
        if on_command is not None:
            on_command(cmd)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", LAUNCH_TIME_ENV: repr(time.time())}
        code, tail = run_streaming(cmd, root, env, log, watch if on_line is not None else None)
        if code != 0 and not stopped and attempt < attempts and port_taken(tail):
            log.warning("the rendezvous port was taken before it could be bound; launching again on another port")
            continue
        break
    if not stopped:
        check_exit(code, tail)
    return code


PORT_ATTEMPTS = 3
_PORT_TAKEN = re.compile(r"EADDRINUSE|[Aa]ddress already in use")


def port_taken(tail: list[str]) -> bool:
    """Whether a launch's last lines say its rendezvous port was in use (it failed before any training step)."""
    return any(_PORT_TAKEN.search(line) for line in tail)
