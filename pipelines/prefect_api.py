"""The Prefect API of one lmforge command: Prefect's ephemeral API server, started and stopped by the command itself
(:class:`CommandAPI`) unless an API is configured."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EPHEMERAL_API_ENV: dict[str, str] = {
    "PREFECT_SERVER_REGISTER_BLOCKS_ON_START": "false",
    "PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
}
"""Settings for an ephemeral Prefect API this process starts (they reach only a server started from it: a server
configured by URL runs elsewhere with its own settings). Registering every block type on start, and importing
every Prefect collection (prefect-dask, hence distributed) to find them, cost about 3 of the 11 CPU-s of its start
here; lmforge uses no blocks, and the API lives only as long as the command."""


class PrefectAPIError(Exception):
    """The Prefect API of this command did not start. Exit code 1."""

    exit_code = 1


UI_URL_ENV = "PREFECT_UI_URL"
UVICORN_STARTUP_FAILURE = 3
"""uvicorn's exit code when it cannot start, e.g. its port is taken."""


class CommandAPI:
    """The Prefect API of one ``lmforge run`` when no server is configured: Prefect's ephemeral API server (the
    same ``uvicorn prefect.server.api.server:create_app`` process that Prefect's ``SubprocessASGIServer`` runs, with
    the same environment), started and stopped by the command itself.

    Prefect starts its ephemeral API at the first flow call, after every import of the command, and imports its
    server module into the client process for it (about 2 CPU-s); it stops the server in an ``atexit`` hook, after
    the command's console copy (:func:`pipelines.process.tee_console`) waited in vain for the server to close the
    console pipes it inherited (10 s at every run). Here the server process starts before the command imports
    Prefect, the pipeline, flows, MLflow and the task libraries, so that it starts while they import; :meth:`ready`
    waits for its health check before the first flow; :meth:`stop` first delivers the run's pending logs and events
    to it, then stops it, within the console copy. ``PREFECT_API_URL`` names it for this process (and what it
    starts, e.g. Dask workers) while it runs. With an API configured (``orchestration.prefect_api_url``,
    ``PREFECT_API_URL``, a Prefect profile, prefect.toml) or ephemeral mode disabled, :meth:`start` leaves nothing
    running and Prefect does what it always does.
    """

    HEALTH_PATH = "/api/health"

    def __init__(self) -> None:
        self.process: Any = None  # subprocess.Popen of the server
        self.url: str | None = None
        self._timeout = 120.0
        self._retries = 5
        self._env: dict[str, str] = {}

    def start(self) -> bool:
        """Start the server process (without waiting for it) unless an API is configured; whether it started.

        The process is started before this one imports Prefect, which its settings need (1.2 CPU-s, on the
        command's critical path before); the settings then decide: where they name an API (a Prefect profile,
        prefect.toml) or disable ephemeral mode, the process is stopped unused. An API named in the environment
        (``PREFECT_API_URL``, which ``orchestration.prefect_api_url`` sets) is seen first and starts nothing."""
        if os.environ.get("PREFECT_API_URL"):
            return False
        # the server reads Prefect's settings from the same sources as this process (environment, profile,
        # prefect.toml in the same directory)
        self._env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                     "PREFECT__SERVER_FINAL": "1"}
        self._spawn()
        from prefect.settings import get_current_settings  # Prefect's settings: environment, profile, prefect.toml

        settings = get_current_settings()
        if settings.api.url or not settings.server.ephemeral.enabled:
            self._discard()
            return False
        self._timeout = float(settings.server.ephemeral.startup_timeout_seconds)
        self._name_api()
        import prefect.main  # noqa: F401  (Prefect's logging set-up, which the pipeline's import does anyway)

        logging.getLogger("prefect").info("Starting temporary server on %s (the Prefect API of this command, stopped "
                                          "when it ends)", self.address)
        return True

    @property
    def address(self) -> str:
        return (self.url or "").removesuffix("/api")

    def _spawn(self) -> None:
        """Start the server on a free port (Prefect itself is not imported here)."""
        import importlib.util
        import subprocess

        from pipelines.net import free_port
        from pipelines.process import die_with_parent

        spec = importlib.util.find_spec("prefect")
        if spec is None or spec.origin is None:
            raise PrefectAPIError("Prefect is not installed in this environment")
        port = free_port()
        # the server goes with the command whatever ends it (a SIGKILL orphaned it, serving until the next run)
        self.process = subprocess.Popen(die_with_parent([
            sys.executable, "-m", "uvicorn", "--app-dir", str(Path(spec.origin).resolve().parents[1]), "--factory",
            "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "error",
            "--lifespan", "on"]), env=self._env)
        self.url = f"http://127.0.0.1:{port}/api"

    def _name_api(self) -> None:
        """Name the server in this process's environment and Prefect settings (and so for what it starts)."""
        from prefect.context import refresh_global_settings_context

        # Prefect read its settings when it was imported: refresh them so that this process talks to this server
        os.environ["PREFECT_API_URL"] = str(self.url)
        os.environ[UI_URL_ENV] = ""  # it serves no UI: no "View at" links to it
        refresh_global_settings_context()

    def _discard(self) -> None:
        """Stop a server this command does not use (an API is configured after all)."""
        self._terminate(timeout=10)
        self.process, self.url = None, None

    def _terminate(self, timeout: float) -> None:
        """SIGTERM the server (its own shutdown writes what it buffered), SIGKILL after ``timeout`` s."""
        import subprocess

        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def ready(self) -> None:
        """Wait until the server answers its health check (at most Prefect's ephemeral start-up timeout)."""
        import urllib.error
        import urllib.request

        if self.process is None or self.url is None:
            return
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code == UVICORN_STARTUP_FAILURE and self._retries > 0:  # the port was taken meanwhile: another one
                self._retries -= 1
                self._spawn()
                self._name_api()
                continue
            if code is not None:
                raise PrefectAPIError(f"the temporary Prefect API server exited with code {code} before it answered "
                                      f"on {self.url} (its output is above)")
            try:
                with urllib.request.urlopen(self.url.removesuffix("/api") + self.HEALTH_PATH, timeout=5) as res:
                    if res.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise PrefectAPIError(f"the temporary Prefect API server did not answer on {self.url} within "
                              f"{self._timeout:g} s (server.ephemeral.startup_timeout_seconds in prefect.toml)")

    def stop(self, timeout: float = 10) -> None:
        """Deliver the logs and events Prefect still holds to the server, then stop it (SIGTERM: its own shutdown
        writes what it buffered; SIGKILL after ``timeout`` s)."""
        if self.process is None:
            return
        try:
            if self.process.poll() is None:
                try:
                    from prefect.events.worker import EventsWorker
                    from prefect.logging.handlers import APILogWorker

                    APILogWorker.drain_all(timeout=timeout)
                    EventsWorker.drain_all(timeout=timeout)
                finally:  # the server stops even if delivering failed
                    logging.getLogger("prefect").info("Stopping temporary server on %s", self.address)
            self._terminate(timeout)
        finally:
            self.process = None
            if os.environ.get("PREFECT_API_URL") == self.url:
                del os.environ["PREFECT_API_URL"]
                os.environ.pop(UI_URL_ENV, None)
                from prefect.context import refresh_global_settings_context

                refresh_global_settings_context()


@contextmanager
def command_api() -> Iterator[CommandAPI]:
    """:class:`CommandAPI` started on entry (unless an API is configured) and stopped on exit, whatever happened."""
    api = CommandAPI()
    api.start()
    try:
        yield api
    finally:
        api.stop()


def prefect_api_configured() -> bool:
    """Whether a Prefect API is configured (``PREFECT_API_URL``: params, environment, profile or prefect.toml)."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)
