"""Classification quality: accuracy, precision, recall and F1 (macro and per class), the confusion matrix, and
bootstrap confidence intervals, plus predictions of an exported classifier.

The intervals are percentile bootstrap intervals: the test set is resampled with replacement ``n`` times (seeded),
each metric recomputed on every resample, and the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles reported. On a
test set of a few hundred examples they show how far apart two models must be before the difference means anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

HEADLINE = ("accuracy", "macro_precision", "macro_recall", "macro_f1")
"""The metrics that get a confidence interval."""


class ClassificationEvalError(Exception):
    """Predictions and references cannot be compared; the message says what is wrong. Exit code 2."""

    exit_code = 2


def _scores(targets: Any, predictions: Any, every: list[int]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    p, r, f, support = precision_recall_fscore_support(targets, predictions, labels=every, average=None,
                                                       zero_division=0)
    return {"accuracy": float(accuracy_score(targets, predictions)), "macro_precision": float(p.mean()),
            "macro_recall": float(r.mean()), "macro_f1": float(f.mean()), "precision": p, "recall": r, "f1": f,
            "support": support}


def _headline(y: Any, yhat: Any, k: int) -> dict[str, float]:
    """:data:`HEADLINE` from the confusion matrix in numpy: the bootstrap calls this thousands of times, where
    scikit-learn's input checks would dominate (the test compares the two)."""
    import numpy as np

    cm = np.bincount(y * k + yhat, minlength=k * k).reshape(k, k).astype(float)
    tp, predicted, actual = np.diag(cm), cm.sum(0), cm.sum(1)
    p = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    r = np.divide(tp, actual, out=np.zeros(k), where=actual > 0)
    f = np.divide(2 * p * r, p + r, out=np.zeros(k), where=p + r > 0)
    return {"accuracy": float(tp.sum() / len(y)), "macro_precision": float(p.mean()), "macro_recall": float(r.mean()),
            "macro_f1": float(f.mean())}


