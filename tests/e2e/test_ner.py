"""Named-entity recognition through the README's `lmforge run`: a CoNLL-2003-style file (four columns, IOB1 tags,
`-DOCSTART-` lines, a few bad lines) as a token_classification task, first beside the default classification task
on lmforge's own model (two task types in one backbone), then alone on a tiny BERT checkpoint. Each goes through
finetune, distill (per-token KD into a student), evaluate (entity F1 with intervals beside the most-frequent-tag
baseline) and the registry, and the champion answers raw text with entity spans through `mlflow.pyfunc`.

On a copy of the session's shared finished run (tests/e2e/conftest.py), so only finetune, distill and evaluate run.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from tests.assets.checkpoints import save_checkpoint
from tests.conftest import run_cli
from tests.e2e.conftest import FinishedRun

pytestmark = pytest.mark.slow

PEOPLE = ["Anna Berg", "Tom", "Maria Lopez", "Ken", "Lina Holm", "Omar"]
PLACES = ["Paris", "New York", "Oslo", "Cairo", "Lima"]
ORGS = ["Acme", "Globex Bank", "Initech"]
TEMPLATES = ["{PER} visited {LOC} .", "yesterday {PER} met {PER} in {LOC} .", "{ORG} opened an office in {LOC} .",
             "the cat of {PER} sat on the mat .", "{PER} works for {ORG} in {LOC} ."]


def conll(n: int, seed: int) -> tuple[str, list[str]]:
    """``n`` sentences as CoNLL-2003 writes them (``word POS chunk NER``, IOB1: an entity opens with ``I-``, ``B-``
    only right after an entity of the same type), between ``-DOCSTART-`` lines; and their texts."""
    rng = random.Random(seed)
    lines, texts = ["-DOCSTART- -X- -X- O", ""], []
    for i in range(n):
        words, tags = [], []
        for part in rng.choice(TEMPLATES).split():
            kind = part.strip("{}") if part.startswith("{") else None
            name = rng.choice({"PER": PEOPLE, "LOC": PLACES, "ORG": ORGS}[kind]).split() if kind else [part]
            first = "B" if kind and tags and tags[-1].endswith(f"-{kind}") else "I"
            words += name
            tags += [f"{first}-{kind}"] + [f"I-{kind}"] * (len(name) - 1) if kind else ["O"]
        lines += [f"{w} NN I-NP {t}" for w, t in zip(words, tags, strict=True)] + [""]
        texts.append(" ".join(words))
        if i % 40 == 39:
            lines += ["-DOCSTART- -X- -X- O", ""]
    return "\n".join(lines) + "\n", texts


def _params(repo: Path, **finetune: object) -> None:
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["finetune"].update(finetune)
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


NER = {"name": "ner", "type": "token_classification", "data": [{"kind": "files", "paths": ["taskdata/ner.conll"]}]}


def _check_run(repo: Path, res: object, *, architecture: str) -> dict[str, float]:
    """What every run must give: the stages ran, the exported tagger loads with its tags, the student too, the
    evaluation's entity scores with intervals beside the baseline, the registered champion's spans."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]  # type: ignore[attr-defined]
    for stage in ("finetune", "distill", "evaluate"):
        assert f"{stage}: ran" in res.stdout, res.stdout  # type: ignore[attr-defined]
    task = json.loads((repo / "data/finetune/manifest.json").read_text())["tasks"]["ner"]
    assert task["labels"] == ["B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER", "O"]
    assert {k: v for k, v in task["quarantined"].items() if k != "duplicate"} == {"invalid_tag": 1,
                                                                                   "malformed_line": 1}
    assert {json.loads(r)["scheme"] for r in (repo / "data/finetune/ner/test.jsonl").read_text().splitlines()} == {
        "IOB1"}
    for kind in ("finetuned", "student"):
        model = AutoModelForTokenClassification.from_pretrained(str(repo / "models" / kind / "ner")).eval()
        assert type(model).__name__ == f"{architecture}ForTokenClassification"
        assert [model.config.id2label[i] for i in range(len(task["labels"]))] == task["labels"]
    tokenizer = AutoTokenizer.from_pretrained(str(repo / "models/finetuned/ner"))
    with torch.no_grad():
        logits = model(**tokenizer("Anna Berg visited Paris .", return_tensors="pt")).logits
    assert logits.shape[-1] == len(task["labels"])

    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    for name in ("finetuned", "student", "most_frequent_tag"):
        assert 0.0 <= metrics[f"{name}.ner.test.entity_f1"] <= 1.0
        assert metrics[f"{name}.ner.test.entity_f1_ci_low"] <= metrics[f"{name}.ner.test.entity_f1"] <= \
            metrics[f"{name}.ner.test.entity_f1_ci_high"]
        assert f"{name}.ner.test.token_accuracy" in metrics
    assert metrics["most_frequent_tag.ner.test.entity_f1"] > 0.5  # a closed set of names: the baseline finds most
    report = (repo / "reports/evaluate/index.html").read_text()
    assert "entity_f1" in report and "most_frequent_tag" in report
    card = (repo / "reports/evaluate/cards/finetuned/ner/README.md").read_text()
    assert "pipeline_tag: token-classification" in card and "AutoModelForTokenClassification" in card

    import mlflow
    import pandas as pd

    store = f"sqlite:///{repo / 'mlruns.db'}"
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    version = max((v for v in client.search_model_versions("name='lmforge-ner'")
                   if v.tags.get("lmforge.model") == "finetuned"), key=lambda v: int(v.version))
    assert "lmforge.metric.test.entity_f1" in version.tags
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    served = mlflow.pyfunc.load_model(f"models:/lmforge-ner/{version.version}")
    text = "Maria Lopez visited New York, then Oslo."
    [entities] = served.predict(pd.DataFrame({"text": [text]}))["entities"]
    assert all(text[e["start"]:e["end"]] == e["text"] and e["entity"] in ("PER", "LOC", "ORG") for e in entities)
    return metrics


@pytest.mark.timeout(2400)
def test_ner_from_a_conll_file_on_lmforge_and_on_a_bert_checkpoint(finished_run: FinishedRun) -> None:
    repo = finished_run.repo
    env = {"PREFECT_API_URL": ""}
    text, sentences = conll(300, 0)
    (repo / "taskdata").mkdir()
    (repo / "taskdata/ner.conll").write_text(text + "lonely_token\n\nodd NN I-NP PERSON\n", encoding="utf-8")

    # lmforge's own model: the NER task beside the default classification task, one backbone
    tasks = yaml.safe_load((repo / "params.yaml").read_text())["finetune"].get("tasks") or [
        {"name": "doc_section", "type": "classification", "data": [{"kind": "default"}]}]
    _params(repo, tasks=[t for t in tasks if t["type"] == "classification"] + [NER])
    res = run_cli(repo, "run", timeout=1800, **env)
    metrics = _check_run(repo, res, architecture="Llama")
    assert "finetuned.doc_section.test.macro_f1" in metrics  # the classification task trained beside it

    # a BERT checkpoint lmforge did not train, its WordPiece learned from the same sentences
    save_checkpoint("bert", repo / "hf" / "bert", texts=sentences, positions=128)
    _params(repo, checkpoint={"path": "hf/bert"}, max_length=128, tasks=[NER])
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["distill"].update(student={}, max_length=128)  # the student's default shape, relative to the teacher
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    res = run_cli(repo, "run", timeout=1800, **env)
    _check_run(repo, res, architecture="Bert")
