"""Extractive QA scores with bootstrap intervals, and the overlap-sentence baseline, against hand-worked cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.evaluate.extractive_qa import QAEvalError, baseline_predictions, overlap_sentence, qa_metrics, sentences

CONTEXT = ("The cat sat on the mat.  A dog ran to the park!\nBirds sang in the trees? Yes... the end")


def test_sentences_split_at_end_marks_and_line_breaks() -> None:
    spans = sentences(CONTEXT)
    assert [CONTEXT[s:e] for s, e in spans] == ["The cat sat on the mat.", "A dog ran to the park!",
                                                "Birds sang in the trees?", "Yes...", "the end"]
    assert sentences("  \n ") == [] and sentences("no end mark") == [(0, 11)]
    assert [("  x. y  "[s:e]) for s, e in sentences("  x. y  ")] == ["x.", "y"]


def test_the_baseline_answers_with_the_sentence_sharing_most_question_words() -> None:
    out = overlap_sentence("Where did the dog run?", CONTEXT)
    assert out == {"text": "A dog ran to the park!", "start": 25, "end": 47}
    assert CONTEXT[out["start"]:out["end"]] == out["text"]
    # articles and punctuation do not count; a tie goes to the earlier sentence
    assert overlap_sentence("The? A! an.", CONTEXT)["start"] == 0
    assert overlap_sentence("What sang in trees, and where did the cat sit?", CONTEXT)["text"] == \
        "Birds sang in the trees?"  # sang, in, trees (3) beat cat (1)
    assert baseline_predictions([{"question": "what mat?", "context": CONTEXT}]) == ["The cat sat on the mat."]
    assert overlap_sentence("anything", "   ")["text"] == "   "  # a blank context: the whole of it


def test_scores_and_their_intervals() -> None:
    refs = [["Paris"], ["the cat"], [], ["blue sky"]]
    preds = ["paris", "cat sat", "", "red"]
    m = qa_metrics(references=refs, predictions=preds, bootstrap=0)
    assert m["exact_match"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx((1 + 2 / 3 + 1 + 0) / 4)  # cat vs cat sat: P 1/2, R 1: 2/3
    assert m["no_answer"] == {"examples": 1, "exact_match": 1.0, "f1": 1.0} and "ci" not in m
    assert "per_question" not in m
    a = qa_metrics(references=refs, predictions=preds, bootstrap=200, seed=1)
    b = qa_metrics(references=refs, predictions=preds, bootstrap=200, seed=1)
    big = qa_metrics(references=refs * 25, predictions=preds * 25, bootstrap=200, seed=1)
    assert a["ci"] == b["ci"] and a["ci"]["bootstrap"] == 200 and a["ci"]["level"] == 0.95
    for k in ("exact_match", "f1"):
        low, high = a["ci"][k]
        assert 0.0 <= low <= a[k] <= high <= 1.0
        assert big["ci"][k][1] - big["ci"][k][0] < (high - low) / 2
    perfect = qa_metrics(references=[["x"], ["y z"]], predictions=["x", "y z"], bootstrap=30)
    assert perfect["ci"]["f1"] == [1.0, 1.0]
    with pytest.raises(QAEvalError, match="same non-zero"):
        qa_metrics(references=refs, predictions=preds[:2])


def test_the_baseline_is_scored_like_a_model() -> None:
    rows = [{"question": "Where did the dog run?", "context": CONTEXT, "answers": ["the park"]},
            {"question": "Who sat on the mat?", "context": CONTEXT, "answers": ["The cat"]}]
    m = qa_metrics(references=[r["answers"] for r in rows], predictions=baseline_predictions(rows), bootstrap=0)
    # "dog ran to park" (4 tokens) holds park: P 1/4, R 1; "cat sat on mat" holds cat: the same
    assert m["exact_match"] == 0.0 and m["f1"] == pytest.approx(2 * 0.25 / 1.25)


@pytest.fixture(scope="module")
def qa_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT question-answering model saved as an export is (random head, seeded)."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from tests.assets.checkpoints import save_checkpoint

    out = save_checkpoint("bert", tmp_path_factory.mktemp("bert"))
    torch.manual_seed(0)
    AutoModelForQuestionAnswering.from_pretrained(str(out)).save_pretrained(str(out / "qa"))
    AutoTokenizer.from_pretrained(str(out)).save_pretrained(str(out / "qa"))
    return out / "qa"


ROWS = [{"question": "who sat on the mat ?", "context": "the cat sat on the mat . the dog ran to the log . " * 3,
         "answers": {"text": ["the cat"], "answer_start": [0]}},
        {"question": "what ran ?", "context": "a bird flew . the dog ran .",
         "answers": {"text": [], "answer_start": []}}]


def test_the_exported_model_answers_as_training_decoded(qa_model: Path) -> None:
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from tasks.evaluate.extractive_qa import predict_answers
    from tasks.modeling.tasktypes.extractive_qa import ExtractiveQA

    qa = ExtractiveQA(unanswerable=True, doc_stride=6, max_answer_length=5)
    tokenizer = AutoTokenizer.from_pretrained(str(qa_model))
    model = AutoModelForQuestionAnswering.from_pretrained(str(qa_model)).eval()
    data = qa.encode(ROWS, tokenizer=tokenizer, max_length=24, labels=None, eos_id=0)
    assert len(data["ids"]) > 3  # the first context takes several windows
    x, mask, _ = qa.collate(data["ids"], data["targets"], pad_id=tokenizer.pad_token_id)
    with torch.no_grad():
        trained = qa.predictions(qa.outputs(qa.logits(model(input_ids=x, attention_mask=mask)), mask), data)
    exported = predict_answers(model_dir=qa_model, questions=[r["question"] for r in ROWS],
                               contexts=[r["context"] for r in ROWS], doc_stride=6, max_answer_length=5,
                               allow_null=True, max_length=24, batch_size=2)
    assert [a["text"] for a in exported] == [a["text"] for a in trained]
    for a, b in zip(exported, trained, strict=True):
        assert (a["start"], a["end"]) == (b["start"], b["end"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_models_are_scored_beside_the_baseline(qa_model: Path) -> None:
    from tasks.evaluate.extractive_qa import score_qa_models

    out = score_qa_models(models={"finetuned": qa_model}, test=ROWS, doc_stride=6, max_answer_length=5,
                          allow_null=True, max_length=24, bootstrap=20)
    assert set(out) == {"finetuned", "overlap_sentence"}
    # the baseline answers the first question with its first sentence ("cat sat on mat" holds "cat": P 1/4, R 1,
    # F1 0.4) and answers the unanswerable second one all the same (0)
    assert out["overlap_sentence"]["f1"] == pytest.approx(0.4 / 2)
    assert out["overlap_sentence"]["no_answer"]["f1"] == 0.0
    for name in out:
        assert out[name]["examples"] == 2 and out[name]["ci"]["bootstrap"] == 20
