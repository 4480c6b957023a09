"""Exact match and token F1 of extractive answers, by the rules of the official SQuAD 2.0 evaluation script
(``evaluate-v2.0.py``; on answerable questions they give the 1.1 script's numbers).

- Normalisation: lower case, punctuation (``string.punctuation``) removed, the articles a/an/the removed as whole
  words, white space collapsed.
- Exact match: the normalised prediction equals a normalised gold answer. Token F1: the harmonic mean of precision
  and recall of the normalised prediction's tokens (white-space split, counted with multiplicity) against a gold
  answer's. Each is the maximum over the question's gold answers.
- No-answer: gold answers that normalise to nothing are dropped; a question left with none (an unanswerable one)
  has the empty string as its only gold answer, so the empty prediction scores 1 and any other 0 (and an empty
  prediction on an answerable question scores 0).

Scores are fractions in [0, 1] (the script prints percentages), means over questions; with unanswerable questions
among them, ``has_answer`` and ``no_answer`` give the same means over each group, as the script's ``HasAns_`` and
``NoAns_`` figures.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)
METRICS: tuple[str, ...] = ("exact_match", "f1")
"""The per-question scores, headline (SQuAD F1) last."""


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact(gold: str, prediction: str) -> int:
    """1 when the normalised strings are equal, else 0."""
    return int(normalize_answer(gold) == normalize_answer(prediction))


def token_f1(gold: str, prediction: str) -> float:
    """Token F1 of the normalised strings; when either is empty, 1 if both are, else 0."""
    gold_tokens, pred_tokens = normalize_answer(gold).split(), normalize_answer(prediction).split()
    if not gold_tokens or not pred_tokens:
        return float(gold_tokens == pred_tokens)
    same = sum((Counter(gold_tokens) & Counter(pred_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_answers(answers: Sequence[str]) -> list[str]:
    """The gold answers a prediction is scored against: those that normalise to something, or ``[""]`` if none."""
    return [a for a in answers if normalize_answer(a)] or [""]


def question_scores(answers: Sequence[str], prediction: str) -> tuple[int, float]:
    """(exact match, F1) of one prediction: the maximum over the question's gold answers."""
    golds = gold_answers(answers)
    return max(exact(g, prediction) for g in golds), max(token_f1(g, prediction) for g in golds)


def squad_scores(references: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict[str, Any]:
    """Exact match and F1 over questions.

    Args:
        references: each question's gold answer texts ([] for an unanswerable question).
        predictions: each question's predicted text ("" for no answer), in the same order.

    Returns:
        ``examples``, ``exact_match``, ``f1`` (means in [0, 1]), ``per_question`` ({``exact_match``: [...],
        ``f1``: [...]}), and when some questions are unanswerable ``has_answer`` and ``no_answer`` ({``examples``,
        ``exact_match``, ``f1``}).

    Raises:
        ValueError: lengths differ, or no question.
    """
    if len(references) != len(predictions) or not references:
        raise ValueError(f"{len(references)} references and {len(predictions)} predictions: need the same non-zero "
                         "number")
    scores = [question_scores(a, p) for a, p in zip(references, predictions, strict=True)]
    per = {"exact_match": [float(e) for e, _ in scores], "f1": [f for _, f in scores]}
    out: dict[str, Any] = {"examples": len(scores), **_means(per, range(len(scores))), "per_question": per}
    answerable = [i for i, a in enumerate(references) if a]  # as the script: by the raw answers list
    if len(answerable) < len(references):
        unanswerable = sorted(set(range(len(references))) - set(answerable))
        out["has_answer"] = {"examples": len(answerable), **_means(per, answerable)}
        out["no_answer"] = {"examples": len(unanswerable), **_means(per, unanswerable)}
    return out


def _means(per: dict[str, list[float]], pick: Sequence[int] | range) -> dict[str, float]:
    n = len(pick)
    return {k: (sum(v[i] for i in pick) / n if n else 0.0) for k, v in per.items()}
