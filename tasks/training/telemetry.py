"""Telemetry of a training run: rank 0's MLflow sink, model FLOPs utilisation, memory, launch-to-first-step time.

None of it reaches the exported model or the DVC metrics file (they stay reproducible bytes): metrics go to MLflow
and timings to ``run_stats.json`` beside the checkpoints.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

LAUNCH_TIME_ENV = "LMFORGE_LAUNCH_TIME"
"""Wall-clock time (``time.time()``) at which the flow started the launcher; set by ``pipelines.launch``."""

# Dense bf16 peak FLOP/s by device name (vendor datasheets); MFU is reported only for devices listed here.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def mfu(tokens_per_second: float, *, params: int, layers: int, hidden: int, context: int, peak_flops: float) -> float:
    """Model FLOPs utilisation: (6 N + 12 L H T) FLOPs per token (PaLM appendix B) x tokens/s over the peak."""
    return (6 * params + 12 * layers * hidden * context) * tokens_per_second / peak_flops


def peak_flops(device_name: str | None = None) -> float | None:
    """Peak bf16 FLOP/s of this process's GPU (or of ``device_name``); None on CPU or an unlisted device."""
    if device_name is None:
        import torch

        if not torch.cuda.is_available():
            return None
        device_name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in device_name), None)


def rss_mb() -> float:
    """Resident memory of this process in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def launch_time() -> float:
    """When this run was launched: the flow's timestamp (before the launcher and imports ran) if handed over in
    :data:`LAUNCH_TIME_ENV`, else this process's start time."""
    value = os.environ.get(LAUNCH_TIME_ENV)
    if value:
        try:
            return float(value)
        except ValueError:
            pass
    import psutil

    return psutil.Process().create_time()


def seconds_since_launch() -> float:
    """Wall-clock seconds since :func:`launch_time`, rounded to milliseconds."""
    return round(time.time() - launch_time(), 3)


class MlflowSink:
    """Rank 0's metrics to an existing MLflow run; a no-op without one. Logging errors warn once, never stop.

    Args:
        run_id: the run to log into; None falls back to ``MLFLOW_RUN_ID``, and without that nothing is logged.
        tracking_uri: None: MLFLOW_TRACKING_URI or MLflow's default.
        enabled: False on ranks other than 0.
    """

    def __init__(self, *, run_id: str | None, tracking_uri: str | None = None, enabled: bool = True) -> None:
        run_id = (run_id or os.environ.get("MLFLOW_RUN_ID")) if enabled else None
        self.client: Any = None
        self.run_id, self.failed = run_id, False
        if run_id:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=tracking_uri)

    @classmethod
    def to(cls, target: Any, *, enabled: bool) -> MlflowSink:
        """The sink of a run config's ``mlflow`` target (``tasks.training.config.MlflowTarget`` or None)."""
        return cls(run_id=target.run_id if target else None, tracking_uri=target.tracking_uri if target else None,
                   enabled=enabled)

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Log ``metrics`` at ``step`` in one batch; after a failure, stop trying (the run matters more)."""
        if self.client is None or self.failed:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        try:
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])
        except Exception as e:  # metrics are worth less than the run: keep training
            self.failed = True
            print(f"warning: MLflow logging to run {self.run_id} failed, no more attempts: {e}", file=sys.stderr)


def log_outcome(sink: MlflowSink, summary: dict[str, Any], progress: Any, *,
                tests: dict[str, dict[str, Any]] | None = None) -> None:
    """A task recipe's last MLflow numbers: best score and step, steps run, early stop, training seconds and
    tokens/s of this process, and each task's float test metrics (``test_<metric>_<task>``)."""
    final = {"best_val_score": summary["best_val_score"], "best_step": summary["best_step"],
             "steps_run": summary["steps_run"], "stopped_early": float(summary["stopped_early"]),
             "train_seconds": progress.stats["train_seconds"]}
    for task, metrics in (tests or {}).items():
        final.update({f"test_{k}_{task}": v for k, v in metrics.items() if isinstance(v, float)})
    if progress.stats["tokens_per_second"] is not None:
        final["tokens_per_second_run"] = progress.stats["tokens_per_second"]
    sink.log(final, summary["steps_run"])
