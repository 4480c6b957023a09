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
        for thread in pumps:
            thread.join(timeout=5)  # a child still holding a write end must not hold up the exit
        for console in saved.values():
            os.close(console)
        sink.close()


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

    return guarded(body)
