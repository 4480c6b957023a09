"""The finetune stage: task data (data/finetune) and the base model fine-tuned for every task (models/finetuned).

Two steps in one stage run. The data step (``tasks.finetune``) reads each task's data (the default tasks derive
from data/dedup; local files, class folders and Hugging Face datasets as configured), quarantines bad records with
a reason, splits and writes ``data/finetune`` through a staging directory, gated by Great Expectations. The training
step launches the recipe ``tasks.training.finetune`` outside the Prefect process, as pretrain does, with the stage's
MLflow run id; it writes ``models/finetuned`` atomically. With ``search.enabled`` an Optuna study (TPE sampler,
median pruning on the validation score of each evaluation the recipe appends to its ``evaluations.jsonl``, read as
data) runs the recipe once per trial, each trial a nested MLflow run, and the best trial's model is published.
Checkpoints live in ``checkpoints/finetune/<stage hash>`` (outside DVC), so a killed run resumes.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
from pathlib import Path
from typing import Any

from prefect import flow

from pipelines import artifacts, operations, tracking
from pipelines.config import Params, flatten
from pipelines.config.finetune import FinetuneParams
from pipelines.launch import launch_training, read_hostfile, write_run_config
from tasks.finetune.gate import validate_examples
from tasks.finetune.prepare import check_tasks, prepare_tasks
from tasks.modeling import source
from tasks.modeling.checkpoint import RUN_STATS_FILE
from tasks.modeling.evaluation import EVALUATIONS_FILE, read_evaluations
from tasks.modeling.tasktypes import task_type
from tasks.plots import search_plot
from tasks.training import finetune as recipe  # the entry point launched below (and a DVC dep through its imports)
from tasks.training.finetune import SUMMARY_FILE

STAGE = "finetune"
log = logging.getLogger("flows.finetune")


class SearchError(Exception):
    """The search ended without a complete trial. Exit code 1."""

    exit_code = 1


def preflight(params: Params, root: Path) -> None:
    """Resolve every task's local data and the checkpoint before anything is written (the pipeline calls it before
    its parent run).

    Raises:
        the data step's error naming the task and the missing path; CheckpointError naming ``finetune.checkpoint``.
    """
    check_tasks(tasks=[t.model_dump(mode="json") for t in params.finetune.tasks], base_dir=root)
    base_checkpoint(params, root, digest=False)
    if params.finetune.launch.hostfile:
        read_hostfile(root / params.finetune.launch.hostfile)


def base_checkpoint(params: Params, root: Path, *, digest: bool = True) -> source.Checkpoint | Path | None:
    """The checkpoint ``finetune.checkpoint`` names, resolved (a hub id downloaded, with retries) and checked for the
    tasks' types: described (digest, license) when ``digest``, else its directory; None for models/base."""
    spec = params.finetune.checkpoint
    if spec is None:
        return None
    kinds = [task_type(t.type) for t in params.finetune.tasks]
    directory = source.resolve(spec.path, revision=spec.revision, root=root, setting="finetune.checkpoint",
                               retry=operations.retrying(params.operations.retries, "downloading a checkpoint"))
    config = source.check(directory, setting="finetune.checkpoint", needs_decoder=any(k.generative for k in kinds),
                          heads=tuple(sorted({k.head_class for k in kinds if k.head_class})))
    return source.describe(directory, source=spec.path, revision=spec.revision, config=config) if digest \
        else directory


def run_config(cfg: FinetuneParams, root: Path, *, out_dir: Path, checkpoint_dir: Path, plots_dir: Path,
               run_id: str, tracking_uri: str, base: source.Checkpoint | None = None,
               examples_dir: Path | None = None, **overrides: Any) -> dict[str, Any]:
    """The recipe's JSON config: the training settings as validated (plus a trial's overrides) and the paths;
    ``base``: a checkpoint (its weights and tokenizer) in place of models/base; ``examples_dir``: the staged task
    data."""
    settings = cfg.model_dump(mode="json", exclude={"tasks", "search", "launch", "deepspeed_config", "checkpoint"})
    for key, value in overrides.items():  # "lora.rank" -> settings["lora"]["rank"]
        node = settings
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    own = base is None
    record = None if base is None else {k: v for k, v in base.record().items() if k != "dir"}  # no local path
    return {**settings, "examples_dir": str(examples_dir or root / artifacts.EXAMPLES_DIR),
            "base_model_dir": str(root / artifacts.BASE_MODEL_DIR if base is None else base.dir),
            "tokenizer_dir": str(root / artifacts.TOKENIZER_DIR if base is None else base.dir),
            "tokens_dir": str(root / artifacts.TOKENS_DIR) if own else None, "base_checkpoint": record,
            "out_dir": str(out_dir),
            "checkpoint_dir": str(checkpoint_dir), "plots_dir": str(plots_dir),
            "mlflow": {"tracking_uri": tracking_uri, "run_id": run_id},
            "deepspeed_config": str(root / cfg.deepspeed_config) if cfg.deepspeed_config else None}


