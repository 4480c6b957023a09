"""Running lmforge code as a command: the checkout and environment, what a stage's command runs, user-facing errors
and exit codes. The process plumbing under it (GC, signals, the console copy, the exit) is :mod:`pipelines.process`;
the command's own Prefect API is :mod:`pipelines.prefect_api`.

An error meant for the user (bad params, a missing source, a failed data gate) carries an integer
``exit_code`` class attribute. Such errors are printed as one short message, never with a traceback, also
when Prefect logs them on the way out of a flow; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.config import apply_environment, apply_orchestration, find_root, load_params
from pipelines.lock import workspace_lock
from pipelines.operations import apply_retries
from pipelines.prefect_api import EPHEMERAL_API_ENV, prefect_api_configured
from pipelines.process import Terminated, catch_sigterm, exit_without_teardown, mark_owner, reap_orphans, tune_gc

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def user_exit_code(err: BaseException) -> int | None:
    """The exit code ``err`` declares if it is one of the project's user-facing errors, else None."""
    code = getattr(type(err), "exit_code", None)
    return code if isinstance(code, int) else None


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is one of the project's user-facing errors (it declares an exit code)."""
    return user_exit_code(err) is not None


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


def prepare(start: Path | None = None) -> Path:
    """Find the checkout, chdir into it and set the shared environment; returns the root."""
    tune_gc()
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


LOGS_DIR = Path("reports/logs")
"""Where ``lmforge run`` keeps the whole console output of each run (git-ignored with reports/)."""


def report_error(err: BaseException) -> int:
    """Print a user-facing error as a short message; returns its exit code (:data:`EXIT_FAILED` for another error)."""
    print(f"lmforge: error: {err}", file=sys.stderr)
    code = user_exit_code(err)
    return EXIT_FAILED if code is None else code


def guarded(body: Callable[[], int]) -> int:
    """Run ``body``; user-facing errors become a message and an exit code, Ctrl-C and SIGTERM become 130 after
    the cleanup of everything the command started."""
    catch_sigterm()
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
        from pipelines.artifacts import finish_publication

        finish_publication(root)  # outputs a killed stage was publishing together
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
