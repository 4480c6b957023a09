"""The pretrain stage: data/tokens + models/tokenizer -> models/base, a Llama trained with DeepSpeed.

Training never runs inside the Prefect process: the flow writes the run's JSON config from params, launches
``tasks.training.pretrain`` under the configured launcher (one process, torchrun, or deepspeed with a
hostfile), streams its output into the flow's log, and hands it the stage's MLflow run id so rank 0 logs its
metrics there. Checkpoints live in ``checkpoints/pretrain/<stage hash>`` (outside DVC): running the stage
again after a crash or kill resumes from the latest one with the same step count and data order.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
from pathlib import Path

from prefect import flow

from pipelines import artifacts, tracking
from pipelines.config import Params
from pipelines.launch import read_hostfile, training_command
from tasks.tokens import load_tokens, read_manifest
from tasks.training.data import unigram_perplexity

STAGE = "pretrain"
log = logging.getLogger("flows.pretrain")


class TrainingError(Exception):
    """The training process failed; its output above says why. Exit code 1 (2 for a config it rejected)."""

    exit_code = 1


class TrainingConfigError(TrainingError):
    """The training entry point rejected its config (model shape, data size...). Exit code 2."""

    exit_code = 2


def resolve_precision(precision: str) -> str:
    """``auto``: bf16 on CPU (measured faster here than fp32) and on GPUs with bf16, else fp32."""
    if precision != "auto":
        return precision
    import torch

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16"


def run_streaming(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, list[str]]:
    """Run ``cmd``, logging each output line as it comes; returns the exit code and the last lines."""
    tail: list[str] = []
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            log.info("%s", line)
            tail = (tail + [line])[-20:]
        return proc.wait(), tail


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
    if cfg.launch.hostfile:  # a bad hostfile is a clear error before anything runs
        read_hostfile(root / cfg.launch.hostfile)
    with tracking.stage_run(STAGE, cfg, root=root, tracking=params.tracking) as run:
        checkpoints = root / artifacts.CHECKPOINTS_DIR / STAGE / run.stage_hash[:16]
        checkpoints.mkdir(parents=True, exist_ok=True)
        run_config = {**cfg.model_dump(mode="json", exclude={"launch", "deepspeed_config"}),
                      "precision": resolve_precision(cfg.precision), "tokens_dir": str(tokens_dir),
                      "tokenizer_dir": str(root / artifacts.TOKENIZER_DIR), "out_dir": str(out_dir),
                      "checkpoint_dir": str(checkpoints),
                      "mlflow": {"tracking_uri": mlflow.get_tracking_uri(), "run_id": run.run_id},
                      "deepspeed_config": str(root / cfg.deepspeed_config) if cfg.deepspeed_config else None}
        config_path = checkpoints / "run.json"
        artifacts.atomic_write_text(config_path, json.dumps(run_config, indent=2, sort_keys=True) + "\n")
        cmd = training_command("tasks.training.pretrain", config_path, cfg.launch, root)
        log.info("launching: %s", shlex.join(cmd))
        mlflow.set_tag("lmforge.launch_command", shlex.join(cmd))  # how the processes were started, for lineage
        code, tail = run_streaming(cmd, root, {**os.environ, "PYTHONUNBUFFERED": "1"})
        if code != 0:
            last = next((t for t in reversed(tail) if t.strip()), "")
            error = TrainingConfigError if code == 2 else TrainingError
            raise error(f"training exited with code {code}: {last}")
        summary = json.loads((out_dir / "train_summary.json").read_text(encoding="utf-8"))
        timings = json.loads((checkpoints / "run_stats.json").read_text(encoding="utf-8"))
        manifest = read_manifest(tokens_dir)
        baseline = unigram_perplexity(load_tokens(tokens_dir, "train"), load_tokens(tokens_dir, "val"),
                                      int(manifest["vocab_size"]))
        stats = {"final_val_loss": summary["final_val_loss"], "final_val_perplexity": summary["final_val_perplexity"],
                 "unigram_val_perplexity": round(baseline, 3), "steps": summary["steps"], "params": summary["params"],
                 "tokens": summary["tokens"]}
        if timings["tokens_per_second"] is not None:  # None: resumed at the last step, nothing trained
            run.log_stats({"tokens_per_second": timings["tokens_per_second"]})
        run.log_stats(stats)
        run.log_artifact(out_dir / "samples.json", "samples")
        run.log_artifact(artifacts.write_metrics(root, STAGE, stats))
    return stats


if __name__ == "__main__":
    from pipelines.runner import stage_main

    raise SystemExit(stage_main(STAGE, pretrain))
