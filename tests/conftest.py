"""Shared fixtures: one real Prefect server for the session, throw-away copies of the repository."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from pipelines.config import TELEMETRY_OFF
from pipelines.net import free_port as _free_port  # the tests' name for it

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

for _k, _v in TELEMETRY_OFF.items():
    os.environ.setdefault(_k, _v)
# Under xdist (a worker per core) torch's default of one thread per core in every worker's training processes put
# twice as many OpenMP threads as cores on the machine, and they wait on each other: the e2e default run took 1756 s
# beside the other worker against 466 s alone. A worker's share of the cores is its threads (an explicit setting wins).
if _workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    for _k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_k, str(max(1, (os.cpu_count() or 1) // _workers)))
# Hugging Face datasets writes caches and lock files even for local files: keep them out of the user's home
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="lmforge-tests-hf-"))


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                members.append(p)
        except (ProcessLookupError, psutil.Error):
            pass
    return members


def stop_process_group(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM the process group ``proc`` leads, SIGKILL whatever is left of it after ``timeout`` s; reap ``proc``.

    Children that servers start (uvicorn workers, an ephemeral API) are in the group: stopping only the leader
    leaves them running, orphaned, after the suite ends.
    """
    pgid = proc.pid  # start_new_session=True: the leader's pid is the group id
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    _, alive = psutil.wait_procs(_group_members(pgid), timeout=max(1.0, timeout / 4))
    if alive or proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=10)
        psutil.wait_procs(_group_members(pgid), timeout=5)


@contextmanager
def local_http_server(handler: type) -> Iterator[str]:
    """A threaded HTTP server on a free port of 127.0.0.1 answering with ``handler``; yields its base URL."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, *, what: str, timeout: float = 300) -> None:
    """Wait until ``url`` answers 200, while ``proc`` (the server) lives; else fail with the tail of its ``log``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not serve {url}: {log.read_text()[-3000:]}")
        time.sleep(0.5)


@contextmanager
def prefect_server(home: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``prefect server start`` on a free port of 127.0.0.1 with its state under ``home``; yields (API URL, process)."""
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db"}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")
    # its own session and process group: teardown stops the whole group, never only the `prefect` process
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/api"
        wait_http(f"{url}/health", proc, home / "server.log", what="Prefect server", timeout=120)
        yield url, proc
    finally:
        stop_process_group(proc)
        log.close()


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server on 127.0.0.1, shared by the whole session (starting one costs ~10 s)."""
    with prefect_server(tmp_path_factory.mktemp("prefect-home")) as (url, _):
        # Prefect reads its settings once per process: the env var alone is not seen by a worker that already imported
        # prefect (an earlier test did), whose client would then start an ephemeral server of its own
        from prefect.context import refresh_global_settings_context

        old = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url
        refresh_global_settings_context()
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
            refresh_global_settings_context()


@pytest.fixture(autouse=True)
def stage_reads_are_deps() -> Iterator[None]:
    """After each test: every file a stage's flow read while the test ran it is one of the stage's deps, outs or
    its own writes (tests/stage_reads.py). The flow tests' runs on tiny data are the evidence; nothing runs twice."""
    from tests.stage_reads import install, undeclared

    recorder = install()
    recorder.runs.clear()
    yield
    problems = {f"{run.stage} (root {run.root})": bad for run in recorder.runs.values() if (bad := undeclared(run))}
    recorder.runs.clear()
    if problems:
        pytest.fail("stages read files that are not their dvc.yaml deps (add them to the deps, or to the stage's "
                    f"params data_deps, or stop reading them): {problems}", pytrace=False)


RUN_STATE = ("dvc.lock", "metrics", "mlruns.db", "mlruns", "mlartifacts", ".prefect", "checkpoints", "reports",
             ".dvc-storage", ".dvc/cache", ".dvc/tmp", "benchmarks/results")
"""What running the pipeline leaves in a checkout besides the dvc.yaml outs: never part of a test's copy."""


def _is_run_output(rel: str, outs: set[str]) -> bool:
    parts = Path(rel).parts
    return any(parts[: len(Path(o).parts)] == Path(o).parts for o in outs)


def _source_files(root: Path) -> list[str]:
    """The checkout's source: tracked and untracked-but-not-ignored files, minus everything a run writes.

    Untracked files count (developers run the tests before committing a new module); run outputs do not, even
    when committed (the README tells users to commit dvc.lock and metrics/): a test's copy must not depend on
    what the user ran in the checkout.
    """
    from pipelines.versioning import read_stages

    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root, capture_output=True,
                         text=True, check=True).stdout.split("\n")
    outs = set(RUN_STATE) | {o for spec in read_stages(root).values() for o in spec.outs}
    return sorted({f for f in out if f and not _is_run_output(f, outs) and (root / f).is_file()})


def make_repo_copy(dest: Path) -> Path:
    """Copy the repository's source (what git would track, never run outputs) into ``dest`` and commit it there."""
    for rel in _source_files(REPO):
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
    """``python -m pipelines.cli ARGS`` inside ``repo``; past ``timeout`` its whole process group is stopped (the
    ephemeral API and training processes it started included) and ``subprocess.TimeoutExpired`` raised."""
    cmd = [sys.executable, "-m", "pipelines.cli", *args]
    with subprocess.Popen(cmd, cwd=repo, env=subprocess_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process_group(proc)  # subprocess.run would SIGKILL lmforge alone and orphan what it started
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# The slowest files, longest first (seconds measured in one process on 2 cores). Under xdist (pyproject's addopts: a
# worker per core, whole files to a worker, in this order) they start at once on different workers instead of one
# of them starting last and ending the run alone; the rest follows in collection order. Only the order changes.
# test_retrain.py makes the session's shared finished run (tests/e2e/conftest.py) and the other files that use it
# come after test_stack.py: on 2 workers they start once it is made, instead of waiting for it on its lock.
_SLOWEST_FIRST = {
    "tests/e2e/test_pipeline.py": 400,
    "tests/e2e/test_retrain.py": 450,
    "tests/e2e/test_stack.py": 300,
    "tests/e2e/test_ui_lineage.py": 100,
    "tests/e2e/test_rerun.py": 170,
    "tests/test_benchmarks.py": 200,
    "tests/e2e/test_kills.py": 110,
    "tests/flows/test_finetune.py": 100,
    "tests/flows/test_evaluate.py": 90,
    "tests/pipelines/test_schedule.py": 70,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(_SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
