"""Words to sub-word tokens and back, for token classification: labels on each word's first token, windows of
whole words for long sentences, predictions mapped back to words, and entity spans with character offsets.

A sentence's words are joined with single spaces and the text is tokenized as running text, the way the model met
text in pretraining and the way :func:`text_words` presents raw text at prediction; each token belongs to the word
its first non-space character lies in (the tokenizer's ``offset_mapping``), which gives the word ids a fast
tokenizer's ``word_ids()`` gives for pre-split input. (Pre-split input, ``is_split_into_words``, encodes every word
as if it began the text: a byte-level BPE without a prefix space, lmforge's own or GPT-2's, then spells ``on`` as
``o`` ``n`` instead of the ``Ġon`` it learned.) The first token of each word carries the word's label, the other
tokens and the special ones -100 (no loss). A sentence over ``max_length`` tokens becomes several windows, each a
run of whole words with the tokenizer's special tokens, never cut inside a word and never dropped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tasks.modeling.errors import ConfigError
from tasks.modeling.tasktypes.batching import IGNORE

_WORD = re.compile(r"\w+(?:['’.\-]\w+)*|[^\w\s]")


@dataclass(frozen=True)
class Window:
    """One model input of a sentence: ``ids``, ``targets`` (a label id on each word's first token, -100 elsewhere),
    ``first`` (the sentence's index of its first word) and ``positions`` (the token index of each of its words'
    first token; -1 for a word no token starts in)."""

    ids: list[int]
    targets: list[int]
    first: int
    positions: list[int]


def join_words(words: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """The text of ``words`` joined by single spaces, and each word's ``(start, end)`` characters in it."""
    offsets, at = [], 0
    for word in words:
        offsets.append((at, at + len(word)))
        at += len(word) + 1
    return " ".join(words), offsets


def text_words(text: str) -> list[tuple[int, int]]:
    """The words of raw text as ``(start, end)`` characters: runs of letters and digits (joined by ``'``, ``.`` or
    ``-`` inside, as in ``don't``, ``U.S``, ``Anglo-Dutch``) and single punctuation marks, the way CoNLL corpora split
    text into tokens."""
    return [m.span() for m in _WORD.finditer(text)]


def _word_of_tokens(text: str, offsets: list[tuple[int, int]], word_spans: list[tuple[int, int]],
                    special: list[int]) -> list[int | None]:
    """The word index of each token (None: a special token or one without a character of a word)."""
    owner = [-1] * len(text)
    for w, (start, end) in enumerate(word_spans):
        owner[start:end] = [w] * (end - start)
    out: list[int | None] = []
    for (start, end), is_special in zip(offsets, special, strict=True):
        word = None
        if not is_special:
            word = next((owner[c] for c in range(start, min(end, len(text))) if owner[c] >= 0), None)
        out.append(word)
    return out


def _encode(tokenizer: Any, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]], list[int]]]:
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"token classification needs a fast tokenizer (character offsets); "
                          f"{type(tokenizer).__name__} is not one: save the checkpoint with its tokenizer.json")
    enc = tokenizer(texts, return_offsets_mapping=True, return_special_tokens_mask=True, add_special_tokens=True)
    return [(list(i), [tuple(o) for o in off], list(m))
            for i, off, m in zip(enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"], strict=True)]


def _window(encoded: tuple[list[int], list[tuple[int, int]], list[int]], text: str,
            word_spans: list[tuple[int, int]], labels: Sequence[int], first: int) -> Window:
    ids, offsets, special = encoded
    owners = _word_of_tokens(text, offsets, word_spans, special)
    positions = [-1] * len(word_spans)
    targets = [IGNORE] * len(ids)
    for t, w in enumerate(owners):
        if w is not None and positions[w] < 0:
            positions[w] = t
            targets[t] = labels[w] if labels else IGNORE
    return Window(ids, targets, first, positions)


def encode_sentences(sentences: Sequence[Sequence[str]], labels: Sequence[Sequence[int]] | None, *, tokenizer: Any,
                     max_length: int) -> tuple[list[list[Window]], list[int]]:
    """Every sentence as its windows, and the indices of sentences that cannot be encoded (a word alone, with the
    special tokens, over ``max_length``).

    Args:
        sentences: each sentence's words.
        labels: each sentence's label id per word (None: prediction only; every target is -100).
        tokenizer: a fast transformers tokenizer.
        max_length: the most tokens of a window, special tokens included.

    Raises:
        ConfigError: the tokenizer is not a fast one (no character offsets).
    """
    joined = [join_words(words) for words in sentences]
    whole = _encode(tokenizer, [text for text, _ in joined])
    out: list[list[Window]] = []
    dropped: list[int] = []
    for s, ((text, spans), encoded) in enumerate(zip(joined, whole, strict=True)):
        tags = labels[s] if labels is not None else []
        if len(encoded[0]) <= max_length:
            out.append([_window(encoded, text, spans, tags, 0)])
            continue
        windows = _split(sentences[s], tags, encoded, text, spans, tokenizer=tokenizer, max_length=max_length)
        if windows is None:
            dropped.append(s)
        out.append(windows or [])
    return out, dropped


def _split(words: Sequence[str], tags: Sequence[int], encoded: tuple[list[int], list[tuple[int, int]], list[int]],
           text: str, spans: list[tuple[int, int]], *, tokenizer: Any, max_length: int) -> list[Window] | None:
    """Windows of whole words of a sentence over ``max_length`` tokens: as many words as fit, packed by their token
    counts in the whole sentence and checked by encoding the window (its first word may tokenize differently at the
    start of a text); None when one word alone does not fit."""
    ids, offsets, special = encoded
    per_word = [0] * len(words)
    for w in _word_of_tokens(text, offsets, spans, special):
        if w is not None:
            per_word[w] += 1
    budget = max_length - sum(special)
    windows: list[Window] = []
    start = 0
    while start < len(words):
        end, used = start, 0
        while end < len(words) and (end == start or used + per_word[end] <= budget):
            used += per_word[end]
            end += 1
        while True:
            part_text, part_spans = join_words(words[start:end])
            part = _encode(tokenizer, [part_text])[0]
            if len(part[0]) <= max_length:
                break
            if end - start == 1:
                return None
            end -= 1
        windows.append(_window(part, part_text, part_spans, tags[start:end] if tags else [], start))
        start = end
    return windows


def word_predictions(windows: Sequence[Window], token_predictions: Sequence[Sequence[int]], words: int,
                     *, fallback: int = 0) -> list[int]:
    """One sentence's predicted label id per word, from its windows' predictions per token (the label at each word's
    first token); a word no token starts in gets ``fallback`` (the ``O`` label)."""
    out = [fallback] * words
    for window, predicted in zip(windows, token_predictions, strict=True):
        for w, position in enumerate(window.positions):
            if position >= 0:
                out[window.first + w] = int(predicted[position])
    return out


def char_spans(entities: Sequence[tuple[str, int, int]], word_offsets: Sequence[tuple[int, int]],
               text: str) -> list[dict[str, Any]]:
    """Entities over words (``(type, first word, last word)``) as character spans of ``text``: ``{"entity", "start",
    "end", "text"}`` with ``text[start:end]`` the entity's words and what lies between them."""
    out = []
    for kind, first, last in entities:
        start, end = word_offsets[first][0], word_offsets[last][1]
        out.append({"entity": kind, "start": start, "end": end, "text": text[start:end]})
    return out


def unfit_word(tokenizer: Any, words: Sequence[str], max_length: int) -> tuple[int, int] | None:
    """The first word that cannot have a window of its own within ``max_length`` tokens, as ``(index, tokens)``
    (special tokens included), or None. A window of one word is exactly that word encoded alone, so this is the
    data step's exact test of what :func:`encode_sentences` would drop.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` (the data step's) or a fast transformers tokenizer.
        words: the sentence's words.
        max_length: the most tokens of a window.
    """
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    for i, encoding in enumerate(backend.encode_batch(list(words), add_special_tokens=True)):
        if len(encoding.ids) > max_length:
            return i, len(encoding.ids)
    return None