def search(cfg: FinetuneParams, root: Path, checkpoints: Path, tracking_uri: str,
           base: source.Checkpoint | None, examples_dir: Path | None = None) -> tuple[Path, list[dict]]:
    """Run the Optuna study; returns the best trial's model directory and every trial's record."""
    import mlflow
    import optuna

    space = cfg.search
    trials: list[dict[str, Any]] = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=space.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))

    def objective(trial: optuna.Trial) -> float:
        values: dict[str, Any] = {}
        if space.lr:
            values["lr"] = trial.suggest_float("lr", space.lr.low, space.lr.high, log=True)
        if space.weight_decay:
            values["weight_decay"] = trial.suggest_float("weight_decay", space.weight_decay.low,
                                                         space.weight_decay.high, log=True)
        if space.lora_rank:
            values["lora.rank"] = trial.suggest_categorical("lora_rank", space.lora_rank)
        if space.freeze_layers:
            values["freeze_layers"] = trial.suggest_categorical("freeze_layers", space.freeze_layers)
        where = checkpoints / "trials" / f"{trial.number:03d}"
        pruned, offset = False, 0

        def report(line: str) -> bool:  # each output line: read the evaluations appended since, prune on them
            nonlocal pruned, offset
            records, offset = read_evaluations(where / "checkpoints" / EVALUATIONS_FILE, offset)
            for record in records:
                trial.report(float(record["val_score"]), int(record["step"]))
                pruned = pruned or trial.should_prune()
            return pruned

        with tracking.trial_run(STAGE, trial.number, values) as run_id:
            config = run_config(cfg, root, out_dir=where / "model", checkpoint_dir=where / "checkpoints",
                                plots_dir=where / "plots", run_id=run_id, tracking_uri=tracking_uri, base=base,
                                examples_dir=examples_dir, **values)
            launch_training(recipe.__name__, write_run_config(where / "run.json", config), cfg.launch, root,
                            log=log, on_line=report)
            if pruned:
                mlflow.set_tag("lmforge.trial_state", "pruned")
                trials.append({"number": trial.number, **values, "state": "pruned", "val_score": None})
                raise optuna.TrialPruned()
            summary = json.loads((where / "model" / SUMMARY_FILE).read_text(encoding="utf-8"))
            score = float(summary["best_val_score"])
            mlflow.log_metric("best_val_score", score)
            mlflow.set_tag("lmforge.trial_state", "complete")
        trials.append({"number": trial.number, **values, "state": "complete", "val_score": score})
        return score

    study.optimize(objective, n_trials=space.trials, catch=())
    if not any(t["state"] == "complete" for t in trials):
        raise SearchError(f"all {len(trials)} search trials were pruned: give search.trials more trials")
    best = study.best_trial
    log.info("search: best trial %d (val_score %.4f) of %d: %s", best.number, best.value, len(trials), best.params)
    return checkpoints / "trials" / f"{best.number:03d}" / "model", trials


