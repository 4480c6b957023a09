"""The model card: Hugging Face front matter that huggingface_hub parses (eval results included), a body with the
data lineage, training settings and evaluation table, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.evaluate.card import CardError, limitations, render_card, write_model_card

LINEAGE = {
    "sources": [{"kind": "stdlib", "docs": 2900}, "local jsonl: data/extra/*.jsonl"],
    "funnel": {"collected": 2900, "clean": 2465, "dedup": 2320, "examples": 580},
    "dedup": {"threshold": 0.7, "num_perm": 128, "dropped_exact": 40, "dropped_near": 105},
    "digests": {"data/finetune": "0f343b0931126a20f133d67c2b018a3b.dir", "models/tokenizer": "a" * 32 + ".dir"},
}
TRAINING = {"base model": "models/base (1,054,208 parameters)", "steps": 300, "lr": 0.0003, "precision": "bf16"}
EVALUATION = {"val": {"accuracy": 0.85, "macro_f1": 0.7}, "test": {"accuracy": 0.836, "macro_f1": 0.635}}
INTERVALS = {"test": {"macro_f1": (0.58, 0.69)}}
COUNTS = {"test": {"accuracy": 250, "macro_f1": 250}}
MODEL = {"architecture": "LlamaForSequenceClassification", "model_type": "llama", "parameters": 1054208, "layers": 4,
         "hidden_size": 128, "attention_heads": 4, "vocab_size": 2048, "context": 256, "quantization": None}


def _write(model_dir: Path, **over: object) -> Path:
    args: dict[str, object] = {
        "name": "lmforge-doc_section", "task": "doc_section", "kind": "classification", "lineage": LINEAGE,
        "model": MODEL, "training": TRAINING, "evaluation": EVALUATION, "intervals": INTERVALS, "counts": COUNTS,
        "intended_use": "Tag a paragraph of Python documentation with its section kind.",
        "limitations": ["Trained on standard-library documentation only.", "Three labels; rare ones score low."]}
    return write_model_card(model_dir, **{**args, **over})


def test_card_parses_with_huggingface_hub(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    path = _write(tmp_path)
    assert path == tmp_path / "README.md"
    card = ModelCard.load(path)
    data = card.data
    assert (data.license, data.library_name, data.pipeline_tag) == ("apache-2.0", "transformers",
                                                                     "text-classification")
    assert data.tags == ["lmforge", "llama", "classification"] and data.language == ["en"]
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    assert results == {("val", "accuracy"): 0.85, ("val", "macro_f1"): 0.7, ("test", "accuracy"): 0.836,
                       ("test", "macro_f1"): 0.635}
    assert {r.task_type for r in data.eval_results} == {"text-classification"}
    assert {r.dataset_type for r in data.eval_results} == {"lmforge/doc_section"}
    assert data.model_name == "lmforge-doc_section"


def test_card_body_lineage_training_evaluation(tmp_path: Path) -> None:
    text = _write(tmp_path).read_text(encoding="utf-8")
    body = text.split("\n---\n", 1)[1]
    assert body.index("## Intended use") < body.index("## Limitations") < body.index("## Data lineage") < body.index(
        "## Training") < body.index("## Evaluation")
    assert "- kind: stdlib, docs: 2,900" in body and "- local jsonl: data/extra/*.jsonl" in body
    assert "| dedup | 2,320 | 80.0% |" in body and "| examples | 580 | 20.0% |" in body
    assert "| dropped_near | 105 |" in body and "| threshold | 0.7 |" in body
    assert "| `data/finetune` | `0f343b0931126a20f133d67c2b018a3b.dir` |" in body
    assert "| steps | 300 |" in body and "| lr | 0.0003 |" in body
    assert "| test | 250 | macro_f1 | 0.635 | [0.58, 0.69] |" in body and "| val | - | accuracy | 0.85 | - |" in body
    # what the model is, from the facts given (model_facts reads them from its files), never a fixed sentence
    assert ("A `LlamaForSequenceClassification` of 1,054,208 parameters (layers 4, hidden size 128, attention heads 4, "
            "vocabulary 2,048, context 256), made by lmforge for the `doc_section` task") in body
    assert "- Three labels; rare ones score low." in body
    assert "AutoModelForSequenceClassification" in body and 'models:/lmforge-doc_section@champion' in body


def test_sft_card_is_text_generation(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    path = _write(tmp_path, name="lmforge-docstring", task="docstring", kind="sft", intervals=None,
                  evaluation={"test": {"perplexity": 21.4}}, tags=["sft"], title="lmforge-docstring v3 (student)")
    card = ModelCard.load(path)
    assert card.text.lstrip().startswith("# lmforge-docstring v3 (student)\n")
    assert 'models:/lmforge-docstring@champion' in card.text and card.data.model_name == "lmforge-docstring"
    assert card.data.pipeline_tag == "text-generation" and card.data.tags[-1] == "sft"
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [("perplexity", 21.4)]
    assert "AutoModelForCausalLM" in card.text


def test_card_errors(tmp_path: Path) -> None:
    with pytest.raises(CardError, match="no model directory"):
        _write(tmp_path / "missing")
    with pytest.raises(CardError, match="task kind 'regression'"):
        _write(tmp_path, kind="regression")
    with pytest.raises(CardError, match="unknown lineage key\\(s\\) source: use sources, funnel"):
        _write(tmp_path, lineage={"source": []})
    with pytest.raises(CardError, match="no evaluation results"):
        render_card(name="m", task="t", kind="sft", model=MODEL, lineage={}, training={}, evaluation={"test": {}},
                    intended_use="x", limitations=[])
    with pytest.raises(CardError, match="parameters unknown"):
        _write(tmp_path, model={"architecture": "LlamaForCausalLM"})
    assert not (tmp_path / "README.md").exists()


def test_a_corpus_split_is_its_own_dataset_with_its_document_count(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    path = _write(tmp_path, kind="sft", intervals=None, evaluation={
        "test": {"perplexity": 21.4, "rougeL": 0.13}, "dedup/test": {"bits_per_byte": 1.79}},
        counts={"test": {"perplexity": 40, "rougeL": 16}, "dedup/test": {"bits_per_byte": 15}})
    card = ModelCard.load(path)
    assert {(r.dataset_type, r.dataset_split, r.metric_type) for r in card.data.eval_results} == {
        ("lmforge/doc_section", "test", "perplexity"), ("lmforge/doc_section", "test", "rougeL"),
        ("lmforge/dedup", "test", "bits_per_byte")}
    assert "| dedup/test | 15 | bits_per_byte | 1.79 | - |" in card.text
    assert "| test | 16 | rougeL | 0.13 |" in card.text


def test_limitations_are_the_facts_given() -> None:
    data = {"pretraining": {"documents": 2320, "bytes": 4_100_000}, "train": {"examples": 480},
            "test": {"examples": 60}}
    fine = limitations(model=MODEL, task="doc_section", data=data)
    assert fine == ["1,054,208 parameters, a context of 256 tokens: longer inputs are cut.",
                    "It learned from 2,320 documents (4.10 MB) of the corpus' train split (pretraining) and 480 "
                    "`doc_section` training examples, nothing else: text unlike them is outside what it knows.",
                    "Its scores hold for the 60 examples of the `doc_section` test split, not for other text."]
    student = limitations(model={**MODEL, "parameters": 300_000}, task="doc_section", data=data, distilled=True)
    assert student[0].startswith("300,000 parameters") and student[1] == (
        "Distilled from the fine-tuned model on its 480 `doc_section` training examples; that model was pretrained "
        "on 2,320 documents (4.10 MB) of the corpus' train split. It has seen nothing else.")
