"""Telemetry: MFU, peak FLOP/s lookup, launch time, rank 0's MLflow sink."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tasks.training.telemetry import LAUNCH_TIME_ENV, MlflowSink, launch_time, mfu, peak_flops, seconds_since_launch


def test_mfu_formula_matches_a_hand_computation() -> None:
    # GPT-2 small on one H100: 124M params, 12 layers, hidden 768, context 1024, 100k tokens/s
    flops_per_token = 6 * 124e6 + 12 * 12 * 768 * 1024
    value = mfu(100_000, params=int(124e6), layers=12, hidden=768, context=1024, peak_flops=989e12)
    assert value == pytest.approx(flops_per_token * 100_000 / 989e12) and 0.08 < value < 0.09


def test_peak_flops_of_known_gpus_only() -> None:
    assert peak_flops("NVIDIA H200") == 989e12 and peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("Some Future GPU") is None


def test_launch_time_is_the_flows_timestamp_else_the_process_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LAUNCH_TIME_ENV, repr(time.time() - 5))
    assert 5 <= seconds_since_launch() < 10
    monkeypatch.delenv(LAUNCH_TIME_ENV)
    assert launch_time() <= time.time()  # this process's start


def test_sink_logs_into_the_run_and_is_a_no_op_without_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    MlflowSink(run_id=None).log({"x": 1.0}, 0)  # nothing configured: nothing happens
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("t")).info.run_id
    MlflowSink(run_id=run_id, tracking_uri=uri).log({"launch_to_first_step_seconds": 3.5}, 0)
    MlflowSink(run_id=run_id, tracking_uri=uri, enabled=False).log({"other": 1.0}, 0)  # rank > 0
    assert client.get_run(run_id).data.metrics == {"launch_to_first_step_seconds": 3.5}
    broken = MlflowSink(run_id="no-such-run", tracking_uri=uri)
    broken.log({"x": 1.0}, 0)
    broken.log({"x": 2.0}, 1)
    assert broken.failed and capsys.readouterr().err.count("MLflow logging to run no-such-run failed") == 1
