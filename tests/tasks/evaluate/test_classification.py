"""Classification metrics against values worked out by hand; the exported classifier's batched predictions."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.evaluate.classification import ClassificationEvalError, classification_metrics, predict_labels

LABELS = ["a", "b", "c"]
REFS = ["a", "a", "a", "b", "b", "c"]
PREDS = ["a", "a", "b", "b", "c", "c"]


def test_metrics_equal_the_hand_computed_values() -> None:
    m = classification_metrics(references=REFS, predictions=PREDS, labels=LABELS, bootstrap=0)
    # confusion: true a -> a, a, b; true b -> b, c; true c -> c
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    # precision a 2/2, b 1/2, c 1/2; recall a 2/3, b 1/2, c 1/1; F1 a 0.8, b 0.5, c 2/3
    assert m["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert m["per_class"]["c"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert m["macro_precision"] == pytest.approx(2 / 3)
    assert m["macro_recall"] == pytest.approx(13 / 18)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert "ci" not in m


def test_a_class_never_predicted_nor_present_counts_as_zero() -> None:
    m = classification_metrics(references=["a", "b"], predictions=["a", "b"], labels=["a", "b", "z"], bootstrap=0)
    assert m["accuracy"] == 1.0 and m["macro_f1"] == pytest.approx(2 / 3)


def test_bootstrap_intervals_are_seeded_cover_the_estimate_and_shrink_with_more_data() -> None:
    small = classification_metrics(references=REFS, predictions=PREDS, labels=LABELS, bootstrap=300, seed=3)
    again = classification_metrics(references=REFS, predictions=PREDS, labels=LABELS, bootstrap=300, seed=3)
    other = classification_metrics(references=REFS, predictions=PREDS, labels=LABELS, bootstrap=300, seed=4)
    big = classification_metrics(references=REFS * 20, predictions=PREDS * 20, labels=LABELS, bootstrap=300, seed=3)
    assert small["ci"] == again["ci"] and small["ci"] != other["ci"]
    for k in ("accuracy", "macro_f1", "macro_precision", "macro_recall"):
        low, high = small["ci"][k]
        assert low <= small[k] <= high
        assert big["ci"][k][1] - big["ci"][k][0] < (high - low) / 2
    assert big["accuracy"] == pytest.approx(small["accuracy"])
    perfect = classification_metrics(references=REFS, predictions=REFS, labels=LABELS, bootstrap=50)
    assert perfect["ci"]["accuracy"] == [1.0, 1.0]


def test_the_bootstrap_scorer_agrees_with_scikit_learn() -> None:
    import numpy as np

    from tasks.evaluate.classification import _headline, _scores

    rng = np.random.default_rng(0)
    for _ in range(20):
        y, yhat = rng.integers(0, 4, 30), rng.integers(0, 4, 30)
        yhat[:3] = 3  # class 3 predicted; with 5 labels, class 4 never occurs
        fast, slow = _headline(y, yhat, 5), _scores(y, yhat, list(range(5)))
        assert fast == pytest.approx({k: slow[k] for k in fast})


def test_inconsistent_inputs_are_refused() -> None:
    with pytest.raises(ClassificationEvalError, match="same non-zero number"):
        classification_metrics(references=["a"], predictions=["a", "b"], labels=LABELS)
    with pytest.raises(ClassificationEvalError, match=r"\['q'\]"):
        classification_metrics(references=["a"], predictions=["q"], labels=LABELS)


def test_batched_padded_predictions_equal_one_text_at_a_time(lm_inputs: dict[str, Path], tmp_path: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    from tests.tasks.training.corpus import documents

    torch.manual_seed(0)
    model = LlamaForSequenceClassification.from_pretrained(str(lm_inputs["lm"]), num_labels=3,
                                                           id2label=dict(enumerate(LABELS)))
    tok = AutoTokenizer.from_pretrained(str(lm_inputs["lm"]))
    model.config.pad_token_id = tok.pad_token_id
    model.save_pretrained(str(tmp_path / "clf"))
    tok.save_pretrained(str(tmp_path / "clf"))
    texts = [d[: 20 + 7 * i] for i, d in enumerate(documents(9, 2))]  # different lengths: padding in every batch
    got = predict_labels(model_dir=tmp_path / "clf", texts=texts, batch_size=4)
    with torch.no_grad():
        one = [LABELS[int(model(input_ids=torch.tensor([tok.encode(t, add_special_tokens=False)])).logits.argmax())]
               for t in texts]
    assert got == one and len(set(one)) > 1
    # a model already loaded (how the flow passes an int8 model) is used as is: zeroing its head changes the answer
    with torch.no_grad():
        model.score.weight.zero_()
    assert predict_labels(model_dir=tmp_path / "clf", texts=texts, batch_size=4, model=model) == [LABELS[0]] * 9
