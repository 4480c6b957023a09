"""The failure notification of a pipeline run: one log line, and a JSON POST to ``operations.notify.webhook_url``.

A run that fails once its stages are under way (a stage's error, Ctrl-C, SIGTERM, the tracking server gone) logs one
line at ERROR naming the stage, the error, the MLflow run and the log file; with a webhook set, the same goes to it
as JSON. The webhook gets one try within ``timeout_seconds``: one that is down, slow or answers an error is a
warning in the log, never the run's error, and never changes its exit code. With ``on_success`` a finished run is
POSTed too.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from pipelines.config import NotifyParams

log = logging.getLogger("pipelines.notify")

RUN_LOG_ENV = "LMFORGE_RUN_LOG"
"""The run's log file (relative to the checkout), set by ``lmforge run`` for the notification to name."""


def _git_commit(root: Path) -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def error_text(err: BaseException) -> str:
    """``Type: message`` (first 2000 characters); Ctrl-C and SIGTERM are named as such."""
    name = type(err).__name__
    if isinstance(err, KeyboardInterrupt) or name == "TerminationSignal":
        return "terminated (SIGTERM)" if name in ("Terminated", "TerminationSignal") else "interrupted (Ctrl-C)"
    return f"{name}: {err}"[:2000]


def payload(*, status: str, root: Path, stages: list[str], stage: str | None, error: BaseException | None,
            run_id: str | None, started: float, ended: float) -> dict[str, Any]:
    """What the webhook receives (and the log line says)."""
    stamp = "%Y-%m-%dT%H:%M:%S%z"
    return {
        "pipeline": "lmforge",
        "status": status,
        "failed_stage": stage,
        "error": error_text(error) if error is not None else None,
        "mlflow_run_id": run_id,
        "git_commit": _git_commit(root),
        "host": socket.gethostname(),
        "checkout": str(root),
        "stages": stages,
        "log_file": os.environ.get(RUN_LOG_ENV),
        "started": time.strftime(stamp, time.localtime(started)),
        "ended": time.strftime(stamp, time.localtime(ended)),
    }


def post(url: str, body: dict[str, Any], timeout: float) -> None:
    """POST ``body`` as JSON to ``url``; any failure is a logged warning."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "lmforge"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(1 << 16)
    except urllib.error.HTTPError as err:
        log.warning("failure notification: the webhook %s answered HTTP %s; the notification is lost", url, err.code)
    except (OSError, ValueError) as err:  # refused, unreachable, timed out, a malformed URL
        reason = getattr(err, "reason", err)
        log.warning("failure notification: the webhook %s could not be reached (%s); the notification is lost",
                    url, reason)


def run_finished(params: NotifyParams, body: dict[str, Any]) -> None:
    """Report a finished run: a failure always as one log line, and to the webhook when one is set (a success only
    with ``on_success``). Never raises: the notification must not hide the run's own error."""
    try:
        if body["status"] != "succeeded":
            log.error("lmforge run %s at stage %s: %s; MLflow run %s; log %s", body["status"],
                      body["failed_stage"] or "(none)", body["error"], body["mlflow_run_id"] or "(not opened)",
                      body["log_file"] or "(none)")
        if params.webhook_url and (body["status"] != "succeeded" or params.on_success):
            post(params.webhook_url, body, params.timeout_seconds)
    except Exception as err:  # a bug here must not replace the run's error
        log.warning("failure notification failed: %s: %s", type(err).__name__, err)
