"""The finetune recipe with an extractive QA task beside a classification task on one backbone (lmforge's own tiny
Llama): the span head trains with the classifier, the exported QA model loads with
``AutoModelForQuestionAnswering`` carrying its decoding settings, and its test SQuAD scores are in the summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.assets.squad import squad_dataset
from tests.tasks.training.finetune_fixtures import finetune, run_config, save_base_model, write_examples

pytestmark = pytest.mark.slow


def write_qa(root: Path, name: str = "squad") -> None:
    """An extractive QA task in the task-data format, with its options in the manifest (as the data step writes)."""
    from tasks.examples import read_manifest, write_manifest, write_rows

    rows = [{"id": qa["id"], "context": p["context"], "question": qa["question"],
             "answers": {"text": [a["text"] for a in qa["answers"]],
                         "answer_start": [a["answer_start"] for a in qa["answers"]]}}
            for article in squad_dataset(24, unanswerable=True)["data"] for p in article["paragraphs"]
            for qa in p["qas"]]
    splits = {"train": rows[:64], "val": rows[64:80], "test": rows[80:]}
    for split, part in splits.items():
        write_rows(root / name / f"{split}.jsonl", part)
    tasks = read_manifest(root)["tasks"]
    tasks[name] = {"type": "extractive_qa", "weight": 2.0, "labels": None, "quarantined": {}, "augmented": 0,
                   "splits": {s: len(p) for s, p in splits.items()}, "label_counts": None,
                   "settings": {"unanswerable": True, "doc_stride": 8, "max_answer_length": 6}}
    write_manifest(root, tasks)


def test_a_qa_head_trains_beside_a_classifier_and_exports_a_question_answering_model(
        data: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForQuestionAnswering

    examples = write_examples(tmp_path / "examples", tasks=("topic",))
    write_qa(examples)
    inputs = {"base": save_base_model(data["tokenizer"], tmp_path / "base"), "examples": examples,
              "tokenizer": data["tokenizer"], "tokens": data["tokens"]}
    config = run_config(inputs, tmp_path / "run", steps=30, eval_every=10, checkpoint_every=10, max_length=48)
    res = finetune(config, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    model_dir = tmp_path / "run/model/squad"
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForQuestionAnswering"]
    assert cfg["task_specific_params"]["question-answering"] == {
        "doc_stride": 8, "max_answer_length": 6, "max_seq_len": 48, "handle_impossible_answer": True}
    model = AutoModelForQuestionAnswering.from_pretrained(str(model_dir))
    assert type(model).__name__ == "LlamaForQuestionAnswering"
    assert json.loads((tmp_path / "run/model/topic/config.json").read_text())["architectures"] == [
        "LlamaForSequenceClassification"]
    summary = json.loads(next((tmp_path / "run/model").glob("*summary*.json")).read_text())
    text = json.dumps(summary)
    assert '"f1"' in text and '"exact_match"' in text, text[:2000]
    assert "val_f1_squad" in res.stdout or " f1 " in res.stdout, res.stdout[-2000:]
