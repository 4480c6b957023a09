"""Shared fixtures: one real Prefect server for the session, throw-away copies of the repository."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.config import TELEMETRY_OFF

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

for _k, _v in TELEMETRY_OFF.items():
    os.environ.setdefault(_k, _v)
# Hugging Face datasets writes caches and lock files even for local files: keep them out of the user's home
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="lmforge-tests-hf-"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server on 127.0.0.1, shared by the whole session (starting one costs ~10 s)."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db"}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"Prefect server did not start: {(home / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    old = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        yield url
    finally:
        # deliver what this process still has queued for the API before the server goes away
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)
        if old is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = old
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.split("\n")
    return [f for f in out if f and (REPO / f).is_file()]


def make_repo_copy(dest: Path) -> Path:
    """Copy the repository's source (what git would track) into ``dest`` and commit it there."""
    for rel in _tracked_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    git = ["git", "-c", "user.name=lmforge-tests", "-c", "user.email=tests@lmforge.invalid"]
    subprocess.run(git + ["init", "-q"], cwd=dest, check=True)
    subprocess.run(git + ["add", "-A"], cwd=dest, check=True)
    subprocess.run(git + ["commit", "-q", "-m", "test copy"], cwd=dest, check=True)
    return dest


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A fresh copy of the repository (source only, committed) to run stages in."""
    return make_repo_copy(tmp_path / "repo")


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for lmforge subprocesses: this venv first on PATH (dvc.yaml cmds say `python`)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def run_cli(repo: Path, *args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m pipelines.cli ARGS`` inside ``repo``."""
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=repo, env=subprocess_env(**env),
                          capture_output=True, text=True, timeout=timeout)
