"""MLflow: the only code that starts runs.

One parent run per pipeline run and one nested run per stage. A stage run carries its params, counters,
artifacts, the stage's data inputs and outputs as MLflow datasets whose digests are DVC's content hashes
(the same md5 that dvc.lock records), and tags for the git commit, the DVC stage hash and the Prefect
flow-run id, so lineage can be followed from a model back to data, code and orchestration in the UI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import overrides
from pipelines.config import TrackingParams, flatten
from pipelines.stage_graph import read_stages
from pipelines.versioning import digest, stage_hash

if TYPE_CHECKING:
    from pydantic import BaseModel

EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
"""MLflow 3's UI opens an experiment without this tag in GenAI mode (traces, evaluations); ours trains models."""
PARENT_RUN_ENV = "LMFORGE_PARENT_RUN_ID"
"""Set by the pipeline so that a stage running in another process nests its run under the pipeline's."""


def resolve_uri(uri: str, root: Path) -> str:
    """Make a relative sqlite or file store path absolute under the repository."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(root / uri.removeprefix('sqlite:///')).resolve()}"
    if "://" not in uri:
        return (root / uri).resolve().as_uri()
    return uri


def import_mlflow() -> None:
    """Import MLflow and its tracking store modules (about 1 CPU-s), e.g. while something else starts."""
    import mlflow  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


def configure(params: TrackingParams, root: Path) -> str:
    """Point MLflow at the store in params and make sure the experiment exists; returns its id."""
    import mlflow

    uri = resolve_uri(params.uri, root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    exp = mlflow.get_experiment_by_name(params.experiment)
    if exp is not None:
        mlflow.set_experiment(experiment_id=exp.experiment_id)
        if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            mlflow.set_experiment_tag(EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return str(exp.experiment_id)
    # a URI (s3://..., or mlflow-artifacts:/path: through a tracking server's --serve-artifacts) or a repo path
    remote = "://" in params.artifact_root or params.artifact_root.startswith("mlflow-artifacts:")
    artifacts = params.artifact_root if remote else (root / params.artifact_root).resolve()
    exp_id = mlflow.create_experiment(params.experiment, artifact_location=str(artifacts if isinstance(
        artifacts, str) else artifacts.as_uri()))
    mlflow.set_experiment(experiment_id=exp_id)
    mlflow.set_experiment_tag(EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return str(exp_id)


def owner_tags() -> dict[str, str]:
    """Which process owns a run (host, pid, the pid's start time): what :func:`reap_dead_runs` checks."""
    import socket

    import psutil

    me = psutil.Process()
    return {"lmforge.host": socket.gethostname(), "lmforge.pid": str(me.pid),
            "lmforge.pid_started": f"{me.create_time():.3f}"}


def _alive(pid: int, started: float) -> bool:
    import psutil

    try:
        return abs(psutil.Process(pid).create_time() - started) < 1.0  # a reused pid is another process
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def reap_dead_runs(experiment_id: str) -> list[str]:
    """End as KILLED the RUNNING runs that this host's lmforge processes opened and that no process owns any more
    (a SIGKILL or a crash leaves a run RUNNING forever); returns their ids. Runs of other hosts are left alone."""
    import socket

    from mlflow import MlflowClient

    client, host, reaped = MlflowClient(), socket.gethostname(), []
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000):
        tags = run.data.tags
        if tags.get("lmforge.host") != host or "lmforge.pid" not in tags:
            continue
        if _alive(int(tags["lmforge.pid"]), float(tags.get("lmforge.pid_started", "0"))):
            continue
        client.set_tag(run.info.run_id, "lmforge.error", "killed: its process ended without closing the run "
                       "(SIGKILL or a crash); marked KILLED by the next lmforge run")
        client.set_terminated(run.info.run_id, status="KILLED")
        reaped.append(run.info.run_id)
    return reaped


def git_state(root: Path) -> dict[str, str]:
    """Commit of the checkout and whether the work tree differs from it (empty outside git)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"mlflow.source.git.commit": commit, "lmforge.git_dirty": str(bool(dirty)).lower()}


def _prefect_flow_run_id() -> str | None:
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id) if flow_run.id else None
    except ImportError:
        return None


def _metric_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", key)


class StageRun:
    """Handle on an open stage run: counters, artifacts, datasets."""

    def __init__(self, run_id: str, root: Path, stage_hash: str) -> None:
        self.run_id = run_id
        self.root = root
        self.stage_hash = stage_hash
        """md5 of the stage's cmd, dep digests and params: also the key of resumable staging directories."""

    def log_stats(self, stats: Mapping[str, Any]) -> None:
        """Send the numeric counters of a task to MLflow as metrics."""
        import mlflow

        metrics = {_metric_key(k): float(v) for k, v in flatten(stats).items()
                   if isinstance(v, int | float) and not isinstance(v, bool)}
        if metrics:
            mlflow.log_metrics(metrics)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Attach a file or a directory to the run."""
        import mlflow

        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=artifact_path or path.name)
        elif path.exists():
            mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def ui_url(self, base_url: str) -> str:
        """The run's page in the MLflow UI served at ``base_url`` (``http://127.0.0.1:5000``)."""
        import mlflow

        experiment = mlflow.get_run(self.run_id).info.experiment_id
        return f"{base_url.rstrip('/')}/#/experiments/{experiment}/runs/{self.run_id}"

    def log_checkpoint(self, record: Mapping[str, Any]) -> None:
        """Record the checkpoint a stage starts from (``tasks.modeling.source.Checkpoint.record()``): an input of the
        run named by its source and content digest, and tags naming its revision, hub commit, architecture and
        license (what the model card and the registry repeat)."""
        import mlflow
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(record["dir"]))
        ds = MetaDataset(source=source, name=f"checkpoint:{record['source']}",  # type: ignore[abstract]
                         digest=str(record["digest"])[-32:])
        mlflow.log_input(ds, context="base_checkpoint", tags={"sha256": str(record["digest"])})
        mlflow.set_tags({f"lmforge.base_checkpoint.{k}": str(record[k])[:5000] for k in
                         ("source", "revision", "commit", "digest", "model_type", "license") if record.get(k)})

    def log_dataset(self, path: Path, context: str) -> str:
        """Record ``path`` as an input or output dataset whose digest is its DVC hash; returns the digest."""
        import mlflow
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        value = digest(path, self.root)
        try:
            rel = path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:  # a source outside the repository is named by its absolute path
            rel = str(path.resolve())
        with warnings.catch_warnings():  # a local path matches two registered source classes; either is right
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(path.resolve()))
        # mlflow 3.17 leaves Dataset.profile abstract in MetaDataset; Dataset is no ABC, so it instantiates
        ds = MetaDataset(source=source, name=rel, digest=value)  # type: ignore[abstract]
        mlflow.log_input(ds, context=context, tags={"dvc.md5": value})
        return value


