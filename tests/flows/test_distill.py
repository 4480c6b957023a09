"""The distill stage flow over a tiny fine-tuned teacher (task data written by pandas and by hand, as the finetune
stage's test does): the student and its variants load with plain transformers, metrics split into the reproducible
summary and this run's timings, lineage in MLflow, a clear error when the teacher is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines.config import load_params
from tests.flows.test_finetune import _base, _prepare, _runs

pytestmark = pytest.mark.slow

STUDENT = {"student": {"num_layers": 1, "hidden_size": 64, "num_heads": 4, "intermediate_size": 64},
           "steps": 12, "warmup_steps": 2, "eval_every": 6, "checkpoint_every": 6, "batch_size": 8, "max_length": 64,
           "lr": 0.003, "head_lr": 0.01, "threads": 1, "log_every": 3, "latency_examples": 4, "latency_warmup": 1,
           "sample_max_new_tokens": 4,
           "variants": {"magnitude": {"sparsity": 0.5, "recovery_steps": 2},
                        "structured": {"heads_fraction": 0.5, "neurons_fraction": 0.25, "recovery_steps": 2}}}


def _with_distill(repo: Path, **distill: object) -> None:
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["finetune"]["steps"] = 20
    data["distill"] = {**STUDENT, **distill}
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def test_distill_exports_student_and_variants_with_metrics_and_lineage(repo_copy: Path, prefect_api: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from flows.distill import distill
    from flows.finetune import finetune

    _prepare(repo_copy)
    _with_distill(repo_copy)
    _base(repo_copy)
    finetune(params=load_params(repo_copy), root=repo_copy)
    stats = distill(params=load_params(repo_copy), root=repo_copy)

    student_dir = repo_copy / "models/student"
    classifier = AutoModelForSequenceClassification.from_pretrained(student_dir / "topic")
    teacher = AutoModelForSequenceClassification.from_pretrained(repo_copy / "models/finetuned/topic")
    assert classifier.config.num_hidden_layers == 1 and classifier.config.id2label == {0: "animals", 1: "money"}
    assert classifier.num_parameters() < teacher.num_parameters()
    tok = AutoTokenizer.from_pretrained(student_dir / "topic")
    with torch.no_grad():
        logits = classifier(**tok("stock bank loan trade price market", return_tensors="pt")).logits
    assert logits.shape == (1, 2)
    lm = AutoModelForCausalLM.from_pretrained(student_dir / "qa")
    assert lm.config.num_hidden_layers == 1
    shrunk = AutoModelForSequenceClassification.from_pretrained(student_dir / "variants/structured/topic")
    assert shrunk.config.intermediate_size < classifier.config.intermediate_size

    metrics = json.loads((repo_copy / "metrics/distill.json").read_text())
    assert metrics["student.topic.test.accuracy"] == stats["student.topic.test.accuracy"]
    for model in ("teacher", "student", "magnitude", "structured", "int8"):
        assert f"{model}.topic.test.accuracy" in metrics and f"{model}.qa.test.perplexity" in metrics
        assert metrics[f"{model}.topic.latency_p95_ms"] >= metrics[f"{model}.topic.latency_p50_ms"] > 0
    assert metrics["student.topic.params_ratio"] < 1
    assert metrics["int8.topic.size_ratio_vs_student"] > 1.5
    # the versioned summary holds no timing, so the same inputs give the same output bytes
    def keys(node: object) -> set[str]:
        if isinstance(node, dict):
            return set(node) | {k for v in node.values() for k in keys(v)}
        return {k for v in node for k in keys(v)} if isinstance(node, list) else set()

    found = keys(json.loads((student_dir / "distill_summary.json").read_text()))
    assert not {k for k in found if k.endswith(("_ms", "_seconds", "per_second", "speedup_p50"))}, found
    assert (repo_copy / "reports/plots/distill/variants.png").is_file()
    assert (repo_copy / "reports/plots/distill/learning_curves.png").is_file()

    run = next(r for r in _runs(repo_copy) if r.info.run_name == "distill")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["student.topic.test.accuracy"] == metrics["student.topic.test.accuracy"]
    datasets = {d.dataset.name for d in run.inputs.dataset_inputs}
    assert {"data/finetune", "models/finetuned", "models/student"} <= datasets


def test_distill_without_a_teacher_says_which_stage_to_run(repo_copy: Path, prefect_api: str) -> None:
    import subprocess
    import sys

    from tests.conftest import subprocess_env

    _prepare(repo_copy)
    _with_distill(repo_copy)
    # the stage's own command (dvc.yaml's cmd, as `dvc repro -s distill` runs it) before finetune ever ran
    res = subprocess.run([sys.executable, "-m", "flows.distill"], cwd=repo_copy, env=subprocess_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "models/finetuned" in res.stderr and "lmforge run" in res.stderr and "Traceback" not in res.stderr
    assert not (repo_copy / "models/student").exists()
