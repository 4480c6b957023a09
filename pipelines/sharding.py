"""Shard-parallel map through Prefect's Dask task runner (prefect-dask).

A stage hands over a plain function from ``tasks/`` and one keyword-argument dict per shard; each call runs
as a Prefect task on a Dask worker process: a LocalCluster of ``workers`` processes by default, or an
existing cluster at ``scheduler_address``. Results come back in job order, so a stage's output never
depends on how many workers ran it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any


def dask_runner(workers: int, scheduler_address: str | None) -> Any:
    """A DaskTaskRunner: an existing scheduler when given, else a LocalCluster of single-threaded processes."""
    from prefect_dask import DaskTaskRunner

    if scheduler_address:
        return DaskTaskRunner(address=scheduler_address)
    # one thread per process: the shard functions are pure Python, the GIL would serialise threads
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None, "silence_logs": logging.ERROR})


def map_shards(fn: Callable[..., Any], jobs: Sequence[dict[str, Any]], *, name: str, workers: int,
               scheduler_address: str | None = None) -> list[Any]:
    """Run ``fn(**job)`` for every job as Prefect tasks on Dask; returns the results in job order.

    Args:
        fn: an importable function (workers import it by module and name).
        jobs: keyword arguments, one dict per shard.
        name: task name shown in Prefect (``clean-shard``...).
        workers: LocalCluster worker processes (ignored with ``scheduler_address``).
        scheduler_address: ``tcp://host:8786`` of an existing Dask scheduler, or None.
    """
    if not jobs:
        return []
    from prefect import flow, task

    shard_task = task(fn, name=name, retries=0, persist_result=False)
    runner = dask_runner(workers, scheduler_address)  # imports dask, which sets its loggers to INFO
    for logger in ("distributed", "prefect.task_runner.dask"):  # cluster chatter: start, stop, connections
        logging.getLogger(logger).setLevel(logging.WARNING)

    @flow(name=f"{name}s", task_runner=runner, validate_parameters=False)
    def fan_out() -> list[Any]:
        futures = [shard_task.submit(**job) for job in jobs]
        return [f.result() for f in futures]

    # The Dask workers get this process's settings with each task. Under Prefect's ephemeral mode those name
    # no API URL, and every worker would start a temporary API server of its own: hand them ours.
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with get_client(sync_client=True) as client:
        api_url = str(client.api_url)
    # (no heartbeat thread for the fan-out subflow: its events would outlive these settings)
    environ = dict(os.environ)
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            return fan_out()
    finally:
        # Dask's nannies write their workers' variables into this process's environment (OMP_NUM_THREADS=1,
        # MALLOC_TRIM_THRESHOLD_=65536...): left there, a later stage's training would run on one thread with
        # malloc trimming on every free (measured: 8k instead of 13k tokens/s, 3x the system time)
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        os.environ.update(environ)
