"""The workspace lock: two commands never write one checkout at once; a killed holder never blocks the next one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from pipelines.lock import HOLDER_ENV, HOLDER_FILE, LOCK_FILE
from tests.conftest import run_cli, subprocess_env

HOLD = """
import signal, sys, time
from pathlib import Path
from pipelines.lock import workspace_lock
signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))  # as lmforge commands do: SIGTERM unwinds the with blocks
with workspace_lock(Path(sys.argv[1]), command="test holder", wait=float(sys.argv[3])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
print("released", flush=True)
"""
"""A process that holds the lock of checkout argv[1] for argv[2] seconds (waiting argv[3] s for it)."""


def _hold(repo: Path, seconds: float, wait: float = 0, **env: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(repo), str(seconds), str(wait)], cwd=repo,
                            env=subprocess_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held", proc.stderr.read() if proc.stderr else ""
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def test_commands_that_write_refuse_while_another_holds_the_workspace(repo_copy: Path) -> None:
    holder = _hold(repo_copy, 120)
    try:
        record = json.loads((repo_copy / HOLDER_FILE).read_text())
        assert record["pid"] == holder.pid and record["command"] == "test holder"
        for args in (["run", "collect"], ["promote", "lmforge-x", "1", "--reason", "test"]):
            res = run_cli(repo_copy, *args)
            assert res.returncode == 2, (args, res.stderr)
            assert f"is in use by another lmforge command: pid {holder.pid} on host " in res.stderr
            assert "(test holder)" in res.stderr and "--wait" in res.stderr and "Traceback" not in res.stderr
        stage = subprocess.run([sys.executable, "-m", "flows.collect"], cwd=repo_copy, env=subprocess_env(),
                               capture_output=True, text=True, timeout=300)
        assert stage.returncode == 2 and f"pid {holder.pid}" in stage.stderr, stage.stderr[-2000:]
        assert not (repo_copy / "data/raw").exists() and not (repo_copy / "dvc.lock").exists()
        # reading commands never take it
        status = run_cli(repo_copy, "status", "collect")
        assert status.returncode == 0 and status.stdout.startswith("collect: stale"), status.stderr
    finally:
        _stop(holder)
    assert not (repo_copy / HOLDER_FILE).exists()  # a holder that ends (SIGTERM included) removes its record


def test_wait_queues_behind_the_holder(repo_copy: Path) -> None:
    first = _hold(repo_copy, 3)
    started = time.monotonic()
    second = _hold(repo_copy, 0, wait=60)  # returns once it holds the lock
    assert time.monotonic() - started > 1.5
    assert first.wait(timeout=30) == 0 and second.wait(timeout=30) == 0
    assert second.stderr is not None and "waiting for it (at most 60 s)" in second.stderr.read()
    # waiting for at most a while, then a clear refusal
    third = _hold(repo_copy, 30)
    try:
        proc = subprocess.run([sys.executable, "-c", HOLD, str(repo_copy), "0", "1"], cwd=repo_copy,
                              env=subprocess_env(), capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "WorkspaceBusyError" in proc.stderr and "after waiting 1 s" in proc.stderr
    finally:
        _stop(third)
    bad = run_cli(repo_copy, "run", "--wait", "soon")
    assert bad.returncode == 2 and "not a number of seconds: 'soon'" in bad.stderr


def test_a_sigkilled_holder_does_not_block_and_its_record_is_replaced(repo_copy: Path) -> None:
    holder = _hold(repo_copy, 120)
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    assert json.loads((repo_copy / HOLDER_FILE).read_text())["pid"] == holder.pid  # left behind, stale
    nxt = _hold(repo_copy, 0)
    assert nxt.wait(timeout=30) == 0
    assert nxt.stderr is not None
    err = nxt.stderr.read()
    assert f"last holder (pid {holder.pid} on host" in err and "ended without releasing it" in err
    assert not (repo_copy / HOLDER_FILE).exists()


def test_a_child_of_the_holder_does_not_lock_again_but_a_stranger_with_its_marker_does(repo_copy: Path) -> None:
    # what a stage run under a holder does (dvc repro driven by lmforge): its parent's marker lets it through
    nested = ("import subprocess, sys\n"
              "from pathlib import Path\n"
              "from pipelines.lock import workspace_lock\n"
              "with workspace_lock(Path(sys.argv[1]), command='parent'):\n"
              f"    child = subprocess.run([sys.executable, '-c', {HOLD!r}, sys.argv[1], '0', '0'],"
              " capture_output=True, text=True, timeout=60)\n"
              "    print(child.returncode, child.stdout.split())\n")
    res = subprocess.run([sys.executable, "-c", nested, str(repo_copy)], cwd=repo_copy, env=subprocess_env(),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "0 ['held', 'released']", res.stderr
    # the marker of a holder that is not one's ancestor is no pass
    holder = _hold(repo_copy, 120)
    try:
        lock = (repo_copy / LOCK_FILE).resolve()
        started = psutil.Process(holder.pid).create_time()
        stranger = subprocess.run([sys.executable, "-c", HOLD, str(repo_copy), "0", "0"], cwd=repo_copy,
                                  env=subprocess_env(**{HOLDER_ENV: f"{lock}|{holder.pid}:{started:.3f}"}),
                                  capture_output=True, text=True, timeout=60)
        assert stranger.returncode != 0 and "WorkspaceBusyError" in stranger.stderr
    finally:
        _stop(holder)


def _set_collect(repo: Path, **values: object) -> None:
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["collect"].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _wait_holder(repo: Path, proc: subprocess.Popen[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if json.loads((repo / HOLDER_FILE).read_text())["pid"] == proc.pid:
                return
        except (OSError, ValueError, KeyError):
            pass
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run never took the workspace lock"
        time.sleep(0.1)


@pytest.mark.slow
def test_two_real_runs_one_refused_one_queued_outputs_intact(repo_copy: Path, prefect_api: str) -> None:
    repo = repo_copy
    _set_collect(repo, sources=[{"name": "stdlib", "kind": "default", "max_docs": 400}])
    first = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", "collect"], cwd=repo,
                             env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_holder(repo, first)
    refused = run_cli(repo, "run", "collect")
    assert refused.returncode == 2, refused.stderr
    assert f"in use by another lmforge command: pid {first.pid} on host " in refused.stderr
    assert "lmforge run collect)" in refused.stderr and "Traceback" not in refused.stderr
    queued = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", "collect", "--force", "--wait", "600"],
                              cwd=repo, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    out1, err1 = first.communicate(timeout=600)
    out2, err2 = queued.communicate(timeout=600)
    assert first.returncode == 0, err1[-3000:]
    assert queued.returncode == 0, err2[-3000:]
    assert f"the workspace is in use by pid {first.pid}" in err2 and "waiting for it" in err2
    assert "collect: ran" in out1 and "collect: ran" in out2
    # outputs intact: dvc.lock matches data/raw and the metrics, nothing stale, no staging left, no lock record
    assert run_cli(repo, "status", "collect").stdout.startswith("collect: up to date")
    dvc = subprocess.run([str(Path(sys.executable).parent / "dvc"), "status", "collect"], cwd=repo,
                         env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert dvc.returncode == 0 and "changed" not in dvc.stdout, dvc.stdout + dvc.stderr
    assert list((repo / "data").glob(".raw.*")) == []
    assert json.loads((repo / "metrics/collect.json").read_text())["kept"] > 0
    assert not (repo / HOLDER_FILE).exists()


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


@pytest.mark.slow
def test_a_sigkilled_run_does_not_block_the_next(repo_copy: Path, prefect_api: str) -> None:
    repo = repo_copy
    _set_collect(repo, sources=[{"name": "stdlib", "kind": "default", "max_docs": 200}])
    # the ephemeral Prefect API: lmforge's child outlives the SIGKILL; it must not keep the lock
    env = subprocess_env(PREFECT_API_URL="")
    victim = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", "collect"], cwd=repo, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_holder(repo, victim)
    deadline, orphans = time.monotonic() + 180, []
    while not orphans and time.monotonic() < deadline and victim.poll() is None:
        orphans = [p for p in psutil.Process(victim.pid).children(recursive=True)
                   if any("prefect" in part or "uvicorn" in part for part in _cmdline(p))]
        time.sleep(0.2)
    assert orphans, "the run never started its ephemeral Prefect API"
    victim.kill()  # lmforge alone
    victim.wait()
    try:
        nxt = run_cli(repo, "run", "collect")  # the shared server: no second ephemeral API start
        assert nxt.returncode == 0, nxt.stderr[-3000:]
        assert "in use" not in nxt.stderr
        assert f"last holder (pid {victim.pid} on host" in nxt.stderr and "ended without releasing it" in nxt.stderr
        assert run_cli(repo, "status", "collect").stdout.startswith("collect: up to date")
    finally:
        for p in orphans:
            try:
                p.kill()
            except psutil.Error:
                pass


def test_a_stale_record_is_not_named_as_the_holder(repo_copy: Path) -> None:
    # between a new holder's lock and its record, the record of a killed one may still be there
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holder = _hold(repo_copy, 120)
    try:
        (repo_copy / HOLDER_FILE).write_text(json.dumps({"pid": dead.pid, "pid_started": time.time() - 5,
                                                         "host": "h", "started": "then", "command": "old"}))
        res = run_cli(repo_copy, "run", "collect")
        assert res.returncode == 2
        assert f"in use by another lmforge command: a process that is just starting (the record left by pid " \
               f"{dead.pid} is stale)" in res.stderr, res.stderr
    finally:
        _stop(holder)


def test_the_lock_is_free_again_when_the_holder_leaves_its_with_block(repo_copy: Path) -> None:
    from pipelines.lock import workspace_lock

    for wait in (0, 5, float("inf")):  # taken at once, free: whatever the wait, leaving the block releases it
        with workspace_lock(repo_copy, command="in-process", wait=wait):
            assert json.loads((repo_copy / HOLDER_FILE).read_text())["pid"] == os.getpid()
            assert os.environ[HOLDER_ENV].endswith(f"|{os.getpid()}:" + os.environ[HOLDER_ENV].rsplit(":", 1)[1])
        assert HOLDER_ENV not in os.environ and not (repo_copy / HOLDER_FILE).exists()
        other = _hold(repo_copy, 0)  # another process gets it at once while this one lives on
        assert other.wait(timeout=30) == 0
