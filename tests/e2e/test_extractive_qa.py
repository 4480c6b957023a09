"""An extractive QA task through the README's `lmforge run`, from a SQuAD 2.0 json file (format squad, with answers
to quarantine): fine-tuned, distilled, evaluated beside the overlap-sentence baseline with intervals, registered
(gate on test.f1) and served by the pyfunc, for lmforge's own model and then for a tiny BERT checkpoint.

On a copy of the session's shared finished run (tests/e2e/conftest.py), so only finetune, distill and evaluate run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.assets.checkpoints import save_checkpoint
from tests.assets.squad import write_squad
from tests.conftest import run_cli
from tests.e2e.conftest import FinishedRun

pytestmark = pytest.mark.slow

TASK = {"name": "squad", "type": "extractive_qa", "data": [{"kind": "files", "paths": ["qa/*.json"],
                                                            "format": "squad"}],
        "extractive_qa": {"unanswerable": True, "doc_stride": 32, "max_answer_length": 8}}


def _params(repo: Path, **finetune: object) -> None:
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["finetune"].update(tasks=[TASK], **finetune)
    data["distill"]["student"] = data["distill"].get("student") if "checkpoint" not in finetune else {}
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _served(repo: Path) -> tuple[dict[str, object], object]:
    """This run's fine-tuned version of lmforge-squad (champion or not) and its pyfunc's answer to one question."""
    import mlflow
    import pandas as pd

    store = f"sqlite:///{repo / 'mlruns.db'}"
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    version = max((v for v in client.search_model_versions("name='lmforge-squad'")
                   if v.tags.get("lmforge.model") == "finetuned"), key=lambda v: int(v.version))
    model = mlflow.pyfunc.load_model(f"models:/lmforge-squad/{version.version}")
    context = "the cat sat on the mat . the dog ran to the log . the bird flew over the tree ."
    out = model.predict(pd.DataFrame({"question": ["what ran to the log ?"], "context": [context]}))
    return dict(version.tags), out


@pytest.mark.timeout(3000)
def test_extractive_qa_through_lmforge_run_for_lmforge_model_and_a_bert_checkpoint(
        finished_run: FinishedRun) -> None:
    repo = finished_run.repo
    env = {"PREFECT_API_URL": ""}
    write_squad(repo / "qa" / "train.json", 60, unanswerable=True, bad=True)

    # lmforge's own model (models/base)
    _params(repo)
    res = run_cli(repo, "run", timeout=1800, **env)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    for stage in ("finetune", "distill", "evaluate"):
        assert f"{stage}: ran" in res.stdout, res.stdout
    finetune = json.loads((repo / "metrics/finetune.json").read_text())
    assert finetune["squad.quarantined.answer_mismatch"] == 1 and finetune["squad.quarantined.missing_field"] == 1
    for model in ("finetuned", "student"):
        config = json.loads((repo / f"models/{model}/squad/config.json").read_text())
        assert config["architectures"] == ["LlamaForQuestionAnswering"], config
        assert config["task_specific_params"]["question-answering"]["doc_stride"] == 32
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    for model in ("finetuned", "student", "overlap_sentence"):
        low, f1, high = (metrics[f"{model}.squad.test.f1{k}"] for k in ("_ci_low", "", "_ci_high"))
        assert 0.0 <= low <= f1 <= high <= 1.0 and f"{model}.squad.test.exact_match" in metrics
    assert "overlap_sentence/squad" in (repo / "reports/evaluate/index.html").read_text()
    card = (repo / "reports/evaluate/cards/finetuned/squad/README.md").read_text()
    assert "pipeline_tag: question-answering" in card and "AutoModelForQuestionAnswering" in card
    tags, out = _served(repo)
    assert tags["lmforge.kind"] == "extractive_qa"
    assert list(out.columns) == ["answer", "start", "end", "score"]  # type: ignore[attr-defined]

    # a BERT checkpoint lmforge did not train: its WordPiece tokenizer, a CLS null position
    save_checkpoint("bert", repo / "hf" / "bert", positions=512)
    _params(repo, checkpoint={"path": "hf/bert"})
    res = run_cli(repo, "run", timeout=1800, **env)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    tuned = json.loads((repo / "models/finetuned/squad/config.json").read_text())
    assert tuned["architectures"] == ["BertForQuestionAnswering"]
    student = json.loads((repo / "models/student/squad/config.json").read_text())
    assert student["architectures"] == ["BertForQuestionAnswering"] and student["num_hidden_layers"] == 1
    from transformers import AutoModelForQuestionAnswering

    assert type(AutoModelForQuestionAnswering.from_pretrained(str(repo / "models/finetuned/squad"))).__name__ == \
        "BertForQuestionAnswering"
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    assert 0.0 <= metrics["finetuned.squad.test.f1"] <= 1.0
    tags, out = _served(repo)
    assert "lmforge.digest.base_checkpoint" in tags and len(out) == 1  # type: ignore[arg-type]
