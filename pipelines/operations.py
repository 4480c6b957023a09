"""Retries with exponential back-off for calls that can fail for a moment, from ``operations.retries`` in params.

Three kinds of call talk to a server:

- reading a Hugging Face hub source (collect's and finetune's hub readers): the flows hand the readers
  :func:`retrying`, a tenacity policy that retries the opening of a dataset on transient errors only (see
  :func:`is_transient`). huggingface_hub already retries each of its own HTTP requests on 429/5xx and network errors
  (its ``http_backoff``); ours retries the whole opening on top, which also covers the steps in between.
- the MLflow tracking server: MLflow's HTTP client already retries every request with exponential back-off (a
  urllib3 ``Retry`` on connection and read errors and on 429/500/502/503/504). That suffices, so it is configured, not
  wrapped again: :func:`apply_retries` sets ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and ``..._BACKOFF_FACTOR``.
- a Prefect API set by URL: Prefect's client retries 429/502/503 and connection errors itself;
  :func:`apply_retries` sets its number of retries (``PREFECT_CLIENT_MAX_RETRIES``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from pipelines.config import RetryParams

log = logging.getLogger("pipelines.operations")

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP statuses worth another try: timeouts, rate limits and server errors. A 404, 401 or 400 never is."""
_TRANSIENT_NAMES = frozenset({
    "TimeoutException", "ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout", "NetworkError", "ConnectError",
    "ReadError", "WriteError", "RemoteProtocolError", "ProxyError", "ConnectionError", "Timeout",
    "ChunkedEncodingError", "ClientConnectionError", "ServerDisconnectedError", "ClientPayloadError",
    "IncompleteRead", "ProtocolError", "NewConnectionError", "MaxRetryError",
})
"""Class names (anywhere in an exception's MRO) of network errors in the HTTP clients the hub code uses (httpx and
its forks, requests, urllib3, aiohttp): matched by name so that none of them needs importing here."""
_NEVER_NAMES = frozenset({"OfflineModeIsEnabled"})
"""Offline mode raises a ConnectionError subclass that no retry can fix."""


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None) or getattr(err, "status", None) or getattr(err, "code", None)
    return status if isinstance(status, int) and 100 <= status < 600 else None


def is_transient(err: BaseException) -> bool:
    """Whether ``err`` (or what it wraps: libraries re-raise network errors as their own) is a network error, a
    timeout, or an HTTP 429/5xx answer: worth another try. The first HTTP status found in the chain decides; a 404
    or any other client error, a missing file or a bad setting is not transient."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        names = {c.__name__ for c in type(current).__mro__}
        if names & _NEVER_NAMES:
            return False
        status = _status(current)
        if status is not None:
            return status in RETRY_STATUS
        if names & _TRANSIENT_NAMES or isinstance(current, ConnectionError | TimeoutError):
            return True
        current = current.__cause__ or current.__context__
    return False


def retrying(policy: RetryParams, what: str) -> Callable[..., Any]:
    """A callable ``call(fn, *args, **kwargs)`` that runs ``fn`` and retries it on :func:`is_transient` errors, up to
    ``policy.attempts`` tries in all, waiting ``backoff_seconds`` doubled each time (with jitter, at most
    ``max_backoff_seconds``); the last error is raised as it is (what the caller turns into its own message). Each
    retry logs a warning naming ``what``."""
    import tenacity

    def warn(state: tenacity.RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        log.warning("%s failed (%s: %s); try %d of %d in %.1f s", what, type(err).__name__, str(err)[:200],
                    state.attempt_number + 1, policy.attempts, state.upcoming_sleep)

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=tenacity.wait_exponential_jitter(multiplier=policy.backoff_seconds, max=policy.max_backoff_seconds,
                                              jitter=policy.backoff_seconds / 4),
        retry=tenacity.retry_if_exception(is_transient),
        before_sleep=warn,
        reraise=True,
    )


def apply_retries(policy: RetryParams) -> None:
    """Configure the retries MLflow's and Prefect's own HTTP clients make (before either talks to its server; values
    the user set in the environment win). MLflow's back-off factor is whole seconds: it waits factor * 2**(n-1)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(policy.attempts - 1))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", str(round(policy.backoff_seconds)))
    os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", str(policy.attempts - 1))  # used only with an API URL
