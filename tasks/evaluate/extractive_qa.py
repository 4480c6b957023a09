"""Extractive question-answering quality: SQuAD exact match and F1 with bootstrap intervals over questions, and the
lexical baseline the models must beat.

Metrics follow the official SQuAD 2.0 script's rules (:mod:`tasks.modeling.tasktypes.squad_metrics`); the intervals
are the percentile bootstrap of :func:`tasks.evaluate.classification.bootstrap_intervals`, resampling questions.

The baseline (a classic lexical one): split the context into sentences (a sentence ends at ``.``, ``!`` or ``?``
followed by white space, or at a line break; white space around it trimmed) and answer with the sentence sharing the
most distinct words with the question, words as SQuAD's normalisation gives them (lower case, no punctuation, no
articles); ties go to the earlier sentence. It always answers, so it scores 0 on unanswerable questions; and a
sentence is longer than most answers, which its F1 pays for in precision, while exact match rewards it only where the
answer is the whole sentence.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.evaluate.classification import bootstrap_intervals
from tasks.modeling.tasktypes.squad_metrics import METRICS, normalize_answer, squad_scores

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


def baseline_predictions(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The overlap-sentence baseline's answer text for each row (``question``, ``context``)."""
    return [overlap_sentence(r["question"], r["context"])["text"] for r in rows]


def predict_answers(*, model_dir: Path, questions: Sequence[str], contexts: Sequence[str],
                    doc_stride: int | None = None, max_answer_length: int | None = None, allow_null: bool | None = None,
                    max_length: int | None = None, batch_size: int = 16, model: Any = None) -> list[dict[str, Any]]:
    """The answers of an exported extractive QA model (``AutoModelForQuestionAnswering`` with its tokenizer), decoded
    as training's validation decodes them (:func:`tasks.modeling.tasktypes.spans.best_answers`).

    Args:
        model_dir: the model directory, e.g. ``models/finetuned/squad``.
        questions, contexts: the inputs, in the same order.
        doc_stride, max_answer_length, allow_null, max_length: the windows' overlap, the longest answer in tokens,
            whether "no answer" may be chosen, tokens per window; None: as the model's config says (its
            ``task_specific_params["question-answering"]``, written by the export), else the task type's defaults
            (``max_length``: the model's ``max_position_embeddings``).
        batch_size: windows per forward pass.
        model: the model already loaded (an int8 variant by its own loader); None: load ``model_dir``'s.

    Returns:
        Per question ``{"text", "start", "end", "score", "probability"}`` (``start``/``end``: character offsets in
        the context; None with the empty text for no answer).
    """
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from tasks.modeling.tasktypes.extractive_qa import DOC_STRIDE, MAX_ANSWER_LENGTH
    from tasks.modeling.tasktypes.spans import best_answers, windows

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if model is None:
        model = AutoModelForQuestionAnswering.from_pretrained(str(model_dir), dtype=torch.float32)
    model = model.eval()
    saved = (getattr(model.config, "task_specific_params", None) or {}).get("question-answering", {})
    stride = int(doc_stride if doc_stride is not None else saved.get("doc_stride", DOC_STRIDE))
    longest = int(max_answer_length if max_answer_length is not None else saved.get("max_answer_length",
                                                                                     MAX_ANSWER_LENGTH))
    null = bool(allow_null if allow_null is not None else saved.get("handle_impossible_answer", False))
    limit = int(max_length or saved.get("max_seq_len") or model.config.max_position_embeddings)
    data = windows(questions, contexts, tokenizer=tokenizer, max_length=limit, stride=stride)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    logits: list[Any] = []
    with torch.no_grad():
        for i in range(0, len(data["ids"]), batch_size):
            chunk = data["ids"][i:i + batch_size]
            width = max(len(ids) for ids in chunk)
            x = torch.tensor([ids + [pad] * (width - len(ids)) for ids in chunk])
            mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in chunk])
            out = model(input_ids=x, attention_mask=mask)
            both = torch.stack([out.start_logits, out.end_logits], -1).float().numpy()
            logits += [both[j, :len(ids)] for j, ids in enumerate(chunk)]
    return best_answers(logits, data, contexts, max_answer_length=longest, allow_null=null)


def score_qa_models(*, models: Mapping[str, Path], test: Sequence[Mapping[str, Any]], batch_size: int = 16,
                    bootstrap: int = 1000, level: float = 0.95, seed: int = 0,
                    loaders: Mapping[str, Callable[[Path], Any]] | None = None,
                    **settings: Any) -> dict[str, dict[str, Any]]:
    """Every extractive QA model of a task and the overlap-sentence baseline on its test split.

    Args:
        models: ``{name: model directory}`` (``finetuned``, ``student``, variants).
        test: the test rows (``question``, ``context``, ``answers``: ``{"text": [...], "answer_start": [...]}``).
        batch_size: windows per forward pass.
        bootstrap, level, seed: the intervals (:func:`qa_metrics`).
        loaders: ``{name: load(model_dir)}`` for models that plain ``from_pretrained`` does not load; None: the int8
            variant by the model layer's one documented loader.
        settings: :func:`predict_answers`' decoding settings; none given: each model's own (its config).

    Returns:
        ``{name: qa_metrics(...)}``, the baseline as ``overlap_sentence``.
    """
    from tasks.modeling.quantize import load_int8

    refs = [list(r["answers"]["text"]) for r in test]
    questions, contexts = [r["question"] for r in test], [r["context"] for r in test]
    predictions: dict[str, list[str]] = {}
    for name, model_dir in models.items():
        load = (loaders if loaders is not None else {"int8": load_int8}).get(name)
        answers = predict_answers(model_dir=model_dir, questions=questions, contexts=contexts, batch_size=batch_size,
                                  model=load(model_dir) if load else None, **settings)
        predictions[name] = [a["text"] for a in answers]
    predictions["overlap_sentence"] = baseline_predictions(list(test))
    return {name: qa_metrics(references=refs, predictions=p, bootstrap=bootstrap, level=level, seed=seed)
            for name, p in predictions.items()}
