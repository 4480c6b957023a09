"""Extractive question-answering quality: SQuAD exact match and F1 with bootstrap intervals over questions, and the
lexical baseline the models must beat.

Metrics follow the official SQuAD 2.0 script's rules (:mod:`tasks.modeling.squad_metrics`); the intervals are the
percentile bootstrap of :func:`tasks.evaluate.classification.bootstrap_intervals`, resampling questions.

The baseline (a classic lexical one): split the context into sentences (a sentence ends at ``.``, ``!`` or ``?``
followed by white space, or at a line break; white space around it trimmed) and answer with the sentence sharing the
most distinct words with the question, words as SQuAD's normalisation gives them (lower case, no punctuation, no
articles); ties go to the earlier sentence. It always answers, so it scores 0 on unanswerable questions; and a
sentence is longer than most answers, which its F1 pays for in precision, while exact match rewards it only where the
answer is the whole sentence.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tasks.evaluate.classification import bootstrap_intervals
from tasks.modeling.squad_metrics import METRICS, normalize_answer, squad_scores

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


class QAEvalError(Exception):
    """Predictions and references cannot be compared; the message says what is wrong. Exit code 2."""

    exit_code = 2


def sentences(context: str) -> list[tuple[int, int]]:
    """The context's sentences as (start, end) character offsets (end exclusive), white space trimmed, in order."""
    spans, start = [], 0
    for match in [*_SENTENCE_END.finditer(context), None]:
        end = match.start() if match else len(context)
        piece = context[start:end]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            spans.append((start + lead, start + len(piece.rstrip())))
        start = match.end() if match else start
    return spans


def overlap_sentence(question: str, context: str) -> dict[str, Any]:
    """The baseline's answer: the context sentence with the most distinct question words (see the module docstring).

    Returns:
        ``{"text", "start", "end"}`` (character offsets in the context, end exclusive).
    """
    words = set(normalize_answer(question).split())
    spans = sentences(context) or [(0, len(context))]
    start, end = max(spans, key=lambda s: (len(words & set(normalize_answer(context[s[0]:s[1]]).split())), -s[0]))
    return {"text": context[start:end], "start": start, "end": end}


def qa_metrics(*, references: Sequence[Sequence[str]], predictions: Sequence[str], bootstrap: int = 1000,
               level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """SQuAD exact match and F1 over questions, with bootstrap intervals.

    Args:
        references: each question's gold answer texts ([] for an unanswerable question).
        predictions: each question's predicted text ("" for no answer), in the same order.
        bootstrap: resamples for the intervals (0: none); level: their coverage; seed: seeds the resampling.

    Returns:
        ``examples``, ``exact_match``, ``f1`` (in [0, 1]), ``has_answer``/``no_answer`` when some questions are
        unanswerable, and ``ci`` ({``exact_match``, ``f1``: [low, high]}, ``bootstrap``, ``level``).

    Raises:
        QAEvalError: lengths differ, or no question.
    """
    import numpy as np

    try:
        scores = squad_scores(references, predictions)
    except ValueError as exc:
        raise QAEvalError(str(exc)) from None
    per = {k: np.asarray(v) for k, v in scores.pop("per_question").items()}
    if bootstrap:
        scores["ci"] = bootstrap_intervals(scores["examples"], lambda pick: {k: float(per[k][pick].mean())
                                                                             for k in METRICS},
                                           bootstrap=bootstrap, level=level, seed=seed)
    return scores


def baseline_predictions(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The overlap-sentence baseline's answer text for each row (``question``, ``context``)."""
    return [overlap_sentence(r["question"], r["context"])["text"] for r in rows]
