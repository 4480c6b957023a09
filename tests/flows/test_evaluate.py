"""The evaluate stage over the tiny pipeline of the distill test (base, fine-tuned, student and variants): every model
in metrics and in the report, the documents beside every LM figure, model cards that state what each model is, a
champion per task in the MLflow registry, a changed metrics/distill.json making the stage stale, a worse model refused
by the gate on a second evaluate, and a planted train/test overlap failing the stage with exit 2 and the offending
ids."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.config import load_params
from tests.conftest import subprocess_env
from tests.flows.test_distill import _with_distill
from tests.flows.test_finetune import _base, _prepare, _runs
from tests.tasks.training.corpus import documents, write_split

pytestmark = pytest.mark.slow

MODELS = ("finetuned", "student", "magnitude", "structured", "int8")
SMALL = {"lm": {"max_docs": 4, "batch_size": 4}, "classification": {"bootstrap": 50},
         "generation": {"max_examples": 3, "max_new_tokens": 4}, "harness": {"enabled": True, "limit": 2},
         "threads": 1}


def _fresh_test_split(repo: Path, planted: list[str] = ()) -> None:
    """A dedup test split that shares no 13-gram with train ("the" never occurs in it), plus ``planted`` training
    documents under ids ``planted-N``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [d.replace("the ", "one ") for d in documents(6, 2)]
    write_split(repo / "data/dedup/test", texts)
    if planted:
        ids = [str(i) for i in range(len(texts))] + [f"planted-{i}" for i in range(len(planted))]
        pq.write_table(pa.table({"id": ids, "text": texts + list(planted)}),
                       repo / "data/dedup/test/part-00000.parquet")


def _with_evaluate(repo: Path) -> None:
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["evaluate"] = SMALL
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _set_lm_docs(repo: Path, max_docs: int | None) -> None:
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["evaluate"]["lm"]["max_docs"] = max_docs
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _champion(repo: Path, task: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlruns.db'}",
                          registry_uri=f"sqlite:///{repo / 'mlruns.db'}")
    return str(client.get_model_version_by_alias(f"lmforge-{task}", "champion").version)


