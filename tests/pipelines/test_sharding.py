"""Shard maps: Dask only when it can run something in parallel, the same results in job order either way."""

from __future__ import annotations

import os
import time

import pytest

from pipelines.sharding import map_shards, runs_in_process


def shard_job(index: int) -> tuple[int, int]:
    """A shard function (importable by Dask workers): the job's index and the process that ran it."""
    return index, os.getpid()


def test_cluster_only_for_several_shards_and_workers_or_a_scheduler() -> None:
    assert runs_in_process(1, 2, None) and runs_in_process(5, 1, None) and runs_in_process(0, 4, None)
    assert not runs_in_process(2, 2, None)
    assert not runs_in_process(1, 2, "tcp://127.0.0.1:8786"), "a configured cluster is always used"


def test_one_shard_runs_in_this_process_without_a_cluster() -> None:
    t0 = time.monotonic()
    assert map_shards(shard_job, [{"index": 7}], name="one-shard", workers=2) == [(7, os.getpid())]
    assert time.monotonic() - t0 < 2, "no cluster, no Prefect subflow: no start-up cost"


def test_one_worker_runs_every_shard_here_in_job_order() -> None:
    jobs = [{"index": i} for i in range(4)]
    assert map_shards(shard_job, jobs, name="one-worker", workers=1) == [(i, os.getpid()) for i in range(4)]


@pytest.mark.slow
def test_several_shards_and_workers_run_on_dask_in_job_order(prefect_api: str) -> None:
    results = map_shards(shard_job, [{"index": i} for i in range(3)], name="dask-shard", workers=2)
    assert [i for i, _ in results] == [0, 1, 2]
    assert os.getpid() not in {pid for _, pid in results}, "ran on the LocalCluster's worker processes"


@pytest.mark.slow
def test_maps_in_a_cluster_scope_share_one_cluster_and_it_stops_with_the_scope(prefect_api: str) -> None:
    import psutil

    from pipelines import sharding

    environ = dict(os.environ)
    with sharding.cluster_scope():
        first = map_shards(shard_job, [{"index": i} for i in range(4)], name="scoped-a", workers=2)
        second = map_shards(shard_job, [{"index": i} for i in range(4)], name="scoped-b", workers=2)
        workers = {pid for _, pid in first}
        assert {pid for _, pid in second} <= workers and os.getpid() not in workers
    _, alive = psutil.wait_procs([psutil.Process(p) for p in workers if psutil.pid_exists(p)], timeout=20)
    assert alive == [], "the scope's cluster stops with it"
    assert dict(os.environ) == environ, "the nannies' variables do not stay in this process"
