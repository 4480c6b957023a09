"""The end-to-end pipeline: one Prefect flow running each stage flow as a subflow in DAG order.

The only module that imports flows. A stage runs when it is forced or DVC reports it stale (checked just
before it would run, after its upstream stages ran); after it succeeds, its deps, params and outputs are
recorded in dvc.lock, so a second run and ``dvc status`` find nothing to do.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow

from pipelines import artifacts, sharding, tracking
from pipelines.config import Params
from pipelines.runner import raise_if_terminated
from pipelines.versioning import Versioning, plan_run

log = logging.getLogger("pipelines.pipeline")
RUN_ID_KEY = "mlflow_run_id"
"""Key of the pipeline's MLflow run id in what :func:`pipeline` returns (beside one entry per stage)."""


def stage_flow(stage: str) -> Callable[..., Any]:
    """The Prefect flow of a dvc.yaml stage: the function named like the stage in ``flows.STAGE``."""
    return getattr(importlib.import_module(f"flows.{stage}"), stage)


def stage_preflight(stage: str) -> Callable[..., None] | None:
    """The stage's ``preflight(params, root)`` (checks that need no output written), if its flow module has one."""
    return getattr(importlib.import_module(f"flows.{stage}"), "preflight", None)


def duration(seconds: float) -> str:
    """``42 s`` or ``7 min 31 s``: a stage's wall time as the run's summary prints it."""
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60} s" if whole >= 60 else f"{whole} s"


@flow(name="lmforge", validate_parameters=False)
def pipeline(params: Params, root: Path, plan: list[str], forced: list[str]) -> dict[str, str]:
    """Run the stages of ``plan`` (in order) that are forced or stale; returns what happened to each (and the
    pipeline's MLflow run id under :data:`RUN_ID_KEY`).

    Args:
        params: validated params.yaml.
        root: the repository.
        plan: stages to consider, in DAG order.
        forced: stages to run even when DVC finds them up to date.
    """
    outcome: dict[str, str] = {}
    seconds: dict[str, float] = {}  # wall time of each stage that ran (stage flow + recording in dvc.lock)
    # each planned stage's preflight (where its flow module has one) before any MLflow run opens: an error found
    # before anything is written (a missing source) leaves nothing written, in the tracking store included
    for stage in plan:
        if (check := stage_preflight(stage)) is not None:
            check(params=params, root=root)
    versioning = Versioning(root, params)
    try:
        # one Dask cluster for every shard map of the run (started only if a map needs one)
        with tracking.pipeline_run(params.tracking, root, plan) as run_id, sharding.cluster_scope():
            outcome[RUN_ID_KEY] = run_id
            for stage in plan:
                raise_if_terminated()  # between stages: a SIGTERM whose exception a callback swallowed
                reasons = ["forced"] if stage in forced else versioning.stale_reasons(stage)
                if not reasons:
                    log.info("%s: up to date, skipped", stage)
                    outcome[stage] = "up to date"
                    continue
                log.info("%s: running (%s)", stage, "; ".join(reasons[:3]))
                started = time.monotonic()
                result = stage_flow(stage)(params=params, root=root)
                versioning.record(stage)
                seconds[stage] = time.monotonic() - started
                trained = result.get(artifacts.TRAINED_THIS_RUN, True) if isinstance(result, dict) else True
                took = duration(seconds[stage])
                outcome[stage] = (f"ran in {took}" if trained
                                  else f"ran in {took} (re-exported the finished checkpoint, nothing trained)")
            # the parent run carries the run's headline numbers and a name that tells runs apart
            tracking.finish_pipeline_run(
                {f"{stage}.{k}": v for stage in plan for k, v in artifacts.headline(root, stage).items()}
                | {f"{stage}.wall_seconds": round(value, 1) for stage, value in seconds.items()},
                ran=[s for s in plan if outcome.get(s, "").startswith("ran")])
    finally:
        versioning.close()
    return outcome


@flow(name="lmforge-scheduled", validate_parameters=False)
def scheduled(root: str, force: bool = False) -> dict[str, str]:
    """Entry point of the scheduled deployment: plan from params.yaml and DVC at run time, then run the pipeline.

    Args:
        root: the repository the worker runs in.
        force: run every stage even when up to date.
    """
    from pipelines.config import load_params

    repo = Path(root)
    params = load_params(repo)
    plan, forced = plan_run(repo, [], force, None)
    return pipeline(params=params, root=repo, plan=plan, forced=forced)
