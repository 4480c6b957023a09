"""Running lmforge code as a command: environment, user-facing errors and exit codes.

An error meant for the user (bad params, a missing source, a failed data gate) carries an integer
``exit_code`` class attribute. Such errors are printed as one short message, never with a traceback, also
when Prefect logs them on the way out of a flow; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipelines.config import apply_environment, apply_orchestration, find_root, load_params
from pipelines.lock import workspace_lock
from pipelines.operations import apply_retries

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

EPHEMERAL_API_ENV: dict[str, str] = {
    "PREFECT_SERVER_REGISTER_BLOCKS_ON_START": "false",
    "PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
}
"""Settings for an ephemeral Prefect API this process starts (they reach only a server started from it: a server
configured by URL runs elsewhere with its own settings). Registering every block type on start, and importing
every Prefect collection (prefect-dask, hence distributed) to find them, cost about 3 of the 11 CPU-s of its start
here; lmforge uses no blocks, and the API lives only as long as the command."""


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is one of the project's user-facing errors (it declares an exit code)."""
    return isinstance(getattr(type(err), "exit_code", None), int)


class _NoUserTracebacks(logging.Filter):
    """Strip the traceback from log records about user-facing errors (Prefect logs every flow exception)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Starting temporary server on"):
            # the in-process API's notice; its second line sends the user to the docs of a dedicated server
            record.msg = record.msg.split("\n", 1)[0]
        if record.exc_info and record.exc_info[1] is not None and is_user_error(record.exc_info[1]):
            record.exc_info = None
            record.exc_text = None
            record.msg = f"{record.getMessage().split(chr(10))[0]}"
            record.args = ()
        return True


def quiet_user_errors() -> None:
    """Install the traceback filter on the loggers Prefect reports flow and task failures with."""
    filt = _NoUserTracebacks()
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.engine"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoUserTracebacks) for f in logger.filters):
            logger.addFilter(filt)


GC_THRESHOLD = (50_000, 20, 20)
"""Garbage-collector thresholds of an lmforge process (CPython's default: 700, 10, 10). A stage imports large
libraries (Great Expectations, MLflow, Prefect and its server module, pandas: about 750k objects); at the default
thresholds the collector ran about 1,000 times during those imports, 7 of them full collections over every object,
for 1-2 of the 6-8 CPU-s the imports take here. At these it runs a few dozen times and never fully; cycles are
still collected."""


def prepare(start: Path | None = None) -> Path:
    """Find the checkout, chdir into it and set the shared environment; returns the root."""
    gc.set_threshold(*GC_THRESHOLD)
    root = find_root(start)
    os.chdir(root)
    apply_environment(root)
    if os.environ.get("PREFECT_API_URL") == "":
        # set but empty means no server: left empty, Prefect's events client gets no URL, its worker stops at the
        # first event and every flow's heartbeat then logs a traceback (seen in every stage of such a run)
        del os.environ["PREFECT_API_URL"]
    for key, value in EPHEMERAL_API_ENV.items():
        os.environ.setdefault(key, value)
    for name in ("tasks", "flows", "pipelines", "lmforge"):
        logging.getLogger(name).setLevel(logging.INFO)
    return root


OWNER_ENV = "LMFORGE_OWNER"
"""``PID:START_TIME`` of the lmforge command, inherited by every process it starts (the ephemeral Prefect API)."""


def mark_owner() -> None:
    """Stamp this command on the environment its children inherit, so a later command can tell their orphans."""
    import psutil

    me = psutil.Process()
    os.environ[OWNER_ENV] = f"{me.pid}:{me.create_time():.3f}"


def reap_orphans(root: Path) -> list[int]:
    """Stop what an earlier lmforge command in this checkout started and left behind when it was killed with
    SIGKILL (its ephemeral Prefect API keeps serving on 127.0.0.1 otherwise): processes whose environment names
    this checkout's Prefect home and an owner that is gone. Returns their pids."""
    import psutil

    home, reaped = str(root / ".prefect"), []
    for proc in psutil.process_iter(["pid"]):
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        owner = env.get(OWNER_ENV)
        if not owner or env.get("PREFECT_HOME") != home or proc.pid == os.getpid():
            continue
        pid, _, started = owner.partition(":")
        try:
            alive = abs(psutil.Process(int(pid)).create_time() - float(started)) < 1.0
        except (psutil.Error, ValueError):
            alive = False
        if not alive:
            proc.terminate()
            reaped.append(proc.pid)
    psutil.wait_procs([psutil.Process(p) for p in reaped if psutil.pid_exists(p)], timeout=10)
    return reaped


LOGS_DIR = Path("reports/logs")
"""Where ``lmforge run`` keeps the whole console output of each run (git-ignored with reports/)."""


@contextmanager
def tee_console(path: Path) -> Iterator[Path]:
    """Copy everything written to this process's stdout and stderr into ``path`` (appending) while the console
    still shows it. The copy is made at the file-descriptor level, so what child processes (training, DVC, the
    Prefect server) write straight to the inherited descriptors is in the file too."""
    import threading

    path.parent.mkdir(parents=True, exist_ok=True)
    sink = path.open("ab", buffering=0)
    lock = threading.Lock()
    saved: dict[int, int] = {}
    pumps = []

    def pump(read_end: int, console: int) -> None:
        while chunk := os.read(read_end, 1 << 16):
            view = memoryview(chunk)
            while view:
                view = view[os.write(console, view):]
            with lock:
                sink.write(chunk)
        os.close(read_end)

    sys.stdout.flush()
    sys.stderr.flush()
    for fd in (1, 2):
        saved[fd] = os.dup(fd)
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        pumps.append(threading.Thread(target=pump, args=(read_end, saved[fd]), daemon=True))
        pumps[-1].start()
    try:
        yield path
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, console in saved.items():
            os.dup2(console, fd)  # the pipes' last write ends close: the pumps drain them and stop
        deadline = time.monotonic() + 5  # a child still holding a write end must not hold up the exit
        for thread in pumps:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for console in saved.values():
            os.close(console)
        sink.close()


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
    the command's console copy (:func:`tee_console`) waited in vain for the server to close the console pipes it
    inherited (10 s at every run). Here the server process starts before the command imports Prefect, the
    pipeline, flows, MLflow and the task libraries, so that it starts while they import; :meth:`ready` waits for
    its health check before the first flow; :meth:`stop` first delivers the run's pending logs and events to it,
    then stops it, within the console copy. ``PREFECT_API_URL`` names it for this process (and what it starts,
    e.g. Dask workers) while it runs. With an API configured (``orchestration.prefect_api_url``,
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

        spec = importlib.util.find_spec("prefect")
        if spec is None or spec.origin is None:
            raise PrefectAPIError("Prefect is not installed in this environment")
        port = free_port()
        self.process = subprocess.Popen([sys.executable, "-m", "uvicorn", "--app-dir",
                                         str(Path(spec.origin).resolve().parents[1]), "--factory",
                                         "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port",
                                         str(port), "--log-level", "error", "--lifespan", "on"], env=self._env)
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


def exit_without_teardown(code: int) -> int:
    """Let the interpreter end this command with ``code`` right after its exit handlers, without tearing down
    its modules; returns ``code``. Only for a process's own command line: the process ends with ``code``.

    A stage's process holds about half a million objects from the libraries it imported (Great Expectations, MLflow,
    Prefect, pandas); freeing them one module at a time after the exit handlers took 1.7 CPU-s and 3.5 s here, at the
    end of every command, and writes nothing. So a last ``atexit`` handler, registered here (it runs first), runs
    every other exit handler itself (in their order: logging's shutdown, Prefect's, MLflow's, temporary directories'
    finalizers...), flushes the standard streams and ends the process with ``os._exit(code)``. By then the
    interpreter has already joined its non-daemon threads and run the ``threading`` exit hooks (Prefect's queue
    services drain there). Without CPython's ``atexit._run_exitfuncs`` it does nothing and the exit is the usual one.
    """
    import atexit

    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is None:
        return code

    def end_now() -> None:
        atexit.unregister(end_now)
        try:
            run_exit_handlers()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError, AttributeError):
                    pass
            os._exit(code)

    atexit.register(end_now)
    return code


def report_error(err: BaseException) -> int:
    """Print a user-facing error as a short message; returns its exit code."""
    print(f"lmforge: error: {err}", file=sys.stderr)
    return int(type(err).exit_code)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that every ``with`` block and exit handler runs (MLflow runs end
    FAILED, the ephemeral Prefect API and the training processes are stopped) instead of dying on the spot."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


_SIGNALS: list[int] = []  # the read end of the wakeup pipe, once guarded() set it up


def raise_if_terminated() -> None:
    """Raise :class:`Terminated` if a SIGTERM arrived whose exception was lost.

    A handler's exception that is raised while the main thread runs a weakref or GC callback is printed as
    "Exception ignored" and dropped (seen with Prefect's own SIGTERM handler: the run went on and exited 0). The
    signal module still writes every signal's number to the wakeup fd, so the pipeline checks it between stages and
    before it reports success."""
    import signal

    if not _SIGNALS:
        return
    try:
        received = os.read(_SIGNALS[0], 1024)
    except BlockingIOError:
        return
    if signal.SIGTERM in received:
        raise Terminated()


def _watch_signals() -> None:
    import signal

    if _SIGNALS:
        return
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    try:
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    except ValueError:  # not the main thread: nothing to watch
        return
    _SIGNALS.append(read_end)


def guarded(body: Callable[[], int]) -> int:
    """Run ``body``; user-facing errors become a message and an exit code, Ctrl-C and SIGTERM become 130 after
    the cleanup of everything the command started."""
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    _watch_signals()
    try:
        return body()
    except KeyboardInterrupt as err:
        print(f"lmforge: {'terminated' if isinstance(err, Terminated) else 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        if is_user_error(err):
            return report_error(err)
        raise
    except BaseException as err:
        # inside a flow run Prefect's own SIGTERM handler raises its TerminationSignal (after its own cleanup)
        if type(err).__name__ == "TerminationSignal":
            print("lmforge: terminated", file=sys.stderr)
            return EXIT_INTERRUPTED
        raise


def prefect_api_configured() -> bool:
    """Whether a Prefect API is configured (``PREFECT_API_URL``: params, environment, profile or prefect.toml)."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def stage_main(stage: str, flow_fn: Callable[..., Any]) -> int:
    """Entry point of ``python -m flows.STAGE`` (the dvc.yaml cmd): validate params, run the stage flow.

    With a Prefect API configured the stage runs as a Prefect flow run there (its id tags the MLflow run). Without
    one it runs as the plain function under the flow (``flow_fn.fn``): a Prefect flow run would first start an
    ephemeral API in a subprocess, about 10 of the ~17-20 CPU-s such a command cost, only to record the run in
    ``.prefect/prefect.db``, which no server serves once the command ends. So a stage run alone without an API has no
    Prefect flow run and its MLflow run no ``lmforge.prefect_flow_run_id`` tag. A shard map that needs Dask still
    starts the ephemeral API for its tasks (see pipelines.sharding).
    """

    def body() -> int:
        root = prepare()
        params = load_params(root)
        with workspace_lock(root):  # unless the lmforge command that runs this stage (dvc repro under it) holds it
            return locked(root, params)

    def locked(root: Path, params: Any) -> int:
        reap_orphans(root)
        mark_owner()
        apply_orchestration(params.orchestration)
        apply_retries(params.operations.retries)
        quiet_user_errors()
        from prefect.settings import (
            PREFECT_API_URL,
            PREFECT_CLIENT_MAX_RETRIES,
            PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW,
            temporary_settings,
        )

        # Prefect read its settings when the flow module imported it, before params were loaded: hand it the URL
        # (and its client's retries) that apply_orchestration and apply_retries set since
        if url := os.environ.get("PREFECT_API_URL"):
            retries = int(os.environ["PREFECT_CLIENT_MAX_RETRIES"])
            with temporary_settings(updates={PREFECT_API_URL: url, PREFECT_CLIENT_MAX_RETRIES: retries}):
                flow_fn(params=params, root=root)
        elif prefect_api_configured():
            flow_fn(params=params, root=root)
        else:
            # our loggers also go to Prefect's API handler, which would warn at every record outside a flow run
            with temporary_settings(updates={PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}):
                getattr(flow_fn, "fn", flow_fn)(params=params, root=root)
        return EXIT_OK

    code = guarded(body)
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    # as the command (python -m flows.STAGE), not when called inside another program
    return exit_without_teardown(code) if getattr(main_spec, "name", None) == f"flows.{stage}" else code