def _worsen_classifier(model_dir: Path) -> None:
    """Zero the classification head: every logit equal, every prediction the first label."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    with torch.no_grad():
        model.score.weight.zero_()
    model.save_pretrained(model_dir)


def test_evaluate_scores_reports_registers_and_gates(repo_copy: Path, prefect_api: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.distill import distill
    from flows.evaluate import evaluate
    from flows.finetune import finetune

    _prepare(repo_copy)
    _fresh_test_split(repo_copy)
    _with_distill(repo_copy)
    _with_evaluate(repo_copy)
    _base(repo_copy)
    finetune(params=load_params(repo_copy), root=repo_copy)
    distill(params=load_params(repo_copy), root=repo_copy)
    # the clean stage's funnel, as metrics/clean.json holds it (clean did not run here): the report and cards show it
    (repo_copy / "metrics/clean.json").write_text(json.dumps({"funnel.collected.docs": 500, "funnel.kept.docs": 446}))
    stats = evaluate(params=load_params(repo_copy), root=repo_copy)

    metrics = json.loads((repo_copy / "metrics/evaluate.json").read_text())
    assert metrics == stats
    for model in MODELS:
        assert 0 <= metrics[f"{model}.topic.test.macro_f1"] <= 1
        assert metrics[f"{model}.topic.test.macro_f1_ci_low"] <= metrics[f"{model}.topic.test.macro_f1"]
        assert metrics[f"{model}.qa.test.perplexity"] > 1
        assert metrics[f"{model}.topic.latency_p50_ms"] > 0  # from metrics/distill.json
        assert f"{model}.topic.promoted" in metrics and f"{model}.qa.registry_version" in metrics
    assert metrics["finetuned.topic.latency_p50_ms"] == json.loads(
        (repo_copy / "metrics/distill.json").read_text())["teacher.topic.latency_p50_ms"]
    assert "finetuned.qa.test.rougeL" in metrics and "student.qa.test.chrf" in metrics
    assert "tfidf_logreg.topic.test.macro_f1" in metrics and "lead.qa.test.rougeL" in metrics
    # the base LM beats the unigram baseline it was trained past, on the same text and scale
    assert metrics["base.lm.bits_per_byte"] < metrics["unigram.lm.bits_per_byte"]
    assert metrics["harness.lmforge_dedup_test.bits_per_byte"] > 0
    # the number of documents beside every LM figure (SMALL: the first 4 of the 6 test documents, the harness 2)
    assert metrics["base.lm.documents"] == metrics["unigram.lm.documents"] == metrics["finetuned.qa.lm.documents"] == 4
    assert metrics["harness.lmforge_dedup_test.documents"] == 2
    # sft: the perplexity covers the whole test split, the completions the first 3 prompts
    assert metrics["finetuned.qa.test.examples"] == metrics["int8.qa.test.examples"] > metrics[
        "finetuned.qa.test.generated"] == 3
    assert metrics["contamination.dedup/test.share"] == 0
    assert metrics["finetuned.topic.promoted"] == 1 and metrics["finetuned.qa.promoted"] == 1

    page = (repo_copy / "reports/evaluate/index.html").read_text()
    for model in (*MODELS, "tfidf_logreg", "lead", "base", "unigram"):
        assert model in page, model
    urls = re.findall(r"https?://[^\"'<\s]+", page)
    assert urls and all(u.startswith("http://127.0.0.1:5000/#/experiments/") for u in urls), urls
    assert "<th>lm_<wbr>documents</th>" in page and "446" in page  # the document counts; clean's funnel
    # the decision per task opens the page (issue 27 item 1): the first version of each task is its champion
    assert page.index('<section id="decision">') < page.index("<h2>Models and baselines</h2>")
    topic_v = metrics["topic.champion_version"]
    assert f"Use lmforge-topic v{topic_v} (alias champion): fine-tuned model from models/base, test macro_f1 " in page
    # the model cards state what each model is, computed from its files, and what every figure was measured on
    from tasks.evaluate.models import model_facts

    for model, directory in (("finetuned", "models/finetuned"), ("int8", "models/student/variants/int8")):
        card = (repo_copy / f"reports/evaluate/cards/{model}/qa/README.md").read_text()
        facts = model_facts(repo_copy / directory / "qa")
        assert f"of {facts.parameters:,} parameters (layers {facts.layers}," in card, card
        assert f"{facts.parameters:,} parameters, a context of {facts.context} tokens" in card
        assert "About a million" not in card and "| kept | 446 |" in card and "| test | 6 | perplexity |" in card
        assert 'models:/lmforge-qa@champion' in card and f"# lmforge-qa v{metrics[f'{model}.qa.registry_version']}" \
            in card
    # the int8 variant: distilled, quantized, scored on the task's test split only
    assert "Distilled from the fine-tuned model" in card and "torchao-quantized weights" in card
    assert "dedup/test" not in card and "rougeL" not in card
    # the language models (finetuned, student) complete prompts and are scored on the corpus' test split too
    card = (repo_copy / "reports/evaluate/cards/finetuned/qa/README.md").read_text()
    assert "| dedup/test | 4 | bits_per_byte |" in card and "| test | 3 | rougeL |" in card

    champions = {t: _champion(repo_copy, t) for t in ("topic", "qa")}
    assert champions == {t: str(metrics[f"{t}.champion_version"]) for t in ("topic", "qa")}
    run = next(r for r in _runs(repo_copy) if r.info.run_name == "evaluate")
    assert run.info.status == "FINISHED"
    assert {"data/finetune", "models/student"} <= {d.dataset.name for d in run.inputs.dataset_inputs}

    # every file evaluate reads is a dep: a changed metrics/distill.json makes it stale, to DVC and to lmforge
    from pipelines.versioning import Versioning

    monkeypatch.chdir(repo_copy)  # DVC's API resolves a stage's paths from the working directory, as lmforge runs it
    versioning = Versioning(repo_copy)
    versioning.record("evaluate")
    assert versioning.stale_reasons("evaluate") == []
    costs = json.loads((repo_copy / "metrics/distill.json").read_text())
    (repo_copy / "metrics/distill.json").write_text(json.dumps({**costs, "student.topic.latency_p50_ms": 1e6}))
    assert any("metrics/distill.json" in r for r in versioning.stale_reasons("evaluate")), \
        versioning.stale_reasons("evaluate")
    versioning.close()
    dvc = subprocess.run([str(Path(sys.executable).parent / "dvc"), "status", "evaluate"], cwd=repo_copy,
                         env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert "metrics/distill.json" in dvc.stdout, dvc.stdout + dvc.stderr
    (repo_copy / "metrics/distill.json").write_text(json.dumps(costs))
    monkeypatch.undo()

    # a second evaluate with a worse fine-tuned classifier: registered, refused, champion unchanged; by default the
    # LM figures cover the whole test split
    _worsen_classifier(repo_copy / "models/finetuned/topic")
    _set_lm_docs(repo_copy, None)
    again = evaluate(params=load_params(repo_copy), root=repo_copy)
    assert again["base.lm.documents"] == 6 and again["base.lm.bits_per_byte"] != metrics["base.lm.bits_per_byte"]
    assert again["finetuned.topic.test.macro_f1"] < metrics["finetuned.topic.test.macro_f1"]
    assert again["finetuned.topic.promoted"] == 0
    assert again["finetuned.topic.registry_version"] > metrics["int8.topic.registry_version"]
    assert _champion(repo_copy, "topic") == champions["topic"]
    page = (repo_copy / "reports/evaluate/index.html").read_text()
    assert f"v{again['finetuned.topic.registry_version']} (fine-tuned): kept out: test.macro_f1 " in page
    assert f"The champion did not change in this run (v{champions['topic']})." in page
    # the models whose bytes did not change are the versions they were: not registered again, nothing moved
    from mlflow import MlflowClient

    for model in MODELS:
        assert again[f"{model}.qa.registry_version"] == metrics[f"{model}.qa.registry_version"], model
        assert again[f"{model}.qa.promoted"] == 0
    uri = f"sqlite:///{repo_copy / 'mlruns.db'}"
    qa = MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions("name = 'lmforge-qa'")
    assert len(qa) == len(MODELS) and again["qa.champion_version"] == metrics["qa.champion_version"]

    # training documents planted in the test split: the stage fails, exit 2, naming them, no traceback
    train = [d for d in documents(400, 0) if len(d.split()) >= 13][:8]
    _fresh_test_split(repo_copy, planted=train)
    res = subprocess.run([sys.executable, "-m", "flows.evaluate"], cwd=repo_copy, env=subprocess_env(),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "planted-0" in res.stderr and "dedup/test" in res.stderr and "Traceback" not in res.stderr
