"""The token_classification component: record checks and the task-level scheme review with their quarantine reasons,
IOB2 labels whatever the data's scheme, windows as features mapped back to words for the val metrics (a capped split
included), and the per-token loss, its count and the KD rows over exactly the labelled tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tasks.modeling.tasktypes.base import Reject
from tasks.modeling.tasktypes.token_classification import TokenClassification

NAMES = {"tokens": "words", "tags": "ner"}
KIND = TokenClassification()


def test_record_checks_name_the_fields() -> None:
    bad = KIND.check({"tokens": ["a", "b"], "tags": ["O"]}, labels=None, names=NAMES)
    assert isinstance(bad, Reject) and bad.reason == "length_mismatch" and "'words' / 'ner'" in bad.detail
    assert KIND.check({"tokens": ["Ann"], "tags": [1]}, labels=["O", "B-PER", "I-PER"], names=NAMES) == {
        "tokens": ["Ann"], "tags": ["B-PER"]}
    unknown = KIND.check({"tokens": ["Ann"], "tags": ["B-ORG"]}, labels=["O", "B-PER", "I-PER"], names=NAMES)
    assert isinstance(unknown, Reject) and unknown.reason == "unknown_label"


def test_the_review_finds_the_scheme_and_quarantines_what_breaks_it() -> None:
    iob1 = [{"tokens": ["a", "b"], "tags": ["I-PER", "O"]}, {"tokens": ["c", "d"], "tags": ["I-LOC", "B-LOC"]}]
    assert KIND.review(iob1, options={"scheme": "auto"}) == [{**v, "scheme": "IOB1"} for v in iob1]
    iob2 = [{"tokens": ["a", "b"], "tags": ["B-PER", "I-PER"]}, {"tokens": ["x", "y"], "tags": ["B-LOC", "O"]},
            {"tokens": ["c", "d"], "tags": ["O", "I-PER"]}]
    verdicts = KIND.review(iob2, options={"scheme": "auto"})
    assert verdicts[:2] == [{**v, "scheme": "IOB2"} for v in iob2[:2]]
    assert isinstance(verdicts[2], Reject) and verdicts[2].reason == "invalid_tag_sequence"
    assert "tag 1 ('d'): I-PER follows O" in verdicts[2].detail and "scheme is IOB2" in verdicts[2].detail
    verdicts = KIND.review(iob1, options={"scheme": "IOB2"})  # declared: the data is held to it
    assert all(isinstance(v, Reject) for v in verdicts)


def test_the_other_types_review_nothing_of_the_task_as_a_whole() -> None:
    from tasks.modeling.tasktypes import TASK_TYPES, task_type

    examples = [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]
    for name in set(TASK_TYPES) - {"token_classification"}:
        assert task_type(name).review(examples, options={"scheme": "auto"}) == examples


def test_rows_keep_the_data_scheme_and_labels_are_iob2() -> None:
    values = {"tokens": ["New", "York", "Ann"], "tags": ["I-LOC", "I-LOC", "I-PER"], "scheme": "IOB1"}
    assert KIND.row("x", values) == {"id": "x", **values}
    assert KIND.labels_of(values) == ["B-LOC", "I-LOC", "B-PER"]
    assert KIND.dedup_key(values) == "New\0York\0Ann" and KIND.chars(values) == len("New York Ann")
    assert KIND.stratum(values) is None


@pytest.fixture(scope="module")
def bert_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoTokenizer

    from tests.assets.checkpoints import save_checkpoint

    return AutoTokenizer.from_pretrained(str(save_checkpoint("bert", tmp_path_factory.mktemp("bert"))))


def test_fit_rejects_a_word_that_cannot_have_a_window(bert_tokenizer: Any) -> None:
    raw = bert_tokenizer.backend_tokenizer
    ok = {"tokens": ["the", "cat"] * 40, "tags": ["O"] * 80}
    assert KIND.fit(dict(ok), tokenizer=raw, max_length=8) == ok  # long, but windows take it
    long_word = {"tokens": ["the", "catsatonamatandthedog"], "tags": ["O", "O"]}
    got = KIND.fit(long_word, tokenizer=raw, max_length=8)
    assert isinstance(got, Reject) and got.reason == "too_long_tokens" and "word 1" in got.detail


ROWS = [{"id": "a", "tokens": ["the", "cat", "sat", "on", "the", "mat"], "tags": ["O", "I-PER", "O", "O", "O", "I-LOC"],
         "scheme": "IOB1"},
        {"id": "b", "tokens": ["a", "dog", "ran", "to", "the", "tree", "with", "a", "bird"] * 3,
         "tags": ["O", "I-PER", "I-PER", "O", "O", "I-LOC", "O", "O", "I-PER"] * 3, "scheme": "IOB1"},
        {"id": "c", "tokens": ["home"], "tags": ["I-LOC"], "scheme": "IOB1"}]
LABELS = ["B-LOC", "B-PER", "I-PER", "O"]  # sorted IOB2 tags found in the data, as the data step lists them


def test_encode_and_val_metrics_through_windows(bert_tokenizer: Any) -> None:
    data = KIND.encode(ROWS, tokenizer=bert_tokenizer, max_length=10, labels=LABELS, eos_id=3)
    assert data["dropped"] == 0 and [r["id"] for r in data["rows"]] == ["a", "b", "c"]
    assert len(data["ids"]) > 3 and all(len(ids) <= 10 for ids in data["ids"])  # row b is several windows
    assert len({len(v) for k, v in data.items() if k not in ("rows", "dropped")}) == 1  # one entry per feature
    perfect = [[t if t >= 0 else 0 for t in targets] for targets in data["targets"]]
    metrics = KIND.metrics(loss=0.5, outputs=perfect, data=data, labels=LABELS)
    assert (metrics["loss"], metrics["entity_f1"], metrics["token_accuracy"]) == (0.5, 1.0, 1.0)
    assert metrics["entities"] == 2 + 9 + 1
    assert KIND.score(metrics) == 1.0
    outside = [[LABELS.index("O")] * len(t) for t in data["targets"]]
    assert KIND.metrics(loss=0.5, outputs=outside, data=data, labels=LABELS)["entity_f1"] == 0.0
    cut = 3  # as the evaluator caps a split: every list sliced alike, row b's windows cut short
    capped = {k: v[:cut] for k, v in data.items() if k != "dropped"}
    scored = KIND.metrics(loss=0.5, outputs=perfect[:cut], data=capped, labels=LABELS)
    assert scored["sentences"] == 1 and scored["entity_f1"] == 1.0  # row b is left out, not half scored


def test_loss_count_and_kd_rows_cover_the_labelled_tokens(bert_tokenizer: Any) -> None:
    import torch
    import torch.nn.functional as F

    data = KIND.encode(ROWS, tokenizer=bert_tokenizer, max_length=10, labels=LABELS, eos_id=3)
    x, mask, y = KIND.collate(data["ids"], data["targets"], pad_id=bert_tokenizer.pad_token_id)
    assert x.shape == y.shape == mask.shape and int(mask.sum()) == sum(len(i) for i in data["ids"])
    torch.manual_seed(0)
    logits = torch.randn(*x.shape, len(LABELS))
    labelled = y != -100
    assert KIND.count(y) == int(labelled.sum()) == sum(len(r["tokens"]) for r in ROWS)
    expected = F.cross_entropy(logits[labelled], y[labelled], reduction="sum")
    assert torch.allclose(KIND.loss(logits, y, reduction="sum"), expected)
    assert torch.allclose(KIND.loss(logits, y), expected / KIND.count(y))
    assert KIND.kd_rows(logits, y, mask).shape == (KIND.count(y), len(LABELS))
    outputs = KIND.outputs(logits, mask)
    assert [len(o) for o in outputs] == [len(i) for i in data["ids"]]


def test_num_outputs_and_class_facts(tmp_path: Path) -> None:
    assert KIND.num_outputs(LABELS) == 4
    assert KIND.head_class == "AutoModelForTokenClassification" and KIND.labelled and not KIND.generative
    assert KIND.compared[0] == "entity_f1"  # the gate (registry params) reads it
