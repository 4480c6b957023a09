"""The pretrain stage: data/tokens + models/tokenizer -> models/base, a Llama trained with DeepSpeed, or with
``pretrain.checkpoint`` a Hugging Face causal LM trained further (continued pretraining, weights only).

Training never runs inside the Prefect process: the flow writes the run's JSON config from params, launches the
recipe ``tasks.training.pretrain`` under the configured launcher (``pipelines.launch``: one process, torchrun, or
deepspeed with a hostfile), which streams its output into the flow's log, and hands it the stage's MLflow run id so
rank 0 logs its metrics there (launch-to-first-step seconds included; timings also in ``run_stats.json``, never in
``metrics/pretrain.json``). Checkpoints live in ``checkpoints/pretrain/<stage hash>`` (outside DVC): running the
stage again after a crash or kill resumes from the latest one with the same step count and data order. The base
checkpoint is resolved and checked before anything is written; its content digest is an input of the stage run, and
models/base names it in ``base_checkpoint.json``.
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Any

from prefect import flow

from pipelines import artifacts, operations, tracking
from pipelines.config import Params
from pipelines.launch import TrainingConfigError, TrainingError, launch_training, read_hostfile, write_run_config
from tasks.modeling import source
from tasks.modeling.checkpoint import RUN_STATS_FILE
from tasks.modeling.export import SUMMARY_FILE
from tasks.tokens import load_tokens, read_manifest
from tasks.training import pretrain as recipe  # the entry point launched below (and a DVC dep through its imports)
from tasks.training.continued import check_context
from tasks.training.data import unigram_perplexity

__all__ = ["STAGE", "TrainingConfigError", "TrainingError", "pretrain"]

STAGE = "pretrain"
SETTING = "pretrain.checkpoint"
log = logging.getLogger("flows.pretrain")


def preflight(params: Params, root: Path) -> tuple[Path, dict[str, Any]] | None:
    """Check the hostfile and resolve and check ``pretrain.checkpoint`` before anything is written (the pipeline calls
    it before its parent run); returns the checkpoint's directory and ``config.json``, None without one.

    Raises:
        LaunchConfigError: a bad hostfile. CheckpointError: naming ``pretrain.checkpoint`` (not found, hub unreachable,
            an encoder). ConfigError: ``pretrain.context`` beyond the checkpoint's positions.
    """
    cfg = params.pretrain
    if cfg.launch.hostfile:  # a bad hostfile is a clear error before anything runs
        read_hostfile(root / cfg.launch.hostfile)
    if cfg.checkpoint is None:
        return None
    directory = source.resolve(cfg.checkpoint.path, revision=cfg.checkpoint.revision, root=root, setting=SETTING,
                               retry=operations.retrying(params.operations.retries, "downloading a checkpoint"))
    config = source.check(directory, setting=SETTING, needs_decoder=True)
    check_context(config, context=cfg.context)
    return directory, config


@flow(name=STAGE, validate_parameters=False)
def pretrain(params: Params, root: Path) -> dict[str, float]:
    """Train the base model; returns the stage counters (val loss/perplexity next to a unigram baseline).

    Args:
        params: the whole validated params.yaml (this stage reads its ``pretrain`` section).
        root: the repository.
    """
    import mlflow

    cfg = params.pretrain
    tokens_dir, out_dir = root / artifacts.TOKENS_DIR, root / artifacts.BASE_MODEL_DIR
    resolved = preflight(params, root)
    with tracking.stage_run(STAGE, cfg, root=root, tracking=params.tracking) as run:
        checkpoints = root / artifacts.CHECKPOINTS_DIR / STAGE / run.stage_hash[:16]
        checkpoints.mkdir(parents=True, exist_ok=True)
        # the shared settings as validated (precision "auto" is resolved by the entry point), plus the paths
        run_config = {**cfg.model_dump(mode="json", exclude={"launch", "deepspeed_config", "checkpoint"}),
                      "tokens_dir": str(tokens_dir), "tokenizer_dir": str(root / artifacts.TOKENIZER_DIR),
                      "out_dir": str(out_dir), "checkpoint_dir": str(checkpoints),
                      "mlflow": {"tracking_uri": mlflow.get_tracking_uri(), "run_id": run.run_id},
                      "deepspeed_config": str(root / cfg.deepspeed_config) if cfg.deepspeed_config else None}
        if resolved is not None and cfg.checkpoint is not None:  # an input of this run, by its content digest
            base = source.describe(resolved[0], source=cfg.checkpoint.path, revision=cfg.checkpoint.revision,
                                   config=resolved[1])
            run.log_checkpoint(base.record())
            run_config["base_checkpoint"] = {"dir": str(base.dir), "provenance": base.provenance()}
        config_path = write_run_config(checkpoints / "run.json", run_config)
        # how the processes were started, for lineage
        launch_training(recipe.__name__, config_path, cfg.launch, root, log=log,
                        on_command=lambda cmd: mlflow.set_tag("lmforge.launch_command", shlex.join(cmd)))
        summary = json.loads((out_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
        timings = json.loads((checkpoints / RUN_STATS_FILE).read_text(encoding="utf-8"))
        manifest = read_manifest(tokens_dir)
        baseline = unigram_perplexity(load_tokens(tokens_dir, "train"), load_tokens(tokens_dir, "val"),
                                      int(manifest["vocab_size"]))
        stats = {"final_val_loss": summary["final_val_loss"], "final_val_perplexity": summary["final_val_perplexity"],
                 "unigram_val_perplexity": round(baseline, 3), "steps": summary["steps"], "params": summary["params"],
                 "tokens": summary["tokens"]}
        # timings go to MLflow only: metrics/pretrain.json stays the same bytes for the same config and data
        if timings["tokens_per_second"] is not None:  # None: resumed at the last step, nothing trained
            run.log_stats({"tokens_per_second": timings["tokens_per_second"]})
        run.log_stats(stats)
        run.log_artifact(out_dir / "samples.json", "samples")
        run.log_artifact(artifacts.write_metrics(root, STAGE, stats))
    # for the run's summary only (not a metric): a forced run of a finished stage re-exports its last checkpoint
    return {**stats, artifacts.TRAINED_THIS_RUN: timings["tokens_this_run"] > 0}


if __name__ == "__main__":
    from pipelines.runner import stage_main

    raise SystemExit(stage_main(STAGE, pretrain))
