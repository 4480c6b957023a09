"""Retries with back-off (pipelines.operations): which errors are worth another try, the policy against a real local
server that fails then succeeds, and MLflow's own HTTP retries configured from params against a real tracking
server behind a failing proxy."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipelines.config import RetryParams
from pipelines.operations import is_transient, retrying
from tests.conftest import REPO, _free_port, local_http_server, stop_process_group, subprocess_env, wait_http


@contextmanager
def flaky(failures: int, status: int = 503, delay: float = 0.0,
          upstream: str | None = None) -> Iterator[tuple[str, list[int]]]:
    """A real HTTP server on 127.0.0.1 answering ``status`` to its first ``failures`` requests, then 200 ``ok`` (or
    what ``upstream`` answers, as a proxy). ``/status/N`` always answers N. Yields (URL, statuses it answered)."""
    answered: list[int] = []
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(delay)
            with lock:
                code = int(self.path.rsplit("/", 1)[1]) if self.path.startswith("/status/") else (
                    status if len(answered) < failures else 200)
                answered.append(code)
            if code == 200 and upstream:
                request = urllib.request.Request(upstream + self.path, data=body or None, method=self.command,
                                                 headers={k: v for k, v in self.headers.items()
                                                          if k.lower() not in ("host", "content-length")})
                try:
                    with urllib.request.urlopen(request, timeout=60) as r:
                        code, payload, ctype = r.status, r.read(), r.headers.get("Content-Type", "text/plain")
                except urllib.error.HTTPError as err:
                    code, payload, ctype = err.code, err.read(), err.headers.get("Content-Type", "text/plain")
            else:
                payload, ctype = (b"ok" if code == 200 else b'{"error": "nope"}'), "text/plain"
            try:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:  # the client gave up (its timeout)
                pass

        do_GET = do_POST = do_PATCH = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    with local_http_server(Handler) as url:
        yield url, answered


def _error(call) -> BaseException:  # type: ignore[no-untyped-def]
    try:
        call()
    except Exception as err:
        return err
    raise AssertionError("no error")


def test_what_is_worth_another_try_with_real_http_clients() -> None:
    # the hub's client (huggingface_hub's httpx session, what the hub readers fail with) and the standard library's
    from huggingface_hub.utils import get_session

    hub = get_session()
    with flaky(0, delay=0.0) as (url, _):
        for code, transient in ((503, True), (500, True), (502, True), (429, True), (404, False), (400, False),
                                (401, False)):
            by_httpx = _error(lambda: hub.get(f"{url}/status/{code}").raise_for_status())  # noqa: B023
            by_urllib = _error(lambda: urllib.request.urlopen(f"{url}/status/{code}", timeout=5))  # noqa: B023
            assert [is_transient(e) for e in (by_httpx, by_urllib)] == [transient] * 2, code
            # libraries re-raise as their own errors (datasets: FileNotFoundError): the status in the chain decides
            try:
                try:
                    raise by_httpx
                except Exception as inner:
                    raise FileNotFoundError("could not find the dataset") from inner
            except FileNotFoundError as wrapped:
                assert is_transient(wrapped) is transient
    closed = f"http://127.0.0.1:{_free_port()}/"
    for refused in (_error(lambda: hub.get(closed)), _error(lambda: urllib.request.urlopen(closed, timeout=5))):
        assert is_transient(refused), type(refused)
    with flaky(0, delay=2.0) as (url, _):
        assert is_transient(_error(lambda: hub.get(url + "/x", timeout=0.2)))
    from huggingface_hub.errors import OfflineModeIsEnabled

    assert not is_transient(OfflineModeIsEnabled("offline"))
    assert not is_transient(ValueError("Unknown split 'tran'"))
    assert not is_transient(FileNotFoundError("no such file"))


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


def test_the_policy_retries_a_failing_server_until_it_answers(caplog: pytest.LogCaptureFixture) -> None:
    policy = RetryParams(attempts=3, backoff_seconds=0.3, max_backoff_seconds=5)
    with flaky(2) as (url, answered):
        started = time.monotonic()
        assert retrying(policy, "fetching the test page")(_get, url + "/page") == b"ok"
        elapsed = time.monotonic() - started
    assert answered == [503, 503, 200]
    assert elapsed >= 0.3 + 0.6  # back-off: 0.3 s, then doubled (plus jitter)
    warnings = [r.getMessage() for r in caplog.records if r.name == "pipelines.operations"]
    assert len(warnings) == 2 and warnings[0].startswith("fetching the test page failed (HTTPError: HTTP Error 503")
    assert "try 2 of 3" in warnings[0] and "try 3 of 3" in warnings[1]


def test_the_policy_gives_up_after_its_attempts_and_never_retries_a_404() -> None:
    with flaky(5) as (url, answered):
        err = _error(lambda: retrying(RetryParams(attempts=2, backoff_seconds=0.05), "x")(_get, url + "/page"))
    assert isinstance(err, urllib.error.HTTPError) and err.code == 503 and answered == [503, 503]
    with flaky(5, status=404) as (url, answered):
        err = _error(lambda: retrying(RetryParams(attempts=5, backoff_seconds=0.05), "x")(_get, url + "/page"))
    assert isinstance(err, urllib.error.HTTPError) and err.code == 404 and answered == [404]


def test_max_backoff_caps_the_wait() -> None:
    policy = RetryParams(attempts=4, backoff_seconds=0.2, max_backoff_seconds=0.2)
    with flaky(3) as (url, answered):
        started = time.monotonic()
        assert retrying(policy, "x")(_get, url + "/page") == b"ok"
        elapsed = time.monotonic() - started
    assert answered == [503, 503, 503, 200] and elapsed < 0.2 * 3 + 1.0  # uncapped: 0.2 + 0.4 + 0.8


TRACK = """
import sys
from pathlib import Path
from pipelines.config import RetryParams, TrackingParams
from pipelines.operations import apply_retries
apply_retries(RetryParams(attempts=int(sys.argv[2]), backoff_seconds=0))
from pipelines import tracking
with tracking.pipeline_run(TrackingParams(uri=sys.argv[1]), Path.cwd(), ["collect"]) as run_id:
    import mlflow
    mlflow.log_metric("x", 1.0)
