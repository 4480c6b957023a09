"""`lmforge schedule` without a server: the embedded foreground scheduler fires `lmforge run` at its times; its bad
inputs are one clear error. (The served deployment is tested in test_cli.py; the work-pool deployment run by a worker
in tests/e2e/test_stack.py.)"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from pipelines.deploy import ScheduleError, check_schedule, next_fire
from tests.conftest import run_cli, subprocess_env

UTC = dt.UTC


def test_next_fire_follows_the_cron_in_utc_and_the_interval_from_its_anchor() -> None:
    after = dt.datetime(2026, 3, 1, 2, 59, 30, tzinfo=UTC)
    assert next_fire("0 3 * * *", None, after, after) == dt.datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
    at_three = dt.datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
    assert next_fire("0 3 * * *", None, at_three, after) == dt.datetime(2026, 3, 2, 3, 0, tzinfo=UTC)  # strictly after
    assert next_fire("*/15 * * * *", None, at_three, after) == dt.datetime(2026, 3, 1, 3, 15, tzinfo=UTC)
    anchor = dt.datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    assert next_fire(None, 10, anchor, anchor) == anchor + dt.timedelta(seconds=10)
    # after a long run the next fire stays on the anchor's grid
    assert next_fire(None, 10, anchor + dt.timedelta(seconds=37), anchor) == anchor + dt.timedelta(seconds=40)


@pytest.mark.parametrize(("cron", "every", "message"), [
    (None, None, "exactly one of --cron"), ("0 3 * * *", 5.0, "exactly one of --cron"),
    ("every day", None, "not a valid cron expression: 'every day'"), (None, 0.0, "--every must be a positive"),
    (None, -3.0, "--every must be a positive")])
def test_a_schedule_is_one_valid_cron_or_one_positive_interval(cron: str | None, every: float | None,
                                                               message: str) -> None:
    with pytest.raises(ScheduleError, match=re.escape(message)):
        check_schedule(cron, every)


def test_bad_schedules_exit_2_with_a_message(repo_copy: Path) -> None:
    res = run_cli(repo_copy, "schedule", "--cron", "every day", PREFECT_API_URL="")
    assert res.returncode == 2 and "not a valid cron expression" in res.stderr, res.stderr
    res = run_cli(repo_copy, "schedule", "--every", "0", PREFECT_API_URL="")
    assert res.returncode == 2 and "--every must be a positive number of seconds" in res.stderr, res.stderr
    res = run_cli(repo_copy, "schedule", "--cron", "0 3 * * *", "--every", "5", PREFECT_API_URL="")
    assert res.returncode == 2 and "not allowed with argument" in res.stderr, res.stderr
    res = run_cli(repo_copy, "schedule", "--every", "60", "--pool", "lmforge", PREFECT_API_URL="")
    assert res.returncode == 2 and "--pool needs a Prefect server" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def _collect_only(repo: Path) -> None:
    """The checkout cut down to its first stage (the default offline corpus, ~10 s), so that a scheduled run is
    quick: dvc.yaml with the collect stage only, params.yaml without the other stages' sections."""
    dvc = yaml.safe_load((repo / "dvc.yaml").read_text())
    dvc["stages"] = {"collect": dvc["stages"]["collect"]}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    keep = {"tracking", "orchestration", "registry", "collect"}
    (repo / "params.yaml").write_text(yaml.safe_dump({k: v for k, v in params.items() if k in keep}, sort_keys=False))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run(git + ["commit", "-qam", "collect only"], cwd=repo, check=True)


@pytest.mark.slow
def test_embedded_schedule_fires_lmforge_run_without_a_server(repo_copy: Path) -> None:
    _collect_only(repo_copy)
    env = subprocess_env(PREFECT_API_URL="")  # no server: the embedded way
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "schedule", "--every", "4"], cwd=repo_copy,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # until the second scheduled run has ended
            lines.append(line)
            if "run 2 ended" in line or time.monotonic() - t0 > 300:
                break
        out = "".join(lines)
        assert "embedded scheduler" in out and "every 4 s" in out, out
        # the first fire ran the stale stage, the second found it up to date (lmforge run's no-op path)
        first, second = out.split("run 2 starts")
        assert "collect: ran" in first and "run 1 ended with exit code 0" in first, out
        assert "nothing to do: collect up to date" in second and "run 2 ended with exit code 0" in second, out
        assert (repo_copy / "data/raw").is_dir()
        assert "collect" in yaml.safe_load((repo_copy / "dvc.lock").read_text())["stages"]
        starts = [dt.datetime.strptime(m, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
                  for m in re.findall(r"^(\S+ \S+)Z schedule: run \d starts", out, re.M)]
        # fire times on the 4 s grid: the run took longer than 4 s, so fires in between were skipped, not queued
        assert len(starts) == 2 and starts[1] > starts[0], out
        assert "skipped" in out, out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        rest = proc.communicate(timeout=60)[0] or ""
    assert proc.returncode == 130, "".join(lines) + rest  # SIGTERM: lmforge's "terminated" exit code
    assert "lmforge: terminated" in rest
    survivors = [p for p in psutil.process_iter() if _in_group(p, proc.pid)]
    assert not survivors, survivors


def _in_group(p: psutil.Process, pgid: int) -> bool:
    try:
        return os.getpgid(p.pid) == pgid
    except (ProcessLookupError, psutil.Error):
        return False


@pytest.mark.slow
def test_served_deployment_takes_an_interval(repo_copy: Path, prefect_api: str) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "schedule", "--every", "86400", "--name",
                             "interval-test"], cwd=repo_copy, env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # the server's REST API (this process's Prefect settings may predate the fixture's PREFECT_API_URL)
        url = f"{prefect_api}/deployments/name/lmforge-scheduled/interval-test"
        deadline, deployment = time.monotonic() + 120, None
        while time.monotonic() < deadline and deployment is None:
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    deployment = json.loads(r.read())
            except urllib.error.HTTPError as err:
                assert err.code == 404, err
                time.sleep(1)
        assert deployment is not None, "the deployment never appeared"
        assert [s["schedule"]["interval"] for s in deployment["schedules"]] == [86400.0]
        assert deployment["work_pool_name"] is None  # served from the command, not a work pool's
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
