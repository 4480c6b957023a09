"""Answer spans of extractive question answering: (question, context) pairs as overlapping token windows with their
answer's token positions, and the model's start/end logits back to one answer per question.

**Windows** (as transformers' ``run_qa`` example makes them): a fast tokenizer encodes ``(question, context)`` as a
pair, truncating the context only, ``max_length`` tokens a window and ``stride`` tokens shared by consecutive windows
(``return_overflowing_tokens``), with each token's character offsets (``return_offsets_mapping``); the question comes
first, which a decoder needs too (its context tokens attend to the question before them). A window's target is the
first gold answer's first and last token; a window that does not hold the whole answer, and an unanswerable question,
point at the window's null position: the CLS token where the tokenizer puts one (BERT: position 0), else position 0
(GPT-2 and Llama tokenizers have no CLS: the first question token plays its part, the model learns the meaning).
A question too long to leave more than ``stride`` context tokens in a window is not encoded but counted (the
tokenizer would stop the whole process otherwise).

**Answers**: the best span of a question is the highest ``start_logit[s] + end_logit[e]`` over every window and every
pair of context tokens with ``s <= e < s + max_answer_length``, neither of white space only (exhaustive, where
``run_qa`` searches the n-best starts and ends). Where unanswerable questions are allowed, the null answer wins when
its score (``start + end`` logits at the null position, the lowest over the question's windows, as ``run_qa`` takes
it) is higher than the best span's. The answer's text is the context between the first token's start and the last
token's end offset, white space trimmed (byte-level tokens carry the space before them); ``probability`` is the
answer's softmax over every allowed span of every window (and the null answer where allowed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

NULL_ANSWER: dict[str, Any] = {"text": "", "start": None, "end": None}
"""The null answer's text and offsets (an unanswerable question); ``score`` and ``probability`` are added."""


def _question_lengths(tokenizer: Any, questions: Sequence[str]) -> list[int]:
    if not questions:
        return []
    return [len(ids) for ids in tokenizer(list(questions), add_special_tokens=False)["input_ids"]]


def max_question_tokens(tokenizer: Any, *, max_length: int, stride: int) -> int:
    """The most question tokens a window of ``max_length`` can hold with more than ``stride`` context tokens beside
    them (the tokenizer's special tokens counted)."""
    return max_length - int(tokenizer.num_special_tokens_to_add(pair=True)) - stride - 1


def windows(questions: Sequence[str], contexts: Sequence[str], *, tokenizer: Any, max_length: int, stride: int,
            answers: Sequence[tuple[int, int] | None] | None = None) -> dict[str, Any]:
    """The windows of (question, context) pairs, with their answers' token positions.

    Args:
        questions, contexts: the examples' questions and contexts, in the same order.
        tokenizer: a fast transformers tokenizer (offsets are needed).
        max_length: tokens per window, special tokens included.
        stride: tokens shared by consecutive windows of one context (``doc_stride``).
        answers: each example's answer as (start, end) character offsets in its context (end exclusive), None for
            an unanswerable one; None: no targets (prediction).

    Returns:
        ``{"ids": [[int]], "example": [the window's example index], "offsets": [[[start, end] or None per token]]
        (None outside the context), "null": [null position], "targets": [[start, end]] (with ``answers``),
        "kept": [indices of the examples encoded], "dropped": [indices of those whose question is too long]}``.

    Raises:
        ValueError: ``stride`` leaves no room (``max_length`` too small for it), or a slow tokenizer.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer: extractive QA needs token offsets")
    if not 0 <= stride < max_length:
        raise ValueError(f"doc_stride {stride} must be at least 0 and below max_length {max_length}")
    limit = max_question_tokens(tokenizer, max_length=max_length, stride=stride)
    lengths = _question_lengths(tokenizer, questions)
    kept = [i for i, n in enumerate(lengths) if n <= limit]
    out: dict[str, Any] = {"ids": [], "example": [], "offsets": [], "null": [], "kept": kept,
                           "dropped": [i for i, n in enumerate(lengths) if n > limit]}
    if answers is not None:
        out["targets"] = []
    if not kept:
        return out
    enc = tokenizer([questions[i] for i in kept], [contexts[i] for i in kept], truncation="only_second",
                    max_length=max_length, stride=stride, return_overflowing_tokens=True,
                    return_offsets_mapping=True, padding=False)
    cls_id = getattr(tokenizer, "cls_token_id", None)
    for w, ids in enumerate(enc["input_ids"]):
        example = kept[enc["overflow_to_sample_mapping"][w]]
        sequence = enc.sequence_ids(w)
        offsets = [list(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][w], sequence, strict=True)]
        null = ids.index(cls_id) if cls_id is not None and cls_id in ids else 0
        out["ids"].append(list(ids))
        out["example"].append(example)
        out["offsets"].append(offsets)
        out["null"].append(null)
        if answers is not None:
            out["targets"].append(_target(offsets, answers[example], null))
    return out


def _target(offsets: list[list[int] | None], answer: tuple[int, int] | None, null: int) -> list[int]:
    """The answer's first and last token in a window, or the null position twice when the window lacks it."""
    inside = [i for i, o in enumerate(offsets) if o is not None]
    if answer is None or not inside:
        return [null, null]
    first, last = inside[0], inside[-1]
    start_char, end_char = answer
    if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):  # type: ignore[index]
        return [null, null]
    start = first
    while start <= last and offsets[start][0] <= start_char:  # type: ignore[index]
        start += 1
    end = last
    while end >= first and offsets[end][1] >= end_char:  # type: ignore[index]
        end -= 1
    return [start - 1, end + 1]


