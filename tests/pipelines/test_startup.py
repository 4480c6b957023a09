"""Start-up and exit of an lmforge command: its own ephemeral Prefect API, and the exit without module teardown."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import REPO, subprocess_env

API_SCRIPT = textwrap.dedent("""
    import atexit, os, sys, urllib.request
    sys.path.insert(0, {repo!r})
    import psutil
    from pipelines.prefect_api import CommandAPI

    api = CommandAPI()
    assert api.start() is True
    atexit.register(api.stop)  # whatever fails below, the server does not outlive this script
    api.ready()
    with urllib.request.urlopen(api.address + "/api/health", timeout=10) as res:
        assert res.status == 200
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL
    assert PREFECT_API_URL.value() == api.url == os.environ["PREFECT_API_URL"]  # this process now talks to it
    assert not PREFECT_UI_URL.value()  # it serves no UI: no "View at" links
    from prefect.client.orchestration import get_client
    with get_client(sync_client=True) as client:
        assert client.hello().status_code == 200
    server = psutil.Process(api.process.pid)
    api.stop()
    assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE
    assert "PREFECT_API_URL" not in os.environ and not PREFECT_API_URL.value()

    from prefect.context import refresh_global_settings_context
    os.environ["PREFECT_API_URL"] = "http://127.0.0.1:9/api"  # a configured API: no server of our own
    refresh_global_settings_context()
    configured = CommandAPI()
    assert configured.start() is False and configured.process is None

    # an API named only in prefect.toml: the server this command started before it could read that is stopped
    del os.environ["PREFECT_API_URL"]
    open("prefect.toml", "w").write('[api]\\nurl = "http://127.0.0.1:9/api"\\n')
    refresh_global_settings_context()
    me = psutil.Process()
    by_toml = CommandAPI()
    assert by_toml.start() is False and by_toml.process is None and by_toml.url is None
    assert not [p for p in me.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
    assert "PREFECT_API_URL" not in os.environ and PREFECT_API_URL.value() == "http://127.0.0.1:9/api"
    print("stopped")
""")


def test_the_command_starts_its_own_prefect_api_and_stops_it(tmp_path: Path) -> None:
    env = subprocess_env(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_EPHEMERAL_ENABLED="true",
                         PREFECT_SERVER_REGISTER_BLOCKS_ON_START="false",
                         PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300")  # a loaded, niced machine
    env.pop("PREFECT_API_URL", None)
    res = subprocess.run([sys.executable, "-c", API_SCRIPT.format(repo=str(REPO))], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=400)
    assert res.returncode == 0 and res.stdout.strip().endswith("stopped"), res.stdout[-2000:] + res.stderr[-3000:]


EXIT_SCRIPT = textwrap.dedent("""
    import atexit, sys, tempfile
    sys.path.insert(0, {repo!r})
    from pipelines.process import exit_without_teardown

    atexit.register(lambda: open({marker!r}, "a").write("handler ran\\n"))
    keep = tempfile.TemporaryDirectory(dir={tmp!r})  # removed by its finalizer, an exit handler
    open({marker!r}, "a").write(keep.name + "\\n")
    sys.stdout.write("buffered output, flushed at exit")
    sys.exit(exit_without_teardown(3))
""")


def test_exit_without_teardown_runs_every_exit_handler_and_keeps_the_exit_code(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    script = EXIT_SCRIPT.format(repo=str(REPO), marker=str(marker), tmp=str(tmp_path))
    res = subprocess.run([sys.executable, "-c", script], env=subprocess_env(), capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 3, res.stderr
    assert res.stdout == "buffered output, flushed at exit"
    tempdir, handler = marker.read_text().splitlines()
    assert handler == "handler ran" and not Path(tempdir).exists()
