"""The web UIs behind ``lmforge ui``: MLflow's for the tracking store, Prefect's for the flow runs.

``lmforge ui`` serves MLflow's UI for the store in params.yaml. ``lmforge ui --prefect`` serves Prefect's UI for
the flow runs of this checkout: with no Prefect server configured, every ``lmforge run`` records its flow runs (the
pipeline and one subflow per stage) through Prefect's ephemeral API into the database under the checkout's Prefect
home (``.prefect/prefect.db``, prefect.toml), which no server serves once the run ends; this starts ``prefect server
start`` on that same database. With a server configured (``orchestration.prefect_api_url`` or ``PREFECT_API_URL``)
its runs are on that server: the UI address is printed and nothing starts.

Each server runs on 127.0.0.1 in its own process group, stopped whole on Ctrl-C or SIGTERM. This module imports
neither flows nor tasks, and Prefect and MLflow only inside its functions.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.config import Params

MLFLOW_PORT = 5000
PREFECT_PORT = 4200  # Prefect's own default, and the stack's

PREFECT_UI_ENV: dict[str, str] = {
    # Prefect 3.9's V2 UI (its default) initialises Amplitude on every page load whatever the analytics setting
    # (a request to sr-client-cfg.amplitude.com); the V1 UI needs nothing beyond the server. "Switch to V2 UI" in
    # its menu still offers V2 to whoever wants it.
    "PREFECT_SERVER_UI_V2_ENABLED": "false",
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",  # no upgrade prompts or marketing banners
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


class PortInUseError(Exception):
    """The port asked for is taken. Exit code 2."""

    exit_code = 2


def check_port_free(port: int) -> None:
    """Raise :class:`PortInUseError` when ``port`` on 127.0.0.1 cannot be bound (checked before printing a URL
    that would lead to another program, or to nothing)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise PortInUseError(f"port {port} on 127.0.0.1 is in use (another `lmforge ui`?): pick another with "
                                 "--port") from None


def mlflow_command(uri: str, artifacts: str, port: int) -> list[str]:
    """``mlflow ui`` for the store ``uri`` on 127.0.0.1:``port``."""
    # one worker: a local UI for one person (MLflow's default 4 took 30-60 s to start on 2 cores)
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--default-artifact-root", artifacts,
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]


def configured_prefect_ui() -> str | None:
    """The UI address of the Prefect server this checkout is configured for (``PREFECT_API_URL``, set from params
    by ``apply_orchestration``, a Prefect profile or prefect.toml), or None when runs use the ephemeral API."""
    if api := os.environ.get("PREFECT_API_URL"):  # the usual case, answered without importing Prefect
        return os.environ.get("PREFECT_UI_URL") or api.rstrip("/").removesuffix("/api")
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if not settings.api.url:
        return None
    # Prefect's own inference (PREFECT_UI_URL when set; else the API URL without /api, Cloud's app for Cloud's API)
    return (settings.ui_url or settings.api.url.rstrip("/").removesuffix("/api")).rstrip("/")


def prefect_database() -> str:
    """Where the ephemeral API keeps this checkout's flow runs: the sqlite file, or the database's URL (password
    hidden) when ``PREFECT_API_DATABASE_CONNECTION_URL`` names another."""
    from prefect.settings import get_current_settings

    secret = get_current_settings().server.database.connection_url
    url = secret.get_secret_value() if secret is not None else ""
    scheme, _, rest = url.partition("://")
    if scheme.startswith("sqlite"):
        return rest.removeprefix("/")  # sqlite:///relative.db, sqlite:////absolute.db
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def prefect_command(port: int) -> list[str]:
    """``prefect server start`` on 127.0.0.1:``port``: the API and UI only. No background services: the UI is for
    reading, and none of them (scheduler, late-run marking, cancellation clean-up...) may change the runs that
    ``lmforge run`` recorded."""
    prefect = Path(sys.executable).with_name("prefect")
    return [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-services",
            "--analytics-off"]


def prefect_env(port: int) -> dict[str, str]:
    """The environment for the UI's server on ``port``: this process's (the same Prefect home and database settings
    the ephemeral API of ``lmforge run`` gets), promotional content and analytics off, no API URL (it is the API)."""
    from pipelines.process import OWNER_ENV

    # the address the UI's pages call: `--port` alone leaves them calling the default port 4200
    api = {"PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port),
           "PREFECT_SERVER_UI_API_URL": f"http://127.0.0.1:{port}/api"}
    env = {**os.environ, **PREFECT_UI_ENV, **api}
    env.pop("PREFECT_API_URL", None)
    env.pop(OWNER_ENV, None)  # not a run's ephemeral API: the next run must not take it for an orphan and stop it
    return env


def serve(cmd: list[str], env: dict[str, str]) -> int:
    """Run the server ``cmd`` until it exits, or until Ctrl-C or SIGTERM here; returns its exit code (0 when
    stopped). It runs in its own process group, so stopping it stops every worker it started (killing only the
    direct child left uvicorn workers serving)."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # Ctrl-C, and SIGTERM (raised as a KeyboardInterrupt by the command guard)
        return 0
    finally:
        from pipelines.launch import stop_group

        stop_group(proc, timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever outlived the leader in its group


def open_ui(root: Path, params: Params, *, prefect: bool, port: int | None) -> int:
    """``lmforge ui``: serve MLflow's UI for the store in params (or, with ``prefect``, :func:`_prefect_ui`) until
    Ctrl-C; returns the exit code."""
    if prefect:
        return _prefect_ui(params, port)
    from pipelines.tracking import resolve_uri

    uri = resolve_uri(params.tracking.uri, root)
    artifacts = params.tracking.artifact_root
    artifacts = artifacts if "://" in artifacts else (root / artifacts).resolve().as_uri()
    port = port or MLFLOW_PORT
    check_port_free(port)
    print(f"MLflow UI for {uri}\n  http://127.0.0.1:{port}\n(Ctrl-C stops it)", flush=True)
    return serve(mlflow_command(uri, artifacts, port), os.environ.copy())


def _prefect_ui(params: Params, port: int | None) -> int:
    """The Prefect UI: the configured server's address, or a server on this checkout's Prefect database."""
    from pipelines.config import apply_orchestration

    apply_orchestration(params.orchestration)
    if url := configured_prefect_ui():
        if port is not None:
            print(f"lmforge: --port {port} not used: runs go to the configured Prefect server", file=sys.stderr)
        print(f"Prefect UI of the configured server (orchestration.prefect_api_url or PREFECT_API_URL)\n  {url}")
        return 0
    port = port or PREFECT_PORT
    check_port_free(port)
    database = prefect_database()
    fresh = "://" not in database and not Path(database).is_file()
    note = " (no `lmforge run` has recorded a flow run here yet)" if fresh else ""
    print(f"Prefect UI for the flow runs in {database}{note}\n  http://127.0.0.1:{port}\n(Ctrl-C stops it)",
          flush=True)
    return serve(prefect_command(port), prefect_env(port))
