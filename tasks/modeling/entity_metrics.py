"""Entity-level scores of token classification: precision, recall and F1 over exact entity spans (same first word,
last word and type), micro over every entity and per type, with token accuracy beside them.

Scored by seqeval in its default mode, which is conlleval's: every tag sequence, in any of IOB1, IOB2 and BIOES, is
read leniently (an ``I-PER`` after ``O`` opens an entity), so a prediction that breaks its scheme counts as the CoNLL
shared tasks counted it. seqeval's ``mode="strict"`` instead drops a chunk that breaks the ``scheme`` passed (an
``I-PER`` after ``O`` is then no entity at all, neither a hit nor a false positive): a stricter reading no published
CoNLL figure used, and one that scores a model by whether its tags are well formed rather than by its entities. The
references are checked against their scheme by the data step, so both readings agree on them.

:func:`sentence_counts` gives each sentence's hits, predicted and true entities and correct tokens, so that a
bootstrap over sentences recomputes the micro scores from sums (thousands of resamples in milliseconds); the tests
check that the sums give seqeval's figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tasks.modeling.tagging import spans

HEADLINE: tuple[str, ...] = ("entity_precision", "entity_recall", "entity_f1", "token_accuracy")
"""The figures that get a bootstrap interval (micro over entities, and over tokens)."""
COUNTS: tuple[str, ...] = ("hits", "predicted", "true", "correct_tokens", "tokens")


class EntityScoreError(Exception):
    """References and predictions cannot be compared (different numbers of sentences or words). Exit code 2."""

    exit_code = 2


def _check(references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> None:
    if len(references) != len(predictions):
        raise EntityScoreError(f"{len(references)} reference sentences and {len(predictions)} predicted ones: need "
                               "one prediction per sentence")
    for i, (ref, pred) in enumerate(zip(references, predictions, strict=True)):
        if len(ref) != len(pred):
            raise EntityScoreError(f"sentence {i}: {len(ref)} reference tags and {len(pred)} predicted ones: need "
                                   "one tag per word")


def entity_scores(references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Micro precision / recall / F1 over entities, per-type scores and token accuracy (conlleval's reading).

    Args:
        references: each sentence's true tags.
        predictions: each sentence's predicted tags (any scheme; compared with the references tag by tag for token
            accuracy, so give both in the same scheme).

    Returns:
        ``entity_precision``, ``entity_recall``, ``entity_f1`` (micro), ``token_accuracy``, ``sentences``,
        ``entities`` (true), ``predicted``, and ``per_type`` ({type: {precision, recall, f1, support}}, every type of
        either side, sorted). A set with no entity on either side scores 0 (seqeval's ``zero_division=0``).

    Raises:
        EntityScoreError: the numbers of sentences or of words differ.
    """
    from seqeval.metrics import accuracy_score, classification_report

    _check(references, predictions)
    refs = [list(r) for r in references]
    preds = [list(p) for p in predictions]
    true, found = sum(len(spans(r)) for r in refs), sum(len(spans(p)) for p in preds)
    # no entity on either side: nothing to score (seqeval's averages would be means of empty arrays)
    report = classification_report(refs, preds, output_dict=True, zero_division=0) if true + found else {}
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    words = sum(len(r) for r in refs)
    return {"entity_precision": float(micro["precision"]), "entity_recall": float(micro["recall"]),
            "entity_f1": float(micro["f1-score"]),
            "token_accuracy": float(accuracy_score(refs, preds)) if words else 0.0,
            "sentences": len(refs), "entities": true, "predicted": found,
            "per_type": {kind: {"precision": float(v["precision"]), "recall": float(v["recall"]),
                                "f1": float(v["f1-score"]), "support": int(v["support"])}
                         for kind, v in sorted(report.items()) if not kind.endswith(" avg")}}


def sentence_counts(references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> list[list[int]]:
    """Per sentence: ``[hits, predicted, true, correct_tokens, tokens]`` (:data:`COUNTS`): exact-span-and-type
    matches, predicted and true entities, words tagged right, words.

    Raises:
        EntityScoreError: the numbers of sentences or of words differ.
    """
    _check(references, predictions)
    out = []
    for ref, pred in zip(references, predictions, strict=True):
        true, found = set(spans(ref)), set(spans(pred))
        out.append([len(true & found), len(found), len(true), sum(r == p for r, p in zip(ref, pred, strict=True)),
                    len(ref)])
    return out


def micro_from_counts(sums: Mapping[str, float] | Sequence[float]) -> dict[str, float]:
    """:data:`HEADLINE` from summed :func:`sentence_counts` (a mapping by :data:`COUNTS` name, or the summed row)."""
    hits, predicted, true, correct, tokens = (sums[k] for k in COUNTS) if isinstance(sums, Mapping) else sums
    p = hits / predicted if predicted else 0.0
    r = hits / true if true else 0.0
    return {"entity_precision": float(p), "entity_recall": float(r),
            "entity_f1": float(2 * p * r / (p + r)) if p + r else 0.0,
            "token_accuracy": float(correct / tokens) if tokens else 0.0}