@contextmanager
def pipeline_run(params: TrackingParams, root: Path, stages: list[str]) -> Iterator[str]:
    """The parent run of one pipeline run; yields its id."""
    import mlflow

    reap_dead_runs(configure(params, root))
    tags = {**git_state(root), **owner_tags(), "lmforge.kind": "pipeline", "lmforge.stages": ",".join(stages),
            **overrides.tags()}
    if fid := _prefect_flow_run_id():
        tags["lmforge.prefect_flow_run_id"] = fid
    started = time.strftime("%Y-%m-%d %H:%M")
    tags["lmforge.started"] = started
    with mlflow.start_run(run_name=f"pipeline {started}", tags=tags) as run:
        os.environ[PARENT_RUN_ENV] = run.info.run_id
        try:
            yield run.info.run_id
        finally:
            os.environ.pop(PARENT_RUN_ENV, None)


@contextmanager
def stage_run(stage: str, params: BaseModel, *, root: Path, tracking: TrackingParams) -> Iterator[StageRun]:
    """A stage's run, nested under the pipeline's parent run when there is one.

    Logs params, the stage's data deps as input datasets on entry, and its outs as output datasets when the
    body finishes without an exception. A failing body marks the run FAILED with the error as a tag.
    """
    import mlflow

    spec = read_stages(root)[stage]
    section = params.model_dump(mode="json")
    if mlflow.active_run() is None:
        reap_dead_runs(configure(tracking, root))
    active = mlflow.active_run()
    parent = active.info.run_id if active else os.environ.get(PARENT_RUN_ENV)
    shash = stage_hash(spec, root, {stage: section})
    tags = {**git_state(root), **owner_tags(), "lmforge.kind": "stage", "lmforge.stage": stage,
            "lmforge.dvc_stage_hash": shash, **overrides.tags(spec.params)}
    if fid := _prefect_flow_run_id():
        tags["lmforge.prefect_flow_run_id"] = fid
    if parent:
        tags["mlflow.parentRunId"] = parent
    # nested=True only matters when a parent is active in this process; the tag covers a parent elsewhere.
    with mlflow.start_run(run_name=stage, nested=mlflow.active_run() is not None, tags=tags) as run:
        handle = StageRun(run.info.run_id, root, shash)
        mlflow.log_params({k: str(v)[:6000] for k, v in flatten(section).items()})
        mlflow.log_text(json.dumps(section, indent=2, sort_keys=True), "params.json")
        for dep in spec.data_deps:
            if (root / dep).exists():
                handle.log_dataset(root / dep, "input")
        try:
            yield handle
        except BaseException as err:
            mlflow.set_tag("lmforge.error", f"{type(err).__name__}: {err}"[:5000])
            raise
        for out in spec.outs:
            if (root / out).exists():
                handle.log_dataset(root / out, "output")


@contextmanager
def trial_run(stage: str, number: int, values: Mapping[str, Any]) -> Iterator[str]:
    """A search trial's run, nested under the stage's active run; yields its id (the training process logs its
    metrics there). Logs the trial's values as params; a failing or pruned trial ends FAILED or KILLED."""
    import mlflow

    parent = mlflow.active_run()
    tags = {**owner_tags(), "lmforge.kind": "trial", "lmforge.stage": stage, "lmforge.trial": str(number)}
    if parent is not None:
        tags.update({k: v for k, v in parent.data.tags.items() if k in ("mlflow.source.git.commit",
                                                                           "lmforge.dvc_stage_hash")})
    with mlflow.start_run(run_name=f"{stage}-trial-{number}", nested=parent is not None, tags=tags) as run:
        mlflow.log_params({k: str(v) for k, v in flatten(dict(values)).items()})
        yield run.info.run_id


def finish_pipeline_run(metrics: Mapping[str, float], ran: list[str]) -> None:
    """On the active pipeline run: log the run's headline numbers and name it after what ran (``pipeline
    2026-12-02 17:50: pretrain, finetune``), so runs are told apart in the UI."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return
    if metrics:
        mlflow.log_metrics({_metric_key(k): float(v) for k, v in metrics.items()})
    started = run.data.tags.get("lmforge.started", "")
    mlflow.set_tag("mlflow.runName", f"pipeline {started}: {', '.join(ran) if ran else 'nothing ran'}")
    mlflow.set_tag("lmforge.ran", ",".join(ran))
