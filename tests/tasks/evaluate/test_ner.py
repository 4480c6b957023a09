"""NER evaluation: bootstrap intervals over sentences, the most-frequent-tag baseline by hand, and the tags an exported
token classifier (a tiny BERT saved with ``id2label``) predicts, windows included."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tasks.evaluate.ner import BASELINE, most_frequent_tag, ner_metrics, predict_tags, score_taggers


def noisy(n: int, seed: int) -> tuple[list[list[str]], list[list[str]]]:
    rng = random.Random(seed)
    refs = [["B-PER", "I-PER", "O", "B-LOC"] if rng.random() < 0.5 else ["O", "B-ORG", "O"] for _ in range(n)]
    preds = [[t if rng.random() < 0.8 else "O" for t in r] for r in refs]
    return refs, preds


def test_intervals_resample_sentences_and_narrow_with_more_of_them() -> None:
    refs, preds = noisy(40, 0)
    small = ner_metrics(references=refs, predictions=preds, bootstrap=300, seed=1)
    assert small["ci"] == ner_metrics(references=refs, predictions=preds, bootstrap=300, seed=1)["ci"]
    assert small["ci"] != ner_metrics(references=refs, predictions=preds, bootstrap=300, seed=2)["ci"]
    for k in ("entity_precision", "entity_recall", "entity_f1", "token_accuracy"):
        low, high = small["ci"][k]
        assert low <= small[k] <= high and low < high
    big_refs, big_preds = noisy(1000, 0)
    big = ner_metrics(references=big_refs, predictions=big_preds, bootstrap=300, seed=1)
    width = {name: m["ci"]["entity_f1"][1] - m["ci"]["entity_f1"][0] for name, m in (("small", small), ("big", big))}
    assert width["big"] < width["small"] / 2
    perfect = ner_metrics(references=refs, predictions=refs, bootstrap=100)
    assert perfect["ci"]["entity_f1"] == [1.0, 1.0] and perfect["ci"]["bootstrap"] == 100
    assert "ci" not in ner_metrics(references=refs, predictions=preds, bootstrap=0)


def test_the_most_frequent_tag_baseline_by_hand() -> None:
    train = [(["Paris", "is", "big"], ["B-LOC", "O", "O"]), (["Paris", "Hilton"], ["B-PER", "I-PER"]),
             (["in", "Paris"], ["O", "B-LOC"]), (["New", "York"], ["B-LOC", "I-LOC"])]
    test = [["Paris", "Hilton", "in", "New", "York"], ["Rome", "is", "York"]]
    # Paris: LOC twice, PER once; Hilton: I-PER, which after a LOC opens a PER (conlleval's reading, written in the
    # scheme); York: I-LOC, opening its own entity where it follows O; Rome: never seen
    assert most_frequent_tag(train=train, sentences=test, scheme="IOB2") == [
        ["B-LOC", "B-PER", "O", "B-LOC", "I-LOC"], ["O", "O", "B-LOC"]]
    assert most_frequent_tag(train=train, sentences=test, scheme="BIOES") == [
        ["S-LOC", "S-PER", "O", "B-LOC", "E-LOC"], ["O", "O", "S-LOC"]]
    iob1_train = [(["Paris", "Hilton"], ["I-PER", "I-PER"]), (["Paris", "Paris"], ["I-LOC", "B-LOC"])]
    # counted in IOB2: Paris is B-PER once and B-LOC twice, whatever the IOB1 spelling
    assert most_frequent_tag(train=iob1_train, sentences=[["Paris", "Paris"]], scheme="IOB1") == [["I-LOC", "B-LOC"]]


@pytest.fixture(scope="module")
def tagger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT token classifier whose head always prefers B-PER, saved with its tokenizer and ``id2label``."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from tests.assets.checkpoints import save_checkpoint

    base = save_checkpoint("bert", tmp_path_factory.mktemp("bert"))
    labels = ["O", "B-PER", "I-PER"]
    model = AutoModelForTokenClassification.from_pretrained(
        str(base), num_labels=3, id2label=dict(enumerate(labels)), label2id={v: i for i, v in enumerate(labels)})
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 5.0, 1.0]))
    out = tmp_path_factory.mktemp("tagger")
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(out))
    return out


def test_an_exported_tagger_predicts_a_tag_per_word_in_the_data_scheme(tagger: Path) -> None:
    sentences = [["the", "cat", "sat"], ["a", "dog"] * 30, ["treehomeflew"]]
    iob2 = predict_tags(model_dir=tagger, sentences=sentences, scheme="IOB2", max_length=8, batch_size=3)
    # windows of 8 tokens cover every word of the long sentence; a word of 9 tokens cannot be read: O
    assert iob2 == [["B-PER"] * len(s) for s in sentences[:2]] + [["O"]]
    iob1 = predict_tags(model_dir=tagger, sentences=sentences[:1], scheme="IOB1")
    assert iob1 == [["I-PER", "B-PER", "B-PER"]]


def test_scoring_taggers_beside_the_baseline(tagger: Path) -> None:
    train = [{"tokens": ["the", "cat"], "tags": ["O", "B-PER"]}]
    test = [{"tokens": ["the", "cat", "sat"], "tags": ["O", "B-PER", "O"]}]
    got = score_taggers(models={"finetuned": tagger}, splits={"train": train, "test": test}, scheme="IOB2",
                        bootstrap=50)
    assert set(got) == {"finetuned", BASELINE}
    assert got[BASELINE]["entity_f1"] == 1.0 and got[BASELINE]["ci"]["entity_f1"] == [1.0, 1.0]
    assert got["finetuned"]["entity_precision"] == pytest.approx(1 / 3) and got["finetuned"]["entity_recall"] == 1.0
