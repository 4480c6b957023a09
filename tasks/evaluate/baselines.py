"""Baselines a trained model must beat, each scored like the models:

- a unigram language model: each token (or byte) drawn independently from its training frequency, add-one
  (Laplace) smoothed over the whole vocabulary (the tokenizer's, or the 256 byte values), so unseen units keep a
  non-zero probability; scored on the same text and reported per token, byte and character like
  :func:`tasks.evaluate.lm.lm_metrics` (in token mode the very same tokens, without BOS or EOS);
- TF-IDF (word 1-2 grams, sublinear tf) + logistic regression for classification, its C picked on val macro-F1
  (as ``benchmarks/finetune.py`` does);
- a lead / copy baseline for generation: the response is the prompt's first N words, or the whole prompt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.evaluate.lm import LMEvalError, lm_metrics, scale_metrics

C_GRID: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
"""Inverse regularisation strengths tried for the logistic regression."""
UNITS = ("token", "byte")


def _units(texts: Sequence[str], *, unit: str, tokenizer: Any) -> list[list[int]]:
    if unit == "byte":
        return [list(t.encode("utf-8")) for t in texts]
    return [list(e.ids) for e in tokenizer.backend_tokenizer.encode_batch(list(texts), add_special_tokens=False)]


def unigram_metrics(*, train_texts: Sequence[str], texts: Sequence[str], unit: str = "token",
                    tokenizer_dir: Path | None = None) -> dict[str, Any]:
    """An add-one smoothed unigram LM fitted on ``train_texts`` and scored on ``texts``.

    Args:
        train_texts: the training documents (counts come from these).
        texts: the held-out documents.
        unit: ``token`` (the tokenizer's vocabulary; per-token perplexity comparable with a model using the same
            tokenizer) or ``byte`` (the 256 UTF-8 byte values; no tokenizer needed).
        tokenizer_dir: the tokenizer (``token`` unit only).

    Returns:
        :func:`tasks.evaluate.lm.scale_metrics`' figures (``perplexity`` is per ``unit``) plus ``unit``,
        ``vocabulary`` (the smoothing's support), ``train_units``, ``smoothing`` (``add-one``).

    Raises:
        LMEvalError: an unknown unit, a token unit without tokenizer, or no training text.
    """
    import numpy as np

    if unit not in UNITS:
        raise LMEvalError(f"unit {unit!r}: use one of {UNITS}")
    tokenizer = None
    if unit == "token":
        if tokenizer_dir is None:
            raise LMEvalError("a token-level unigram baseline needs tokenizer_dir")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    vocab = 256 if unit == "byte" else len(tokenizer)
    counts = np.zeros(vocab, dtype=np.int64)
    for ids in _units(train_texts, unit=unit, tokenizer=tokenizer):
        counts += np.bincount(np.asarray(ids, dtype=np.int64), minlength=vocab)[:vocab]
    total = int(counts.sum())
    if total == 0:
        raise LMEvalError("no training text for the unigram baseline: check the train split is not empty")
    logp = np.log(counts + 1.0) - math.log(total + vocab)
    texts = [t for t in texts if t]
    test = _units(texts, unit=unit, tokenizer=tokenizer)
    nll = -float(sum(logp[np.asarray(ids, dtype=np.int64)].sum() for ids in test if ids))
    out = scale_metrics(nll=nll, texts=texts, tokens=sum(len(ids) for ids in test))
    return out | {"unit": unit, "vocabulary": vocab, "train_units": total, "smoothing": "add-one"}


def tfidf_logreg(*, train_texts: Sequence[str], train_labels: Sequence[str], val_texts: Sequence[str],
                 val_labels: Sequence[str], test_texts: Sequence[str], labels: Sequence[str],
                 c_grid: Sequence[float] = C_GRID, seed: int = 0) -> dict[str, Any]:
    """TF-IDF + logistic regression: fitted on train, C chosen by val macro-F1, predictions on test.

    Args:
        train_texts, train_labels: the training examples.
        val_texts, val_labels: the validation examples (choose C; ties go to the stronger regularisation).
        test_texts: the inputs to predict.
        labels: every label name (macro-F1 counts all of them).
        c_grid: the C values tried.
        seed: the solver's random state.

    Returns:
        ``predictions`` (label per test text), ``C``, ``val_macro_f1_by_C``, ``features``.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x_train = vec.fit_transform(list(train_texts))
    x_val = vec.transform(list(val_texts))
    fitted, val_f1 = {}, {}
    for c in c_grid:
        fitted[c] = LogisticRegression(C=c, max_iter=5000, random_state=seed).fit(x_train, list(train_labels))
        val_f1[c] = float(f1_score(list(val_labels), fitted[c].predict(x_val), labels=list(labels), average="macro",
                                   zero_division=0))
    best = max(c_grid, key=lambda c: (val_f1[c], -c))
    return {"predictions": [str(p) for p in fitted[best].predict(vec.transform(list(test_texts)))], "C": best,
            "val_macro_f1_by_C": {str(c): v for c, v in val_f1.items()}, "features": len(vec.vocabulary_)}


def lead_baseline(prompts: Sequence[str], *, words: int | None = None) -> list[str]:
    """The copy / lead baseline of a generation task: each response is the prompt's first ``words`` words
    (None: the whole prompt, whitespace as is)."""
    if words is None:
        return [p.strip() for p in prompts]
    return [" ".join(p.split()[:words]) for p in prompts]


def score_language_models(*, models: Mapping[str, Path], texts: Sequence[str], train_texts: Sequence[str],
                          tokenizer_dir: Path, batch_size: int = 8) -> dict[str, dict[str, Any]]:
    """:func:`tasks.evaluate.lm.lm_metrics` of every model on ``texts``, beside the add-one unigram baselines fitted on
    ``train_texts``: ``unigram`` (the tokenizer's tokens) and ``unigram_byte`` (UTF-8 bytes). Each result carries
    its ``documents``."""
    out = {name: lm_metrics(model_dir=d, texts=texts, batch_size=batch_size) for name, d in models.items()}
    out["unigram"] = unigram_metrics(train_texts=train_texts, texts=texts, tokenizer_dir=tokenizer_dir)
    out["unigram_byte"] = unigram_metrics(train_texts=train_texts, texts=texts, unit="byte")
    return out
