"""`lmforge ui --prefect` at its edges, without starting a server: a busy port, a bad port, a configured Prefect
server (by environment or by params.yaml) whose UI address is printed while nothing starts. (Serving the Prefect UI
on a checkout's flow runs, in a browser: tests/e2e/test_ui_lineage.py; the stack's UI: tests/e2e/test_stack.py.)"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from tests.conftest import _free_port, make_repo_copy, run_cli


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo_copy(tmp_path_factory.mktemp("ui") / "repo")


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def _servers_on(home: Path) -> list[psutil.Process]:
    """Processes whose Prefect home is ``home`` (a Prefect server this checkout started)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("PREFECT_HOME") == str(home):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def test_a_busy_port_is_refused_before_anything_starts(repo: Path, busy_port: int) -> None:
    res = run_cli(repo, "ui", "--prefect", "--port", str(busy_port), PREFECT_API_URL="")
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"lmforge: error: port {busy_port} on 127.0.0.1 is in use" in res.stderr and "--port" in res.stderr
    assert "http://" not in res.stdout and "Traceback" not in res.stderr
    assert not (repo / ".prefect" / "prefect.db").exists() and _servers_on(repo / ".prefect") == []


def test_a_port_out_of_range_is_a_usage_error(repo: Path) -> None:
    res = run_cli(repo, "ui", "--prefect", "--port", "70000")
    assert res.returncode == 2 and "a port is 1 to 65535, got '70000'" in res.stderr, res.stderr
    res = run_cli(repo, "ui", "--port", "http")
    assert res.returncode == 2 and "not a port number: 'http'" in res.stderr, res.stderr


def test_a_configured_server_prints_its_ui_and_starts_nothing(repo: Path) -> None:
    port = _free_port()  # nothing listens there: the command must not start anything to serve it
    res = run_cli(repo, "ui", "--prefect", PREFECT_API_URL=f"http://127.0.0.1:{port}/api", timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines()[1].strip() == f"http://127.0.0.1:{port}", res.stdout
    assert "Prefect UI of the configured server" in res.stdout and res.stderr == ""
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    assert not (repo / ".prefect" / "prefect.db").exists() and _servers_on(repo / ".prefect") == []


def test_the_server_in_params_wins_over_no_environment(repo: Path) -> None:
    params = repo / "params.yaml"
    before = params.read_text()
    data = yaml.safe_load(before)
    data["orchestration"]["prefect_api_url"] = "http://127.0.0.1:4999/api"
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        # PREFECT_API_URL set but empty: no server by environment
        res = run_cli(repo, "ui", "--prefect", "--port", "4300", PREFECT_API_URL="")
    finally:
        params.write_text(before)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines()[1].strip() == "http://127.0.0.1:4999"
    assert "--port 4300 not used" in res.stderr  # the port asked for is not one the command serves: said so
    assert not (repo / ".prefect" / "prefect.db").exists() and _servers_on(repo / ".prefect") == []
