"""Extractive QA scores with bootstrap intervals, and the overlap-sentence baseline, against hand-worked cases."""

from __future__ import annotations

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
