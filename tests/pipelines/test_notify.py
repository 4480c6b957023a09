"""Failure notification: one log line, and a JSON POST to a webhook that may be down or slow without harm."""

from __future__ import annotations

import http.server
import json
import logging
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from pipelines.config import NotifyParams
from pipelines.notify import payload, run_finished
from tests.conftest import _free_port, local_http_server, run_cli, subprocess_env


@contextmanager
def webhook(delay: float = 0.0, status: int = 200) -> Iterator[tuple[str, list[dict]]]:
    """A real HTTP server on 127.0.0.1 that records the JSON bodies POSTed to it; yields (URL, bodies)."""
    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append({"path": self.path, "content_type": self.headers.get("Content-Type"),
                             "json": json.loads(body)})
            time.sleep(delay)
            try:
                self.send_response(status)
                self.end_headers()
            except OSError:  # the client gave up (its timeout)
                pass

        def log_message(self, *args: object) -> None:
            pass

    with local_http_server(Handler) as url:
        yield f"{url}/hooks/lmforge", received


def _failed_body(root: Path) -> dict:
    return payload(status="failed", root=root, stages=["collect", "clean"], stage="clean",
                   error=ValueError("bad shard"), run_id="abc123", started=time.time() - 5, ended=time.time())


def test_a_failure_is_one_log_line_and_a_post(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with webhook() as (url, received), caplog.at_level(logging.INFO, logger="pipelines.notify"):
        run_finished(NotifyParams(webhook_url=url), _failed_body(tmp_path))
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["lmforge run failed at stage clean: ValueError: bad shard; MLflow run abc123; log (none)"]
    assert len(received) == 1 and received[0]["path"] == "/hooks/lmforge"
    assert received[0]["content_type"] == "application/json"
    body = received[0]["json"]
    assert {k: body[k] for k in ("status", "failed_stage", "error", "mlflow_run_id", "stages")} == {
        "status": "failed", "failed_stage": "clean", "error": "ValueError: bad shard", "mlflow_run_id": "abc123",
        "stages": ["collect", "clean"]}
    assert body["host"] and body["started"] <= body["ended"] and body["git_commit"] is None  # not a git checkout


def test_success_is_posted_only_when_asked(tmp_path: Path) -> None:
    ok = payload(status="succeeded", root=tmp_path, stages=["collect"], stage=None, error=None, run_id="r1",
                 started=time.time(), ended=time.time())
    with webhook() as (url, received):
        run_finished(NotifyParams(webhook_url=url), ok)
        assert received == []
        run_finished(NotifyParams(webhook_url=url, on_success=True), ok)
        assert [r["json"]["status"] for r in received] == ["succeeded"]


@pytest.mark.parametrize("case", ["closed port", "slow", "http 500"])
def test_a_webhook_that_is_down_slow_or_failing_is_a_warning(tmp_path: Path, case: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    server = webhook(delay=5.0 if case == "slow" else 0.0, status=500 if case == "http 500" else 200)
    with server as (url, _), caplog.at_level(logging.INFO, logger="pipelines.notify"):
        if case == "closed port":
            url = f"http://127.0.0.1:{_free_port()}/hook"
        started = time.monotonic()
        run_finished(NotifyParams(webhook_url=url, timeout_seconds=0.5), _failed_body(tmp_path))  # never raises
        assert time.monotonic() - started < 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(f"failure notification: the webhook {url} ")
    assert ("answered HTTP 500" if case == "http 500" else "could not be reached") in warnings[0]
    assert any(r.levelno == logging.ERROR for r in caplog.records)  # the failure's own line is still there


def test_notify_params_are_checked() -> None:
    from pipelines.config import ParamsError, parse_params

    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    data["operations"]["notify"]["webhook_url"] = "ftp://example"
    data["operations"]["retries"]["attempts"] = 0
    data["operations"]["retries"]["backof_seconds"] = 1
    with pytest.raises(ParamsError) as info:
        parse_params(data)
    msg = str(info.value)
    assert "operations.notify.webhook_url: String should match pattern" in msg
    assert "operations.retries.attempts: Input should be greater than or equal to 1" in msg
    assert "operations.retries.backof_seconds: unknown key" in msg


def _failing_collect(repo: Path, url: str) -> None:
    """A collect run that fails after the pipeline's MLflow run opened: its data gate wants more rows than it gets."""
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["collect"]["sources"] = [{"name": "stdlib", "kind": "default", "max_docs": 60}]
    data["collect"]["validation"] = {"min_rows": 1000, "max_rows": None}
    data["operations"]["notify"] = {"webhook_url": url, "timeout_seconds": 2, "on_success": False}
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.slow
def test_a_failing_run_posts_to_the_webhook_and_a_dead_webhook_changes_nothing(repo_copy: Path,
                                                                                prefect_api: str) -> None:
    repo = repo_copy
    with webhook() as (url, received):
        _failing_collect(repo, url)
        res = run_cli(repo, "run", "collect")
    assert res.returncode == 1, res.stderr[-3000:]
    assert "data validation 'collect' failed" in res.stderr
    assert len(received) == 1, res.stderr[-3000:]
    body = received[0]["json"]
    assert body["status"] == "failed" and body["failed_stage"] == "collect" and body["stages"] == ["collect"]
    assert body["error"].startswith("ValidationFailed") or "data validation 'collect' failed" in body["error"]
    with sqlite3.connect(repo / "mlruns.db") as db:
        status = db.execute("select status from runs where run_uuid = ?", (body["mlflow_run_id"],)).fetchone()
    assert status == ("FAILED",)  # the pipeline's parent run, closed as failed
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert body["git_commit"] == head
    assert body["log_file"] and f"the whole log of this run: {body['log_file']}" in res.stderr
    console = res.stdout + res.stderr
    assert f"lmforge run failed at stage collect: {body['error'].splitlines()[0]}" in console
    assert f"MLflow run {body['mlflow_run_id']}; log {body['log_file']}" in console

    # the webhook down: the same failure, the same exit code and message, one warning more
    dead = f"http://127.0.0.1:{_free_port()}/hook"
    _failing_collect(repo, dead)
    again = run_cli(repo, "run", "collect")
    assert again.returncode == 1 and "data validation 'collect' failed" in again.stderr
    assert f"failure notification: the webhook {dead} could not be reached" in again.stdout + again.stderr
    assert "Traceback" not in again.stderr


@pytest.mark.slow
def test_a_sigterm_mid_stage_is_reported_as_interrupted(repo_copy: Path, prefect_api: str) -> None:
    repo = repo_copy
    (repo / "corpus").mkdir()
    with (repo / "corpus/big.jsonl").open("w") as f:  # collect runs long enough (~15 s) to be stopped mid-stage
        for i in range(40_000):
            f.write(json.dumps({"text": f"document {i} " + "lorem ipsum dolor sit amet " * 20}) + "\n")
    with webhook() as (url, received):
        data = yaml.safe_load((repo / "params.yaml").read_text())
        data["collect"]["sources"].append({"name": "big", "kind": "files", "paths": ["corpus/*.jsonl"]})
        data["operations"]["notify"]["webhook_url"] = url
        (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", "collect"], cwd=repo,
                                env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while not list(repo.glob("data/.raw.staging-*/part-*.parquet")):
            assert proc.poll() is None and time.monotonic() < deadline, "collect never got mid-write"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "lmforge: terminated" in err, err[-3000:]
    assert len(received) == 1, err[-3000:]
    body = received[0]["json"]
    assert body["status"] == "interrupted" and body["failed_stage"] == "collect"
    assert body["error"] == "terminated (SIGTERM)" and body["mlflow_run_id"]