@flow(name=STAGE, validate_parameters=False)
def finetune(params: Params, root: Path) -> dict[str, Any]:
    """Prepare the task data and fine-tune the base model; returns the stage counters.

    Args:
        params: the whole validated params.yaml (this stage reads its ``finetune`` section).
        root: the repository.
    """
    import mlflow

    cfg = params.finetune
    preflight(params, root)
    plots_dir = artifacts.report_dir(root, STAGE, "plots")
    # the task data and the models trained on it are published together when the stage succeeds, or not at all
    with tracking.stage_run(STAGE, cfg, root=root, tracking=params.tracking) as run, artifacts.staged_outputs(
            root, root / artifacts.EXAMPLES_DIR, root / artifacts.FINETUNED_DIR) as (staged, out_dir):
        base = base_checkpoint(params, root)
        assert not isinstance(base, Path)  # described (digest=True)
        if base is not None:  # the base checkpoint is an input of this run, by its content digest
            run.log_checkpoint(base.record())
        data_stats = prepare_tasks(tasks=[t.model_dump(mode="json") for t in cfg.tasks],
                                   dedup_dir=root / artifacts.DEDUP_DIR,
                                   tokenizer_dir=root / artifacts.TOKENIZER_DIR if base is None else base.dir,
                                   max_length=cfg.max_length, base_dir=root, out_dir=staged,
                                   retry=operations.retrying(params.operations.retries, "opening a hub dataset"))
        gate = validate_examples(staged, report_dir=artifacts.report_dir(root, STAGE, "gx"))
        gate.raise_for_failure()
        checkpoints = root / artifacts.CHECKPOINTS_DIR / STAGE / run.stage_hash[:16]
        checkpoints.mkdir(parents=True, exist_ok=True)
        tracking_uri = mlflow.get_tracking_uri()
        stats: dict[str, Any] = {**data_stats, **gate.stats()}
        if cfg.search.enabled:
            best_dir, trials = search(cfg, root, checkpoints, tracking_uri, base, examples_dir=staged)
            shutil.copytree(best_dir, out_dir, dirs_exist_ok=True)  # the best trial's model
            shutil.copytree(best_dir.parent / "plots", plots_dir, dirs_exist_ok=True)
            search_plot(trials, plots_dir / "search.png", title="finetune search")
            artifacts.atomic_write_text(plots_dir / "search.json", json.dumps(trials, indent=2) + "\n")
            run.log_artifact(plots_dir / "search.json", "search")
            stats["search.trials"] = len(trials)
            stats["search.pruned"] = sum(t["state"] == "pruned" for t in trials)
        else:
            config = run_config(cfg, root, out_dir=out_dir, checkpoint_dir=checkpoints, plots_dir=plots_dir,
                                run_id=run.run_id, tracking_uri=tracking_uri, base=base, examples_dir=staged)
            launch_training(recipe.__name__, write_run_config(checkpoints / "run.json", config), cfg.launch, root,
                            log=log, on_command=lambda cmd: mlflow.set_tag("lmforge.launch_command", shlex.join(cmd)))
        summary = json.loads((out_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
        stats.update(summary_metrics(summary))
        run.log_stats(stats)
        for png in sorted(plots_dir.glob("*.png")):
            run.log_artifact(png, "plots")
        run.log_artifact(out_dir / SUMMARY_FILE, "summary")
        run.log_artifact(artifacts.write_metrics(root, STAGE, stats))
        run_stats = checkpoints / RUN_STATS_FILE
        trained = cfg.search.enabled or not run_stats.is_file() or \
            json.loads(run_stats.read_text(encoding="utf-8"))["steps_this_run"] > 0
    # for the run's summary only (not a metric): a forced run of a finished stage re-exports its best checkpoint
    return {**stats, artifacts.TRAINED_THIS_RUN: trained}


def summary_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """The flat, deterministic numbers of the recipe's summary for metrics/finetune.json: the run's outcome, each
    task's best validation and test metrics of the exported weights, and its shift report."""
    out: dict[str, Any] = {k: summary[k] for k in ("best_step", "best_val_score", "steps_run", "params",
                                                   "trainable_params") if k in summary}
    out["stopped_early"] = int(bool(summary.get("stopped_early")))
    shift = (summary.get("shift") or {}).get("tasks", {})
    for task, result in summary.get("tasks", {}).items():
        for part, values in (("val", result.get("best_val", {})), ("test", result.get("test", {})),
                             ("shift", shift.get(task, {}))):
            for key, value in flatten(values).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    out[f"{task}.{part}.{key}"] = round(value, 6) if isinstance(value, float) else value
    return out


if __name__ == "__main__":
    from pipelines.runner import stage_main

    raise SystemExit(stage_main(STAGE, finetune))
