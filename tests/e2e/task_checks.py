"""What a finished `lmforge run` must show for a task of each new type (NER, extractive QA, chat), whatever model
(lmforge's own, a checkpoint) and whatever other tasks trained in the same backbone: shared by the e2e tests of the
task types (tests/e2e/test_task_types*.py); their data comes from tests/e2e/task_types.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.task_types import latest_finetuned, use_store

NER_LABELS = ["B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER", "O"]


def check_ner(repo: Path, *, architecture: str) -> None:
    """The NER task ``ner``: its counted quarantine and scheme, the exported tagger and student that load with their
    tags, the entity scores with intervals beside the most-frequent-tag baseline, the card, and the registered
    model's pyfunc giving entity spans with character offsets."""
    import pandas as pd
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    task = json.loads((repo / "data/finetune/manifest.json").read_text())["tasks"]["ner"]
    assert task["labels"] == NER_LABELS
    assert {k: v for k, v in task["quarantined"].items() if k != "duplicate"} == {"invalid_tag": 1,
                                                                                   "malformed_line": 1}
    assert {json.loads(r)["scheme"] for r in (repo / "data/finetune/ner/test.jsonl").read_text().splitlines()} == {
        "IOB1"}
    for kind in ("finetuned", "student"):
        model = AutoModelForTokenClassification.from_pretrained(str(repo / "models" / kind / "ner")).eval()
        assert type(model).__name__ == f"{architecture}ForTokenClassification"
        assert [model.config.id2label[i] for i in range(len(NER_LABELS))] == NER_LABELS
    tokenizer = AutoTokenizer.from_pretrained(str(repo / "models/finetuned/ner"))
    with torch.no_grad():
        logits = model(**tokenizer("Anna Berg visited Paris .", return_tensors="pt")).logits
    assert logits.shape[-1] == len(NER_LABELS)

    summary = json.loads((repo / "models/finetuned/finetune_summary.json").read_text())["tasks"]["ner"]
    assert summary["test"]["examples"] == len((repo / "data/finetune/ner/test.jsonl").read_text().splitlines())
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

    version, served = latest_finetuned(repo, "lmforge-ner")
    assert "lmforge.metric.test.entity_f1" in version.tags
    text = "Maria Lopez visited New York, then Oslo."
    [entities] = served.predict(pd.DataFrame({"text": [text]}))["entities"]
    assert all(text[e["start"]:e["end"]] == e["text"] and e["entity"] in ("PER", "LOC", "ORG") for e in entities)


def check_qa(repo: Path, *, architecture: str) -> dict[str, str]:
    """The extractive QA task ``squad`` (tests/assets/squad.py's data with ``bad``): its two quarantined records, the
    exported reader and student with the task's doc_stride, the SQuAD scores with intervals beside the
    overlap-sentence baseline, the card, and the registered model's pyfunc answering a question about a context.
    Returns the registered version's tags."""
    import pandas as pd

    finetune = json.loads((repo / "metrics/finetune.json").read_text())
    assert finetune["squad.quarantined.answer_mismatch"] == 1 and finetune["squad.quarantined.missing_field"] == 1
    for model in ("finetuned", "student"):
        config = json.loads((repo / f"models/{model}/squad/config.json").read_text())
        assert config["architectures"] == [f"{architecture}ForQuestionAnswering"], config
        assert config["task_specific_params"]["question-answering"]["doc_stride"] == 32
    # the exported reader's test figures count questions, not the windows a long context became
    summary = json.loads((repo / "models/finetuned/finetune_summary.json").read_text())["tasks"]["squad"]
    assert summary["test"]["examples"] == len((repo / "data/finetune/squad/test.jsonl").read_text().splitlines())
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    for model in ("finetuned", "student", "overlap_sentence"):
        low, f1, high = (metrics[f"{model}.squad.test.f1{k}"] for k in ("_ci_low", "", "_ci_high"))
        assert 0.0 <= low <= f1 <= high <= 1.0 and f"{model}.squad.test.exact_match" in metrics
    assert "overlap_sentence/squad" in (repo / "reports/evaluate/index.html").read_text()
    card = (repo / "reports/evaluate/cards/finetuned/squad/README.md").read_text()
    assert "pipeline_tag: question-answering" in card and "AutoModelForQuestionAnswering" in card

    version, served = latest_finetuned(repo, "lmforge-squad")
    assert version.tags["lmforge.kind"] == "extractive_qa"
    context = "the cat sat on the mat . the dog ran to the log . the bird flew over the tree ."
    out = served.predict(pd.DataFrame({"question": ["what ran to the log ?"], "context": [context]}))
    assert list(out.columns) == ["answer", "start", "end", "score"] and len(out) == 1
    return dict(version.tags)


def check_chat(repo: Path, *, rows: int, architecture: str, template: str | None = None) -> None:
    """The chat task ``chat`` (tests/e2e/task_types.py's conversations, ``rows`` good ones): the three bad records
    quarantined by reason, the kept ones ending in an assistant turn (some cut after a whole reply when ``template``
    is given: lmforge's own template, which the exported tokenizer must carry), the exported causal LM, assistant-token
    perplexity and ROUGE of the model and its student beside the lead baseline with their replies, and the
    champion's pyfunc answering a conversation."""
    import mlflow
    import pandas as pd

    manifest = json.loads((repo / "data/finetune/manifest.json").read_text())["tasks"]["chat"]
    assert manifest["type"] == "chat" and manifest["quarantined"] == {
        "no_assistant_turn": 1, "unknown_role": 1, "messages_not_a_list": 1}
    kept = [json.loads(line) for s in ("train", "val", "test")
            for line in (repo / f"data/finetune/chat/{s}.jsonl").read_text().splitlines()]
    assert len(kept) == rows and all(r["messages"][-1]["role"] == "assistant" for r in kept)
    assert json.loads((repo / "models/finetuned/chat/config.json").read_text())["architectures"] == [
        f"{architecture}ForCausalLM"]
    assert json.loads((repo / "metrics/finetune.json").read_text())["chat.test.perplexity"] > 1
    if template is not None:
        from transformers import AutoTokenizer

        assert any(r["cut_turns"] for r in kept)  # the long ones, cut after a whole reply
        assert AutoTokenizer.from_pretrained(repo / "models/finetuned/chat").chat_template == template
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    for model in ("finetuned", "student"):
        assert metrics[f"{model}.chat.test.perplexity"] > 1 and 0 <= metrics[f"{model}.chat.test.rougeL"] <= 1
    assert any(k.startswith("lead.chat.") for k in metrics), sorted(metrics)
    assert (repo / "reports/evaluate/generations/finetuned.chat.jsonl").is_file()

    use_store(repo)
    model = mlflow.pyfunc.load_model("models:/lmforge-chat@champion")
    conversation = [{"role": "system", "content": "answer short"}, {"role": "user", "content": "the dog 3"}]
    out = model.predict(pd.DataFrame({"messages": [conversation]}), params={"max_new_tokens": 4})
    assert len(out) == 1 and isinstance(out["text"][0], str)
