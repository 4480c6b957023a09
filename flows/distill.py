"""The distill stage: the teacher (models/finetuned per task, or models/base) distilled into a smaller student, then
compressed (magnitude and structured pruning with a short recovery, int8 weight-only), every model measured alike.

Two recipes run outside the Prefect process, as pretrain and finetune do, with the stage's MLflow run id and one run
config: ``tasks.training.distill`` (KD) exports the best student into the checkpoint directory, then
``tasks.training.compress`` makes and measures the variants and writes ``models/student`` atomically: the student per
task in Hugging Face format, ``variants/{magnitude,structured,int8}/<task>/`` and ``distill_summary.json`` (the
reproducible part: quality, parameters, sizes, history). Its timings (batch-1 latency, tokens/s, speed-ups, cache
and recovery seconds) change from run to run, so they go to ``checkpoints/distill/<stage hash>/run_stats.json`` and
from there into ``metrics/distill.json`` and MLflow, never into the versioned output. Checkpoints live there too, so a
killed run resumes (a finished KD run re-exports its student at once).
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Any

from prefect import flow

from pipelines import artifacts, tracking
from pipelines.config import Params, flatten
from pipelines.config.distill import TEACHER_INPUTS, DistillParams
from pipelines.launch import launch_training, read_hostfile, write_run_config
from tasks.modeling.checkpoint import RUN_STATS_FILE
from tasks.plots import variants_plot
from tasks.training import compress as compress_recipe  # the entry points launched below (DVC deps through their
from tasks.training import distill as kd_recipe  # imports)
from tasks.training.compress import MEASUREMENTS_KEY
from tasks.training.distill import SUMMARY_FILE

STAGE = "distill"
log = logging.getLogger("flows.distill")


class TeacherMissingError(Exception):
    """The teacher or its data is not there: the stage before distill has not run. Exit code 2."""

    exit_code = 2


def preflight(params: Params, root: Path) -> None:
    """Check the hostfile before anything is written (the pipeline calls it before its parent run); the teacher's
    files are made by the stages before this one, so they are checked when the stage starts."""
    if params.distill.launch.hostfile:
        read_hostfile(root / params.distill.launch.hostfile)


def teacher_tokenizer(root: Path, teacher: str) -> Path:
    """The tokenizer the teacher was trained with, saved beside its weights: models/base's, or the first task model's
    of models/finetuned (finetune saves the same one into every task; a checkpoint's own, not lmforge's BPE, when
    finetune started from a checkpoint)."""
    if teacher == "base":
        return root / artifacts.BASE_MODEL_DIR
    finetuned = root / artifacts.FINETUNED_DIR
    tasks = sorted(p for p in finetuned.iterdir() if (p / "config.json").is_file()) if finetuned.is_dir() else []
    return tasks[0] if tasks else finetuned  # none: the recipe says which stage to run


def run_config(cfg: DistillParams, root: Path, *, out_dir: Path, checkpoint_dir: Path, plots_dir: Path,
               run_id: str, tracking_uri: str) -> dict[str, Any]:
    """The recipe's JSON config: the distillation settings as validated and the paths of the chosen teacher."""
    settings = cfg.model_dump(mode="json", exclude={"launch", "deepspeed_config"})
    finetuned = cfg.teacher == "finetuned"
    return {**settings,
            "teacher_dir": str(root / (artifacts.FINETUNED_DIR if finetuned else artifacts.BASE_MODEL_DIR)),
            "examples_dir": str(root / artifacts.EXAMPLES_DIR) if finetuned else None,
            "tokens_dir": None if finetuned else str(root / artifacts.TOKENS_DIR),
            "tokenizer_dir": str(teacher_tokenizer(root, cfg.teacher)), "out_dir": str(out_dir),
            "checkpoint_dir": str(checkpoint_dir), "plots_dir": str(plots_dir),
            "mlflow": {"tracking_uri": tracking_uri, "run_id": run_id},
            "deepspeed_config": str(root / cfg.deepspeed_config) if cfg.deepspeed_config else None}


