"""The hub readers (collect's and finetune's) retry what fails for a moment, never a 404, against a real local hub
endpoint (``HF_ENDPOINT``) on 127.0.0.1.

huggingface_hub retries each of its requests on 5xx by itself; the readers' policy (pipelines.operations.retrying)
retries the whole opening on top. The server answers 503 until the reader's policy logs its first retry (the harness
tells the server so), then 404: the second try reaches the hub, finds nothing and is not retried again.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import REPO, local_http_server, subprocess_env

HARNESS = """
import logging, sys, urllib.request
from pathlib import Path
from pipelines.config import RetryParams
from pipelines.operations import retrying

class Tell(logging.Handler):  # the server's cue: the policy is about to try again
    def emit(self, record):
        print("RETRY:", record.getMessage(), file=sys.stderr, flush=True)
        urllib.request.urlopen(urllib.request.Request(sys.argv[2] + "/_retrying", method="POST"), timeout=5).read()

logging.getLogger("pipelines.operations").addHandler(Tell())
retry = retrying(RetryParams(attempts=int(sys.argv[3]), backoff_seconds=0.1, max_backoff_seconds=0.2),
                 "opening hub dataset 'user/tiny'")
try:
    if sys.argv[1] == "collect":
        from tasks.collect.hub import iter_hf_dataset
        iter_hf_dataset(path="user/tiny", base_dir=Path("."), streaming=False, retry=retry)
    else:
        from tasks.finetune.hub import iter_hf
        list(iter_hf(path="user/tiny", config=None, splits=["train"], data_files=None, revision=None,
                     fields={"text": "text"}, base_dir=Path("."), what="task 't' data[0]", retry=retry))
except Exception as err:
    print(f"{type(err).__name__}: {err}", flush=True)
    sys.exit(3)
"""


@contextmanager
def hub(mode: str) -> Iterator[tuple[str, dict[str, list[int]]]]:
    """A local hub endpoint: ``flaky`` answers 503 (Retry-After: 0) until told a retry is coming, then 404;
    ``missing`` always 404. Yields (URL, statuses of the HEAD requests before and after the cue)."""
    seen: dict[str, list[int]] = {"before": [], "after": []}
    state = {"cued": False}

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            if self.path == "/_retrying":
                state["cued"] = True
                self.send_response(204)
                self.end_headers()
                return
            status = 503 if mode == "flaky" and not state["cued"] else 404
            if self.command == "HEAD":
                seen["after" if state["cued"] else "before"].append(status)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.send_header("Retry-After", "0")  # huggingface_hub's own retries then wait 1 s, not its back-off
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(b"{}")

        do_GET = do_HEAD = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    with local_http_server(Handler) as url:
        yield url, seen


def _read(reader: str, url: str, attempts: int, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # run outside the checkout (no local directory named like the hub id), with this checkout's code
    env = subprocess_env(HF_ENDPOINT=url, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="0", HF_DATASETS_OFFLINE="0",
                         PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", HARNESS, reader, url, str(attempts)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


ERRORS = {"collect": "SourceNotFoundError: cannot load dataset 'user/tiny'",
          "finetune": "TaskPathError: task 't' data[0].path: cannot load dataset 'user/tiny'"}


@pytest.mark.parametrize("reader", ["collect", pytest.param("finetune", marks=pytest.mark.slow)])
def test_a_404_is_not_retried_and_is_a_clear_error(reader: str, tmp_path: Path) -> None:
    with hub("missing") as (url, seen):
        res = _read(reader, url, 3, tmp_path)
    assert res.returncode == 3, res.stderr[-3000:]
    assert res.stdout.startswith(ERRORS[reader]) and "check the path or hub id" in res.stdout
    assert "RETRY:" not in res.stderr
    assert seen == {"before": [404], "after": []}  # one request, no retry by anyone


@pytest.mark.slow
@pytest.mark.parametrize("reader", ["collect", "finetune"])
def test_a_server_error_is_retried_then_the_404_ends_it(reader: str, tmp_path: Path) -> None:
    with hub("flaky") as (url, seen):
        res = _read(reader, url, 3, tmp_path)
    assert res.returncode == 3, res.stderr[-3000:]
    retries = [line for line in res.stderr.splitlines() if line.startswith("RETRY:")]
    assert len(retries) == 1 and "opening hub dataset 'user/tiny' failed" in retries[0] and "try 2 of 3" in retries[0]
    assert seen["before"] and set(seen["before"]) == {503}  # huggingface_hub's own tries, all 503
    assert seen["after"] == [404]  # our second try reached the hub: not found, not retried again
    assert res.stdout.startswith(ERRORS[reader])


@pytest.mark.slow
def test_one_attempt_means_no_retry_of_ours(tmp_path: Path) -> None:
    with hub("flaky") as (url, seen):
        res = _read("collect", url, 1, tmp_path)
    assert res.returncode == 3 and "RETRY:" not in res.stderr
    assert seen["after"] == [] and set(seen["before"]) == {503}
    assert res.stdout.startswith(ERRORS["collect"]) and "the network" in res.stdout
