"""Training launch: command lines (one process, torchrun, the deepspeed launcher with and without a hostfile), the
run config, streamed output, launch time handed over, exit codes mapped to errors."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from pipelines.config import ParamsError, parse_params
from pipelines.config.launch import LaunchParams
from pipelines.launch import (
    LAUNCH_TIME_ENV,
    LaunchConfigError,
    TrainingConfigError,
    TrainingError,
    check_exit,
    launch_training,
    read_hostfile,
    training_command,
    write_run_config,
)

ENTRY = "tasks.training.pretrain"


def test_python_and_torchrun_commands(tmp_path: Path) -> None:
    cfg = tmp_path / "run.json"
    assert training_command(ENTRY, cfg, LaunchParams(), tmp_path) == [sys.executable, "-m", ENTRY, "--config", str(cfg)]
    tr = training_command(ENTRY, cfg, LaunchParams(launcher="torchrun", nproc=2, master_port=29511), tmp_path)
    assert tr == [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                  "--master_addr", "127.0.0.1", "--master_port", "29511", "-m", ENTRY, "--config", str(cfg)]
    port = training_command("m", cfg, LaunchParams(launcher="torchrun"), tmp_path)[10]
    assert 1024 <= int(port) <= 65535  # a free port was picked


def _hostfile(tmp_path: Path, text: str) -> str:
    (tmp_path / "infra").mkdir(exist_ok=True)
    (tmp_path / "infra/hostfile").write_text(text)
    return "infra/hostfile"


def test_deepspeed_commands_local_remote_and_without_ssh(tmp_path: Path) -> None:
    cfg = tmp_path / "run.json"
    tail = ["--module", ENTRY, "--config", str(cfg)]
    local = training_command(ENTRY, cfg, LaunchParams(launcher="deepspeed", nproc=2, master_port=29500), tmp_path)
    assert local[0].endswith("/deepspeed") and local[1:] == [
        "--master_port", "29500", "--master_addr", "127.0.0.1", "--num_nodes", "1", "--num_gpus", "2", *tail]

    # one local host: DeepSpeed starts its slots here; it must not try ssh
    one = _hostfile(tmp_path, "# a comment\nlocalhost slots=2\n\n")
    cmd = training_command(ENTRY, cfg, LaunchParams(launcher="deepspeed", hostfile=one, master_port=29501), tmp_path)
    assert cmd[1:] == ["--master_port", "29501", "--hostfile", str(tmp_path / one), "--no_ssh_check",
                       "--master_addr", "127.0.0.1", *tail]

    # several nodes: ssh from here, rank 0's address found by DeepSpeed unless given
    many = _hostfile(tmp_path, "node-1 slots=8\nnode-2 slots=8  # second rack\n")
    assert read_hostfile(tmp_path / many) == {"node-1": 8, "node-2": 8}
    cmd = training_command(ENTRY, cfg, LaunchParams(launcher="deepspeed", hostfile=many, master_port=29502), tmp_path)
    assert cmd[1:] == ["--master_port", "29502", "--hostfile", str(tmp_path / many), *tail]
    cmd = training_command(ENTRY, cfg, LaunchParams(launcher="deepspeed", hostfile=many, master_port=29502,
                                                    master_addr="10.0.0.1"), tmp_path)
    assert cmd[5:7] == ["--master_addr", "10.0.0.1"]

    # without ssh: every node runs the stage with its own rank
    cmd = training_command(ENTRY, cfg, LaunchParams(launcher="deepspeed", hostfile=many, master_port=29503,
                                                    master_addr="10.0.0.1", node_rank=1), tmp_path)
    assert cmd[5:10] == ["--no_ssh", "--node_rank", "1", "--master_addr", "10.0.0.1"]
    with pytest.raises(LaunchConfigError, match="node_rank 2 is not the index of a host in .* \\(2 hosts: 0 to 1\\)"):
        training_command(ENTRY, cfg, LaunchParams(launcher="deepspeed", hostfile=many, master_port=29503,
                                                  master_addr="10.0.0.1", node_rank=2), tmp_path)
    this = _hostfile(tmp_path, f"{socket.gethostname()} slots=4\n")
    assert "--no_ssh_check" in training_command(ENTRY, cfg, LaunchParams(launcher="deepspeed", hostfile=this),
                                                tmp_path)


@pytest.mark.parametrize(("text", "message"), [
    (None, "does not exist"),
    ("node-1 slots=two\n", "infra/hostfile:1: 'node-1 slots=two' is not 'HOST slots=N'"),
    ("node-1 slots=0\n", "is not 'HOST slots=N' with N >= 1"),
    ("a slots=1\na slots=2\n", "infra/hostfile:2: host a is listed twice"),
    ("# nothing\n\n", "lists no host"),
])
def test_bad_hostfiles_are_clear_errors(tmp_path: Path, text: str | None, message: str) -> None:
    path = "infra/hostfile" if text is None else _hostfile(tmp_path, text)
    with pytest.raises(LaunchConfigError, match=message) as err:
        training_command(ENTRY, tmp_path / "run.json", LaunchParams(launcher="deepspeed", hostfile=path), tmp_path)
    assert err.value.exit_code == 2


@pytest.mark.parametrize(("launch", "message"), [
    ({"launcher": "torchrun", "hostfile": "infra/deepspeed/hostfile"}, "read by the deepspeed launcher only"),
    ({"launcher": "deepspeed", "node_rank": 0}, "node_rank needs launcher: deepspeed and a hostfile"),
    ({"launcher": "deepspeed", "hostfile": "h", "node_rank": 0}, "node_rank needs master_addr and master_port"),
])
def test_inconsistent_launch_params_are_rejected(launch: dict[str, object], message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        parse_params({"pretrain": {"launch": launch}})


def test_launch_time_variable_is_the_one_the_entry_point_reads() -> None:
    from tasks.training.telemetry import LAUNCH_TIME_ENV as READ

    assert LAUNCH_TIME_ENV == READ


def test_launch_streams_output_hands_over_the_launch_time_and_maps_exit_codes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import json
    import logging
    import time

    # a stand-in entry point run as `python -m fake_entry --config CONFIG` from the root, like the recipes
    (tmp_path / "fake_entry.py").write_text(
        "import json, os, sys, time\n"
        "cfg = json.load(open(sys.argv[2]))\n"
        f"print('launched', round(time.time() - float(os.environ['{LAUNCH_TIME_ENV}']), 1) >= 0)\n"
        "print('unbuffered', os.environ['PYTHONUNBUFFERED'])\n"
        "sys.exit(cfg['code'])\n")
    log = logging.getLogger("test.launch")
    calls: list[list[str]] = []
    before = time.time()
    for code, error in ((0, None), (2, TrainingConfigError), (1, TrainingError)):
        config = write_run_config(tmp_path / "run.json", {"code": code})
        assert json.loads(config.read_text()) == {"code": code} and not list(tmp_path.glob(".run.json.*"))
        with caplog.at_level(logging.INFO, logger="test.launch"):
            if error is None:
                launch_training("fake_entry", config, LaunchParams(), tmp_path, log=log, on_command=calls.append)
            else:
                with pytest.raises(error, match=f"training exited with code {code}: unbuffered 1") as err:
                    launch_training("fake_entry", config, LaunchParams(), tmp_path, log=log)
                assert err.value.exit_code == code
    assert calls == [[sys.executable, "-m", "fake_entry", "--config", str(tmp_path / "run.json")]]
    assert "launched True" in caplog.text and "launching: " in caplog.text and time.time() - before < 60


def test_check_exit_names_the_last_output_line() -> None:
    check_exit(0, [])
    with pytest.raises(TrainingConfigError, match="code 2: pretrain: error: bad"):
        check_exit(2, ["step 1", "pretrain: error: bad", "", "  "])
    with pytest.raises(TrainingError, match="code -9: $"):
        check_exit(-9, [])


def test_a_rendezvous_port_taken_before_the_bind_is_retried_unless_the_user_chose_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    import pipelines.launch as launch_module
    from pipelines.net import free_port

    (tmp_path / "fake_entry.py").write_text("import os\nprint('rank', os.environ['RANK'], 'ran')\n")
    config = write_run_config(tmp_path / "run.json", {})
    log = logging.getLogger("test.launch")
    with socket.socket() as taken:  # what another process did between lmforge's choice and torchrun's bind
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = iter([busy, free_port()])
        monkeypatch.setattr(launch_module, "free_port", lambda: next(ports))
        calls: list[list[str]] = []
        launch = LaunchParams(launcher="torchrun", nproc=1)
        assert launch_training("fake_entry", config, launch, tmp_path, log=log, on_command=calls.append) == 0
        used = [c[c.index("--master_port") + 1] for c in calls]
        assert len(used) == 2 and used[0] == str(busy) != used[1]
        with pytest.raises(TrainingError, match="(?i)EADDRINUSE|address already in use"):
            launch_training("fake_entry", config, LaunchParams(launcher="torchrun", nproc=1, master_port=busy),
                            tmp_path, log=log)