@flow(name=STAGE, validate_parameters=False)
def distill(params: Params, root: Path) -> dict[str, Any]:
    """Distill the teacher into the student and make its compressed variants; returns the stage counters.

    Args:
        params: the whole validated params.yaml (this stage reads its ``distill`` section).
        root: the repository.
    """
    import mlflow

    cfg = params.distill
    preflight(params, root)
    if missing := [p for p in TEACHER_INPUTS[cfg.teacher] if not (root / p).exists()]:
        raise TeacherMissingError(f"distill (teacher {cfg.teacher}) needs {missing}: run the stages before it "
                                  "(`lmforge run`)")
    out_dir, plots_dir = root / artifacts.STUDENT_DIR, artifacts.report_dir(root, STAGE, "plots")
    with tracking.stage_run(STAGE, cfg, root=root, tracking=params.tracking) as run:
        checkpoints = root / artifacts.CHECKPOINTS_DIR / STAGE / run.stage_hash[:16]
        checkpoints.mkdir(parents=True, exist_ok=True)
        student = checkpoints / "student"  # KD's export: compress reads it and publishes out_dir whole
        config = run_config(cfg, root, out_dir=student, checkpoint_dir=checkpoints, plots_dir=plots_dir,
                            run_id=run.run_id, tracking_uri=mlflow.get_tracking_uri())
        compress_config = {**config, "out_dir": str(out_dir), "student_dir": str(student)}
        steps = ((kd_recipe, config, "run.json", "launch_command"),
                 (compress_recipe, compress_config, "compress.json", "compress_command"))
        for recipe, conf, file, tag in steps:
            launch_training(recipe.__name__, write_run_config(checkpoints / file, conf), cfg.launch, root, log=log,
                            on_command=lambda cmd, tag=tag: mlflow.set_tag(f"lmforge.{tag}", shlex.join(cmd)))
        summary = json.loads((out_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
        run_stats = json.loads((checkpoints / RUN_STATS_FILE).read_text(encoding="utf-8"))
        stats = summary_metrics(summary, run_stats.get(MEASUREMENTS_KEY, {}))
        for what, why in sorted((summary.get("skipped") or {}).items()):  # what this architecture did not allow
            log.warning("distill: skipped %s: %s", what, why)
        if summary.get("variants"):
            variants_plot(stats, plots_dir / "variants.png", title="distill: quality against batch-1 latency")
        run.log_stats(stats)
        for png in sorted(plots_dir.glob("*.png")):
            run.log_artifact(png, "plots")
        run.log_artifact(out_dir / SUMMARY_FILE, "summary")
        run.log_artifact(artifacts.write_metrics(root, STAGE, stats))
    # for the run's summary only (not a metric): a forced run of a finished stage re-exports its best checkpoint
    return {**stats, artifacts.TRAINED_THIS_RUN: run_stats.get("steps_this_run", 1) > 0}


def summary_metrics(summary: dict[str, Any], measurements: dict[str, Any]) -> dict[str, Any]:
    """The flat numbers for metrics/distill.json: the run's outcome, then per model (teacher, student and each
    variant) and task ``MODEL.TASK.KEY``: parameters, size, test quality and its retention of the teacher's (from
    the reproducible summary), and the batch-1 latency, tokens/s and speed-up (measured this run); and, as text,
    ``skipped.VARIANT.PART``: what the teacher's architecture did not allow and why (MLflow takes the numbers only;
    the reasons reach it in the summary artifact)."""
    out: dict[str, Any] = {k: summary[k] for k in ("best_step", "best_val_score", "steps_run") if k in summary}
    out["stopped_early"] = int(bool(summary.get("stopped_early")))
    for source in (summary.get("variants") or {}, measurements):
        for model, per_task in source.items():
            for task, values in per_task.items():
                for key, value in flatten(values).items():
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        out[f"{model}.{task}.{key}"] = round(value, 6) if isinstance(value, float) else value
    for what, why in (summary.get("skipped") or {}).items():  # the reason, beside the numbers it explains
        out[f"skipped.{what}"] = why
    for key in [k for k in out if k.startswith("int8.") and k.endswith(".size_bytes")]:
        student = out.get(f"student.{key.removeprefix('int8.')}")
        if student and out[key]:  # how many times smaller on disk than the float student it was made from
            out[key.replace(".size_bytes", ".size_ratio_vs_student")] = round(student / out[key], 4)
    return out


if __name__ == "__main__":
    from pipelines.runner import stage_main

    raise SystemExit(stage_main(STAGE, distill))
