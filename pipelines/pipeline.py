"""The end-to-end pipeline: one Prefect flow running each stage flow as a subflow in DAG order.

The only module that imports flows. A stage runs when it is forced or DVC reports it stale (checked just
before it would run, after its upstream stages ran); after it succeeds, its deps, params and outputs are
recorded in dvc.lock, so a second run and ``dvc status`` find nothing to do. A run that fails (a stage's error,
Ctrl-C, SIGTERM) is reported by pipelines.notify (a log line, and the webhook of ``operations.notify``).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow

from pipelines import artifacts, notify, sharding, tracking
from pipelines.config import Params
from pipelines.process import raise_if_terminated
from pipelines.stage_graph import plan_run
from pipelines.versioning import Versioning

log = logging.getLogger("pipelines.pipeline")
RUN_ID_KEY = "mlflow_run_id"
"""Key of the pipeline's MLflow run id in what :func:`pipeline` returns (beside one entry per stage)."""


def stage_flow(stage: str) -> Callable[..., Any]:
    """The Prefect flow of a dvc.yaml stage: the function named like the stage in ``flows.STAGE``."""
    flow_fn: Callable[..., Any] = getattr(importlib.import_module(f"flows.{stage}"), stage)
    return flow_fn


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
    started, at = time.time(), []  # ``at``: the stage under way (its preflight, or its run), for the notification
    try:
        # each planned stage's preflight (where its flow module has one) before any MLflow run opens: an error found
        # before anything is written (a missing source) leaves nothing written, in the tracking store included
        for stage in plan:
            at.append(stage)
            if (check := stage_preflight(stage)) is not None:
                check(params=params, root=root)
            at.pop()
        _run_stages(params, root, plan, forced, outcome, at)
    except BaseException as err:
        failed_at = at[-1] if at else None
        notify.run_finished(params.operations.notify, notify.payload(
            status="interrupted" if isinstance(err, KeyboardInterrupt) or type(err).__name__ == "TerminationSignal"
            else "failed", root=root, stages=plan, stage=failed_at, error=err, run_id=outcome.get(RUN_ID_KEY),
            started=started, ended=time.time()))
        raise
    notify.run_finished(params.operations.notify, notify.payload(
        status="succeeded", root=root, stages=plan, stage=None, error=None, run_id=outcome.get(RUN_ID_KEY),
        started=started, ended=time.time()))
    return outcome


def _run_stages(params: Params, root: Path, plan: list[str], forced: list[str], outcome: dict[str, str],
                at: list[str]) -> None:
    """The body of :func:`pipeline` once preflights passed: ``outcome`` is filled as stages run; ``at`` holds the
    stage under way while it runs (what a failure reports)."""
    seconds: dict[str, float] = {}  # wall time of each stage that ran (stage flow + recording in dvc.lock)
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
                at.append(stage)
                begun = time.monotonic()
                result = stage_flow(stage)(params=params, root=root)
                versioning.record(stage)
                seconds[stage] = time.monotonic() - begun
                at.pop()
                trained = result.get(artifacts.TRAINED_THIS_RUN, True) if isinstance(result, dict) else True
                took = duration(seconds[stage])
                outcome[stage] = (f"ran in {took}" if trained
                                  else f"ran in {took} (re-exported the finished checkpoint, nothing trained)")
            # the parent run carries the run's headline numbers and a name that tells runs apart
            tracking.finish_pipeline_run(
                {f"{stage}.{k}": v for stage in plan for k, v in artifacts.headline(root, stage).items()}
                | {f"{stage}.wall_seconds": round(value, 1) for stage, value in seconds.items()},
                ran=[s for s in plan if outcome.get(s, "").startswith("ran")])
            raise_if_terminated()  # a SIGTERM whose exception was swallowed fails the run here, and is reported
    finally:
        versioning.close()


@flow(name="lmforge-scheduled", validate_parameters=False)
def scheduled(root: str, force: bool = False) -> dict[str, str]:
    """Entry point of the scheduled deployment: plan from params.yaml and DVC at run time, then run the pipeline.

    Args:
        root: the repository the worker runs in.
        force: run every stage even when up to date.
    """
    from pipelines.config import load_params
    from pipelines.lock import workspace_lock
    from pipelines.operations import apply_retries

    repo = Path(root)
    params = load_params(repo)
    apply_retries(params.operations.retries)
    plan, forced = plan_run(repo, [], force, None)
    with workspace_lock(repo, command=f"scheduled run of {repo}"):  # busy: this run fails at once, naming the holder
        return pipeline(params=params, root=repo, plan=plan, forced=forced)
