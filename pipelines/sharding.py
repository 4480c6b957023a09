"""Shard-parallel map through Prefect's Dask task runner (prefect-dask), or in this process when that is waste.

A stage hands over a plain function from ``tasks/`` and one keyword-argument dict per shard; each call runs
as a Prefect task on a Dask worker process: a LocalCluster of ``workers`` processes by default, or an
existing cluster at ``scheduler_address``. Results come back in job order, so a stage's output never
depends on how many workers ran it.

With one shard, or one worker, and no scheduler address, the jobs run one after another in this process:
starting a LocalCluster (worker processes that import Prefect and the task module) and the fan-out subflow
costs several seconds and nothing runs in parallel anyway (the default corpus is one shard).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("pipelines.sharding")

_shared_clusters: dict[int, Any] | None = None
"""Worker count -> LocalCluster, while a :func:`cluster_scope` is open (None outside one)."""

# The cluster's worker settings, as dask_runner's LocalCluster: one thread per process (the shard functions are
# pure Python, the GIL would serialise threads), no dashboard, quiet.
_CLUSTER_KWARGS: dict[str, Any] = {"threads_per_worker": 1, "processes": True, "dashboard_address": None,
                                   "silence_logs": logging.ERROR}


def _restore_environment(environ: dict[str, str]) -> None:
    # Dask's nannies write their workers' variables into this process's environment (OMP_NUM_THREADS=1,
    # MALLOC_TRIM_THRESHOLD_=65536...): left there, a later stage's training would run on one thread with
    # malloc trimming on every free (measured: 8k instead of 13k tokens/s, 3x the system time)
    for key in set(os.environ) - set(environ):
        del os.environ[key]
    os.environ.update(environ)


@contextmanager
def cluster_scope() -> Iterator[None]:
    """Let every shard map inside share one LocalCluster per worker count, started by the first map that needs it.

    The pipeline opens one around its stages, so clean and dedup on a multi-shard corpus pay for one cluster
    start (worker processes importing Prefect and the task modules: seconds each) instead of one per map. The
    clusters close when the scope ends. Nested scopes share the outer one.
    """
    global _shared_clusters
    if _shared_clusters is not None:
        yield
        return
    _shared_clusters = {}
    environ = dict(os.environ)
    try:
        yield
    finally:
        clusters, _shared_clusters = _shared_clusters, None
        for cluster in clusters.values():
            try:
                cluster.close()
            except Exception as err:  # a cluster that fails to stop must not hide the pipeline's own outcome
                log.warning("could not close the shared Dask cluster: %s", err)
        _restore_environment(environ)


def _quiet_dask() -> None:
    # importing dask sets its loggers to INFO: cluster chatter (start, stop, connections) at every map
    for logger in ("distributed", "prefect.task_runner.dask"):
        logging.getLogger(logger).setLevel(logging.WARNING)


def _shared_cluster_address(workers: int) -> str | None:
    """The scheduler address of the scope's LocalCluster of ``workers`` processes (started now if needed)."""
    if _shared_clusters is None:
        return None
    if workers not in _shared_clusters:
        from distributed import LocalCluster

        _quiet_dask()
        log.info("starting a Dask LocalCluster of %d workers for the shard maps of this run", workers)
        _shared_clusters[workers] = LocalCluster(n_workers=workers, **_CLUSTER_KWARGS)
    return str(_shared_clusters[workers].scheduler_address)


def dask_runner(workers: int, scheduler_address: str | None) -> Any:
    """A DaskTaskRunner: an existing scheduler when given, else a LocalCluster of single-threaded processes."""
    from prefect_dask import DaskTaskRunner

    if scheduler_address:
        return DaskTaskRunner(address=scheduler_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, **_CLUSTER_KWARGS})


def runs_in_process(jobs: int, workers: int, scheduler_address: str | None) -> bool:
    """Whether :func:`map_shards` runs its jobs in this process (nothing to gain from a cluster) rather than on Dask."""
    return not scheduler_address and (jobs <= 1 or workers <= 1)


def map_shards(fn: Callable[..., Any], jobs: Sequence[dict[str, Any]], *, name: str, workers: int,
               scheduler_address: str | None = None) -> list[Any]:
    """Run ``fn(**job)`` for every job as Prefect tasks on Dask; returns the results in job order.

    One job or one worker without a scheduler address: the jobs run in this process, in order, without Dask
    (see :func:`runs_in_process`); the results are the same.

    Args:
        fn: an importable function (workers import it by module and name).
        jobs: keyword arguments, one dict per shard.
        name: task name shown in Prefect (``clean-shard``...).
        workers: LocalCluster worker processes (ignored with ``scheduler_address``).
        scheduler_address: ``tcp://host:8786`` of an existing Dask scheduler, or None.
    """
    if not jobs:
        return []
    if runs_in_process(len(jobs), workers, scheduler_address):
        log.info("%s: %d shard(s) in this process (no Dask cluster for %s)", name, len(jobs),
                 "one shard" if len(jobs) == 1 else "one worker")
        return [fn(**job) for job in jobs]
    from prefect import flow, task

    environ = dict(os.environ)
    shard_task = task(name=name, retries=0, persist_result=False)(fn)
    address = scheduler_address or _shared_cluster_address(workers)
    runner = dask_runner(workers, address)
    _quiet_dask()

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
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            return fan_out()
    finally:
        _restore_environment(environ)