def classification_metrics(*, references: Sequence[str], predictions: Sequence[str], labels: Sequence[str],
                           bootstrap: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Accuracy, macro and per-class precision / recall / F1, the confusion matrix, with bootstrap intervals.

    Classes absent from both references and predictions count with 0 precision, recall and F1 in the macro means
    (scikit-learn's ``zero_division=0``), so a model that never predicts a class pays for it.

    Args:
        references: the true label of each example.
        predictions: the predicted label of each example, in the same order.
        labels: every label name, in the order of the confusion matrix's rows and columns.
        bootstrap: resamples for the confidence intervals (0: none).
        level: the intervals' coverage, e.g. 0.95.
        seed: seeds the resampling: the same inputs give the same intervals.

    Returns:
        ``examples``, ``accuracy``, ``macro_precision``, ``macro_recall``, ``macro_f1``, ``per_class`` ({label:
        {precision, recall, f1, support}}), ``confusion`` (rows: true label, columns: predicted, in ``labels``
        order), ``labels``, and ``ci`` ({metric: [low, high]} for :data:`HEADLINE`, with ``bootstrap``, ``level``).

    Raises:
        ClassificationEvalError: lengths differ, no example, or a label outside ``labels``.
    """
    import numpy as np
    from sklearn.metrics import confusion_matrix

    labels = list(labels)
    if len(references) != len(predictions) or not references:
        raise ClassificationEvalError(f"{len(references)} references and {len(predictions)} predictions: need the "
                                      "same non-zero number")
    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted({str(x) for x in [*references, *predictions]} - set(index))
    if unknown:
        raise ClassificationEvalError(f"labels {unknown} are not among {labels}: evaluate with the model's label set")
    y = np.array([index[x] for x in references])
    yhat = np.array([index[x] for x in predictions])
    every = list(range(len(labels)))
    s = _scores(y, yhat, every)
    out: dict[str, Any] = {"examples": len(y), **{k: s[k] for k in HEADLINE}, "labels": labels,
                           "per_class": {name: {"precision": float(s["precision"][i]), "recall": float(s["recall"][i]),
                                                "f1": float(s["f1"][i]), "support": int(s["support"][i])}
                                         for i, name in enumerate(labels)},
                           "confusion": confusion_matrix(y, yhat, labels=every).tolist()}
    if bootstrap:
        out["ci"] = bootstrap_intervals(len(y), lambda pick: _headline(y[pick], yhat[pick], len(labels)),
                                        bootstrap=bootstrap, level=level, seed=seed)
    return out


def bootstrap_intervals(size: int, statistic: Callable[[Any], Mapping[str, float]], *, bootstrap: int,
                        level: float, seed: int) -> dict[str, Any]:
    """Percentile bootstrap intervals of every figure ``statistic`` computes on a resample.

    Args:
        size: the items (examples, questions) resampled with replacement, ``size`` at a time.
        statistic: the figures of one resample, given its item indices (a numpy integer array).
        bootstrap: resamples; level: the intervals' coverage; seed: seeds the resampling.

    Returns:
        ``{figure: [low, high]}`` plus ``bootstrap`` and ``level``.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(bootstrap):
        for k, v in statistic(rng.integers(0, size, size)).items():
            draws.setdefault(k, []).append(v)
    lo, hi = (1 - level) / 2, (1 + level) / 2
    ci: dict[str, Any] = {k: [float(np.quantile(v, lo)), float(np.quantile(v, hi))] for k, v in draws.items()}
    return ci | {"bootstrap": bootstrap, "level": level}


def predict_labels(*, model_dir: Path, texts: Sequence[str], batch_size: int = 16, max_length: int | None = None,
                   model: Any = None) -> list[str]:
    """The predicted label names of an exported sequence classifier (``LlamaForSequenceClassification`` with its
    tokenizer and ``id2label``) for ``texts``.

    Args:
        model_dir: the model directory, e.g. ``models/finetuned/doc_section``.
        texts: the inputs.
        batch_size: texts per forward pass (right-padded; the model pools the last non-pad token).
        max_length: truncate longer inputs (None: the model's ``max_position_embeddings``).
        model: the classifier already loaded (an int8 model loaded by its own loader); None: load ``model_dir``'s.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if model is None:
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), dtype=torch.float32)
    model = model.eval()
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    tokenizer.padding_side = "right"
    limit = int(max_length or model.config.max_position_embeddings)
    out: list[str] = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            # as training encodes (tokenizer(text)): BERT's [CLS] ... [SEP]; lmforge's tokenizer adds nothing
            enc = tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True, max_length=limit,
                            return_tensors="pt")
            ids = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits.argmax(-1).tolist()
            out += [model.config.id2label[j] for j in ids]
    return out


def score_classifiers(*, models: Mapping[str, Path], splits: Mapping[str, Sequence[Mapping[str, Any]]],
                      labels: Sequence[str], batch_size: int = 32, bootstrap: int = 1000, level: float = 0.95,
                      tfidf_c: Sequence[float] = (1.0, 10.0), seed: int = 0,
                      loaders: Mapping[str, Callable[[Path], Any]] | None = None,
                      probe: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every classifier of a task and the TF-IDF + logistic regression baseline on its test split.

    Args:
        models: ``{name: model directory}`` (``finetuned``, ``student``, variants).
        splits: the task's ``train``, ``val`` and ``test`` rows (``text``, ``label``); the baseline fits on train and
            picks its C on val.
        labels: every label name, in the task's order.
        batch_size: texts per forward pass.
        bootstrap: resamples of the confidence intervals; level: their coverage.
        tfidf_c: the baseline's C grid.
        seed: seeds the bootstrap and the baseline.
        loaders: ``{name: load(model_dir)}`` for models that plain ``from_pretrained`` does not load; None: the
            int8 variant by the model layer's one documented loader (``tasks.modeling.quantize.load_int8``).
        probe: the untouched checkpoint the models were fine-tuned from: scored as ``checkpoint_probe``, a linear
            probe on its frozen features (:func:`tasks.evaluate.probe.linear_probe`); None: no such row.

    Returns:
        ``{name: classification_metrics(...)}``, the baseline as ``tfidf_logreg``.
    """
    from tasks.evaluate.baselines import tfidf_logreg
    from tasks.modeling.quantize import load_int8

    test = splits["test"]
    refs, texts = [r["label"] for r in test], [r["text"] for r in test]
    predictions = {}
    for name, model_dir in models.items():
        load = (loaders if loaders is not None else {"int8": load_int8}).get(name)
        predictions[name] = predict_labels(model_dir=model_dir, texts=texts, batch_size=batch_size,
                                           model=load(model_dir) if load else None)
    predictions["tfidf_logreg"] = tfidf_logreg(
        train_texts=[r["text"] for r in splits["train"]], train_labels=[r["label"] for r in splits["train"]],
        val_texts=[r["text"] for r in splits["val"]], val_labels=[r["label"] for r in splits["val"]],
        test_texts=texts, labels=labels, c_grid=tuple(tfidf_c), seed=seed)["predictions"]
    if probe is not None:
        from tasks.evaluate.probe import linear_probe

        predictions["checkpoint_probe"] = linear_probe(model_dir=probe, splits=dict(splits), labels=labels,
                                                       seed=seed, batch_size=batch_size)["predictions"]
    return {name: classification_metrics(references=refs, predictions=p, labels=labels, bootstrap=bootstrap,
                                         level=level, seed=seed) for name, p in predictions.items()}
