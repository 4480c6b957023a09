"""Train/test contamination: word 13-gram overlap between every evaluation set and the training data.

Text is normalised as the GPT-3 paper's and lm-evaluation-harness's decontamination do: lowercased, every character
that is not a letter, digit or whitespace removed, split on whitespace. An evaluation document is contaminated when
any of its 13-grams occurs in the training data. Training 13-grams are hashed to 64-bit integers (BLAKE2b, the same
values in every process) and kept as one sorted ``uint64`` array: 8 bytes per distinct 13-gram, where a Python set
of strings would take about a hundred. A hash collision could only add a false overlap, with probability about
``eval_ngrams * train_ngrams / 2**64``: nil at this scale.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

N = 13
_DROP = re.compile(r"[^\w\s]|_")


class ContaminationError(Exception):
    """An evaluation set overlaps the training data beyond the allowed share; the message names the set and the
    offending ids: drop them from the evaluation set (or the training data) and re-run. Exit code 2."""

    exit_code = 2


def normalize(text: str) -> list[str]:
    """Lowercased words, punctuation removed."""
    return _DROP.sub("", text.lower()).split()


def ngram_hashes(text: str, *, n: int = N) -> np.ndarray:
    """The 64-bit hashes of the word ``n``-grams of ``text`` after :func:`normalize` (empty when shorter)."""
    import numpy as np

    words = normalize(text)
    grams = (" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    return np.fromiter((int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little")
                        for g in grams), dtype=np.uint64)


def training_ngrams(texts: Iterable[str], *, n: int = N, fold_every: int = 1 << 20) -> np.ndarray:
    """Every distinct ``n``-gram hash of the training texts, sorted (one pass; ``texts`` may be a generator).

    Args:
        texts: the training documents.
        n: the n-gram length.
        fold_every: pending hashes merged into the sorted unique array once this many have piled up, so memory
            follows the distinct n-grams (repeated boilerplate costs nothing).
    """
    import numpy as np

    parts, pending, size = [], [], 0
    for text in texts:
        pending.append(ngram_hashes(text, n=n))
        size += len(pending[-1])
        if size > fold_every:
            parts = [np.unique(np.concatenate(parts + pending))]
            pending, size = [], 0
    return np.unique(np.concatenate(parts + pending)) if parts or pending else np.zeros(0, dtype=np.uint64)


def example_text(row: Mapping[str, Any]) -> str:
    """The text of an evaluation row: ``text`` (records, classification), its turns (chat), the words of a tagged
    sentence (token_classification), ``question`` (extractive QA: its context is shared by the other questions about
    it, in whatever split they fell) or ``prompt`` + ``response`` (sft)."""
    if "text" in row:
        return str(row["text"])
    if "messages" in row:
        return "\n".join(str(m["content"]) for m in row["messages"])
    if "tokens" in row:
        return " ".join(map(str, row["tokens"]))
    if "question" in row and "context" in row:
        return str(row["question"])
    return f"{row.get('prompt', '')}\n{row.get('response', '')}"


def overlap(*, train: np.ndarray, eval_sets: Mapping[str, Sequence[Mapping[str, Any]]],
            n: int = N) -> dict[str, dict[str, Any]]:
    """Which documents of each evaluation set share an ``n``-gram with the training data.

    Args:
        train: :func:`training_ngrams` of the training data.
        eval_sets: ``{set name: rows}``, each row with an ``id`` and its text (:func:`example_text`).
        n: the n-gram length (13 unless testing).

    Returns:
        ``{set name: {"documents", "too_short" (fewer than n words: cannot overlap), "contaminated", "share"
        (contaminated / documents), "ids" (the contaminated ids, in order), "overlap_ngrams" (their n-grams found in
        training)}}``.
    """
    import numpy as np

    report = {}
    for name, rows in eval_sets.items():
        ids, short, found = [], 0, 0
        for row in rows:
            grams = ngram_hashes(example_text(row), n=n)
            if not len(grams):
                short += 1
                continue
            pos = np.minimum(np.searchsorted(train, grams), max(len(train) - 1, 0))
            hits = int((train[pos] == grams).sum()) if len(train) else 0
            if hits:
                ids.append(str(row["id"]))
                found += hits
        report[name] = {"documents": len(rows), "too_short": short, "contaminated": len(ids),
                        "share": len(ids) / len(rows) if rows else 0.0, "ids": ids, "overlap_ngrams": found}
    return report


def check_contamination(report: Mapping[str, Mapping[str, Any]], *, max_share: float, show: int = 20) -> None:
    """Fail when a set's contaminated share exceeds ``max_share``.

    Args:
        report: :func:`overlap`'s result.
        max_share: the largest allowed share of contaminated documents per set (0: none allowed).
        show: ids listed per set in the message.

    Raises:
        ContaminationError: naming every set over the limit with its share and (the first ``show``) offending ids.
    """
    bad = {name: r for name, r in report.items() if r["share"] > max_share}
    if bad:
        lines = [f"{name}: {r['contaminated']}/{r['documents']} documents ({r['share']:.1%}) share a {N}-gram with "
                 f"the training data, ids {r['ids'][:show]}" + (" ..." if len(r["ids"]) > show else "")
                 for name, r in sorted(bad.items())]
        raise ContaminationError("evaluation data overlaps the training data beyond the allowed share "
                                 f"({max_share:.1%}): " + "; ".join(lines) + ". Remove those documents from the "
                                 "evaluation split (or the training data) and re-run.")


def check_sets(*, train_texts: Iterable[str], eval_sets: Mapping[str, Sequence[Mapping[str, Any]]], n: int = N,
               max_share: float) -> dict[str, dict[str, Any]]:
    """:func:`training_ngrams` of ``train_texts``, :func:`overlap` of every evaluation set with them, then
    :func:`check_contamination`; returns the overlap report.

    Raises:
        ContaminationError: a set's contaminated share exceeds ``max_share``.
    """
    report = overlap(train=training_ngrams(train_texts, n=n), eval_sets=eval_sets, n=n)
    check_contamination(report, max_share=max_share)
    return report
