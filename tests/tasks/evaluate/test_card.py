"""The model card: Hugging Face front matter that huggingface_hub parses (eval results included), a body with the
data lineage, training settings and evaluation table, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.evaluate.card import CardError, render_card, write_model_card

LINEAGE = {
    "sources": [{"kind": "stdlib", "docs": 2900}, "local jsonl: data/extra/*.jsonl"],
    "funnel": {"collected": 2900, "clean": 2465, "dedup": 2320, "examples": 580},
    "dedup": {"threshold": 0.7, "num_perm": 128, "dropped_exact": 40, "dropped_near": 105},
    "digests": {"data/finetune": "0f343b0931126a20f133d67c2b018a3b.dir", "models/tokenizer": "a" * 32 + ".dir"},
}
TRAINING = {"base model": "models/base (1,054,208 parameters)", "steps": 300, "lr": 0.0003, "precision": "bf16"}
EVALUATION = {"val": {"accuracy": 0.85, "macro_f1": 0.7}, "test": {"accuracy": 0.836, "macro_f1": 0.635}}
INTERVALS = {"test": {"macro_f1": (0.58, 0.69)}}


def _write(model_dir: Path, **over: object) -> Path:
    args: dict[str, object] = {
        "name": "lmforge-doc_section", "task": "doc_section", "kind": "classification", "lineage": LINEAGE,
        "training": TRAINING, "evaluation": EVALUATION, "intervals": INTERVALS,
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
    assert "| test | macro_f1 | 0.635 | [0.58, 0.69] |" in body and "| val | accuracy | 0.85 | - |" in body
    assert "- Three labels; rare ones score low." in body
    assert "AutoModelForSequenceClassification" in body and 'models:/lmforge-doc_section@champion' in body


def test_sft_card_is_text_generation(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    path = _write(tmp_path, name="lmforge-docstring", task="docstring", kind="sft", intervals=None,
                  evaluation={"test": {"perplexity": 21.4}}, tags=["sft"])
    card = ModelCard.load(path)
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
        render_card(name="m", task="t", kind="sft", lineage={}, training={}, evaluation={"test": {}},
                    intended_use="x", limitations=[])
    assert not (tmp_path / "README.md").exists()
