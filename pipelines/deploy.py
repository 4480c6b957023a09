"""Schedules: the pipeline run at cron (or interval) times, three ways.

- **Embedded (no server, one machine).** :func:`run_embedded`: a foreground scheduler that starts ``lmforge run``
  in this checkout at each fire time, one run at a time, until Ctrl-C or SIGTERM. Each run is an ordinary
  ``lmforge run`` (its no-op path when nothing is stale, the ephemeral Prefect API otherwise, its own log file);
  nothing runs between fires, so an idle schedule costs no Prefect server. A run still going at the next fire time
  makes that fire be skipped (logged), never a second run beside it.
- **Served deployment (Prefect server).** :func:`serve`: the deployment ``lmforge-scheduled/NAME`` served from this
  process; the server's scheduler makes the runs, this process executes them.
- **Work-pool deployment (Prefect server and workers).** :func:`deploy_to_pool`: the deployment is registered with
  a work pool and this command returns; any worker of the pool (``prefect worker start --pool POOL``, which
  ``infra/stack.sh up`` starts) runs each scheduled or triggered run in this checkout.

Cron expressions are evaluated in UTC in all three (Prefect's default), with Prefect's own cron schedule.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEPLOYMENT_FLOW = "lmforge-scheduled"
ENTRYPOINT = "pipelines/pipeline.py:scheduled"
"""The deployed flow, by file and name: a worker loads it from the checkout (the pull step's directory)."""


class ScheduleError(Exception):
    """A schedule cannot be served as asked. Exit code 2."""

    exit_code = 2


def check_schedule(cron: str | None, every: float | None) -> None:
    """Exactly one of a valid cron expression or a positive interval (seconds).

    Raises:
        ScheduleError: neither, both, a bad cron expression or an interval <= 0.
    """
    if (cron is None) == (every is None):
        raise ScheduleError("give exactly one of --cron EXPR and --every SECONDS")
    if every is not None and not every > 0:
        raise ScheduleError(f"--every must be a positive number of seconds, not {every}")
    if cron is not None:
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron=cron)
        except ValueError:
            raise ScheduleError(f"not a valid cron expression: {cron!r}") from None


def next_fire(cron: str | None, every: float | None, after: dt.datetime, anchor: dt.datetime) -> dt.datetime:
    """The first fire time strictly after ``after``: the cron's next match (UTC), or ``anchor + k * every``."""
    if every is not None:
        k = int((after - anchor).total_seconds() // every) + 1
        return anchor + dt.timedelta(seconds=k * every)
    from prefect.server.schemas.schedules import CronSchedule

    dates = asyncio.run(CronSchedule(cron=cron).get_dates(n=2, start=after))
    fire: dt.datetime = next(d for d in dates if d > after)  # a pendulum DateTime (a datetime subclass)
    return fire.astimezone(dt.UTC)


def _log(message: str) -> None:
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S}Z schedule: {message}", flush=True)


def run_embedded(root: Path, *, cron: str | None, every: float | None, force: bool = False,
                 max_runs: int | None = None) -> int:
    """Run ``lmforge run [--force]`` in ``root`` at every fire time until interrupted (or ``max_runs`` runs);
    returns 0 (a failing run is logged with its exit code, and the schedule goes on)."""
    check_schedule(cron, every)
    anchor = dt.datetime.now(dt.UTC)
    when = next_fire(cron, every, anchor, anchor)
    what = f"cron {cron!r} (UTC)" if cron else f"every {every:g} s"
    _log(f"embedded scheduler for {root} on {what}: `lmforge run{' --force' if force else ''}` at each fire, "
         f"no server (Ctrl-C stops); next run {when:%Y-%m-%d %H:%M:%S}Z")
    runs = 0
    while max_runs is None or runs < max_runs:
        while (wait := (when - dt.datetime.now(dt.UTC)).total_seconds()) > 0:
            time.sleep(min(wait, 30.0))  # short naps: a changed wall clock is noticed
        runs += 1
        _log(f"run {runs} starts (fire time {when:%H:%M:%S}Z)")
        t0 = time.monotonic()
        cmd = [sys.executable, "-m", "pipelines.cli", "run", *(["--force"] if force else [])]
        proc = subprocess.Popen(cmd, cwd=root)
        try:
            code = proc.wait()
        except BaseException:  # Ctrl-C or SIGTERM: the run gets the same and ends cleanly (its own handler)
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
        _log(f"run {runs} ended with exit code {code} after {time.monotonic() - t0:.1f} s")
        now = dt.datetime.now(dt.UTC)
        missed = 0
        when = next_fire(cron, every, when, anchor)
        while when <= now:  # fires that passed while the run ran are skipped, not run back to back
            missed += 1
            when = next_fire(cron, every, when, anchor)
        if missed:
            _log(f"skipped {missed} fire time(s) that passed during run {runs}")
        if max_runs is None or runs < max_runs:
            _log(f"next run {when:%Y-%m-%d %H:%M:%S}Z")
    return 0


def _schedule_kwargs(cron: str | None, every: float | None) -> dict[str, Any]:
    return {"cron": cron} if cron is not None else {"interval": dt.timedelta(seconds=every or 0)}


def serve(root: Path, *, name: str, cron: str | None, every: float | None, force: bool) -> None:
    """Serve the deployment ``lmforge-scheduled/NAME`` from this process until interrupted (needs a Prefect server)."""
    from pipelines.pipeline import scheduled

    scheduled.serve(name=name, parameters={"root": str(root), "force": force}, **_schedule_kwargs(cron, every))


def deploy_to_pool(root: Path, *, name: str, pool: str, cron: str | None, every: float | None,
                   force: bool) -> str:
    """Register ``lmforge-scheduled/NAME`` with work pool ``pool``, its code pulled from ``root`` (the worker runs
    each flow run in that directory); returns the deployment id. Re-running updates the deployment.

    Raises:
        ScheduleError: the work pool does not exist on the server.
    """
    from prefect import Flow, flow
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            raise ScheduleError(f"no work pool {pool!r} on the Prefect server: create it with `prefect work-pool "
                                f"create {pool} --type process` (infra/stack.sh up does) and start a worker") from None
    deployable = flow.from_source(source=str(root), entrypoint=ENTRYPOINT)
    if not isinstance(deployable, Flow):  # a coroutine only when called from async code, which this is not
        raise TypeError(f"Prefect's flow.from_source returned a {type(deployable).__name__}, not a flow")
    dep_id = deployable.deploy(name=name, work_pool_name=pool, parameters={"root": str(root), "force": force},
                               build=False, push=False, print_next_steps=False, ignore_warnings=True,
                               **_schedule_kwargs(cron, every))
    return str(dep_id)
