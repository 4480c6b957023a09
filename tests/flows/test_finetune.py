"""The finetune stage flow on task data written by other tools (a pandas CSV, a jsonl file, class folders) over a
tiny pretrained base: outputs, metrics, lineage, the search's nested trial runs, clear errors before any run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from pipelines.config import load_params
from tests.conftest import run_cli
from tests.flows.test_pretrain import TINY
from tests.tasks.training.corpus import documents, write_split

pytestmark = pytest.mark.slow

ANIMALS = "cat dog bird horse mouse fish".split()
MONEY = "stock price market bank loan trade".split()
TUNE = {"steps": 40, "batch_size": 8, "max_length": 64, "lr": 0.003, "head_lr": 0.01, "warmup_steps": 4,
        "eval_every": 10, "checkpoint_every": 10, "precision": "fp32", "threads": 1, "log_every": 5,
        "early_stopping": {"enabled": True, "patience": 3, "min_delta": 0.0}, "sample_max_new_tokens": 6}


def _write_tasks(repo: Path) -> None:
    import pandas as pd

    rng = random.Random(0)
    rows = [{"sentence": " ".join(rng.choice(words) for _ in range(6)), "topic": topic}
            for _ in range(60) for topic, words in (("animals", ANIMALS), ("money", MONEY))]
    (repo / "taskdata").mkdir()
    pd.DataFrame(rows).to_csv(repo / "taskdata/topics.csv", index=False)  # written by pandas, not by us
    with (repo / "taskdata/qa.jsonl").open("w") as f:
        for i in range(60):
            word = rng.choice(ANIMALS)
            f.write(json.dumps({"question": f"the {word} {i} sat on", "answer": f"the mat. the {word} sat."}) + "\n")
        f.write(json.dumps({"question": "no answer field"}) + "\n")  # quarantined: missing field


def _prepare(repo: Path, **finetune: object) -> None:
    for split, (n, seed) in {"train": (400, 0), "val": (40, 1), "test": (40, 2)}.items():
        write_split(repo / "data/dedup" / split, documents(n, seed))
    _write_tasks(repo)
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["tokenizer"]["vocab_size"] = 300
    data["pretrain"] = {**TINY, "steps": 20}
    data["finetune"] = {
        **TUNE,
        "tasks": [
            {"name": "topic", "type": "classification",
             "data": [{"kind": "files", "paths": ["taskdata/topics.csv"], "fields": {"text": "sentence",
                                                                                      "label": "topic"}}]},
            {"name": "qa", "type": "sft",
             "data": [{"kind": "files", "paths": ["taskdata/qa.jsonl"], "fields": {"prompt": "question",
                                                                                    "response": "answer"}}]},
        ],
        **finetune,
    }
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _base(repo: Path) -> None:
    from flows.pretrain import pretrain
    from flows.tokenizer import tokenizer

    tokenizer(params=load_params(repo), root=repo)
    pretrain(params=load_params(repo), root=repo)


def _runs(repo: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlruns.db'}")
    exp = client.get_experiment_by_name("lmforge")
    return client.search_runs([exp.experiment_id]) if exp else []


def test_finetune_two_tasks_exports_loadable_models_metrics_and_lineage(repo_copy: Path, prefect_api: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from flows.finetune import finetune

    _prepare(repo_copy)
    _base(repo_copy)
    stats = finetune(params=load_params(repo_copy), root=repo_copy)
    manifest = json.loads((repo_copy / "data/finetune/manifest.json").read_text())
    assert manifest["tasks"]["topic"]["labels"] == ["animals", "money"]
    quarantine = [json.loads(line) for line in (repo_copy / "data/finetune/qa/quarantine.jsonl").open()]
    assert [(q["reason"], q["where"]) for q in quarantine] == [("missing_field", "taskdata/qa.jsonl:61")]
    assert stats["topic.test.accuracy"] > 0.8  # two disjoint vocabularies: separable
    metrics = json.loads((repo_copy / "metrics/finetune.json").read_text())
    assert metrics["topic.test.accuracy"] == stats["topic.test.accuracy"]

    classifier = AutoModelForSequenceClassification.from_pretrained(repo_copy / "models/finetuned/topic")
    tok = AutoTokenizer.from_pretrained(repo_copy / "models/finetuned/topic")
    assert classifier.config.id2label == {0: "animals", 1: "money"}
    with torch.no_grad():
        logits = classifier(**tok("stock bank loan trade price market", return_tensors="pt")).logits
    assert classifier.config.id2label[int(logits.argmax())] == "money"
    lm = AutoModelForCausalLM.from_pretrained(repo_copy / "models/finetuned/qa")
    sft_tok = AutoTokenizer.from_pretrained(repo_copy / "models/finetuned/qa")
    ids = sft_tok.apply_chat_template([{"role": "user", "content": "the cat sat on"}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
    out = lm.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert (repo_copy / "reports/plots/finetune/learning_curves.png").is_file()

    run = next(r for r in _runs(repo_copy) if r.info.run_name == "finetune")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["topic.test.accuracy"] == stats["topic.test.accuracy"]
    datasets = {d.dataset.name for d in run.inputs.dataset_inputs}
    assert {"data/dedup", "models/base", "data/finetune", "models/finetuned"} <= datasets
    assert run.data.tags["lmforge.launch_command"].endswith(" --config " + str(
        next((repo_copy / "checkpoints/finetune").glob("*/run.json"))))


def test_search_runs_trials_as_nested_runs_and_exports_the_best(repo_copy: Path, prefect_api: str) -> None:
    from flows.finetune import finetune

    _prepare(repo_copy, steps=20, eval_every=10,
             search={"enabled": True, "trials": 2, "lr": {"low": 0.001, "high": 0.01}})
    _base(repo_copy)
    stats = finetune(params=load_params(repo_copy), root=repo_copy)
    assert stats["search.trials"] == 2
    runs = _runs(repo_copy)
    stage = next(r for r in runs if r.info.run_name == "finetune")
    trials = [r for r in runs if r.data.tags.get("lmforge.kind") == "trial"]
    assert len(trials) == 2
    assert {t.data.tags["mlflow.parentRunId"] for t in trials} == {stage.info.run_id}
    assert all("lr" in t.data.params and "val_score" in t.data.metrics for t in trials)
    recorded = json.loads((repo_copy / "reports/plots/finetune/search.json").read_text())
    best = max((t for t in recorded if t["val_score"] is not None), key=lambda t: t["val_score"])
    summary = json.loads((repo_copy / "models/finetuned/finetune_summary.json").read_text())
    assert summary["best_val_score"] == pytest.approx(best["val_score"])
    assert (repo_copy / "reports/plots/finetune/search.png").is_file()


def test_missing_task_file_is_refused_before_any_run(repo_copy: Path, prefect_api: str) -> None:
    _prepare(repo_copy)
    data = yaml.safe_load((repo_copy / "params.yaml").read_text())
    data["finetune"]["tasks"][0]["data"][0]["paths"] = ["taskdata/nowhere/*.csv"]
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    res = run_cli(repo_copy, "run", "finetune")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "taskdata/nowhere" in res.stderr and "Traceback" not in res.stderr
    assert _runs(repo_copy) == []
    assert not (repo_copy / "data/finetune").exists()
