"""A run killed by SIGKILL or stopped by SIGTERM: no MLflow run stays RUNNING for good, no process outlives it, and a
stage's outputs are published together or not at all."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.conftest import run_cli, subprocess_env

pytestmark = pytest.mark.slow


def _small_corpus(repo: Path) -> None:
    """The default source plus 40k generated jsonl documents: collect runs long enough (~15 s) to be caught."""
    import json

    (repo / "corpus").mkdir()
    with (repo / "corpus/big.jsonl").open("w") as f:
        for i in range(40_000):
            f.write(json.dumps({"text": f"document {i} " + "lorem ipsum dolor sit amet " * 20}) + "\n")
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["collect"]["sources"].append({"name": "big", "kind": "files", "paths": ["corpus/*.jsonl"]})
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _runs(repo: Path) -> dict[str, str]:
    """run name -> status, straight from the sqlite store (no MLflow client in between)."""
    if not (repo / "mlruns.db").exists():
        return {}
    with sqlite3.connect(repo / "mlruns.db") as db:
        try:
            return dict(db.execute("select run_uuid, status from runs").fetchall())
        except sqlite3.OperationalError:  # tables not made yet
            return {}


def _start(repo: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", *args], cwd=repo,
                            env=subprocess_env(PREFECT_API_URL=""), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def _wait_running(repo: Path, proc: subprocess.Popen[bytes], count: int = 2) -> None:
    deadline = time.monotonic() + 180
    while sum(s == "RUNNING" for s in _runs(repo).values()) < count:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the runs never started"
        time.sleep(0.2)


def _group(pgid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                out.append(p)
        except (ProcessLookupError, psutil.Error):
            pass
    return out


def test_sigkill_leaves_runs_the_next_run_marks_killed(repo_copy: Path) -> None:
    _small_corpus(repo_copy)
    proc = _start(repo_copy, "collect")
    _wait_running(repo_copy, proc)  # the pipeline run and the collect run
    members = [p for p in _group(proc.pid) if p.pid != proc.pid]
    assert members  # the ephemeral Prefect API (uvicorn)
    proc.kill()  # SIGKILL to lmforge alone
    proc.wait()
    # issue 27 item 6: its Prefect API server was orphaned (parent pid 1) until the next run; now it goes with it
    _, alive = psutil.wait_procs(members, timeout=10)
    assert alive == [], [p.cmdline() for p in alive]
    orphans = [r for r, s in _runs(repo_copy).items() if s == "RUNNING"]
    assert len(orphans) == 2  # nothing could close them
    again = run_cli(repo_copy, "run", "collect", PREFECT_API_URL="")
    assert again.returncode == 0, again.stderr
    statuses = _runs(repo_copy)
    assert [statuses[r] for r in orphans] == ["KILLED", "KILLED"]
    assert "RUNNING" not in statuses.values()
    with sqlite3.connect(repo_copy / "mlruns.db") as db:
        notes = db.execute("select value from tags where key = 'lmforge.error' and run_uuid in (?, ?)",
                           orphans).fetchall()
    assert len(notes) == 2 and all("marked KILLED by the next lmforge run" in n[0] for n in notes)


def test_sigterm_ends_runs_and_leaves_no_process(repo_copy: Path) -> None:
    _small_corpus(repo_copy)
    proc = _start(repo_copy, "collect")
    _wait_running(repo_copy, proc)
    members = _group(proc.pid)
    assert len(members) >= 2  # lmforge and the ephemeral Prefect API it started (uvicorn)
    proc.send_signal(signal.SIGTERM)  # to lmforge alone, as `kill PID` or a scheduler does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "lmforge: terminated" in err.decode(), err.decode()[-2000:]
    _, alive = psutil.wait_procs(members, timeout=30)
    assert alive == [], [p.cmdline() for p in alive]
    assert "RUNNING" not in _runs(repo_copy).values()


def test_sigkill_during_finetune_publishes_neither_the_data_nor_the_model(repo_copy: Path, prefect_api: str) -> None:
    # issue 27 item 6: data/finetune was published before training started, so a kill left the new task data beside
    # the old model; now both wait in their staging directories until the model is exported
    from tests.flows.test_finetune import _base, _prepare

    repo = repo_copy
    _prepare(repo, steps=400)
    _base(repo)
    proc = subprocess.Popen([sys.executable, "-m", "flows.finetune"], cwd=repo, env=subprocess_env(PREFECT_API_URL=""),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    staged, deadline = repo / "data/.finetune.staging-together", time.monotonic() + 300
    while not list((repo / "checkpoints/finetune").glob("*/evaluations.jsonl")):  # trained and evaluated a while
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.2)
    assert (staged / "manifest.json").is_file()  # the task data is made, and waits
    members = _group(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)  # the command and its training processes, at once
    proc.wait()
    psutil.wait_procs(members, timeout=10)
    assert not (repo / "data/finetune").exists() and not (repo / "models/finetuned").exists()
    # the next run starts its staging afresh and publishes both (a short run this time)
    from pipelines.config import load_params
    from tests.flows.test_finetune import TUNE

    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["finetune"]["steps"] = TUNE["steps"]
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    from flows.finetune import finetune

    finetune(params=load_params(repo), root=repo)
    assert (repo / "data/finetune/manifest.json").is_file() and (repo / "models/finetuned/topic").is_dir()
    assert not staged.exists() and not (repo / "models/.finetuned.staging-together").exists()