def answer_chars(answers: dict[str, list[Any]]) -> tuple[int, int] | None:
    """The first gold answer of an example (``{"text": [...], "answer_start": [...]}``) as (start, end) character
    offsets, None for an unanswerable one (what training targets)."""
    if not answers["text"]:
        return None
    start = int(answers["answer_start"][0])
    return start, start + len(answers["text"][0])


def _logsumexp(values: list[float]) -> float:
    import math

    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def best_answers(logits: Sequence[Any], data: dict[str, Any], contexts: Sequence[str], *, max_answer_length: int,
                 allow_null: bool) -> list[dict[str, Any]]:
    """One answer per example from its windows' start/end logits.

    Args:
        logits: per window, an array ``(tokens, 2)`` of start and end logits (the window's length or longer:
            padding beyond its tokens is ignored), in :func:`windows`' order.
        data: :func:`windows`' output (``example``, ``offsets``, ``null``).
        contexts: every example's context, indexed like the examples given to :func:`windows`.
        max_answer_length: the longest answer in tokens.
        allow_null: whether the null answer (unanswerable) may be chosen.

    Returns:
        Per example (in ``contexts``' order): ``{"text", "start", "end" (character offsets in the context, end
        exclusive; None for the null answer), "score" (start + end logit), "probability"}``; an example without a
        window (question too long) gets the null answer with score and probability None.
    """
    import numpy as np

    per_example: dict[int, list[int]] = {}
    for w, example in enumerate(data["example"]):
        per_example.setdefault(example, []).append(w)
    out: list[dict[str, Any]] = []
    for example, context in enumerate(contexts):
        best: tuple[float, int, int] | None = None
        null_score: float | None = None
        lse: list[float] = []
        for w in per_example.get(example, []):
            offsets = data["offsets"][w]
            scores = np.asarray(logits[w], dtype=np.float64)[:len(offsets)]
            null = data["null"][w]
            window_null = float(scores[null, 0] + scores[null, 1])
            null_score = window_null if null_score is None else min(null_score, window_null)
            # a token of white space only (byte-level BPE's lone space) neither starts nor ends an answer
            inside = np.array([o is not None and bool(context[o[0]:o[1]].strip()) for o in offsets])
            pairs = scores[:, 0][:, None] + scores[:, 1][None, :]
            n = len(offsets)
            gap = np.arange(n)[None, :] - np.arange(n)[:, None]
            allowed = inside[:, None] & inside[None, :] & (gap >= 0) & (gap < max_answer_length)
            if not allowed.any():
                continue
            masked = np.where(allowed, pairs, -np.inf)
            s, e = np.unravel_index(int(np.argmax(masked)), masked.shape)
            lse.append(float(np.logaddexp.reduce(pairs[allowed])))
            if best is None or masked[s, e] > best[0]:
                best = (float(masked[s, e]), offsets[s][0], offsets[e][1])
        if allow_null and null_score is not None:
            lse.append(null_score)
        if null_score is None:
            out.append({**NULL_ANSWER, "score": None, "probability": None})
        elif best is None or (allow_null and null_score > best[0]):
            out.append({**NULL_ANSWER, "score": null_score, "probability": _probability(null_score, lse)})
        else:
            out.append(_trimmed(context, best[1], best[2]) | {"score": best[0],
                                                              "probability": _probability(best[0], lse)})
    return out


def _probability(score: float, lse: list[float]) -> float | None:
    import math

    return math.exp(score - _logsumexp(lse)) if lse else None


def _trimmed(context: str, start: int, end: int) -> dict[str, Any]:
    """The span's text with the white space around it cut off (its offsets moved accordingly)."""
    text = context[start:end]
    start += len(text) - len(text.lstrip())
    end -= len(text) - len(text.rstrip())
    return {"text": context[start:end], "start": start, "end": end}