print(run_id)
"""


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server on 127.0.0.1 (sqlite store); yields its URL."""
    home = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{home}/mlflow.db", "--default-artifact-root", (home / "art").as_uri(),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            cwd=home, env=subprocess_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),  # no job runners
                            stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/health", proc, home / "server.log", what="MLflow server", timeout=180)
        yield url
    finally:
        stop_process_group(proc)
        log.close()


def _track(url: str, attempts: int, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = subprocess_env(PYTHONPATH=str(REPO))
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        env.pop(key, None)
    return subprocess.run([sys.executable, "-c", TRACK, url, str(attempts)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_mlflow_retries_come_from_params(mlflow_server: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    with flaky(3, upstream=mlflow_server) as (proxy, answered):
        res = _track(proxy, 4, tmp_path)  # 3 retries per request: the first request gets through on its 4th try
    assert res.returncode == 0, res.stderr[-3000:]
    assert answered[:4] == [503, 503, 503, 200] and set(answered[4:]) == {200}
    run = MlflowClient(tracking_uri=mlflow_server).get_run(res.stdout.strip().splitlines()[-1])
    assert run.info.status == "FINISHED" and run.data.metrics == {"x": 1.0}
    with flaky(3, upstream=mlflow_server) as (proxy, answered):
        failed = _track(proxy, 2, tmp_path)  # one retry: the first request fails for good
    assert failed.returncode != 0 and answered == [503, 503]
    assert "503" in failed.stderr and "too many 503 error responses" in failed.stderr.lower()


def test_apply_retries_leaves_the_users_settings() -> None:
    script = ("import os\nfrom pipelines.config import RetryParams\nfrom pipelines.operations import apply_retries\n"
              "apply_retries(RetryParams(attempts=5, backoff_seconds=2.4))\n"
              "print(os.environ['MLFLOW_HTTP_REQUEST_MAX_RETRIES'], os.environ['MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR'],"
              " os.environ['PREFECT_CLIENT_MAX_RETRIES'])\n")
    env = subprocess_env(PYTHONPATH=str(REPO))
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "PREFECT_CLIENT_MAX_RETRIES"):
        env.pop(key, None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["4", "2", "4"], out.stderr
    env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "9"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split()[0] == "9"


PREFECT = """
import sys
from pipelines.config import RetryParams
from pipelines.operations import apply_retries
apply_retries(RetryParams(attempts=int(sys.argv[1])))  # before prefect is imported, as the CLI does
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:
    print(client.hello().status_code)
"""


@pytest.mark.slow
def test_prefect_client_retries_come_from_params(prefect_api: str, tmp_path: Path) -> None:
    base = prefect_api.removesuffix("/api")
    for attempts, expect_ok in ((3, True), (1, False)):
        with flaky(2, upstream=base) as (proxy, answered):
            env = subprocess_env(PYTHONPATH=str(REPO), PREFECT_API_URL=f"{proxy}/api")
            env.pop("PREFECT_CLIENT_MAX_RETRIES", None)
            res = subprocess.run([sys.executable, "-c", PREFECT, str(attempts)], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=300)
        if expect_ok:
            assert res.returncode == 0 and res.stdout.strip().endswith("200"), res.stderr[-3000:]
            assert answered[:3] == [503, 503, 200]
        else:
            assert res.returncode != 0 and answered[:1] == [503] and "503" in res.stderr, res.stderr[-3000:]
