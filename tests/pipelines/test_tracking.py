"""MLflow as a person sees it: the experiment opens in model-development mode, pipeline runs have telling names and
their headline numbers, search trials nest under their stage run."""

from __future__ import annotations

from pathlib import Path

from pipelines import tracking
from pipelines.config import TrackingParams


def test_experiment_kind_run_names_and_headlines(tmp_path: Path) -> None:
    import mlflow
    from mlflow import MlflowClient

    params = TrackingParams(uri="sqlite:///mlruns.db", artifact_root="mlartifacts", experiment="lmforge")
    with tracking.pipeline_run(params, tmp_path, ["pretrain", "finetune"]) as run_id:
        with mlflow.start_run(run_name="finetune", nested=True):
            with tracking.trial_run("finetune", 0, {"lr": 0.001, "lora.rank": 4}) as trial_id:
                pass
        tracking.finish_pipeline_run({"pretrain.final_val_perplexity": 70.9}, ran=["finetune"])
    client = MlflowClient(tracking_uri=tracking.resolve_uri(params.uri, tmp_path))
    exp = client.get_experiment_by_name("lmforge")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # not GenAI mode (issue 16 item 4)
    parent = client.get_run(run_id)
    assert parent.info.run_name.startswith("pipeline 20") and parent.info.run_name.endswith(": finetune")
    assert parent.data.metrics == {"pretrain.final_val_perplexity": 70.9}
    trial = client.get_run(trial_id)
    assert trial.info.run_name == "finetune-trial-0" and trial.data.tags["lmforge.kind"] == "trial"
    assert trial.data.params == {"lr": "0.001", "lora.rank": "4"}
    stage = client.get_run(trial.data.tags["mlflow.parentRunId"])
    assert stage.info.run_name == "finetune" and stage.data.tags["mlflow.parentRunId"] == run_id
    # an experiment made before the tag existed gets it on the next run
    client.delete_experiment_tag(exp.experiment_id, "mlflow.experimentKind")
    tracking.configure(params, tmp_path)
    assert client.get_experiment(exp.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
