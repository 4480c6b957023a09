"""The pretrain stage flow: launched as a separate process group (the deepspeed launcher reading a hostfile, 2
processes), lineage, clear errors for bad launch settings and data too small."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines.config import load_params
from tests.tasks.training.corpus import documents, write_split

pytestmark = pytest.mark.slow

TINY = {"model": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 128},
        "context": 64, "steps": 30, "batch_size": 8, "lr": 0.003, "min_lr": 0.0003, "warmup_steps": 3,
        "precision": "fp32", "threads": 1, "log_every": 5, "eval_every": 10, "eval_batches": 2,
        "checkpoint_every": 10, "sample_prompts": ["the cat"], "sample_max_new_tokens": 8}


def _prepare(repo: Path, **pretrain: object) -> None:
    for split, (n, seed) in {"train": (400, 0), "val": (40, 1), "test": (40, 2)}.items():
        write_split(repo / "data/dedup" / split, documents(n, seed))
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["tokenizer"]["vocab_size"] = 300
    data["pretrain"] = {**TINY, **pretrain}
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def test_pretrain_two_processes_beats_unigram_and_logs_to_the_stage_run(repo_copy: Path, prefect_api: str) -> None:
    from mlflow import MlflowClient
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from flows.pretrain import pretrain
    from flows.tokenizer import tokenizer

    # the multi-node path with one local node: DeepSpeed's launcher starts the hostfile's 2 slots here
    (repo_copy / "infra/deepspeed/local").write_text("localhost slots=2\n")
    _prepare(repo_copy, launch={"launcher": "deepspeed", "hostfile": "infra/deepspeed/local"})
    tokenizer(params=load_params(repo_copy), root=repo_copy)
    stats = pretrain(params=load_params(repo_copy), root=repo_copy)
    assert stats["steps"] == 30
    summary = json.loads((repo_copy / "models/base/train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["zero_stage"] == 2
    assert stats["final_val_perplexity"] < 0.8 * stats["unigram_val_perplexity"]  # 30 tiny steps already beat it
    model = AutoModelForCausalLM.from_pretrained(repo_copy / "models/base")
    tok = AutoTokenizer.from_pretrained(repo_copy / "models/base")
    out = model.generate(**tok("the cat", return_tensors="pt"), max_new_tokens=5, do_sample=False)
    assert out.shape[1] > len(tok("the cat").input_ids)
    client = MlflowClient(tracking_uri=f"sqlite:///{repo_copy / 'mlruns.db'}")
    run = next(r for r in client.search_runs([client.get_experiment_by_name("lmforge").experiment_id])
               if r.info.run_name == "pretrain")
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [5, 10, 15, 20, 25, 30]  # rank 0 only: one value per logged step
    assert run.data.metrics["unigram_val_perplexity"] == stats["unigram_val_perplexity"]
    launched = run.data.tags["lmforge.launch_command"]  # also in the flow's log, before it runs
    assert "/deepspeed --master_port" in launched and "--hostfile " in launched and "--no_ssh_check" in launched
    assert list((repo_copy / "checkpoints/pretrain").glob("*/latest"))


def test_pretrain_rejects_a_context_the_data_cannot_fill(repo_copy: Path, prefect_api: str) -> None:
    from flows.pretrain import TrainingConfigError, pretrain
    from flows.tokenizer import tokenizer

    _prepare(repo_copy, context=100_000, model={**TINY["model"], "max_position_embeddings": 100_000})
    tokenizer(params=load_params(repo_copy), root=repo_copy)
    with pytest.raises(TrainingConfigError, match="code 2: pretrain: error: the train split has .* fewer than"):
        pretrain(params=load_params(repo_copy), root=repo_copy)
    assert not (repo_copy / "models/base").exists()


def test_pretrain_rejects_a_missing_hostfile_before_anything_runs(repo_copy: Path, prefect_api: str) -> None:
    from flows.pretrain import pretrain
    from pipelines.launch import LaunchConfigError

    _prepare(repo_copy, launch={"launcher": "deepspeed", "hostfile": "infra/deepspeed/nodes"})
    with pytest.raises(LaunchConfigError, match="infra/deepspeed/nodes does not exist"):
        pretrain(params=load_params(repo_copy), root=repo_copy)
    assert not (repo_copy / "checkpoints").exists() and not (repo_copy / "models/base").exists()
